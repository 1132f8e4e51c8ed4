#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test (unit and integration).
# On a fresh Debian bookworm machine it first installs what the tests need (the CNCF
# Distribution registry, Debian package docker-registry); the tests start their own
# registries on free loopback ports.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh restore         # extra arguments go to `cargo test`
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"
cd "$root"

ensure_rust rustfmt clippy
ensure_registry

log "cargo fmt --all -- --check"
cargo fmt --all -- --check

log "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

log "cargo test --all-targets $*"
cargo test --all-targets "$@"

# Fuzzing after the tests: in CI, or when asked (ORAS_FUZZ=1; ORAS_FUZZ_SECONDS per target).
if [ -n "${CI:-}" ] || [ "${ORAS_FUZZ:-}" = 1 ]; then
    log "scripts/fuzz.sh ${ORAS_FUZZ_SECONDS:-20}"
    bash "$root/scripts/fuzz.sh" "${ORAS_FUZZ_SECONDS:-20}"
fi
