#!/usr/bin/env bash
# The one test command: unit tests, the deterministic simulator (300+ seeds and every broken
# variant), and later the real-process tests. One release build is shared by all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo nextest run --workspace --release --no-fail-fast "$@"
