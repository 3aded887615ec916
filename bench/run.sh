#!/usr/bin/env bash
# pgarc's benchmark, from a fresh checkout: installs what is needed (scripts/install-deps.sh),
# builds pgarc in release mode, and runs bench/bench.py with the arguments given, e.g.
#   bash bench/run.sh                                  # every dataset (bench/README.md)
#   bash bench/run.sh --out bench/RESULTS-new.md       # also write the report to a file
#   bash bench/run.sh --datasets many --rounds 5       # one dataset
#   bash bench/run.sh --scale 0.1 --pgbench-scale 10 --many-tables 200 --rounds 2   # a quick look
# See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
if ! command -v cargo >/dev/null 2>&1; then export PATH="$HOME/.cargo/bin:$PATH"; fi
cargo build --release --locked --quiet
exec python3 bench/bench.py "$@"
