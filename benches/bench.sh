#!/usr/bin/env bash
# Performance benchmark of `oras backup` / `oras restore` against local CNCF Distribution 2.8
# registries, next to skopeo and a plain-curl floor. Nothing leaves 127.0.0.1.
#
#   benches/bench.sh                    # full run (about 10-15 minutes on 2 cores)
#   BENCH_QUICK=1 benches/bench.sh      # small sizes, to check the script (about 2 minutes)
#
# Scenarios (each timed in one run, tools ALTERNATING, start tool rotated each run, median of
# BENCH_RUNS runs; peak RSS and CPU time from /usr/bin/time -v, the registries' CPU time from
# /proc/PID/stat):
#   a  one image of 4 layers of random data totalling 400 MiB (quick: 40 MiB):
#      backup to .tar and to a directory vs `skopeo copy --all --preserve-digests` to
#      oci-archive: / oci:, restore of the tar into an empty registry vs skopeo from the same
#      tar, the curl floor (the same blobs fetched / uploaded in parallel with curl), a second
#      backup into the same directory and a second restore into the same registry; and both
#      backups again with 600 MB (quick: 60 MB) of another program's unflushed data on the same
#      filesystem, compared with the clean ones (durability must cost only the backup's bytes).
#   b  a repository of 1,000 (quick: 100) small tags, each with 2 referrers recorded with the
#      referrers tag schema (sha256-<hex> tags; Distribution 2.8 has no referrers API):
#      oras with --include-referrers, oras tags only, `skopeo sync` (tags only: skopeo cannot
#      follow referrers), the curl floors; restore; second backup / restore; requests per tag;
#      the floor of a second backup: curl making the 2 requests per tag that any client must make
#      to see that a tag and its referrers are unchanged (its manifest, its referrers index), each
#      conditional on the digest the backup directory recorded, as oras makes them.
#   c  a repository of 2,500 / 5,000 / 10,000 tiny tags (quick: 250 / 500 / 1,000), grown
#      in place: listing and resolution; time and HTTP requests per tag at each size.
#   d  registry scale: 200 repositories (quick: 20) x 25 tags, each an image of 2 small layers (a
#      base layer shared by all) with 2 referrers; oras backs up the registry by name (catalog,
#      --include-repos), with and without referrers, vs `skopeo sync` docker -> dir; restore of the
#      directory into an empty registry vs `skopeo sync` dir -> docker; the second backup and the
#      second restore; requests per tag.
#   a-big (only with BENCH_BIG=4G or similar): one image of a single layer of that size, as the
#      issue asks (its tar backup against the fsync'd disk floor; peak RSS not growing with blob
#      size); 3 runs (BENCH_BIG_RUNS), skopeo in the first only (no target compares with it).
#
# Knobs (environment):
#   BENCH_RUNS=3           runs per measurement (median)
#   BENCH_A_RUNS           runs of scenario a (default 5 in full mode: its ratios are the noisiest)
#   BENCH_QUICK=1          small sizes
#   BENCH_CONCURRENCY=4    --concurrency of oras, parallelism of the curl floor
#   BENCH_SCENARIOS="a b c"  which scenarios to run (empty: none, e.g. with BENCH_BIG only)
#   BENCH_BIG=4G           add scenario a-big (BENCH_BIG_RUNS=3 runs)
#   BENCH_RESULTS=path     where to write the markdown (default benches/results.md)
#   BENCH_A_SIZE=400M  BENCH_B_TAGS=1000  BENCH_C_SIZES="2500 5000 10000"   explicit sizes
#   BENCH_D_REPOS=200  BENCH_D_TAGS=25    scenario d's size
#   BENCH_DIRTY=600M       unrelated unflushed data written beside the scenario a backups (quick: 60M)
#   BENCH_SKOPEO_C=first   skopeo sync in scenario c: first (smallest size only), all, none
#   BENCH_SKOPEO_SYNC_RUNS=1  runs of `skopeo sync` (scenarios b, c: slow, one image at a time)
#   BENCH_C_RESTORE_RUNS   runs of the scenario c restores (default 1; quick mode: BENCH_RUNS)
#   BENCH_REG_DIR=path     registry storage (default: a directory on /dev/shm when it has room,
#                          so that the registries' fsyncs do not add disk noise; else the temp dir)
#   BENCH_SMALL_DIR=path   work files of scenarios b and c (thousands of small files; default: a
#                          directory on /dev/shm when it has room, else the temp dir, as for a)
#   BENCH_NO_BUILD=1       do not run cargo build --release; ORAS_BIN=path  use that binary
#   BENCH_KEEP=1           keep the temporary directory (logs, debug traces)
#
# Output: the tables on stdout, then the verdict on each target of the issue (with the bound this
# machine sets on it: the ratio the measured CPU work of oras and the registry, or the curl floor,
# would allow at best), then the machine;
# also written to benches/results.md (BENCH_RESULTS).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=../scripts/lib.sh
. "$root/scripts/lib.sh"

# ---------------------------------------------------------------------------------------
# Knobs

# bytes_of SIZE: 400M, 2G, 40000000 -> bytes (K/M/G are powers of 1024).
bytes_of() {
    local n=$1
    case $n in
    *[kK]) echo $((${n%?} * 1024)) ;;
    *[mM]) echo $((${n%?} * 1024 * 1024)) ;;
    *[gG]) echo $((${n%?} * 1024 * 1024 * 1024)) ;;
    *) echo $((n)) ;;
    esac
}

RUNS=${BENCH_RUNS:-3}
CONC=${BENCH_CONCURRENCY:-4}
SCENARIOS=${BENCH_SCENARIOS-a b c d}
RESULTS=${BENCH_RESULTS:-$here/results.md}
SKOPEO_C=${BENCH_SKOPEO_C:-first}
if [ "${BENCH_QUICK:-0}" = 1 ]; then
    A_SIZE=${BENCH_A_SIZE:-40M} B_TAGS=${BENCH_B_TAGS:-100} C_SIZES=${BENCH_C_SIZES:-250 500 1000}
    D_REPOS=${BENCH_D_REPOS:-20} D_TAGS=${BENCH_D_TAGS:-25}
    MODE=quick
    C_RESTORE_RUNS=${BENCH_C_RESTORE_RUNS:-${BENCH_RUNS:-3}}
