# syntax=docker/dockerfile:1
# The default agent: Claude Code with git and common build tools, as the non-root user
# `node` (UID 1000, the agent UID the operator and netinit expect). The container idles
# (`sleep infinity`); people run `kubectl bottle exec <name>` to start claude.
# Build: docker build -f images/agent.Dockerfile -t bottle-operator/agent:dev images/
# NODE_BASE swaps the Node base: images/build.sh, which cannot pull it, passes one made from
# images/node.Dockerfile (the same Node, user and entrypoint).
ARG NODE_BASE=node:22.21.1-bookworm-slim
FROM ${NODE_BASE}
ARG CLAUDE_CODE_VERSION=2.1.330
# Behind a TLS-intercepting proxy, npm must trust its CA for this build only (not the
# image): --secret id=build-ca,src=<bundle> --build-arg NODE_EXTRA_CA_CERTS=/run/secrets/build-ca
ARG NODE_EXTRA_CA_CERTS=
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN --mount=type=secret,id=build-ca \
    apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git curl less procps ripgrep jq \
      python3 python3-pip python3-venv build-essential openssh-client \
 && rm -rf /var/lib/apt/lists/* \
 && npm install -g "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}" \
 && npm cache clean --force \
 && mkdir -p /workspace && chown 1000:1000 /workspace
# Only cred-proxy and the declared hosts are reachable: telemetry and the self-updater would
# only collect 403s, and the image is replaced, not updated in place.
ENV HOME=/home/node \
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 \
    DISABLE_AUTOUPDATER=1
USER 1000:1000
WORKDIR /workspace
CMD ["sleep", "infinity"]
