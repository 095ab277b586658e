#!/usr/bin/env bash
# Fuzzes what peers send (mesh frames, core messages, SWIM datagrams) against live in-memory
# nodes: `scripts/fuzz.sh --minutes 10 [--seed S]`. Runs tests/fuzz_peer.rs for that long on
# each core (different seeds); any panic fails it and prints the seed to replay with
# `FUZZ_SEED=S FUZZ_SECONDS=N cargo test --release --test fuzz_peer -- --nocapture`.
# The last line is `fuzz: N CPU-minutes, P panics`; the exit status is non-zero on a panic.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=10
seed=$(date +%s)
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "fuzz.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
cargo build --release --quiet --tests
cpus=$(nproc)
pids=()
logs=()
for i in $(seq 1 "$cpus"); do
  log=$(mktemp)
  logs+=("$log")
  FUZZ_SECONDS=$((minutes * 60)) FUZZ_SEED=$((seed + i)) cargo test --release --quiet --test fuzz_peer -- --nocapture >"$log" 2>&1 &
  pids+=($!)
done
panics=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    panics=$((panics + 1))
    grep -E 'fuzz: seed|panicked' "${logs[$i]}" | head -3
  else
    grep -E '^fuzz: [0-9]+ frames' "${logs[$i]}" || true
  fi
  rm -f "${logs[$i]}"
done
echo "fuzz: $((minutes * cpus)) CPU-minutes, $panics panics"
[ "$panics" -eq 0 ]