else
    A_SIZE=${BENCH_A_SIZE:-400M} B_TAGS=${BENCH_B_TAGS:-1000} C_SIZES=${BENCH_C_SIZES:-2500 5000 10000}
    D_REPOS=${BENCH_D_REPOS:-200} D_TAGS=${BENCH_D_TAGS:-25}
    MODE=full
    C_RESTORE_RUNS=${BENCH_C_RESTORE_RUNS:-1}
fi
A_RUNS=${BENCH_A_RUNS:-$([ "$MODE" = full ] && echo 5 || echo "$RUNS")}
# Unflushed data of another program beside the scenario a backups (600 MB in full mode).
DIRTY_BYTES=$(bytes_of "${BENCH_DIRTY:-$([ "$MODE" = full ] && echo 600M || echo 60M)}")
A_BYTES=$(bytes_of "$A_SIZE")
BIG=${BENCH_BIG:-}
BIG_BYTES=0
[ -z "$BIG" ] || BIG_BYTES=$(bytes_of "$BIG")
# A single run of a-big is at the mercy of this VM's memory: the first writes into pages the host
# has taken back cost several times the sys time of later ones. A median of 3 is not.
BIG_RUNS=${BENCH_BIG_RUNS:-3}
SK_RUNS=${BENCH_SKOPEO_SYNC_RUNS:-1}
OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"
[[ $A_RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_A_RUNS must be a positive integer"
[[ $BIG_RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_BIG_RUNS must be a positive integer"
[[ $CONC =~ ^[1-9][0-9]*$ ]] || die "BENCH_CONCURRENCY must be a positive integer"
[[ $SK_RUNS =~ ^[0-9]+$ ]] || die "BENCH_SKOPEO_SYNC_RUNS must be a number"
[[ $C_RESTORE_RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_C_RESTORE_RUNS must be a positive integer"

# ---------------------------------------------------------------------------------------
# Tools

ensure_commands docker-registry:docker-registry skopeo:skopeo curl:curl,ca-certificates python3:python3
[ -x /usr/bin/time ] || apt_install time
if [ -n "${ORAS_BIN:-}" ]; then
    ORAS=$ORAS_BIN
else
    ORAS=$root/target/release/oras
    if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
        # shellcheck disable=SC2119 # no toolchain components needed
        ensure_rust
        log "cargo build --release"
        (cd "$root" && cargo build --release)
    fi
fi
[ -x "$ORAS" ] || die "$ORAS is missing: build it (cargo build --release) or set ORAS_BIN"
GIT_REV=$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)
[ -z "${ORAS_BIN:-}" ] || GIT_REV="$GIT_REV (the binary came from ORAS_BIN: it may have been built from another tree)"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/oras-bench.XXXXXX")
LOGS=$TMP/logs
W=$TMP/work
mkdir -p "$LOGS" "$W" "$TMP/sktmp"
RAW=$TMP/raw.tsv
METRICS=$TMP/metrics.tsv
COMPARE=$TMP/compare.tsv
: >"$RAW"
: >"$METRICS"
: >"$COMPARE"
# skopeo stages oci-archive content in TMPDIR (default /var/tmp): keep that inside $TMP.
export TMPDIR=$TMP/sktmp
REG_PIDS=()
REGROOT=
SMALLROOT=

cleanup() {
    local status=$? pid
    for pid in "${REG_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        printf 'Kept %s %s %s\n' "$TMP" "$REGROOT" "$SMALLROOT" >&2
    else
        rm -rf "$TMP"
        case $REGROOT in
        */oras-bench-reg.*) rm -rf "$REGROOT" ;;
        esac
        case $SMALLROOT in
        */oras-bench-small.*) rm -rf "$SMALLROOT" ;;
        esac
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -n "${BENCH_REG_DIR:-}" ]; then
    mkdir -p "$BENCH_REG_DIR"
    REGROOT=$(mktemp -d "$BENCH_REG_DIR/oras-bench-reg.XXXXXX")
    REG_STORAGE="$BENCH_REG_DIR (BENCH_REG_DIR)"
else
    # Room for the source (scenario a, a-big, small ones) and one restore target at a time, twice over.
    need_kib=$(((A_BYTES + BIG_BYTES) * 4 / 1024 + 1024 * 1024))
    shm_kib=$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 { print $4 }' || true)
    if [ -d /dev/shm ] && [ -w /dev/shm ] && [ "${shm_kib:-0}" -gt "$need_kib" ]; then
        REGROOT=$(mktemp -d /dev/shm/oras-bench-reg.XXXXXX)
        REG_STORAGE="tmpfs (/dev/shm)"
    else
        REGROOT=$TMP/reg
        mkdir -p "$REGROOT"
        REG_STORAGE="disk ($TMP)"
    fi
fi

# Scenarios b and c write thousands of small files (one per manifest and blob), which on some disks
# measures the filesystem more than the tools: on the machine of the README's figures (ext4 without
# a journal) creating 7,000 files took from 0.2 s to 4 s of kernel time, depending on how many had
# been deleted shortly before, and first runs (and every ratio to them) swung with it. Their files go
# to tmpfs when it has room; scenario a (a few large files, written durably) stays on the disk.
if [ -n "${BENCH_SMALL_DIR:-}" ]; then
    mkdir -p "$BENCH_SMALL_DIR"
    SMALLROOT=$(mktemp -d "$BENCH_SMALL_DIR/oras-bench-small.XXXXXX")
    SMALL_STORAGE="$BENCH_SMALL_DIR (BENCH_SMALL_DIR)"
else
    shm_kib=$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 { print $4 }' || true)
    if [ -d /dev/shm ] && [ -w /dev/shm ] && [ "${shm_kib:-0}" -gt $(((A_BYTES + BIG_BYTES) * 4 / 1024 + 2 * 1024 * 1024)) ]; then
        SMALLROOT=$(mktemp -d /dev/shm/oras-bench-small.XXXXXX)
        SMALL_STORAGE="tmpfs (/dev/shm)"
    else
        SMALL_STORAGE="disk ($TMP)"
    fi
fi
SW=${SMALLROOT:-$W}

# ---------------------------------------------------------------------------------------
# Registries

# start_registry NAME: a Distribution registry on a free loopback port, storage under
# $REGROOT/NAME; sets REG_PORT, REG_PID and REG_HOST (127.0.0.1:PORT).
start_registry() {
    local name=$1 dir="$REGROOT/$1" attempt port pid
    mkdir -p "$dir/data"
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        port=$((20000 + RANDOM % 30000))
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
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  secret: oras-bench-$name-$attempt
YAML
        /usr/bin/docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
        pid=$!
        for _ in $(seq 1 100); do
            if ! kill -0 "$pid" 2>/dev/null; then
                break
            fi
            if curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/" 2>/dev/null; then
                REG_PIDS+=("$pid")
                REG_PID=$pid
                REG_HOST=127.0.0.1:$port
                return 0
            fi
            sleep 0.05
        done
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    die "could not start registry $name"
}

# stop_registry NAME PID: stop it and delete its storage.
stop_registry() {
    local name=$1 pid=$2 p keep=()
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${REG_PIDS[@]}"; do
        [ "$p" = "$pid" ] || keep+=("$p")
    done
    REG_PIDS=("${keep[@]}")
    rm -rf "${REGROOT:?}/$name"
}

# fresh_registry: a new empty registry named fresh-N; sets FRESH_NAME, FRESH_PID, FRESH_HOST.
FRESH_N=0
fresh_registry() {
    FRESH_N=$((FRESH_N + 1))
    FRESH_NAME=fresh-$FRESH_N
    start_registry "$FRESH_NAME"
    FRESH_PID=$REG_PID
    FRESH_HOST=$REG_HOST
}

# ---------------------------------------------------------------------------------------
# Measuring

slug() {
    printf '%s' "$1" | tr -c 'A-Za-z0-9._-' '_'
}

# registry_ticks: CPU time (user + system, clock ticks) the running registries have used so far.
registry_ticks() {
    local pid stats=()
    for pid in "${REG_PIDS[@]}"; do
        [ ! -r "/proc/$pid/stat" ] || stats+=("/proc/$pid/stat")
    done
    [ "${#stats[@]}" -gt 0 ] || {
        echo 0
        return
    }
    # Fields 14 and 15 (utime, stime) count from after the ")" that ends the command name.
    cat "${stats[@]}" 2>/dev/null | awk '{ sub(/^.*\) /, ""); t += $12 + $13 } END { print t + 0 }'
}
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)

# measure KEY CMD...: one timed run of CMD (wall clock) under /usr/bin/time -v (peak RSS, CPU
# time of CMD) with the CPU time the registries spent meanwhile; appends to $RAW. The output of
# the last run of KEY stays in $LOGS/<slug>.{out,err}.
measure() {
    local key=$1 s t0 t1 rc=0 rss secs status=ok cpu r0 r1 regcpu
    shift
    s=$(slug "$key")
    sync
    r0=$(registry_ticks)
    t0=$EPOCHREALTIME
    /usr/bin/time -v -o "$LOGS/$s.time" "$@" >"$LOGS/$s.out" 2>"$LOGS/$s.err" || rc=$?
    t1=$EPOCHREALTIME
    r1=$(registry_ticks)
    rss=$(sed -n 's/.*Maximum resident set size (kbytes): *//p' "$LOGS/$s.time")
    cpu=$(awk -F': *' '/User time \(seconds\)|System time \(seconds\)/ { t += $2 } END { printf "%.3f", t }' "$LOGS/$s.time")
    # A registry started or stopped during the run (none is, by design) would make this negative.
    regcpu=$(awk -v a="$r0" -v b="$r1" -v hz="$CLK_TCK" 'BEGIN { d = b - a; printf "%.2f", (d < 0 ? 0 : d) / hz }')
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    if [ "$rc" != 0 ]; then
        status=FAIL
        printf '  FAILED (exit %s): %s\n' "$rc" "$*" >&2
        tail -n 5 "$LOGS/$s.err" | sed 's/^/    /' >&2
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$key" "$secs" "${rss:-0}" "$status" "$cpu" "$regcpu" >>"$RAW"
    printf '  %-72s %8.2fs %6d MiB  cpu %6.2fs  registry %6.2fs %s\n' "$key" "$secs" "$((${rss:-0} / 1024))" "$cpu" "$regcpu" "$status" >&2
}

# metric KEY NAME VALUE
metric() {
    printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$METRICS"
}

# compare KEY SKOPEO_KEY FLOOR_KEY FIRST_KEY ("-" for none)
compare() {
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$COMPARE"
}

# summary_of KEY: the "(X copied, Y already present)" part of oras's last status line.
summary_of() {
    local s
    s=$(slug "$1")
    grep -ho 'Total size: .*' "$LOGS/$s.out" "$LOGS/$s.err" 2>/dev/null | tail -n 1 | sed 's/\.$//' || true
}

# count_requests KEY CMD...: one untimed run with --debug appended; records the number of
# HTTP requests (one `[debug]` line each) and their breakdown by kind.
count_requests() {
    local key=$1 s line rc=0
    shift
    s=$(slug "$key").debug
    "$@" --debug >"$LOGS/$s.out" 2>"$LOGS/$s.err" || rc=$?
    if [ "$rc" != 0 ]; then
        printf '  FAILED (exit %s, debug run): %s\n' "$rc" "$*" >&2
        tail -n 5 "$LOGS/$s.err" | sed 's/^/    /' >&2
        metric "$key" note "debug run FAILED (exit $rc)"
        return 0
    fi
    line=$(python3 "$here/report.py" count "$LOGS/$s.err")
    metric "$key" requests "${line%%$'\t'*}"
    metric "$key" breakdown "${line#*$'\t'}"
    printf '  %-72s %s HTTP requests\n' "$key (debug run)" "${line%%$'\t'*}" >&2
}

# rotate N WORD...: the words rotated left by N-1 (alternate which tool goes first).
rotate() {
    local n=$1
    shift
    local words=("$@")
    local i k=${#words[@]} rotated=()
    for ((i = 0; i < k; i++)); do
        rotated+=("${words[$(((i + n - 1) % k))]}")
    done
    printf '%s\n' "${rotated[@]}"
}

# skopeo_turn RUN [RUNS]: "skopeo" while RUN <= RUNS (default $SK_RUNS: skopeo sync is slow, fewer
# runs), else "skip".
skopeo_turn() {
    if [ "$1" -le "${2:-$SK_RUNS}" ]; then
        echo skopeo
    else
        echo skip
    fi
}

# floor_config LIST HOST REPO OUTDIR FILTER: a curl -K config fetching every manifest and
# blob of LIST (load.py's --list format) whose role matches FILTER (a grep -E regex).
floor_config() {
    local list=$1 host=$2 repo=$3 dest=$4 filter=$5
    awk -v base="http://$host/v2/$repo" -v out="$dest" -v filter="$filter" '
        BEGIN {
            print "header = \"Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json\""
            print "fail"
            print "silent"
            print "show-error"
        }
        $1 == "M" && $5 ~ filter { d = $3; k = "manifests" }
        $1 == "B" && $4 ~ filter { d = $2; k = "blobs" }
        ($1 == "M" && $5 ~ filter) || ($1 == "B" && $4 ~ filter) {
            h = d; sub(/^sha256:/, "", h)
            printf "url = \"%s/%s/%s\"\noutput = \"%s/%s\"\n", base, k, d, out, h
        }' "$list"
}

# recheck_config LAYOUT HOST REPO: a curl -K config making the requests any client must make to
# find out that the tags of a backup in the directory LAYOUT and their tag-schema referrers are
# unchanged, with what the directory knows: each tag's manifest and each subject's referrers index
# (tag sha256-<hex>), both conditional on the digest recorded (If-None-Match), bodies discarded.
recheck_config() {
    local layout=$1 host=$2 repo=$3
    python3 - "$layout/index.json" "http://$host/v2/$repo/manifests" <<'PY'
import json, sys
index, base = sys.argv[1], sys.argv[2]
entries = json.load(open(index))["manifests"]
asks = []
indexes = {}
for e in entries:
    ann = e.get("annotations", {})
    if "org.opencontainers.image.ref.name" in ann:
        asks.append((ann["org.opencontainers.image.ref.name"], e["digest"]))
    elif "vnd.oras-backup.referrers-index" in ann:
        indexes[ann["vnd.oras-backup.subject"]] = ann["vnd.oras-backup.referrers-index"]
asks += [("sha256-" + s.split(":", 1)[1], i) for s, i in sorted(indexes.items())]
accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"
print("\nnext\n".join(
    f'fail\nsilent\nshow-error\nheader = "Accept: {accept}"\nheader = "If-None-Match: \\"{d}\\""\n'
    f'url = "{base}/{ref}"\noutput = "/dev/null"' for ref, d in asks))
PY
}

# floor_pairs LIST HOST REPO OUTDIR: "FILE URL" lines for xargs -n 2 curl -o (scenario a).
floor_pairs() {
    local list=$1 host=$2 repo=$3 dest=$4
    awk -v base="http://$host/v2/$repo" -v out="$dest" '
        $1 == "M" { d = $3; k = "manifests" }
        $1 == "B" { d = $2; k = "blobs" }
        { h = d; sub(/^sha256:/, "", h); printf "%s/%s %s/%s/%s\n", out, h, base, k, d }' "$list"
}


# ---------------------------------------------------------------------------------------
# Scenario a: one image, 4 layers of random data.
# scenario_a NAME BYTES RUNS LAYERS SKOPEO_RUNS
scenario_a() {
    local sc=$1 bytes=$2 runs=$3 layers=$4 sk_runs=$5 repo=bench/$1 list tar dir skdir sktar fl r tool first_pid mhex k
    local sk
    local kt="$sc|backup to .tar" kd="$sc|backup to directory" kr="$sc|restore from .tar"
    local ktd="$sc|backup to .tar, other data unwritten" kdd="$sc|backup to directory, other data unwritten"
    log "scenario $sc: one image, $layers layer(s), $bytes bytes of random data"
    metric "$sc" title "one image of $layers layer(s), $((bytes / 1024 / 1024)) MiB of random data (concurrency $CONC)"
    list=$TMP/list-$sc
    rm -f "$list"
    python3 "$here/load.py" image "$SRC" "$repo" v1 --layers "$layers" --bytes "$bytes" --list "$list" 2>"$LOGS/load-$sc.log"
    tar=$W/$sc.tar sktar=$W/$sc-skopeo.tar dir=$W/$sc-dir skdir=$W/$sc-skopeo-dir fl=$W/$sc-floor
    floor_pairs "$list" "$SRC" "$repo" "$fl" >"$TMP/pairs-$sc"
    mhex=$(awk '$1 == "M" { sub(/^sha256:/, "", $3); print $3 }' "$list")

    compare "$kt|oras" "$kt|skopeo copy oci-archive:" "$sc|fetch the blobs|curl floor" -
    compare "$kd|oras" "$kd|skopeo copy oci:" "$sc|fetch the blobs|curl floor" -
    compare "$kdd|oras" - - "$kd|oras"
    compare "$ktd|oras" - - "$kt|oras"
    for ((r = 1; r <= runs; r++)); do
        sk=$(skopeo_turn "$r" "$sk_runs")
        while read -r tool; do
            [[ $tool != skip* ]] || continue
            case $tool in
            oras-tar)
                rm -f "$tar"
                measure "$kt|oras" "$ORAS" backup --concurrency "$CONC" -o "$tar" "$SRC/$repo:v1"
                ;;
            skopeo-tar)
                rm -f "$sktar"
                measure "$kt|skopeo copy oci-archive:" skopeo copy --all --preserve-digests --src-tls-verify=false \
                    "docker://$SRC/$repo:v1" "oci-archive:$sktar"
                ;;
            oras-dir)
                rm -rf "$dir"
                measure "$kd|oras" "$ORAS" backup --concurrency "$CONC" -o "$dir" "$SRC/$repo:v1"
                ;;
            disk)
                # The disk's own floor: the same number of bytes written and fsync'd.
                rm -f "$W/$sc-dd"
                measure "$sc|write the bytes to disk|dd conv=fsync floor" dd if=/dev/zero of="$W/$sc-dd" bs=1M \
                    count=$((bytes / 1048576)) conv=fsync status=none
                rm -f "$W/$sc-dd"
                ;;
            oras-dir-dirty | oras-tar-dirty)
                # Another program's data, written and not yet flushed, on the same filesystem: a
                # durable backup must not wait for it.
                sync
                dd if=/dev/zero of="$W/unrelated" bs=1M count=$((DIRTY_BYTES / 1048576)) status=none
                # Into the same paths as the clean runs: what these leave is what a later second
                # backup (or restore) finds there.
                if [ "$tool" = oras-dir-dirty ]; then
                    rm -rf "$dir"
                    measure "$kdd|oras" "$ORAS" backup --concurrency "$CONC" -o "$dir" "$SRC/$repo:v1"
                else
                    rm -f "$tar"
                    measure "$ktd|oras" "$ORAS" backup --concurrency "$CONC" -o "$tar" "$SRC/$repo:v1"
                fi
                rm -f "$W/unrelated"
                ;;
            skopeo-dir)
                rm -rf "$skdir"
                measure "$kd|skopeo copy oci:" skopeo copy --all --preserve-digests --src-tls-verify=false \
                    "docker://$SRC/$repo:v1" "oci:$skdir:v1"
                ;;
            floor)
                rm -rf "$fl"
                mkdir -p "$fl"
                measure "$sc|fetch the blobs|curl floor" xargs -a "$TMP/pairs-$sc" -P "$CONC" -n 2 \
                    curl -fsS -H "Accept: $OCI_MANIFEST" -o
                # Checking a digest cannot go faster than hashing the blob on one core: the
                # machine's floor for a backup of one large layer (read from the page cache).
                measure "$sc|hash the largest blob|sha256 floor (openssl dgst)" \
                    openssl dgst -sha256 "$(find "$fl" -type f -printf '%s %p\n' | sort -n | tail -n 1 | cut -d' ' -f2-)"
                ;;
            esac
        done < <(rotate "$r" oras-tar "$sk-tar" oras-dir "$sk-dir" floor oras-dir-dirty oras-tar-dirty disk)
    done
    metric "$kt|oras" summary "$(summary_of "$kt|oras")"
    rm -f "$sktar"
    rm -rf "$skdir"

    # Restore of oras's tar into an empty registry each run; skopeo reads the same tar.
    compare "$kr|oras" "$kr|skopeo copy oci-archive:" "$sc|upload the blobs|curl floor" -
    for ((r = 1; r <= runs; r++)); do
        while read -r tool; do
            [ "$tool" != skip ] || continue
            fresh_registry
            case $tool in
            oras)
                measure "$kr|oras" "$ORAS" restore --concurrency "$CONC" --input "$tar" "$FRESH_HOST/$repo"
                ;;
            skopeo)
                measure "$kr|skopeo copy oci-archive:" skopeo copy --all --preserve-digests --dest-tls-verify=false \
                    "oci-archive:$tar" "docker://$FRESH_HOST/$repo:v1"
                ;;
            floor)
                measure "$sc|upload the blobs|curl floor" "$here/curl_push.sh" "http://$FRESH_HOST" "$repo" "$fl" "$CONC" v1 "$mhex"
                ;;
            esac
            stop_registry "$FRESH_NAME" "$FRESH_PID"
        done < <(rotate "$r" oras "$(skopeo_turn "$r" "$sk_runs")" floor)
    done
    metric "$kr|oras" summary "$(summary_of "$kr|oras")"

    # A second backup of unchanged content into the same directory (the last oras one).
    k="$sc|second backup into the same directory"
    compare "$k|oras" - - "$kd|oras"
    for ((r = 1; r <= runs; r++)); do
        measure "$k|oras" "$ORAS" backup --concurrency "$CONC" -o "$dir" "$SRC/$repo:v1"
    done
    metric "$k|oras" summary "$(summary_of "$k|oras")"
    count_requests "$k|oras" "$ORAS" backup --concurrency "$CONC" -o "$dir" "$SRC/$repo:v1"

    # A second restore of the same backup into the same registry.
    k="$sc|second restore into the same registry"
    compare "$k|oras" - - "$kr|oras"
    fresh_registry
    first_pid=$FRESH_PID
    # The first restore into it is the debug run that counts a first restore's requests.
    count_requests "$kr|oras" "$ORAS" restore --concurrency "$CONC" --input "$tar" "$FRESH_HOST/$repo"
    for ((r = 1; r <= runs; r++)); do
        measure "$k|oras" "$ORAS" restore --concurrency "$CONC" --input "$tar" "$FRESH_HOST/$repo"
    done
    metric "$k|oras" summary "$(summary_of "$k|oras")"
    count_requests "$k|oras" "$ORAS" restore --concurrency "$CONC" --input "$tar" "$FRESH_HOST/$repo"
    stop_registry "$FRESH_NAME" "$first_pid"

    # Requests of a first backup.
    rm -f "$W/$sc-debug.tar"
    count_requests "$kt|oras" "$ORAS" backup --concurrency "$CONC" -o "$W/$sc-debug.tar" "$SRC/$repo:v1"
    rm -rf "$tar" "$dir" "$fl" "$W/$sc-debug.tar"
}

