#!/bin/sh
# Runs a command the way one container of the bottle Pod sees the world: inside the test's
# network namespace, with its volumes mounted at the Pod's paths. A private mount namespace
# holds the mounts; an overlay over /etc (upper layer on a tmpfs) makes the mount points
# without touching the host's /etc. The overlay hides the /etc/hosts that `ip netns exec`
# mounted, so it is mounted again from /etc/netns/<ns>/hosts.
# usage: in-pod.sh NETNS SCRATCH_DIR SRC:DST[,SRC:DST...] CMD [ARGS...]   (DST under /etc)
set -eu
ns=$1 scratch=$2 mounts=$3
shift 3
exec ip netns exec "$ns" unshare --mount --propagation private /bin/sh -eu -c '
ns=$1 scratch=$2 mounts=$3
shift 3
mkdir -p "$scratch"
mount -t tmpfs tmpfs "$scratch"
mkdir "$scratch/upper" "$scratch/work"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$scratch/upper,workdir=$scratch/work" /etc
mount --bind "/etc/netns/$ns/hosts" /etc/hosts
for m in $(echo "$mounts" | tr , " "); do
  src=${m%%:*} dst=${m#*:}
  case $dst in /etc/*) ;; *) echo "in-pod.sh: $dst is not under /etc" >&2; exit 2 ;; esac
  mkdir -p "$dst"
  mount --bind "$src" "$dst"
done
exec "$@"
' in-pod "$ns" "$scratch" "$mounts" "$@"
