#!/usr/bin/env bash
# A demonstration of `oras backup` and `oras restore`, end to end, on this machine only.
#
# It installs the CNCF Distribution registry if missing (Debian package docker-registry),
# builds the release binary, starts two throw-away registries on free loopback ports, loads
# an image (tags v1 and v2) with a signature and an SBOM referring to v1 into the first one
# (plain curl + sha256sum), backs the repository up into a tar archive, restores the
# archive into the second registry, and checks that every digest came through unchanged.
#
#   scripts/demo.sh                     # run the demo; temporary files are removed at exit
#   ORAS_DEMO_KEEP=1 scripts/demo.sh    # keep the temporary directory (archive, logs)
#
# Nothing leaves 127.0.0.1. Exit status: 0 when everything matches, 1 otherwise.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"
cd "$root"

REPO=demo/app
OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
OCI_INDEX=application/vnd.oci.image.index.v1+json
OCI_CONFIG=application/vnd.oci.image.config.v1+json
OCI_LAYER_GZIP=application/vnd.oci.image.layer.v1.tar+gzip
OCI_EMPTY=application/vnd.oci.empty.v1+json
ACCEPT="$OCI_MANIFEST, $OCI_INDEX, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"

if [ -t 1 ]; then
    BOLD=$'\033[1m' GREEN=$'\033[32m' RED=$'\033[31m' RESET=$'\033[0m'
else
    BOLD='' GREEN='' RED='' RESET=''
fi

section() {
    printf '\n%s== %s ==%s\n' "$BOLD" "$*" "$RESET"
}

# show CMD...: print a command, then run it.
show() {
    printf '%s$ %s%s\n' "$BOLD" "$*" "$RESET"
    "$@"
}

sha256_of() {
    local sum
    sum=$(sha256sum "$1")
    printf 'sha256:%s' "${sum%% *}"
}

size_of() {
    wc -c <"$1" | tr -d ' '
}

# ---------------------------------------------------------------------------------------
section "1. Prerequisites"
ensure_commands curl:curl,ca-certificates
ensure_registry
# shellcheck disable=SC2119 # no toolchain components needed to build
ensure_rust
printf 'registry: %s\n' "$(docker-registry --version)"
printf 'cargo:    %s\n' "$(cargo --version)"
printf 'curl:     %s\n' "$(curl --version | head -n 1)"

section "2. Build the release binary"
show cargo build --release
ORAS="$root/target/release/oras"
[ -x "$ORAS" ] || die "$ORAS was not built"

# ---------------------------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/oras-demo.XXXXXX")
REG_PIDS=()