# ---------------------------------------------------------------------------------------
# Scenario b: many small tags, each with 2 referrers (tag schema).
scenario_b() {
    local sc=b n=$B_TAGS repo=bench/refs list r tool k yaml
    local dir=$SW/b-dir dir2=$SW/b-dir-tags tar=$SW/b.tar skdir=$SW/b-skopeo flall=$SW/b-floor-all fltag=$SW/b-floor-tags
    local kd="b|backup to directory" kt="b|backup to .tar" kr="b|restore from .tar"
    local o_ref="oras --include-referrers" o_tag="oras (tags only)" sk="skopeo sync (tags only)"
    local f_all="curl floor (all content)" f_tag="curl floor (tags only)"
    log "scenario b: $n tags, 2 referrers each (tag schema)"
    metric b title "$n small tags, each with 2 referrers via the sha256-<hex> tag schema (concurrency $CONC; skopeo cannot follow referrers: compare oras tags-only with skopeo)"
    metric b tags "$n"
    list=$TMP/list-b
    rm -f "$list"
    local t0=$EPOCHREALTIME
    python3 "$here/load.py" tags "$SRC" "$repo" --count "$n" --referrers 2 --unique-blobs --list "$list" 2>"$LOGS/load-b.log"
    log "loaded in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')s"
    floor_config "$list" "$SRC" "$repo" "$flall" 'image|referrer' >"$TMP/floor-b-all.cfg"
    floor_config "$list" "$SRC" "$repo" "$fltag" '^image$' >"$TMP/floor-b-tags.cfg"
    yaml=$TMP/sync-b.yml
    cat >"$yaml" <<YAML
$SRC:
  tls-verify: false
  images-by-tag-regex:
    $repo: '^v[0-9]+\$'
YAML

    compare "$kd|$o_ref" - "$kd|$f_all" -
    compare "$kd|$o_tag" "$kd|$sk" "$kd|$f_tag" -
    for ((r = 1; r <= RUNS; r++)); do
        while read -r tool; do
            [ "$tool" != skip ] || continue
            case $tool in
            oras-ref)
                rm -rf "$dir"
                measure "$kd|$o_ref" "$ORAS" backup --concurrency "$CONC" --include-referrers -o "$dir" "$SRC/$repo"
                ;;
            oras-tag)
                rm -rf "$dir2"
                measure "$kd|$o_tag" "$ORAS" backup --concurrency "$CONC" -o "$dir2" "$SRC/$repo"
                ;;
            skopeo)
                rm -rf "$skdir"
                measure "$kd|$sk" skopeo sync --all --preserve-digests --src yaml --dest dir "$yaml" "$skdir"
                ;;
            floor-all)
                rm -rf "$flall"
                mkdir -p "$flall"
                measure "$kd|$f_all" curl --parallel --parallel-max "$CONC" -K "$TMP/floor-b-all.cfg"
                ;;
            floor-tag)
                rm -rf "$fltag"
                mkdir -p "$fltag"
                measure "$kd|$f_tag" curl --parallel --parallel-max "$CONC" -K "$TMP/floor-b-tags.cfg"
                ;;
            esac
        done < <(rotate "$r" oras-ref oras-tag floor-all floor-tag "$(skopeo_turn "$r")")
    done
    metric "$kd|$o_ref" summary "$(summary_of "$kd|$o_ref")"
    metric "$kd|$o_tag" summary "$(summary_of "$kd|$o_tag")"
    rm -rf "$flall" "$fltag" "$dir2"
    count_requests "$kd|$o_ref" "$ORAS" backup --concurrency "$CONC" --include-referrers -o "$SW/b-debug" "$SRC/$repo"
    rm -rf "$SW/b-debug"
    count_requests "$kd|$o_tag" "$ORAS" backup --concurrency "$CONC" -o "$SW/b-debug" "$SRC/$repo"
    rm -rf "$SW/b-debug"

    for ((r = 1; r <= RUNS; r++)); do
        rm -f "$tar"
        measure "$kt|$o_ref" "$ORAS" backup --concurrency "$CONC" --include-referrers -o "$tar" "$SRC/$repo"
    done

    # Restore: oras from its tar (with and without referrers), skopeo from its sync directory.
    compare "$kr|oras restore --exclude-referrers" "$kr|skopeo sync dir: (tags only)" - -
    for ((r = 1; r <= RUNS; r++)); do
        while read -r tool; do
            [ "$tool" != skip ] || continue
            fresh_registry
            case $tool in
            oras-ref)
                measure "$kr|oras restore" "$ORAS" restore --concurrency "$CONC" --input "$tar" "$FRESH_HOST/$repo"
                ;;
            oras-tag)
                measure "$kr|oras restore --exclude-referrers" "$ORAS" restore --concurrency "$CONC" --exclude-referrers \
                    --input "$tar" "$FRESH_HOST/$repo"
                ;;
            skopeo)
                measure "$kr|skopeo sync dir: (tags only)" skopeo sync --all --preserve-digests --dest-tls-verify=false \
                    --src dir --dest docker "$skdir" "$FRESH_HOST/bench"
                ;;
            esac
            stop_registry "$FRESH_NAME" "$FRESH_PID"
        done < <(rotate "$r" oras-ref oras-tag "$(skopeo_turn "$r")")
    done
    metric "$kr|oras restore" summary "$(summary_of "$kr|oras restore")"
    rm -rf "$skdir"
    fresh_registry
    count_requests "$kr|oras restore --exclude-referrers" "$ORAS" restore --concurrency "$CONC" --exclude-referrers \
        --input "$tar" "$FRESH_HOST/$repo"
    stop_registry "$FRESH_NAME" "$FRESH_PID"

    k="b|second backup into the same directory"
    local f_re="curl floor (tag + referrers index of each tag, conditional)"
    recheck_config "$dir" "$SRC" "$repo" >"$TMP/recheck-b.cfg"
    compare "$k|$o_ref" - "$k|$f_re" "$kd|$o_ref"
    compare "$k|$f_re" - - "$kd|$o_ref"
    for ((r = 1; r <= RUNS; r++)); do
        while read -r tool; do
            case $tool in
            oras) measure "$k|$o_ref" "$ORAS" backup --concurrency "$CONC" --include-referrers -o "$dir" "$SRC/$repo" ;;
            floor) measure "$k|$f_re" curl --parallel --parallel-max "$CONC" -K "$TMP/recheck-b.cfg" ;;
            esac
        done < <(rotate "$r" oras floor)
    done
    metric "$k|$o_ref" summary "$(summary_of "$k|$o_ref")"
    count_requests "$k|$o_ref" "$ORAS" backup --concurrency "$CONC" --include-referrers -o "$dir" "$SRC/$repo"

    k="b|second restore into the same registry"
    compare "$k|oras restore" - - "$kr|oras restore"
    fresh_registry
    # The first restore into it is the debug run that counts a first restore's requests.
    count_requests "$kr|oras restore" "$ORAS" restore --concurrency "$CONC" --input "$tar" "$FRESH_HOST/$repo"
    for ((r = 1; r <= RUNS; r++)); do
        measure "$k|oras restore" "$ORAS" restore --concurrency "$CONC" --input "$tar" "$FRESH_HOST/$repo"
    done
    metric "$k|oras restore" summary "$(summary_of "$k|oras restore")"
    count_requests "$k|oras restore" "$ORAS" restore --concurrency "$CONC" --input "$tar" "$FRESH_HOST/$repo"
    stop_registry "$FRESH_NAME" "$FRESH_PID"
    rm -rf "$dir" "$tar"
}

