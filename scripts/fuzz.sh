#!/usr/bin/env bash
# Fuzzing: runs each cargo-fuzz target of fuzz/ (tar_index, index_json, manifest) for N seconds
# (default 20), installing cargo-fuzz first if it is missing. A crash fails the script; libFuzzer
# leaves the input that crashed in fuzz/artifacts/<target>/ (replay it with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file>`). The corpus grows in fuzz/corpus/<target>/,
# seeded from fuzz/seeds/<target>/.
#
#   scripts/fuzz.sh                 # every target, 20 s each
#   scripts/fuzz.sh 300             # every target, 5 minutes each
#   scripts/fuzz.sh 60 tar_index    # one target
#
# cargo-fuzz passes nightly-only flags (-Z...) to rustc; RUSTC_BOOTSTRAP=1 lets a stable
# toolchain accept them, so no nightly toolchain is needed.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"
cd "$root"

seconds=${1:-20}
if [ "$#" -gt 0 ]; then shift; fi
case $seconds in
    '' | *[!0-9]*) die "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" ;;
esac
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(tar_index index_json manifest)

# shellcheck disable=SC2119 # no toolchain component needed
ensure_rust
# libFuzzer itself is C++.
ensure_commands c++:g++
if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz (crates.io)"
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    log "cargo fuzz run $t for ${seconds}s"
    cargo fuzz run "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
log "fuzzing: no crash in ${#targets[@]} target(s), ${seconds}s each"
