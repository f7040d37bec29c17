#!/usr/bin/env bash
# The main job, on a machine with no cluster: builds the operator, starts a local control
# plane (etcd + kube-apiserver + kube-controller-manager, built from the Go module proxy on
# first run), installs the CRD, runs the operator and applies the example Bottles, then shows
# what was created. Stays up until Ctrl-C when run from a terminal (--once to exit, --stay to
# keep it up regardless).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin="$(bash tests/tools/install.sh | tail -n1)"
export BOTTLE_TOOLS_BIN="$bin"
cargo build --quiet --bin bottle-operator --example local_up
export BOTTLE_OPERATOR_BIN="$PWD/target/debug/bottle-operator"
exec target/debug/examples/local_up "$@"