# ---------------------------------------------------------------------------------------
# Scenario c: many tiny tags; listing and resolution, at growing sizes.
scenario_c() {
    local repo=bench/many list=$TMP/list-c have=0 n r tool sk_here kt kr kf ks fl=$SW/c-floor tar=$SW/c.tar first=1 yaml skdir=$SW/c-skopeo
    log "scenario c: tiny tags at sizes $C_SIZES"
    metric c title "a repository of tiny tags (one shared config and layer; distinct manifests), grown in place (concurrency $CONC)"
    rm -f "$list"
    yaml=$TMP/sync-c.yml
    cat >"$yaml" <<YAML
$SRC:
  tls-verify: false
  images-by-tag-regex:
    $repo: '^v[0-9]+\$'
YAML
    for n in $C_SIZES; do
        if [ "$n" -gt "$have" ]; then
            local t0=$EPOCHREALTIME
            python3 "$here/load.py" tags "$SRC" "$repo" --start "$have" --count "$((n - have))" --list "$list" 2>>"$LOGS/load-c.log"
            log "loaded $((n - have)) tags in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')s"
            have=$n
        fi
        floor_config "$list" "$SRC" "$repo" "$fl" 'image' >"$TMP/floor-c.cfg"
        kt="c|backup to .tar, $n tags" kr="c|restore from .tar, $n tags" kf="c|fetch manifests by digest, $n tags"
        ks="c|backup to directory, $n tags"
        sk_here=0
        if [ "$SK_RUNS" -gt 0 ] && { [ "$SKOPEO_C" = all ] || { [ "$SKOPEO_C" = first ] && [ "$first" = 1 ]; }; }; then
            sk_here=1
            compare "$kt|oras" "$ks|skopeo sync (dir)" "$kf|curl floor" -
        else
            compare "$kt|oras" - "$kf|curl floor" -
        fi
        for k in "$kt|oras" "$kr|oras" "$kf|curl floor" "$ks|skopeo sync (dir)"; do
            metric "$k" tags "$n"
        done
        for ((r = 1; r <= RUNS; r++)); do
            while read -r tool; do
                [ "$tool" != skip ] || continue
                case $tool in
                oras)
                    rm -f "$tar"
                    measure "$kt|oras" "$ORAS" backup --concurrency "$CONC" -o "$tar" "$SRC/$repo"
                    ;;
                floor)
                    rm -rf "$fl"
                    mkdir -p "$fl"
                    measure "$kf|curl floor" curl --parallel --parallel-max "$CONC" -K "$TMP/floor-c.cfg"
                    ;;
                skopeo)
                    rm -rf "$skdir"
                    measure "$ks|skopeo sync (dir)" skopeo sync --all --preserve-digests --src yaml --dest dir "$yaml" "$skdir"
                    ;;
                esac
            done < <(rotate "$r" oras floor "$([ "$sk_here" = 1 ] && skopeo_turn "$r" || echo skip)")
        done
        rm -rf "$fl" "$skdir"
        for ((r = 1; r <= C_RESTORE_RUNS; r++)); do
            fresh_registry
            measure "$kr|oras" "$ORAS" restore --concurrency "$CONC" --input "$tar" "$FRESH_HOST/$repo"
            stop_registry "$FRESH_NAME" "$FRESH_PID"
        done
        rm -f "$SW/c-debug.tar"
        count_requests "$kt|oras" "$ORAS" backup --concurrency "$CONC" -o "$SW/c-debug.tar" "$SRC/$repo"
        rm -f "$SW/c-debug.tar"
        if [ "$first" = 1 ]; then
            # Restore requests per tag are counted at the first size only (a restore is slow).
            fresh_registry
            count_requests "$kr|oras" "$ORAS" restore --concurrency "$CONC" --input "$tar" "$FRESH_HOST/$repo"
            stop_registry "$FRESH_NAME" "$FRESH_PID"
        fi
        first=0
    done
    rm -f "$tar"
}

