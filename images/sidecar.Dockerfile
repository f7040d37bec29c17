# syntax=docker/dockerfile:1
# Every program that runs beside the agent: bottle-sidecar (egress, cred-proxy, git-gate,
# config-sync, netinit, ca-bundle), plus git, ssh, iptables and gitleaks that git-gate and
# netinit call. Each container of a bottle Pod sets its own runAsUser; the default is non-root.
# bottle-sidecar is built without the `operator` feature: no Kubernetes client, k8s-openapi
# or schemars in the binary that enforces policy.
# Build from the repository root: docker build -f images/sidecar.Dockerfile -t bottle-operator/sidecar:dev .
# With binaries built beforehand (a context holding bottle-sidecar and gitleaks, as
# images/build.sh does): --build-arg BINARIES=prebuilt; RUNTIME_BASE swaps the Debian base.
ARG RUNTIME_BASE=debian:12.12-slim
ARG BINARIES=build

FROM rust:1.95.0-bookworm AS sidecar-build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --no-default-features --bin bottle-sidecar \
 && cp target/release/bottle-sidecar /usr/local/bin/

# The gitleaks the tests run (tests/tools/install.sh pins the same version).
FROM golang:1.26.8-bookworm AS gitleaks
RUN CGO_ENABLED=0 GOBIN=/out go install -trimpath -ldflags "-s -w" github.com/zricethezav/gitleaks/v8@v8.30.1

# The binaries, built from source (the default)...
FROM scratch AS build
COPY --from=sidecar-build /usr/local/bin/bottle-sidecar /bin/bottle-sidecar
COPY --from=gitleaks /out/gitleaks /bin/gitleaks

# ...or taken from the build context. Stages the target does not name are not built, so
# neither path pulls the other's images.
# (buildah/podman 1.28 resolve this alias only from a --build-arg: pass BINARIES=build too.)
FROM scratch AS prebuilt
COPY bottle-sidecar gitleaks /bin/

FROM ${BINARIES} AS binaries

FROM ${RUNTIME_BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git openssh-client iptables \
 && rm -rf /var/lib/apt/lists/*
COPY --from=binaries /bin/bottle-sidecar /usr/local/bin/bottle-sidecar
COPY --from=binaries /bin/gitleaks /usr/local/bin/gitleaks
# A passwd entry for each UID the bottle Pod runs this image as (config/layout.rs): ssh, which
# git-gate runs, refuses to start for a UID without one ("No user exists for uid").
RUN printf '%s\n' \
      'egress:x:1001:1001::/nonexistent:/usr/sbin/nologin' \
      'pipelock:x:1002:1002::/nonexistent:/usr/sbin/nologin' \
      'cred-proxy:x:1003:1003::/nonexistent:/usr/sbin/nologin' \
      'git-gate:x:1004:1004::/var/lib/git-gate:/usr/sbin/nologin' \
      'ca-bundle:x:1005:1005::/nonexistent:/usr/sbin/nologin' >> /etc/passwd
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/bottle-sidecar"]
