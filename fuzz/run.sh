#!/usr/bin/env bash
# Fuzzes pgarc's readers of untrusted archive metadata with libFuzzer (cargo fuzz, nightly).
#   fuzz/run.sh [SECONDS]       each target for SECONDS (default 600), one after the other
# Seeds: every toc.dat under fixtures/ for `toc`; the manifests and frame indexes in
# fuzz/seeds/manifest for `manifest`. Findings land in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-600}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
mkdir -p corpus/toc corpus/manifest
for f in ../fixtures/archives/*/toc.dat; do
  cp "$f" "corpus/toc/$(basename "$(dirname "$f")").dat"
done
cp seeds/manifest/* corpus/manifest/
for target in toc manifest; do
  # No sanitizer: pgarc has no unsafe code; these targets exercise only its own Rust.
  cargo +nightly fuzz run -s none "$target" "corpus/$target" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -max_len=1048576 -print_final_stats=1
done