# ---------------------------------------------------------------------------------------
# Scenario d: registry scale, many repositories of small tags sharing a base layer, each tag
# with 2 referrers; the whole set backed up by naming the registry (catalog mode).
scenario_d() {
    local sc=d repos=$D_REPOS per=$D_TAGS n i r tool yaml
    local dir=$SW/d-dir skdir=$SW/d-skopeo kd="d|backup to directory" kr="d|restore from directory"
    local o_ref="oras --include-referrers" o_tag="oras (tags only)" sk="skopeo sync (tags only)"
    n=$((repos * per))
    log "scenario d: $repos repositories x $per tags, 2 layers (one shared by all), 2 referrers each"
    metric d title "$repos repositories x $per tags ($n images of 2 small layers, one shared by all; 2 referrers each, tag schema), backed up by naming the registry (concurrency $CONC)"
    metric d tags "$n"
    local t0=$EPOCHREALTIME
    for ((i = 0; i < repos; i++)); do
        python3 "$here/load.py" tags "$SRC" "$(printf 'bench-d/r%03d' "$i")" --count "$per" --referrers 2 --shared-base \
            --list "$TMP/list-d" 2>>"$LOGS/load-d.log"
    done
    log "loaded in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')s"
    yaml=$TMP/sync-d.yml
    {
        printf '%s:\n  tls-verify: false\n  images-by-tag-regex:\n' "$SRC"
        for ((i = 0; i < repos; i++)); do
            printf "    %s: '^v[0-9]+\$'\n" "$(printf 'bench-d/r%03d' "$i")"
        done
    } >"$yaml"
    local oras_d=("$ORAS" backup --concurrency "$CONC" --include-repos 'bench-d/*')

    compare "$kd|$o_ref" "$kd|$sk" - -
    compare "$kd|$o_tag" "$kd|$sk" - -
    for ((r = 1; r <= RUNS; r++)); do
        while read -r tool; do
            [ "$tool" != skip ] || continue
            case $tool in
            oras-ref)
                rm -rf "$dir"
                measure "$kd|$o_ref" "${oras_d[@]}" --include-referrers -o "$dir" "$SRC"
                ;;
            oras-tag)
                rm -rf "$dir-tags"
                measure "$kd|$o_tag" "${oras_d[@]}" -o "$dir-tags" "$SRC"
                ;;
            skopeo)
                rm -rf "$skdir"
                measure "$kd|$sk" skopeo sync --all --preserve-digests --src yaml --dest dir "$yaml" "$skdir"
                ;;
            esac
        done < <(rotate "$r" oras-ref oras-tag "$(skopeo_turn "$r")")
    done
    metric "$kd|$o_ref" summary "$(summary_of "$kd|$o_ref")"
    rm -rf "$dir-tags"
    count_requests "$kd|$o_ref" "${oras_d[@]}" --include-referrers -o "$SW/d-debug" "$SRC"
    rm -rf "$SW/d-debug"

    local k2="d|second backup into the same directory"
    compare "$k2|$o_ref" - - "$kd|$o_ref"
    for ((r = 1; r <= RUNS; r++)); do
        measure "$k2|$o_ref" "${oras_d[@]}" --include-referrers -o "$dir" "$SRC"
    done
    metric "$k2|$o_ref" summary "$(summary_of "$k2|$o_ref")"

    compare "$kr|oras restore --exclude-referrers" "$kr|skopeo sync dir: (tags only)" - -
    compare "$kr|oras restore" "$kr|skopeo sync dir: (tags only)" - -
    for ((r = 1; r <= RUNS; r++)); do
        while read -r tool; do
            [ "$tool" != skip ] || continue
            fresh_registry
            case $tool in
            oras-ref) measure "$kr|oras restore" "$ORAS" restore --concurrency "$CONC" --input "$dir" "$FRESH_HOST" ;;
            oras-tag)
                measure "$kr|oras restore --exclude-referrers" "$ORAS" restore --concurrency "$CONC" --exclude-referrers \
                    --input "$dir" "$FRESH_HOST"
                ;;
            skopeo)
                measure "$kr|skopeo sync dir: (tags only)" skopeo sync --all --preserve-digests --dest-tls-verify=false \
                    --src dir --dest docker "$skdir" "$FRESH_HOST/bench-d"
                ;;
            esac
            stop_registry "$FRESH_NAME" "$FRESH_PID"
        done < <(rotate "$r" oras-ref oras-tag "$(skopeo_turn "$r")")
    done
    metric "$kr|oras restore" summary "$(summary_of "$kr|oras restore")"
    rm -rf "$skdir"

    local k3="d|second restore into the same registry"
    compare "$k3|oras restore" - - "$kr|oras restore"
    fresh_registry
    count_requests "$kr|oras restore" "$ORAS" restore --concurrency "$CONC" --input "$dir" "$FRESH_HOST"
    for ((r = 1; r <= RUNS; r++)); do
        measure "$k3|oras restore" "$ORAS" restore --concurrency "$CONC" --input "$dir" "$FRESH_HOST"
    done
    metric "$k3|oras restore" summary "$(summary_of "$k3|oras restore")"
    stop_registry "$FRESH_NAME" "$FRESH_PID"
    rm -rf "$dir"
}

