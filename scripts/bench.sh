#!/usr/bin/env bash
# The benchmark (see docs/PERFORMANCE.md): release-built agents on 127.0.0.1, every scenario,
# one table row and one JSON line (target/bench-results.jsonl) each.
#   scripts/bench.sh                      # lockmesh alone, the full profile
#   scripts/bench.sh --compare etcd       # the lock scenarios beside a 3-node etcd, alternating
#   scripts/bench.sh --profile tiny       # a smoke run (what the test suite runs)
#   scripts/bench.sh --scenarios uncontended,contended --rounds 5
# With --compare etcd, Debian's etcd-server is installed if etcd is missing (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ " $* " == *" --compare etcd "* ]] && ! command -v etcd >/dev/null; then
  echo "bench: installing etcd-server (Debian)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q etcd-server >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q etcd-server >/dev/null; }
  # The package starts a system etcd on the default ports; the benchmark runs its own.
  systemctl stop etcd >/dev/null 2>&1 || service etcd stop >/dev/null 2>&1 || true
fi
cargo build --release --quiet -p lockmesh -p lockmesh-bench
exec target/release/lockmesh-bench --out target/bench-results.jsonl "$@"
