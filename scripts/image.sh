#!/usr/bin/env bash
# Builds the oras container image (the Dockerfile at the repository's root) from a binary built
# beforehand: offline, without a daemon, with buildah (Debian package buildah, installed if
# missing, as root or through sudo). Nothing runs inside the image while it is built.
#
#   scripts/image.sh BINARY TAG
#   scripts/image.sh target/x86_64-unknown-linux-musl/release/oras localhost/oras:dev
#
# BINARY should be statically linked (a musl build): the image's base is empty, with no C library
# and no loader. The image ID goes to stdout, buildah's own output to stderr.
#
# Environment:
#   BUILDAH_ROOT       buildah's storage root (default: buildah's own); its run root is then
#                      $BUILDAH_ROOT/run. Storage is always the vfs driver, which needs no
#                      kernel overlay support and works inside unprivileged containers.
#   IMAGE_PLATFORM     the image's platform, e.g. linux/arm64 for an aarch64 binary built here
#                      (default: this machine's)
#   IMAGE_VERSION      label org.opencontainers.image.version (default: the version in Cargo.toml)
#   IMAGE_REVISION     label org.opencontainers.image.revision (default: git rev-parse HEAD)
#   IMAGE_SOURCE       label org.opencontainers.image.source (default: the GitHub repository
#                      when run in GitHub Actions)
#   SOURCE_DATE_EPOCH  the image's creation time, so that the same binary gives the same image
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"

[ "$#" -eq 2 ] || die "usage: scripts/image.sh BINARY TAG"
binary=$1
tag=$2
[ -f "$binary" ] || die "no binary at $binary: build it first (cargo build --release --target x86_64-unknown-linux-musl)"

ensure_commands buildah:buildah
ca_bundle=/etc/ssl/certs/ca-certificates.crt
[ -s "$ca_bundle" ] || apt_install ca-certificates
[ -s "$ca_bundle" ] || die "no CA bundle at $ca_bundle"

buildah_global=(--storage-driver vfs)
if [ -n "${BUILDAH_ROOT:-}" ]; then
    buildah_global+=(--root "$BUILDAH_ROOT" --runroot "$BUILDAH_ROOT/run")
fi

version=${IMAGE_VERSION:-$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n 1)}
revision=${IMAGE_REVISION:-$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)}
if [ -n "${IMAGE_SOURCE:-}" ]; then
    source_url=$IMAGE_SOURCE
elif [ -n "${GITHUB_REPOSITORY:-}" ]; then
    source_url="${GITHUB_SERVER_URL:-https://github.com}/$GITHUB_REPOSITORY"
else
    source_url=unknown
fi

# The build context holds exactly what the Dockerfile copies, so nothing else of the work tree
# (target/ holds gigabytes) is sent to the build.
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
install -m 0755 "$binary" "$context/oras"
install -m 0644 "$ca_bundle" "$context/ca-certificates.crt"
printf 'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$context/passwd"
printf 'nonroot:x:65532:\n' >"$context/group"
chmod 0644 "$context/passwd" "$context/group"

build_args=(
    --isolation chroot
    --file "$root/Dockerfile"
    --build-arg BINARY=oras
    --build-arg "VERSION=$version"
    --build-arg "REVISION=$revision"
    --build-arg "SOURCE=$source_url"
    --iidfile "$context/iid"
    --tag "$tag"
)
if [ -n "${IMAGE_PLATFORM:-}" ]; then
    build_args+=(--platform "$IMAGE_PLATFORM")
fi
if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
    build_args+=(--timestamp "$SOURCE_DATE_EPOCH")
fi

log "buildah build $tag from $binary (version $version, revision $revision)"
buildah "${buildah_global[@]}" build "${build_args[@]}" "$context" >&2
cat "$context/iid"
echo
