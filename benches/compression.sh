#!/usr/bin/env bash
# When compression pays: backs up and restores one image of incompressible content (a random
# layer, as image layers are: gzip'd already) and one of compressible content (JSON lines, as
# SBOMs, logs and uncompressed layers are) as .tar, .tar.gz and .tar.zst with the release
# binary against a local Distribution registry, and prints a table of sizes and times.
#
#   benches/compression.sh            # 200 MB layers
#   SIZE_MB=50 benches/compression.sh # smaller
#   ORAS_BIN=path                     # another binary (default: target/release/oras, built
#                                     # with cargo build --release unless BENCH_NO_BUILD=1)
#
# One run of each, on a warm page cache: a quick look, not benches/bench.sh's medians.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZE_MB=${SIZE_MB:-200}
W=$(mktemp -d "${TMPDIR:-/tmp}/oras-compression.XXXXXX")
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$W"
}
trap cleanup EXIT

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

if [ -n "${ORAS_BIN:-}" ]; then
    ORAS=$ORAS_BIN
else
    ORAS=${CARGO_TARGET_DIR:-$root/target}/release/oras
    if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
        log "cargo build --release"
        (cd "$root" && cargo build --release)
    fi
fi
[ -x "$ORAS" ] || die "$ORAS is missing: build it (cargo build --release) or set ORAS_BIN"
[ -x /usr/bin/docker-registry ] || die "docker-registry is missing: run scripts/test.sh once"

# start_registry NAME: a registry on a free loopback port, storage under $W/NAME; sets REG_HOST
# and REG_PID.
start_registry() {
    local dir="$W/$1" port pid
    mkdir -p "$dir/data"
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        port=$((20000 + RANDOM % 30000))
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
        printf 'version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
            "$dir/data" "$port" >"$dir/config.yml"
        /usr/bin/docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
        pid=$!
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            if curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/" 2>/dev/null; then
                PIDS+=("$pid")
                REG_HOST=127.0.0.1:$port REG_PID=$pid
                return 0
            fi
            sleep 0.05
        done
        kill "$pid" 2>/dev/null || true
    done
    die "could not start a registry"
}

stop_registry() {
    kill "$2" 2>/dev/null || true
    wait "$2" 2>/dev/null || true
    rm -rf "${W:?}/$1"
}

# push_image REPO LAYER_FILE: an OCI image of one layer (pushed as an uncompressed tar layer,
# the content this measures) with a small config, tagged v1.
push_image() {
    local repo=$1 layer=$2 dir="$W/push-$1" hex cfg_hex manifest_hex
    mkdir -p "$dir"
    hex=$(sha256sum "$layer" | cut -d' ' -f1)
    ln -f "$layer" "$dir/$hex"
    printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
        "$hex" >"$dir/config"
    cfg_hex=$(sha256sum "$dir/config" | cut -d' ' -f1)
    mv "$dir/config" "$dir/$cfg_hex"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
        "$cfg_hex" "$(stat -c %s "$dir/$cfg_hex")" "$hex" "$(stat -c %s "$layer")" >"$dir/manifest"
    manifest_hex=$(sha256sum "$dir/manifest" | cut -d' ' -f1)
    mv "$dir/manifest" "$dir/$manifest_hex"
    bash "$root/benches/curl_push.sh" "http://$REG_HOST" "$repo" "$dir" 4 v1 "$manifest_hex" >/dev/null
    rm -rf "$dir"
}

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
mib() { awk -v n="$1" 'BEGIN { printf "%.1f", n / 1048576 }'; }

log "content: ${SIZE_MB} MB random, ${SIZE_MB} MB of JSON lines"
# Random bytes, reproducible: AES-CTR of zeros.
head -c "$((SIZE_MB * 1000000))" /dev/zero \
    | openssl enc -aes-128-ctr -nosalt -K 000102030405060708090a0b0c0d0e0f \
        -iv 00000000000000000000000000000000 >"$W/random.layer"
# JSON lines like an SBOM's or a log's: repeated keys, varying values.
python3 - "$W/json.layer" "$((SIZE_MB * 1000000))" <<'PY'
import json, random, sys
out, size = sys.argv[1], int(sys.argv[2])
rng = random.Random(19)
words = ["alpine", "busybox", "openssl", "libc", "zlib", "curl", "python", "node", "glibc", "musl"]
with open(out, "w") as f:
    n = 0
    i = 0
    while n < size:
        rec = {"name": f"{rng.choice(words)}-{rng.randrange(10000)}", "version": f"{rng.randrange(10)}.{rng.randrange(100)}.{rng.randrange(1000)}",
               "purl": f"pkg:apk/{rng.choice(words)}@{rng.randrange(1 << 20):x}", "licenses": [rng.choice(["MIT", "Apache-2.0", "GPL-2.0", "BSD-3-Clause"])],
               "sha256": "%064x" % rng.getrandbits(256), "index": i}
        line = json.dumps(rec, separators=(",", ":")) + "\n"
        f.write(line)
        n += len(line)
        i += 1
PY
truncate -s "$((SIZE_MB * 1000000))" "$W/json.layer"

start_registry source
SRC=$REG_HOST
push_image random "$W/random.layer"
push_image json "$W/json.layer"

printf '| content | archive | size | of the content | backup | restore |\n'
printf '| --- | --- | --- | --- | --- | --- |\n'
for content in random json; do
    for ext in tar tar.gz tar.zst; do
        out="$W/$content.$ext"
        t0=$(now)
        "$ORAS" backup --no-tty -o "$out" "$SRC/$content:v1" >"$W/run.log" 2>&1 \
            || { cat "$W/run.log" >&2; die "backup to $out failed"; }
        t1=$(now)
        size=$(stat -c %s "$out")
        start_registry "dst-$content-$ext"
        t2=$(now)
        "$ORAS" restore --no-tty --input "$out" "$REG_HOST/$content" >"$W/run.log" 2>&1 \
            || { cat "$W/run.log" >&2; die "restore of $out failed"; }
        t3=$(now)
        stop_registry "dst-$content-$ext" "$REG_PID"
        ratio=$(awk -v s="$size" -v c="$((SIZE_MB * 1000000))" 'BEGIN { printf "%.0f%%", 100 * s / c }')
        printf '| %s | .%s | %s MiB | %s | %s s | %s s |\n' \
            "$content" "$ext" "$(mib "$size")" "$ratio" "$(secs "$t0" "$t1")" "$(secs "$t2" "$t3")"
        rm -f "$out"
    done
done
