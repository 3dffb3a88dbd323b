#!/usr/bin/env bash
# Replication benchmark (issue 18, point 6): real `image-factory serve` processes on loopback,
# each in its own data directory, release build. In one run:
#
#   1. big blobs: the kit release with extensions padded to $BIG_MB MiB (three of them) imported
#      on A; B joins and replicates it from A alone. Reported: each big blob's fetch (from B's
#      `blob fetched from members` lines: size, seconds; three fetched at once), the whole
#      release's replication (bytes / wall time), B's peak RSS (VmHWM) and its growth over an
#      idle node's RSS (A's, read before B starts), and — the references — the same big blobs
#      downloaded one after another over A's HTTP registry endpoint with curl, once into
#      /dev/null (the transport alone), once into files beside B's data directory (a download
#      that keeps its bytes, as a replica must: each file is kept until the section ends; curl
#      checks no hash, B checks two), and once into files checked as B checks it, as the bytes
#      arrive: curl | tee into the file, `b3sum` (through a fifo) and `openssl dgst -sha256`
#      (the Debian-tool pipeline a script replicating over HTTP would run; both digests
#      compared with the blob's names).
#   2. fan-out: the release padded to $FAN_MB MiB per extension on A; four fresh members started
#      at once replicate it (wall time until all four hold it), vs four sequential curl
#      downloads of the same blobs from A's HTTP, into /dev/null and into kept files checked as
#      in 1 (the blobs' list, with their SHA-256, made before the clock starts).
#   3. schematic latency: POST a schematic on A, poll GET on another member until it serves it
#      ($SCHEMATICS times; median and max).
#
# Usage: tests/bench/replication.sh   env (defaults): BIG_MB=1024 FAN_MB=300 SCHEMATICS=10
#                                     STEP_TIMEOUT=1800 KEEP=0 SECTIONS=123 CARGO_TARGET_DIR
#                                     SETTLE=15 (seconds between one measurement and the next)
#                                     REFS_FIRST=0 (1: the HTTP references of 1 before B)
#                                     BIN (a binary to measure instead of the release build)
#                                     LINK_MBIT (nodes in network namespaces, links limited)
# Needs jq, curl, openssl, b3sum (apt-get install -y jq curl openssl b3sum), and the test kit
# inputs (tests/kit/fetch-debian.sh). Loopback only, or with LINK_MBIT (root) namespaces it
# creates on a bridge of its own, 10.77.0.0/24, removed at exit; every wait is bounded by
# STEP_TIMEOUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIG_MB=${BIG_MB:-1024}
FAN_MB=${FAN_MB:-300}
SCHEMATICS=${SCHEMATICS:-10}
STEP_TIMEOUT=${STEP_TIMEOUT:-1800}
SETTLE=${SETTLE:-15}
REFS_FIRST=${REFS_FIRST:-0}
VERSION=v1.11.0
SECTIONS=${SECTIONS:-123}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/image-factory}
[ -x "$BIN" ] || { echo "replication.sh: no release build at $BIN (cargo build --release)" >&2; exit 1; }
for tool in jq curl openssl b3sum; do
    command -v "$tool" >/dev/null || {
        echo "replication.sh: $tool not found (apt-get install -y jq curl openssl b3sum)" >&2
        exit 1
    }
done
timeout 1800 tests/kit/fetch-debian.sh >&2

W=$(mktemp -d "${TMPDIR:-/tmp}/if-bench-replication.XXXXXX")
PIDS=()
# With LINK_MBIT, every node runs in a network namespace of its own on a bridge, 10.77.0.0/24,
# its link limited to LINK_MBIT each way (tc tbf): the source's uplink becomes the bottleneck
# that striping is meant to relieve. Needs root.
LINK_MBIT=${LINK_MBIT:-}
NET=ifb$$
NETNS=()
declare -A ADDR
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for n in "${NETNS[@]}"; do ip netns del "$n" 2>/dev/null || true; done
    [ -z "$LINK_MBIT" ] || ip link del "${NET}br" 2>/dev/null || true
    if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT
