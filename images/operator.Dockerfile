# syntax=docker/dockerfile:1
# The operator: one binary on distroless, non-root.
# Build from the repository root: docker build -f images/operator.Dockerfile -t bottle-operator/operator:dev .
# With the binary built beforehand (a context holding bottle-operator, as images/build.sh
# does): --build-arg BINARIES=prebuilt. RUNTIME_BASE swaps the base: images/build.sh, which
# cannot pull distroless, passes a debootstrapped Debian (the same glibc, bookworm).
ARG RUNTIME_BASE=gcr.io/distroless/cc-debian12:nonroot
ARG BINARIES=build

FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin bottle-operator \
 && cp target/release/bottle-operator /usr/local/bin/

# Stages the target does not name are not built: BINARIES picks one of the two.
# (buildah/podman 1.28 resolve this alias only from a --build-arg: pass BINARIES=build too.)
FROM scratch AS prebuilt
COPY bottle-operator /usr/local/bin/bottle-operator

FROM ${BINARIES} AS binaries

FROM ${RUNTIME_BASE}
COPY --from=binaries /usr/local/bin/bottle-operator /usr/local/bin/bottle-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/bottle-operator"]
