#!/usr/bin/env bash
# Runs every test: unit tests and the integration tests against a real control plane. The
# first run installs what they need (Debian packages; the control plane, kwok, gitleaks, helm
# and kind built from the Go module proxy; hadolint; see tests/tools/install.sh), cached
# under ~/.cache/bottle-operator. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin="$(bash tests/tools/install.sh | tail -n1)"
export BOTTLE_TOOLS_BIN="$bin"
exec cargo test --locked "$@"
