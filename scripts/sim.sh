#!/usr/bin/env bash
# Runs the deterministic simulator: `scripts/sim.sh --seeds 2000`, or replay one seed with
# `scripts/sim.sh --seed 1234 --verbose`. The last line is always "sim: N seeds, V violations";
# the exit status is non-zero if V > 0. See `scripts/sim.sh --help` for profiles and variants.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p lockmesh-sim
exec target/release/lockmesh-sim "$@"
