#!/usr/bin/env bash
# Runs every test: unit tests, the integration tests against a real control plane, and the
# end-to-end suite on a real node. The first run installs what they need (Debian packages;
# the control plane, kubelet, kube-proxy, kwok, gitleaks, helm and kind built from the Go
# module proxy; pipelock and kube-router from shared/third_party; hadolint; see
# tests/tools/install.sh) and builds the images (images/build.sh), all cached under
# ~/.cache/bottle-operator. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin="$(bash tests/tools/install.sh | tail -n1)"
export BOTTLE_TOOLS_BIN="$bin"

# The images the real node runs, from this checkout's binaries.
source scripts/image-bins.sh
# Built once here, in the open; the tests' own build.sh calls then only hash (warm cache).
bash images/build.sh operator sidecar pipelock agent dnsmasq >/dev/null

stamp="$(mktemp)"
trap 'rm -f "$stamp"' EXIT
cargo test --locked "$@"
# The end-to-end suite's table of cases and timings (its output is captured when it passes).
report=target/tmp/e2e-report.md
if [ -f "$report" ] && [ "$report" -nt "$stamp" ]; then
  echo "==> end-to-end report ($report)"
  cat "$report"
fi