# ---------------------------------------------------------------------------------------
machine() {
    local cpu mem
    cpu=$(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo | head -n 1)
    mem=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1024 / 1024 }' /proc/meminfo)
    printf -- '- nproc: %s\n- CPU: %s\n- memory: %s\n- kernel: %s\n' "$(nproc)" "${cpu:-unknown}" "$mem" "$(uname -srm)"
    printf -- '- load average at the start: %s; at the end: %s\n' "$LOAD_START" "$(cut -d' ' -f1-3 /proc/loadavg)"
    printf -- '- oras binary: %s (built %s); source tree at the start of the run: git %s\n' "$ORAS" \
        "$(date -u -r "$ORAS" '+%Y-%m-%d %H:%M UTC')" "$GIT_REV"
    printf -- '- tools: %s; %s; %s; %s\n' "$("$ORAS" --version)" "$(skopeo --version)" \
        "$(docker-registry --version | sed 's/^docker-registry //')" "$(curl --version | head -n 1 | cut -d' ' -f1-2)"
}

STARTED=$EPOCHREALTIME
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
START_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
start_registry source
SRC=$REG_HOST
log "source registry at http://$SRC; work directory $TMP"
log "mode $MODE: runs $RUNS, concurrency $CONC, scenarios: $SCENARIOS"

