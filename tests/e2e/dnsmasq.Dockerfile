# The cluster DNS of the end-to-end suite: dnsmasq on the Debian base images/build.sh makes
# (there is no registry for a CoreDNS image). The suite's Pod passes the answers as arguments.
ARG RUNTIME_BASE=debian:12.12-slim
FROM ${RUNTIME_BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends dnsmasq-base \
 && rm -rf /var/lib/apt/lists/*
ENTRYPOINT ["/usr/sbin/dnsmasq"]