cleanup() {
    local status=$? pid
    for pid in "${REG_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "${ORAS_DEMO_KEEP:-0}" = 1 ]; then
        printf 'Kept the temporary directory %s\n' "$TMP" >&2
    else
        rm -rf "$TMP"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_registry NAME: start a Distribution registry on a free loopback port with its own
# storage under $TMP/NAME; sets REG_PORT.
start_registry() {
    local name=$1 dir="$TMP/$1" attempt port pid
    mkdir -p "$dir/data"
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        port=$((20000 + RANDOM % 30000))
        # Something already answers there: try another port.
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            continue
        fi
        cat >"$dir/config.yml" <<YAML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  secret: oras-demo-$name-$attempt
  headers:
    X-Content-Type-Options: [nosniff]
YAML
        /usr/bin/docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
        pid=$!
        for _ in $(seq 1 100); do
            if ! kill -0 "$pid" 2>/dev/null; then
                break # it exited (port taken meanwhile?): try another port
            fi
            if curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/" 2>/dev/null; then
                REG_PIDS+=("$pid")
                REG_PORT=$port
                printf 'Registry %-8s http://127.0.0.1:%s  (pid %s, storage %s)\n' \
                    "$name" "$port" "$pid" "$dir/data"
                return 0
            fi
            sleep 0.1
        done
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        printf 'registry %s did not start on port %s (attempt %s); its log:\n' "$name" "$port" "$attempt" >&2
        tail -n 5 "$dir/registry.log" >&2 || true
    done
    die "could not start registry $name"
}

# push_blob REGISTRY FILE: upload FILE as a blob of $REPO (POST, then PUT with the digest).
push_blob() {
    local base=$1 file=$2 digest location code
    digest=$(sha256_of "$file")
    if curl -fsS -o /dev/null -I "$base/v2/$REPO/blobs/$digest" 2>/dev/null; then
        return 0
    fi
    location=$(curl -fsS -X POST -D - -o /dev/null "$base/v2/$REPO/blobs/uploads/" \
        | tr -d '\r' | sed -n 's/^[Ll]ocation: *//p')
    [ -n "$location" ] || die "no upload location for $file"
    case $location in
    /*) location="$base$location" ;;
    esac
    case $location in
    *\?*) location="$location&digest=$digest" ;;
    *) location="$location?digest=$digest" ;;
    esac
    code=$(curl -sS -o "$TMP/put.out" -w '%{http_code}' -X PUT \
        -H 'Content-Type: application/octet-stream' --data-binary "@$file" "$location")
    [ "$code" = 201 ] || die "blob upload of $file failed (HTTP $code): $(cat "$TMP/put.out")"
}

# push_manifest REGISTRY MEDIATYPE FILE REF: PUT a manifest (by tag or digest); checks that
# the registry computed the same digest as sha256sum.
push_manifest() {
    local base=$1 mediatype=$2 file=$3 ref=$4 digest code served
    digest=$(sha256_of "$file")
    code=$(curl -sS -o "$TMP/put.out" -D "$TMP/put.headers" -w '%{http_code}' -X PUT \
        -H "Content-Type: $mediatype" --data-binary "@$file" "$base/v2/$REPO/manifests/$ref")
    [ "$code" = 201 ] || die "manifest upload of $file as $ref failed (HTTP $code): $(cat "$TMP/put.out")"
    served=$(tr -d '\r' <"$TMP/put.headers" | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: *//p')
    [ "$served" = "$digest" ] || die "registry digest $served differs from $digest for $file"
}

# manifest_digest REGISTRY REF: the digest of the manifest REF as served (sha256 of the
# bytes; empty when absent). The bytes are left in $TMP/manifest.json.
manifest_digest() {
    local base=$1 ref=$2
    if curl -fsS -H "Accept: $ACCEPT" -o "$TMP/manifest.json" "$base/v2/$REPO/manifests/$ref" 2>/dev/null; then
        sha256_of "$TMP/manifest.json"
    else
        : >"$TMP/manifest.json"
    fi
}

# listed_digests FILE: the digests an index lists, sorted, one a line.
listed_digests() {
    grep -oE '"digest"[[:space:]]*:[[:space:]]*"sha256:[0-9a-f]{64}"' "$1" \
        | grep -oE 'sha256:[0-9a-f]{64}' | sort -u || true
}

# ---------------------------------------------------------------------------------------
section "3. Start two empty registries (source and target)"
start_registry source
SRC_PORT=$REG_PORT
start_registry target
DST_PORT=$REG_PORT
SRC="http://127.0.0.1:$SRC_PORT"
DST="http://127.0.0.1:$DST_PORT"

# ---------------------------------------------------------------------------------------
section "4. Load sample content into the source registry (curl + sha256sum)"
C="$TMP/content"
mkdir -p "$C/rootfs-base/etc" "$C/rootfs-app1/app" "$C/rootfs-app2/app"
printf 'NAME="oras demo base"\n' >"$C/rootfs-base/etc/os-release"
printf '#!/bin/sh\necho "hello from demo/app v1"\n' >"$C/rootfs-app1/app/run.sh"
printf '#!/bin/sh\necho "hello from demo/app v2"\n' >"$C/rootfs-app2/app/run.sh"

# make_layer DIR NAME: a reproducible gzip'ed tar layer; sets LAYER_FILE, LAYER_DIFFID.
make_layer() {
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=posix \
        --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
        -cf "$C/$2.tar" -C "$1" .
    LAYER_DIFFID=$(sha256_of "$C/$2.tar")
    gzip -n -c "$C/$2.tar" >"$C/$2.tar.gz"
    LAYER_FILE="$C/$2.tar.gz"
}

make_layer "$C/rootfs-base" base
BASE_FILE=$LAYER_FILE BASE_DIFFID=$LAYER_DIFFID
make_layer "$C/rootfs-app1" app1
APP1_FILE=$LAYER_FILE APP1_DIFFID=$LAYER_DIFFID
make_layer "$C/rootfs-app2" app2
APP2_FILE=$LAYER_FILE APP2_DIFFID=$LAYER_DIFFID

# make_image VERSION APP_FILE APP_DIFFID: config + manifest for demo/app:VERSION.
make_image() {
    local version=$1 app_file=$2 app_diffid=$3 config="$C/config-$1.json"
    printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["/app/run.sh"],"Labels":{"org.opencontainers.image.version":"%s"}},"rootfs":{"type":"layers","diff_ids":["%s","%s"]},"history":[{"created_by":"oras demo: base layer"},{"created_by":"oras demo: app layer %s"}]}' \
        "$version" "$BASE_DIFFID" "$app_diffid" "$version" >"$config"
    printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"%s","digest":"%s","size":%s},"layers":[{"mediaType":"%s","digest":"%s","size":%s},{"mediaType":"%s","digest":"%s","size":%s}],"annotations":{"org.opencontainers.image.version":"%s"}}' \
        "$OCI_MANIFEST" "$OCI_CONFIG" "$(sha256_of "$config")" "$(size_of "$config")" \
        "$OCI_LAYER_GZIP" "$(sha256_of "$BASE_FILE")" "$(size_of "$BASE_FILE")" \
        "$OCI_LAYER_GZIP" "$(sha256_of "$app_file")" "$(size_of "$app_file")" \
        "$version" >"$C/manifest-$version.json"
    push_blob "$SRC" "$config"
    push_blob "$SRC" "$BASE_FILE"
    push_blob "$SRC" "$app_file"
    push_manifest "$SRC" "$OCI_MANIFEST" "$C/manifest-$version.json" "$version"
    printf 'Pushed %s:%-3s %s (config + 2 layers)\n' "$REPO" "$version" "$(sha256_of "$C/manifest-$version.json")"
}

