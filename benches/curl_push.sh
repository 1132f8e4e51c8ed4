#!/usr/bin/env bash
# The restore floor of benches/bench.sh: plain curl uploading blobs in parallel, then manifests.
#
#   curl_push.sh BASE REPO DIR CONCURRENCY TAG MANIFEST_HEX [MANIFEST_MEDIA_TYPE]
#       Uploads every file of DIR named by its sha256 hex (except MANIFEST_HEX) as a blob of
#       REPO (POST, then PUT ?digest=), CONCURRENCY at a time, then PUTs DIR/MANIFEST_HEX as the
#       manifest REPO:TAG. BASE is http://127.0.0.1:PORT.
#   curl_push.sh --blob BASE REPO FILE
#       Uploads one blob (used by the parallel step above).
set -euo pipefail

push_blob() {
    local base=$1 repo=$2 file=$3 digest location
    digest="sha256:$(basename "$file")"
    location=$(curl -fsS -X POST -H 'Content-Length: 0' -D - -o /dev/null "$base/v2/$repo/blobs/uploads/" \
        | tr -d '\r' | sed -n 's/^[Ll]ocation: *//p')
    [ -n "$location" ] || { echo "curl_push: no upload location for $file" >&2; exit 1; }
    case $location in
    /*) location="$base$location" ;;
    esac
    case $location in
    *\?*) location="$location&digest=$digest" ;;
    *) location="$location?digest=$digest" ;;
    esac
    curl -fsS -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' -T "$file" "$location"
}

if [ "${1:-}" = --blob ]; then
    push_blob "$2" "$3" "$4"
    exit 0
fi

base=$1 repo=$2 dir=$3 conc=$4 tag=$5 manifest=$6
mediatype=${7:-application/vnd.oci.image.manifest.v1+json}
find "$dir" -maxdepth 1 -type f ! -name "$manifest" -print0 \
    | xargs -0 -r -n 1 -P "$conc" "$0" --blob "$base" "$repo"
curl -fsS -o /dev/null -X PUT -H "Content-Type: $mediatype" --data-binary "@$dir/$manifest" \
    "$base/v2/$repo/manifests/$tag"
