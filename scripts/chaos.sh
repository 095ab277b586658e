#!/usr/bin/env bash
# Long chaos soak on real processes: `scripts/chaos.sh --minutes 30 --seed 7 [--nodes 5]`.
# Runs the chaos test (tests/chaos.rs) again and again, 60 s per run, seeds S, S+1, ..., with
# 3, 5 and 7 agents in turn unless --nodes is given. The fault schedule and the clients' choices
# follow the seed; real processes add their own timing. As root it also partitions with
# nftables. Each run prints its counts, faults, unavailability and any violation; the last line
# is `chaos: R runs, V violations, U s max unavailability`; the exit status is non-zero if V > 0.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=5
seed=1
run_seconds=60
sizes=(3 5 7)
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --run-seconds) run_seconds="$2"; shift 2 ;;
    --nodes) sizes=("$2"); shift 2 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "chaos.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
cargo build --release --quiet --tests
end=$(( $(date +%s) + minutes * 60 ))
runs=0; violations=0; worst=0
while [ "$(date +%s)" -lt "$end" ]; do
  n=${sizes[$((runs % ${#sizes[@]}))]}
  out=$(CHAOS_SECONDS="$run_seconds" CHAOS_SEED="$seed" cargo nextest run --release --test chaos --run-ignored all \
          -E "test(=chaos_${n}_nodes)" --no-capture 2>&1) || true
  line=$(grep -E '^chaos: [0-9]+ runs' <<<"$out" | tail -1 || true)
  if [ -z "$line" ]; then
    echo "seed $seed, $n nodes: the run did not finish:"; grep -E 'panicked|violation|FAIL|kept in' <<<"$out" | head -5
    violations=$((violations + 1))
  else
    v=$(sed -E 's/^chaos: [0-9]+ runs, ([0-9]+) violations.*/\1/' <<<"$line")
    u=$(sed -E 's/.* ([0-9.]+) s max unavailability/\1/' <<<"$line")
    grep -E '^(violation|chaos run|chaos gap|chaos: the agents)' <<<"$out" || true
    violations=$((violations + v))
    worst=$(awk -v a="$worst" -v b="$u" 'BEGIN { print (b > a) ? b : a }')
  fi
  runs=$((runs + 1)); seed=$((seed + 1))
done
echo "chaos: $runs runs, $violations violations, $worst s max unavailability"
[ "$violations" -eq 0 ]