for s in $SCENARIOS; do
    case $s in
    a) scenario_a a "$A_BYTES" "$A_RUNS" 4 "$A_RUNS" ;;
    b) scenario_b ;;
    c) scenario_c ;;
    d) scenario_d ;;
    *) die "unknown scenario $s (a, b, c, d)" ;;
    esac
done
if [ -n "$BIG" ]; then
    scenario_a a-big "$(bytes_of "$BIG")" "$BIG_RUNS" 1 1
fi

ELAPSED=$(awk -v a="$STARTED" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
{
    printf '# oras benchmark results (%s mode)\n\n' "$MODE"
    cat <<EOF
Run $START_DATE by \`benches/bench.sh\`: $RUNS run(s) per measurement ($A_RUNS in scenario a), tools alternating (the
starting tool rotates each run), median shown (the fastest run for the floors); oras \`--concurrency $CONC\`, curl floor $CONC in
parallel; \`skopeo sync\` $SK_RUNS run(s); scenario c restores $C_RESTORE_RUNS run(s); registry
storage on $REG_STORAGE; work files on disk ($TMP) in scenario a, on $SMALL_STORAGE in b and c; wall time of the whole benchmark ${ELAPSED}s. Ratios are time / time of the compared
tool (below 1 = oras faster). Peak RSS: the largest "Maximum resident set size" of
\`/usr/bin/time -v\` over the runs (for the curl floors: of the largest single curl process).
HTTP req/tag: \`[debug]\` lines (one per request) of one extra \`oras --debug\` run, divided
by the number of tags (total in brackets).

EOF
    BENCH_MODE=$MODE python3 "$here/report.py" table "$RAW" "$METRICS" "$COMPARE"
    printf '\n## Machine\n\n'
    machine
} >"$TMP/results.md"
cp "$TMP/results.md" "$RESULTS"
cat "$TMP/results.md"
