#!/usr/bin/env bash
# The main job, on a machine with no cluster: a local control plane (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler; built from the Go module proxy on first run), the
# operator, and the example Bottles. Where the machine can run a real node (root, cgroup v1),
# the bottles really run there: kubelet + containerd, kube-proxy, kube-router, the images
# built from images/ (first run: a few minutes), the operator installed by helm; it ends with
# the `kubectl exec` line into the agent. Elsewhere a kwok node stands in, and it says why.
# Stays up until Ctrl-C when run from a terminal (--once to exit, --stay to keep it up).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin="$(bash tests/tools/install.sh | tail -n1)"
export BOTTLE_TOOLS_BIN="$bin"
source scripts/image-bins.sh
cargo build --quiet --bin bottle-operator --example local_up
export BOTTLE_OPERATOR_BIN="$PWD/target/debug/bottle-operator"
exec target/debug/examples/local_up "$@"
