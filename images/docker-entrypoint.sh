#!/bin/sh
# The official node image's entrypoint (images/node.Dockerfile copies it): a first argument
# that is an option or no command on PATH runs under node; anything else runs as given.
set -e
if [ "${1#-}" != "${1}" ] || [ -z "$(command -v "${1}")" ] || { [ -f "${1}" ] && ! [ -x "${1}" ]; }; then
  set -- node "$@"
fi
exec "$@"
