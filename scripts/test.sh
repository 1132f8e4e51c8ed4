#!/usr/bin/env bash
# The whole test suite: formatting, lints, every test (unit and integration), and a replay of
# the fuzz targets. On a fresh Debian bookworm machine it first installs what the tests need
# (the CNCF Distribution registry, Debian package docker-registry, and the tools below); the
# tests start their own registries on free loopback ports.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh restore         # extra arguments go to `cargo test` (and the fuzz replay,
#                                   # part of a whole run, is left out)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"
cd "$root"

ensure_rust rustfmt clippy
ensure_registry
# The object storage tests run against moto, an S3-compatible server from PyPI.
ensure_moto
# util-linux `script` puts a test's oras on a pseudo-terminal; skopeo, umoci and podman read our
# archives as independent tools (Docker and OCI archives) and write archives we read (about 15 s
# to install umoci and podman on Debian bookworm; podman's test needs root, like the image test).
ensure_commands script:bsdutils skopeo:skopeo umoci:umoci podman:podman

log "cargo fmt --all -- --check"
cargo fmt --all -- --check

log "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

log "scripts/lint-workflows.sh (actionlint, zizmor)"
bash "$root/scripts/lint-workflows.sh"

# Tests that need root (mounting a small tmpfs) are marked ignored, with the reason, and run here
# when this script runs as root; elsewhere the summary counts them as ignored, never as passed.
test_args=("$@")
if [ "$(id -u)" -eq 0 ]; then
    case " $* " in
        *" -- "*) test_args+=(--include-ignored) ;;
        *) test_args+=(-- --include-ignored) ;;
    esac
fi
log "cargo test --all-targets --no-fail-fast ${test_args[*]}"
cargo test --all-targets --no-fail-fast "${test_args[@]}"
# The object storage tests are ignored unless asked for (they need moto, installed above): a run
# as root included them already; otherwise they run here, on their own.
if [ "$(id -u)" -ne 0 ] && [ "$#" -eq 0 ]; then
    log "cargo test --test it object_storage -- --ignored"
    cargo test --test it object_storage -- --ignored
fi

# The fuzz targets replay their seeds and a fixed number of mutations (the same work every run);
# open-ended fuzzing is `scripts/fuzz.sh SECONDS`. ORAS_FUZZ=0 leaves the replay out.
if [ "$#" -gt 0 ] || [ "${ORAS_FUZZ:-1}" = 0 ]; then
    log "fuzz replay left out (a partial run, or ORAS_FUZZ=0)"
else
    log "scripts/fuzz.sh --replay"
    bash "$root/scripts/fuzz.sh" --replay
fi
