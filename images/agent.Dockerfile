# The default agent: Claude Code with git and common build tools, as the non-root user
# `node` (UID 1000, the agent UID the operator and netinit expect). The container idles
# (`sleep infinity`); people run `kubectl bottle exec <name>` to start claude.
# Build: docker build -f images/agent.Dockerfile -t bottle-operator/agent:dev images/
FROM node:22.21.1-bookworm-slim
ARG CLAUDE_CODE_VERSION=2.1.330
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
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