cp "$BIN" "$W/image-factory"
BIN=$W/image-factory
ms() { date +%s%3N; }
log() { echo "replication.sh: $*" >&2; }

# until SECONDS_MAX CMD...: runs CMD every 50 ms until it succeeds; fails after SECONDS_MAX.
until_ok() {
    local max=$1 start
    shift
    start=$(date +%s)
    until "$@" >/dev/null 2>&1; do
        if [ $(($(date +%s) - start)) -ge "$max" ]; then log "timed out: $*"; return 1; fi
        sleep 0.05
    done
}

# net_node NAME: NAME's namespace, its veth on the bridge and both ends' rate limits.
net_node() {
    local name=$1 i=$((${#NETNS[@]} + 1)) ns="$NET-$1"
    if [ "$i" = 1 ]; then
        ip link add "${NET}br" type bridge
        ip addr add 10.77.0.254/24 dev "${NET}br"
        ip link set "${NET}br" up
    fi
    ip netns add "$ns"
    NETNS+=("$ns")
    ip link add "${NET}v$i" type veth peer name eth0 netns "$ns"
    ip link set "${NET}v$i" master "${NET}br" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "10.77.0.$i/24" dev eth0
    ip -n "$ns" link set eth0 up
    tc qdisc add dev "${NET}v$i" root tbf rate "${LINK_MBIT}mbit" burst 1mb latency 50ms
    tc -n "$ns" qdisc add dev eth0 root tbf rate "${LINK_MBIT}mbit" burst 1mb latency 50ms
    ADDR[$name]=10.77.0.$i
}

# start NAME [BOOTSTRAP]: serve on $W/NAME (replication on loopback, or on NAME's namespace
# with LINK_MBIT), HTTP address in $W/NAME.http.
start() {
    local name=$1 boot=${2:-} addr=127.0.0.1 run=()
    if [ -n "$LINK_MBIT" ]; then
        [ -n "${ADDR[$name]:-}" ] || net_node "$name"
        addr=${ADDR[$name]}
        run=(ip netns exec "$NET-$name")
    fi
    IF_REPLICATION_ENABLED=true \
        IF_REPLICATION_LISTENADDRS=${LISTEN:-/ip4/$addr/udp/0/quic-v1,/ip4/$addr/tcp/0} \
        IF_REPLICATION_BOOTSTRAPPEERS=$boot IF_CACHE_SCRUBINTERVALSECONDS=0 \
        IF_TFTP_LISTENADDR=$addr:0 RUST_LOG='' \
        "${run[@]}" "$BIN" serve --log-format json --http-listen-addr "$addr:0" --metrics-addr '' \
        --data-dir "$W/$name" >/dev/null 2>"$W/$name.log" &
    PIDS+=($!)
    echo $! >"$W/$name.pid"
    until_ok 60 grep -q '"http listener bound"' "$W/$name.log"
    grep '"http listener bound"' "$W/$name.log" | head -1 | jq -r .addr >"$W/$name.http"
}
http() { cat "$W/$1.http"; }
# boot NAME: NAME's bound addresses with /p2p/<id>, comma-separated.
boot() {
    curl -s "http://$(http "$1")/status" |
        jq -r '.replication as $r | [$r.listenAddrs[] | "\(.)/p2p/\($r.peerId)"] | join(",")'
}
# stop NAME: SIGTERM and wait.
stop() {
    local p
    p=$(cat "$W/$1.pid")
    kill "$p" 2>/dev/null || true
    timeout 60 tail --pid="$p" -f /dev/null || true
}
# synth_import MB DIR: the kit release with extensions of MB MiB, imported into DIR.
synth_import() {
    timeout "$STEP_TIMEOUT" "$BIN" dev synth-release --out "$W/kit$1" --version "$VERSION" \
        --extension-size-mb "$1" >/dev/null 2>"$W/synth.log" || { cat "$W/synth.log" >&2; exit 1; }
    timeout "$STEP_TIMEOUT" "$BIN" import "$W/kit$1/bundle.tar" --data-dir "$2" \
        --trust-key "$W/kit$1/signing-key.pub" >/dev/null 2>"$W/import.log" || { cat "$W/import.log" >&2; exit 1; }
    rm -rf "$W/kit$1"
}
# invite_join FOUNDER MEMBER...: the founder's cluster, joined by each member (all stopped).
invite_join() {
    local a=$1 m
    shift
    for m in "$@"; do
        "$BIN" cluster invite --data-dir "$W/$a" --days 1 --out "$W/$m.inv" >/dev/null 2>&1
        "$BIN" cluster join --data-dir "$W/$m" "$W/$m.inv" >/dev/null 2>&1
    done
}
# big_blobs DIR MIN_MB: "<blake3> <sha256> <size>" of the blobs of at least MIN_MB MiB in DIR.
big_blobs() {
    local f
    find "$1/blobs" -mindepth 2 -maxdepth 2 -type f -size +"$(($2 * 1024 - 1))"k | while read -r f; do
        echo "$(basename "$f") $(sha256sum "$f" 2>/dev/null | cut -d' ' -f1) $(stat -c %s "$f" 2>/dev/null)"
    done
}
# http_blob NODE SHA [OUT]: downloads a blob over NODE's registry endpoint into OUT
# (/dev/null); prints "seconds bytes".
http_blob() {
    local repo out
    for repo in kmod-test fw-test svc-test; do
        out=$(curl -s -o "${3:-/dev/null}" -w '%{http_code} %{time_total} %{size_download}' \
            "http://$(http "$1")/v2/siderolabs/$repo/blobs/sha256:$2")
        if [ "${out%% *}" = 200 ]; then echo "${out#* }"; return 0; fi
    done
    log "blob sha256:$2 not served over HTTP"
    return 1
}
# http_blob_checked NODE SHA B3 OUT: downloads a blob over NODE's registry endpoint into OUT,
# hashing it with b3sum and openssl as it arrives; checks both digests; prints "seconds bytes".
http_blob_checked() {
    local repo t0 t1 p
    for repo in kmod-test fw-test svc-test; do
        rm -f "$4" "$W/dl.fifo"
        mkfifo "$W/dl.fifo"
        b3sum --no-names <"$W/dl.fifo" >"$W/dl.b3" &
        p=$!
        t0=$(date +%s%N)
        curl -sf "http://$(http "$1")/v2/siderolabs/$repo/blobs/sha256:$2" |
            tee "$4" "$W/dl.fifo" | openssl dgst -sha256 -r >"$W/dl.sha" || true
        wait "$p" || true
        t1=$(date +%s%N)
        rm -f "$W/dl.fifo"
        if [ "$(cut -d' ' -f1 "$W/dl.sha")" = "$2" ]; then
            [ "$(cat "$W/dl.b3")" = "$3" ] || { log "blob sha256:$2: b3sum disagrees with its name"; return 1; }
            echo "$(echo "($t1 - $t0) / 1000000000" | bc -l) $(stat -c %s "$4")"
            return 0
        fi
    done
    log "blob sha256:$2 not served over HTTP"
    return 1
}
ts() { jq -r 'select(.message == "'"$2"'") | .timestamp' "$1" | head -1; }
epoch_ms() { date -d "$1" +%s%3N; }

echo "== replication benchmark: $(date -u +%FT%TZ), $(git rev-parse --short HEAD 2>/dev/null || echo '?'), BIG_MB=$BIG_MB FAN_MB=$FAN_MB"

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$(cat "$W/$1.pid")/status"; }
# cpu_s NODE: the CPU seconds (user + system) NODE's process has used so far.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$(cat "$W/$1.pid")/stat"; }

# 1. Big blobs from one member.
if [[ $SECTIONS == *1* ]]; then
log "synthesizing and importing the release with ${BIG_MB} MiB extensions on A..."
synth_import "$BIG_MB" "$W/a"
invite_join a b
start a
# The list of big blobs (their SHA-256 computed here) is made once for the three references.
big_list=$(big_blobs "$W/a" "$BIG_MB")
# The downloads into files keep their bytes, as a replica keeps its blobs, and every measurement
# (B's and each reference's) starts SETTLE seconds after the one before, so that none runs while
# the last one's files are still being written back. On a VM whose host takes back free memory
# (free-page reporting), a page-cache write is fast only while the guest has unreported free
# fragments left; whoever writes first uses them up, so REFS_FIRST=1 runs the references before
# B (see "Fresh pages" in docs/benchmarks.md).
ref_lines=()
references() {
    local out hs ht b3 sha size secs bytes
    for out in /dev/null "a file (kept)" "a file (kept), checked (b3sum, openssl sha256)"; do
        if [ "$out" != /dev/null ]; then
            rm -rf "$W/ref" && mkdir -p "$W/ref" && sleep "$SETTLE"
        fi
        hs=0 ht=0
        while read -r b3 sha size; do
            case $out in
                /dev/null) read -r secs bytes < <(http_blob a "$sha") ;;
                *checked*) read -r secs bytes < <(http_blob_checked a "$sha" "$b3" "$W/ref/checked-$sha") ;;
                *) read -r secs bytes < <(http_blob a "$sha" "$W/ref/file-$sha") ;;
            esac
            hs=$((hs + bytes))
            ht=$(echo "$ht + $secs" | bc -l)
        done <<<"$big_list"
        ref_lines+=("$out|$hs|$ht")
    done
    rm -rf "$W/ref"
}
[ "$REFS_FIRST" = 1 ] && references
sleep "$SETTLE"
idle=$(rss_kib a)
cpu_a0=$(cpu_s a)
start b "$(boot a)"
until_ok "$STEP_TIMEOUT" grep -q '"release replicated"' "$W/b.log"
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$(cat "$W/b.pid")/status")
cpu_b=$(cpu_s b)
cpu_a=$(echo "$(cpu_s a) - $cpu_a0" | bc)
t0=$(epoch_ms "$(ts "$W/b.log" 'fetching a release from a member')")
t1=$(epoch_ms "$(ts "$W/b.log" 'release replicated')")
total=$(jq -s '[.[] | select(.message == "blob fetched from members") | .size] | add' "$W/b.log")
echo "-- 1. release with 3 x ${BIG_MB} MiB extensions, A -> B (B fetches 4 blobs at once)"
jq -r --argjson min $((BIG_MB << 20)) 'select(.message == "blob fetched from members" and .size >= $min)
    | "big blob \(.blob[7:19])…  \(.size) bytes  \(.seconds | . * 1000 | round / 1000) s  \((.size / .seconds / 1048576) | round) MiB/s  sources \(.members)"' "$W/b.log"
