# syntax=docker/dockerfile:1
# The operator: one binary on distroless, non-root.
# Build from the repository root: docker build -f images/operator.Dockerfile -t bottle-operator/operator:dev .
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin bottle-operator \
 && cp target/release/bottle-operator /usr/local/bin/

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/bottle-operator /usr/local/bin/bottle-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/bottle-operator"]
