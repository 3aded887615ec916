#!/usr/bin/env bash
# The test command: installs what is needed (scripts/install-deps.sh), then runs every test
# against real PostgreSQL servers, plus the lint gates that keep main green. CI runs this
# through .ci/run, as root, on a clean clone.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
if ! command -v cargo >/dev/null 2>&1; then export PATH="$HOME/.cargo/bin:$PATH"; fi

# Every release the suite knows must be present: a missing one fails instead of being skipped.
export PGARC_TEST_REQUIRE_MAJORS="${PGARC_TEST_REQUIRE_MAJORS-14 15 16 17 18}"

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
# No function in src/ longer than 120 lines (clippy.toml), so that each reads as one step.
cargo clippy --locked --lib --bins -- -D warnings -D clippy::too_many_lines
# The long tests (100,000 tables) run too: CI runs everything.
cargo test --locked -- --include-ignored