echo "whole release: $total bytes in $((t1 - t0)) ms = $((total * 1000 / (t1 - t0) / 1048576)) MiB/s aggregate"
# CPU per GiB moved, both ends: B's includes its page-cache writes, whose cost varies on a VM that
# hands free memory back (see "Fresh pages" in docs/benchmarks.md); A's is the sending alone.
echo "CPU seconds per GiB of the release: receiver B $(echo "$cpu_b * 1073741824 / $total" | bc -l | xargs printf %.2f) (its whole life), sender A $(echo "$cpu_a * 1073741824 / $total" | bc -l | xargs printf %.2f)"
echo "receiver B peak RSS (VmHWM): $((hwm / 1024)) MiB; an idle node (A before B started): $((idle / 1024)) MiB; growth $(((hwm - idle) / 1024)) MiB"
big_total=$(jq -s --argjson min $((BIG_MB << 20)) '[.[] | select(.message == "blob fetched from members" and .size >= $min) | .size] | add' "$W/b.log")
# Wall time from the first big blob's start (its line's time less its seconds) to the last one's
# end: right whether the blobs are fetched all at once or some after others.
big_secs=$(jq -s --argjson min $((BIG_MB << 20)) '
    def at: (.timestamp | capture("^(?<s>[^.Z]+)(\\.(?<f>[0-9]+))?Z$")) as $c
        | ($c.s + "Z" | fromdateiso8601) + ("0." + ($c.f // "0") | tonumber);
    [.[] | select(.message == "blob fetched from members" and .size >= $min)]
    | ([.[] | at] | max) - ([.[] | at - .seconds] | min)' "$W/b.log")
echo "replication, the big blobs (first start to last end): $big_total bytes in $big_secs s = $(echo "$big_total / $big_secs / 1048576" | bc -l | xargs printf %.0f) MiB/s"
[ "$REFS_FIRST" = 1 ] || references
echo "HTTP references ran $([ "$REFS_FIRST" = 1 ] && echo before || echo after) B"
for line in "${ref_lines[@]}"; do
    IFS='|' read -r out hs ht <<<"$line"
    echo "HTTP (curl, A's registry endpoint) into $out, the big blobs one after another: $hs bytes in $(printf %.3f "$ht") s = $(echo "$hs / $ht / 1048576" | bc -l | xargs printf %.0f) MiB/s; replication / HTTP = $(echo "($big_total / $big_secs) / ($hs / $ht)" | bc -l | xargs printf %.2f)"
done
stop b
stop a
rm -rf "$W/a" "$W/b"
fi

# 2. Fan-out.
if [[ $SECTIONS == *2* ]]; then
log "synthesizing and importing the release with ${FAN_MB} MiB extensions on A..."
synth_import "$FAN_MB" "$W/a"
invite_join a m1 m2 m3 m4
start a
boot_a=$(boot a)
sleep "$SETTLE"
t0=$(ms)
for m in m1 m2 m3 m4; do start "$m" "$boot_a"; done
for m in m1 m2 m3 m4; do until_ok "$STEP_TIMEOUT" grep -q '"release replicated"' "$W/$m.log"; done
t1=$(ms)
fan_bytes=$(jq -s '[.[] | select(.message == "blob fetched from members") | .size] | add' "$W/m1.log")
echo "-- 2. fan-out of the release (3 x ${FAN_MB} MiB extensions, $fan_bytes bytes) from A to 4 members started at once"
echo "replication: all four hold it after $((t1 - t0)) ms (including their start)"
for m in m1 m2 m3 m4; do
    echo "  $m: $(jq -r 'select(.message == "blob fetched from members" and .members > 1) | .blob' "$W/$m.log" | wc -l) blobs from more than one member"
done
# The list of big blobs (their SHA-256 computed here) is made once, outside the timed loops.
fan_list=$(big_blobs "$W/a" "$FAN_MB")
hs=0
t0=$(ms)
for _ in 1 2 3 4; do
    while read -r b3 sha size; do
        http_blob a "$sha" >/dev/null
        hs=$((hs + size))
    done <<<"$fan_list"
done
t1=$(ms)
echo "HTTP: four sequential downloads of the big blobs into /dev/null ($hs bytes) in $((t1 - t0)) ms"
t0=$(ms)
mkdir -p "$W/ref"
for n in 1 2 3 4; do
    while read -r b3 sha size; do
        http_blob_checked a "$sha" "$b3" "$W/ref/$n-$sha" >/dev/null
    done <<<"$fan_list"
done
t1=$(ms)
rm -rf "$W/ref"
echo "HTTP: four sequential downloads of the big blobs into files (kept, as four members keep them), checked (b3sum, openssl sha256), in $((t1 - t0)) ms"
fi

# 3. Schematic latency A -> m3.
# (it uses the members of section 2)
[[ $SECTIONS == *2*3* ]] || exit 0
echo "-- 3. schematic created on A, served by m3"
lat=()
for i in $(seq 1 "$SCHEMATICS"); do
    body=$(printf 'customization:\n  extraKernelArgs:\n    - bench.latency=%s-%s\n' "$i" "$RANDOM")
    t0=$(ms)
    id=$(curl -s -X POST --data-binary "$body" "http://$(http a)/schematics" | jq -r .id)
    until_ok 60 curl -sf -o /dev/null "http://$(http m3)/schematics/$id"
    t1=$(ms)
    lat+=($((t1 - t0)))
done
sorted=$(printf '%s\n' "${lat[@]}" | sort -n)
echo "latency ms: median $(echo "$sorted" | sed -n "$(((SCHEMATICS + 1) / 2))p"), max $(echo "$sorted" | tail -1) (poll every 50 ms; $SCHEMATICS schematics)"