make_image v1 "$APP1_FILE" "$APP1_DIFFID"
make_image v2 "$APP2_FILE" "$APP2_DIFFID"
V1_DIGEST=$(sha256_of "$C/manifest-v1.json")
V1_SIZE=$(size_of "$C/manifest-v1.json")

# The empty config of artifacts: the two bytes {}.
printf '{}' >"$C/empty.json"
EMPTY_DIGEST=$(sha256_of "$C/empty.json")
push_blob "$SRC" "$C/empty.json"

# make_referrer NAME ARTIFACT_TYPE LAYER_MEDIATYPE PAYLOAD_FILE: an artifact manifest whose
# subject is v1; sets REF_DIGEST, REF_SIZE.
make_referrer() {
    local name=$1 artifact_type=$2 layer_type=$3 payload=$4 manifest="$C/referrer-$1.json"
    push_blob "$SRC" "$payload"
    printf '{"schemaVersion":2,"mediaType":"%s","artifactType":"%s","config":{"mediaType":"%s","digest":"%s","size":2},"layers":[{"mediaType":"%s","digest":"%s","size":%s}],"subject":{"mediaType":"%s","digest":"%s","size":%s},"annotations":{"org.opencontainers.image.created":"2026-01-01T00:00:00Z","org.opencontainers.image.description":"oras demo %s"}}' \
        "$OCI_MANIFEST" "$artifact_type" "$OCI_EMPTY" "$EMPTY_DIGEST" \
        "$layer_type" "$(sha256_of "$payload")" "$(size_of "$payload")" \
        "$OCI_MANIFEST" "$V1_DIGEST" "$V1_SIZE" "$name" >"$manifest"
    REF_DIGEST=$(sha256_of "$manifest")
    REF_SIZE=$(size_of "$manifest")
    push_manifest "$SRC" "$OCI_MANIFEST" "$manifest" "$REF_DIGEST"
    printf 'Pushed %-9s %s (artifactType %s, subject %s:v1)\n' "$name" "$REF_DIGEST" "$artifact_type" "$REPO"
}

printf '{"payload":"eyJkZW1vIjoib3JhcyJ9","protected":"eyJhbGciOiJQUzI1NiJ9","signature":"ZGVtby1zaWduYXR1cmUtbm90LXJlYWw"}' >"$C/signature.jws"
make_referrer signature application/vnd.cncf.notary.signature application/jose+json "$C/signature.jws"
SIG_DIGEST=$REF_DIGEST SIG_SIZE=$REF_SIZE

printf '{"spdxVersion":"SPDX-2.3","dataLicense":"CC0-1.0","SPDXID":"SPDXRef-DOCUMENT","name":"demo/app:v1","documentNamespace":"https://example.invalid/spdx/demo-app-v1","creationInfo":{"created":"2026-01-01T00:00:00Z","creators":["Tool: oras-demo"]},"packages":[{"SPDXID":"SPDXRef-app","name":"app","versionInfo":"v1","downloadLocation":"NOASSERTION"}]}' >"$C/sbom.spdx.json"
make_referrer sbom application/spdx+json application/spdx+json "$C/sbom.spdx.json"
SBOM_DIGEST=$REF_DIGEST SBOM_SIZE=$REF_SIZE

# Distribution 2.8 has no referrers API: clients find referrers through the referrers tag
# schema, an index tagged sha256-<hex of the subject digest> listing them, each with its
# artifactType and annotations (as the referrers API would answer), in digest order.
SCHEMA_TAG="sha256-${V1_DIGEST#sha256:}"
referrer_entry() { # referrer_entry DIGEST SIZE ARTIFACT_TYPE NAME
    printf '{"mediaType":"%s","digest":"%s","size":%s,"artifactType":"%s","annotations":{"org.opencontainers.image.created":"2026-01-01T00:00:00Z","org.opencontainers.image.description":"oras demo %s"}}' \
        "$OCI_MANIFEST" "$1" "$2" "$3" "$4"
}
SIG_ENTRY=$(referrer_entry "$SIG_DIGEST" "$SIG_SIZE" application/vnd.cncf.notary.signature signature)
SBOM_ENTRY=$(referrer_entry "$SBOM_DIGEST" "$SBOM_SIZE" application/spdx+json sbom)
if [[ "$SIG_DIGEST" < "$SBOM_DIGEST" ]]; then
    ENTRIES="$SIG_ENTRY,$SBOM_ENTRY"
