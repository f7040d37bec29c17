#!/usr/bin/env bash
# Benchmarks, printing tables (nothing here asserts on time):
#   proxy_throughput  egress vs no proxy vs pipelock alone vs egress -> pipelock (the bottle
#                     path) vs mitmproxy (what the reference system used): requests/s,
#                     p50/p99 latency, idle and loaded RSS; pipelock from tests/tools/install.sh;
#                     then egress and cred-proxy at 8 and 64 connections, HTTP/2, a new
#                     connection per request, and a 1 GiB download (MB/s, RSS during)
#   apply_to_objects  Bottle -> objects through the operator, 1, 200 and 1,000 Bottles
#                     (BENCH_SCALE), vs direct; API calls per Bottle by verb from the API
#                     server's own metrics; operator RSS; writes on restart (goal: none);
#                     a policy change on the 1,000 at once vs the ConfigMaps applied directly
#   git_gate          push latency through git-gate vs direct SSH; scan MB/s vs gitleaks by hand
#   soak              egress at half its maximum rate for SOAK_SECS (default 600), RSS and open
#                     descriptors sampled twenty times
# mitmproxy comes from PyPI into a cached virtualenv. Pass a bench name to run only that one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cache="${XDG_CACHE_HOME:-$HOME/.cache}/bottle-operator"
venv="$cache/mitmproxy-11.0.2"
if [ ! -x "$venv/bin/mitmdump" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "mitmproxy==11.0.2"
fi
export MITMDUMP="$venv/bin/mitmdump"
bin="$(bash tests/tools/install.sh | tail -n1)"
export BOTTLE_TOOLS_BIN="$bin"
if [ "${1:-}" = soak ]; then
  SOAK_SECS="${SOAK_SECS:-600}" SOAK_ONLY=1 exec cargo bench --locked --bench proxy_throughput
fi
if [ $# -gt 0 ]; then
  exec cargo bench --locked --bench "$1"
fi
cargo bench --locked --bench proxy_throughput
cargo bench --locked --bench apply_to_objects
cargo bench --locked --bench git_gate
