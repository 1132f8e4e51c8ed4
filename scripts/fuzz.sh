#!/usr/bin/env bash
# Fuzzing of the parsers that read untrusted input: the cargo-fuzz targets of fuzz/ (tar_index,
# index_json, manifest). Installs cargo-fuzz first if it is missing. A crash fails the script;
# libFuzzer leaves the input that crashed in fuzz/artifacts/<target>/ (replay it with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file>`).
#
#   scripts/fuzz.sh --replay              # what scripts/test.sh (and so CI) runs: every seed of
#                                         # fuzz/seeds/<target>/, then a fixed number of mutations
#                                         # from a fixed random seed; the same work on every run
#   scripts/fuzz.sh                       # open-ended: every target for 20 s, the corpus growing
#   scripts/fuzz.sh 300                   #   in fuzz/corpus/<target>/ (seeded from fuzz/seeds/)
#   scripts/fuzz.sh 60 tar_index          #   one target for 60 s
#
# cargo-fuzz passes nightly-only flags (-Z...) to rustc; RUSTC_BOOTSTRAP=1 lets a stable
# toolchain accept them, so no nightly toolchain is needed.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"
cd "$root"

# Mutations per target in --replay mode, from this libFuzzer seed.
REPLAY_RUNS=20000
REPLAY_SEED=1

replay=
if [ "${1:-}" = --replay ]; then
    replay=1
    shift
    seconds=
else
    seconds=${1:-20}
    if [ "$#" -gt 0 ]; then shift; fi
    case $seconds in
        '' | *[!0-9]*) die "usage: scripts/fuzz.sh [--replay | SECONDS] [TARGET...]" ;;
    esac
fi
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
    [ -d "fuzz/seeds/$t" ] || die "no fuzz target $t (fuzz/seeds/$t is missing)"
    if [ -n "$replay" ]; then
        # A scratch corpus: libFuzzer writes what it finds into its first directory, and a replay
        # must leave the tree as it was.
        scratch=$(mktemp -d)
        log "cargo fuzz run $t: the seeds, then $REPLAY_RUNS runs from seed $REPLAY_SEED"
        if ! cargo fuzz run "$t" "$scratch" "fuzz/seeds/$t" -- \
            -seed="$REPLAY_SEED" -runs="$REPLAY_RUNS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1; then
            rm -rf "$scratch"
            die "fuzz target $t failed (the input is in fuzz/artifacts/$t/)"
        fi
        rm -rf "$scratch"
    else
        mkdir -p "fuzz/corpus/$t"
        log "cargo fuzz run $t for ${seconds}s"
        cargo fuzz run "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
            -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
    fi
done
if [ -n "$replay" ]; then
    log "fuzz replay: no crash in ${#targets[@]} target(s)"
else
    log "fuzzing: no crash in ${#targets[@]} target(s), ${seconds}s each"
fi