else
    ENTRIES="$SBOM_ENTRY,$SIG_ENTRY"
fi
printf '{"schemaVersion":2,"mediaType":"%s","manifests":[%s]}' "$OCI_INDEX" "$ENTRIES" >"$C/referrers-index.json"
push_manifest "$SRC" "$OCI_INDEX" "$C/referrers-index.json" "$SCHEMA_TAG"
printf 'Pushed referrers index %s:%s listing 2 referrers\n' "$REPO" "$SCHEMA_TAG"

printf '\nTags in the source registry:\n'
show curl -fsS "$SRC/v2/$REPO/tags/list"
echo

# ---------------------------------------------------------------------------------------
section "5. Back up the repository, with its referrers, into a tar archive"
ARCHIVE="$TMP/demo.tar"
show "$ORAS" backup --include-referrers -o "$ARCHIVE" "127.0.0.1:$SRC_PORT/$REPO"
echo
show ls -l "$ARCHIVE"
echo
# tar exits 141 (SIGPIPE) when head stops reading early; that is fine here.
printf '%s$ tar tvf %s | head -n 20%s\n' "$BOLD" "$ARCHIVE" "$RESET"
{ tar tvf "$ARCHIVE" || true; } | head -n 20
printf '(%s entries in all)\n' "$(tar tf "$ARCHIVE" | wc -l | tr -d ' ')"

# ---------------------------------------------------------------------------------------
section "6. Restore the archive into the second registry"
show "$ORAS" restore --input "$ARCHIVE" "127.0.0.1:$DST_PORT"

# ---------------------------------------------------------------------------------------
section "7. Check the target registry against the source"
printf 'Tags in the target registry:\n'
show curl -sS "$DST/v2/$REPO/tags/list" || true
echo
echo

FAILED=0
# report WHAT SOURCE TARGET: one comparison, OK or MISMATCH.
report() {
    local status
    if [ -n "$2" ] && [ "$2" = "$3" ]; then
        status="${GREEN}OK${RESET}"
    else
        status="${RED}MISMATCH${RESET}"
        FAILED=1
    fi
    printf '%-28s %s\n' "$1" "$status"
    printf '    source  %s\n    target  %s\n' "${2:-(missing)}" "${3:-(missing)}"
}

for tag in v1 v2; do
    report "$REPO:$tag" "$(manifest_digest "$SRC" "$tag")" "$(manifest_digest "$DST" "$tag")"
done
report "signature (by digest)" "$(manifest_digest "$SRC" "$SIG_DIGEST")" "$(manifest_digest "$DST" "$SIG_DIGEST")"
report "sbom (by digest)" "$(manifest_digest "$SRC" "$SBOM_DIGEST")" "$(manifest_digest "$DST" "$SBOM_DIGEST")"

# The referrers index (tag schema) of v1: it must list the same referrers on both sides.
# A restore may rebuild this index on the target, so its own bytes may legitimately differ
# (reported for information); the referrers it lists may not.
SRC_INDEX_DIGEST=$(manifest_digest "$SRC" "$SCHEMA_TAG")
SRC_LISTED=$(listed_digests "$TMP/manifest.json")
DST_INDEX_DIGEST=$(manifest_digest "$DST" "$SCHEMA_TAG")
DST_LISTED=$(listed_digests "$TMP/manifest.json")
if [ -z "$DST_INDEX_DIGEST" ] || [ "$SRC_INDEX_DIGEST" = "$DST_INDEX_DIGEST" ]; then
    report "referrers index of v1" "$SRC_INDEX_DIGEST" "$DST_INDEX_DIGEST"
else
    printf '%-28s %s\n' "referrers index of v1" "rebuilt by restore (its own bytes differ)"
    printf '    source  %s\n    target  %s\n' "${SRC_INDEX_DIGEST:-(missing)}" "${DST_INDEX_DIGEST:-(missing)}"
fi
report "referrers it lists" "$(printf '%s' "$SRC_LISTED" | paste -sd' ' -)" \
    "$(printf '%s' "$DST_LISTED" | paste -sd' ' -)"

echo
if [ "$FAILED" -eq 0 ]; then
    printf '%sOK%s: the restored repository is digest-for-digest identical, referrers included.\n' "$GREEN" "$RESET"
else
    printf '%sMISMATCH%s: the target registry differs from the source (see above).\n' "$RED" "$RESET"
    exit 1
fi
