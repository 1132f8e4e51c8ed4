# shellcheck shell=bash
# Shared helpers for scripts/test.sh and scripts/demo.sh. Source it; do not run it.
#
# ensure_tools installs, from Debian's packages, whatever the tests and the demo need and
# the machine lacks. It runs `apt-get update` only when something must be installed, and
# uses sudo when not root.

# log MESSAGE...: a progress line on stderr.
log() {
    printf '==> %s\n' "$*" >&2
}

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# as_root CMD...: run CMD as root (directly, or through sudo).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

# apt_install PKG...: install Debian packages non-interactively, updating the lists first.
apt_install() {
    command -v apt-get >/dev/null 2>&1 \
        || die "apt-get not found; install these packages by hand: $*"
    log "installing Debian package(s): $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ensure_commands CMD:PKG[,PKG...]...: install the package(s) of each CMD not on PATH.
ensure_commands() {
    local spec cmd pkgs missing=()
    for spec in "$@"; do
        cmd=${spec%%:*}
        if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/bin/$cmd" ]; then
            IFS=, read -r -a pkgs <<<"${spec#*:}"
            missing+=("${pkgs[@]}")
        fi
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
}

# ensure_registry: the CNCF Distribution 2.8 registry, Debian's docker-registry package
# (/usr/bin/docker-registry). The tests and the demo start their own registries on free
# loopback ports with their own configuration; the package's own service, if the install
# starts one, is never used.
# The auth and TLS tests also make certificates with openssl and bcrypt password files
# with htpasswd (Debian packages openssl and apache2-utils).
ensure_registry() {
    ensure_commands docker-registry:docker-registry openssl:openssl htpasswd:apache2-utils
    [ -x /usr/bin/docker-registry ] || command -v docker-registry >/dev/null 2>&1 \
        || die "docker-registry is still missing after installing it"
}

# ensure_moto: an S3-compatible server for the object storage tests, moto (PyPI `moto[server]`),
# in a virtual environment under the build directory (Debian's Python refuses pip installs into
# the system, PEP 668, and the tests must not depend on what else the machine's Python has).
# Exports ORAS_TEST_PYTHON, the interpreter the tests start `python -m moto.server` with.
ensure_moto() {
    local venv="${CARGO_TARGET_DIR:-$root/target}/moto-venv"
    if ! "$venv/bin/python" -c 'import moto.server' >/dev/null 2>&1; then
        ensure_commands python3:python3
        python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || apt_install python3-venv
        log "installing moto[server] into $venv"
        rm -rf "$venv"
        python3 -m venv "$venv" || die "cannot create a Python virtual environment in $venv"
        "$venv/bin/pip" install -q --disable-pip-version-check 'moto[server]>=5,<6' \
            || die "cannot install moto[server] from PyPI (the object storage tests need it)"
    fi
    ORAS_TEST_PYTHON="$venv/bin/python"
    export ORAS_TEST_PYTHON
}

# ensure_rust [COMPONENT...]: cargo, a C compiler and linker for crates that build C, and
# the named toolchain components (rustfmt, clippy), added with rustup when missing. Rust
# itself is not installed here (Debian's rustc is too old for this crate): install it with
# rustup (https://rustup.rs).
ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
        PATH="$HOME/.cargo/bin:$PATH"
        export PATH
    fi
    command -v cargo >/dev/null 2>&1 \
        || die "cargo not found: install Rust with rustup (https://rustup.rs), then run this again"
    ensure_commands cc:gcc,libc6-dev
    local comp sub
    for comp in "$@"; do
        sub=$comp
        [ "$comp" = rustfmt ] && sub=fmt
        if ! cargo "$sub" --version >/dev/null 2>&1; then
            if command -v rustup >/dev/null 2>&1; then
                log "adding Rust component $comp"
                rustup component add "$comp"
            else
                die "cargo $sub is missing: install the $comp component of your Rust toolchain"
            fi
        fi
    done
}
