# pipelock as upstream ships it (its Dockerfile.goreleaser, 2.3.0): the static binary at
# /pipelock and the CA certificates on scratch, no USER (the bottle Pod sets runAsUser). The
# operator runs it with args only (`run --config ...`), so the entrypoint must be the binary.
# The default bottle Pod pulls upstream's ghcr.io/luckypipewrench/pipelock:2.3.0; this builds
# the same for a node that cannot reach it, from a context holding the `pipelock` binary
# (tests/tools/install.sh builds it from the source tarball with upstream's -X flags):
#   docker build -f images/pipelock.Dockerfile -t ghcr.io/luckypipewrench/pipelock:2.3.0 <dir>
ARG CERTS_BASE=debian:12.12-slim

FROM ${CERTS_BASE} AS certs
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

FROM scratch
COPY --from=certs /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/
COPY pipelock /pipelock
EXPOSE 8888
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/pipelock", "healthcheck"]
ENTRYPOINT ["/pipelock"]
CMD ["run", "--listen", "0.0.0.0:8888"]
