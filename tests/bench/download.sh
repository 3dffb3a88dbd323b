#!/usr/bin/env bash
# Asset download benchmark (issue 5), two parts in one run:
#
# 1. Warm download throughput of a large cached asset: the test kit's initramfs with its three
#    extensions padded with EXT_MB MiB of incompressible data each (~3 x EXT_MB MiB), built once
#    by the appliance, then served by `image-factory serve` (GET /image/...) and by nginx
#    (sendfile on, the same bytes copied into its root), alternating, with 1 and 16 concurrent
#    keep-alive clients (`wrk`, DURATION seconds per run). Our server restarts before the
#    downloads so its peak RSS (VmHWM) covers serving only (start, the first-serve BLAKE3 check,
#    the downloads), not the build. Every full-body GET is also BLAKE3-checked while streaming.
#    Each run also records the server's CPU time (/proc/<pid>/stat; nginx: master + workers),
#    reported as CPU seconds per GiB sent: less noisy than throughput on a shared host.
# 2. Cold-miss latency of initramfs, UKI and installer for the plain kit release (no padding):
#    COLD_RUNS requests per kind through the server, each for a new schematic (so each is a real
#    build), against the same builds through `image-factory build --rebuild` on a second data
#    directory holding the same release. p50/p95 of both and their ratio.
#
# Usage: tests/bench/download.sh   env (defaults): EXT_MB=100 DURATION=15 ROUNDS=2 COLD_RUNS=7 KEEP=0
#        IF_CACHE_VERIFYWINDOWSECONDS=N (the server's cache.verifyWindowSeconds, default 0:
#        every download hashed) measures the verify-window trade-off (docs/configuration.md).
# Needs: cargo (release build made when older than the sources), nginx, wrk, curl, python3, the
# test kit inputs (tests/kit/fetch-debian.sh, run here; idempotent). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=$ROOT/target/release/image-factory
EXT_MB=${EXT_MB:-100}
DURATION=${DURATION:-15}
COLD_RUNS=${COLD_RUNS:-7}
ROUNDS=${ROUNDS:-2}
VERSION=v1.11.0
PATH=$PATH:/usr/sbin:/sbin

for tool in nginx wrk curl python3; do
    command -v "$tool" >/dev/null || {
        echo "download.sh: $tool not found (apt-get install -y nginx wrk curl python3)" >&2
        exit 1
    }
done
if [ ! -x "$BIN" ] || [ -n "$(find src Cargo.toml Cargo.lock -newer "$BIN" -print -quit 2>/dev/null)" ]; then
    echo "download.sh: $BIN is missing or older than the sources: cargo build --release" >&2
    timeout 3600 cargo build --release >&2
fi
timeout 1800 tests/kit/fetch-debian.sh >&2

W=$(mktemp -d "${TMPDIR:-/tmp}/if-bench-download.XXXXXX")
chmod 755 "$W"
SERVER_PID="" NGINX_PID=""
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null
    if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'echo "download.sh: failed at line $LINENO" >&2' ERR
cp "$BIN" "$W/image-factory"
BIN=$W/image-factory

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_server DATA_DIR: runs `serve` on a free loopback port; sets SERVER_PID and URL.
start_server() {
    local port
    port=$(free_port)
    "$BIN" serve --data-dir "$1" --http-listen-addr "127.0.0.1:$port" --metrics-addr "" \
        --log-level warn 2>>"$W/serve.log" &
    SERVER_PID=$!
    URL=http://127.0.0.1:$port
    for _ in $(seq 1 200); do
        curl -sf "$URL/healthz" >/dev/null && return 0
        sleep 0.1
    done
    echo "download.sh: server did not start" >&2
    cat "$W/serve.log" >&2
    exit 1
}
stop_server() { kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""; }
schematic() { # YAML -> id, via the running server
    curl -sf -X POST --data-binary "$1" "$URL/schematics" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}

SCHEMATIC='customization:
  extraKernelArgs:
    - if.test=hello
  systemExtensions:
    officialExtensions:
      - siderolabs/kmod-test
      - siderolabs/fw-test
      - siderolabs/svc-test'

# --- part 1: warm throughput -------------------------------------------------------------------
echo "download.sh: synthesizing the kit release (3 extensions of ${EXT_MB} MiB) and importing it..." >&2
"$BIN" dev synth-release --out "$W/kit-big" --version "$VERSION" --extension-size-mb "$EXT_MB" >/dev/null 2>&1
"$BIN" import "$W/kit-big/bundle.tar" --data-dir "$W/data-big" --trust-key "$W/kit-big/signing-key.pub" >/dev/null 2>&1
start_server "$W/data-big"
ID=$(schematic "$SCHEMATIC")
ASSET=/image/$ID/$VERSION/initramfs-amd64.xz
echo "download.sh: building the large asset once (cold)..." >&2
BUILD_S=$(curl -sf -o "$W/asset" -w '%{time_total}' "$URL$ASSET")
SIZE=$(stat -c %s "$W/asset")
stop_server

mkdir -p "$W/www"
cp "$W/asset" "$W/www/asset"
chmod -R a+rX "$W/www"
NGINX_PORT=$(free_port)
# shellcheck source=tests/bench/nginx-files.sh
. tests/bench/nginx-files.sh
start_nginx_files "$W" "$W/www" "$NGINX_PORT"
sleep 1
curl -sf -o /dev/null "http://127.0.0.1:$NGINX_PORT/asset"

start_server "$W/data-big"
# First serve after start: the record's blob is hashed before it is sent.
curl -sf -o "$W/asset2" "$URL$ASSET"
cmp "$W/asset" "$W/asset2"

# wrk "Transfer/sec" in MiB/s.
rate() {
    wrk -t "$1" -c "$2" -d "${DURATION}s" --timeout 60s "$3" |
        awk '/Transfer\/sec/ { v=$2; u=substr(v, length(v)-1); n=v+0;
             if (u=="GB") n*=1024; else if (u=="KB") n/=1024; else if (u!="MB") n/=1048576;
             printf "%.0f", n }'
}
# CPU time (clock ticks, user + system, all threads) of the given processes so far.
cpu_ticks() {
    local p t=0
    for p in "$@"; do
        t=$((t + $(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat")))
    done
    echo "$t"
}
# measure WHO CLIENTS THREADS URL PIDS...: one wrk run; appends "<clients> <who> <MiB/s> <ticks>"
# (the server's CPU ticks during the run) to rates.txt.
measure() {
    local who=$1 clients=$2 threads=$3 url=$4 before r
    shift 4
    before=$(cpu_ticks "$@")
    r=$(rate "$threads" "$clients" "$url")
    echo "$clients $who $r $(($(cpu_ticks "$@") - before))" >>"$W/rates.txt"
}
NGINX_PIDS="$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')"
# One line per wrk run, the two servers alternating.
: >"$W/rates.txt"
for clients in 1 16; do
    threads=$([ "$clients" = 1 ] && echo 1 || echo 2)
    for round in $(seq 1 "$ROUNDS"); do
        echo "download.sh: $clients client(s), round $round of $ROUNDS..." >&2
        measure ours "$clients" "$threads" "$URL$ASSET" "$SERVER_PID"
        # shellcheck disable=SC2086 # one PID per word
        measure nginx "$clients" "$threads" "http://127.0.0.1:$NGINX_PORT/asset" $NGINX_PIDS
    done
done
OURS_HWM=$(awk '/VmHWM/ {print $2}' "/proc/$SERVER_PID/status")
NGINX_HWM=0
for p in $(pgrep -P "$NGINX_PID") "$NGINX_PID"; do
    h=$(awk '/VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    NGINX_HWM=$((NGINX_HWM + h))
done
stop_server
kill "$NGINX_PID"; NGINX_PID=""

# --- part 2: cold-miss latency -----------------------------------------------------------------
echo "download.sh: cold-miss latency (plain kit release, $COLD_RUNS runs per kind)..." >&2
"$BIN" dev synth-release --out "$W/kit" --version "$VERSION" >/dev/null 2>&1
for d in data-srv data-cli; do
    "$BIN" import "$W/kit/bundle.tar" --data-dir "$W/$d" --trust-key "$W/kit/signing-key.pub" >/dev/null 2>&1
done
printf '%s\n' "$SCHEMATIC" >"$W/S.yaml"
start_server "$W/data-srv"
: >"$W/cold.tsv"
for path in initramfs-amd64.xz metal-amd64-uki.efi installer-amd64.tar; do
    for i in $(seq 1 "$COLD_RUNS"); do
        # A new schematic each time: a new cache key, so a real build.
        id=$(schematic "${SCHEMATIC/if.test=hello/if.test=hello
    - bench.run=$path.$i}")
        t=$(curl -sf -o /dev/null -w '%{time_total}' "$URL/image/$id/$VERSION/$path")
        printf 'server\t%s\t%s\n' "$path" "$t" >>"$W/cold.tsv"
        s=$(date +%s.%N)
        "$BIN" build --schematic "$W/S.yaml" --version "$VERSION" --path "$path" \
            --data-dir "$W/data-cli" --rebuild >/dev/null 2>&1
        e=$(date +%s.%N)
        printf 'cli\t%s\t%s\n' "$path" "$(echo "$e - $s" | bc)" >>"$W/cold.tsv"
    done
done
stop_server

python3 - "$W/cold.tsv" "$SIZE" "$BUILD_S" "$OURS_HWM" "$NGINX_HWM" "$DURATION" "$EXT_MB" "$COLD_RUNS" \
    "$W/rates.txt" <<'EOF'
import os, statistics, sys
(cold, size, build_s, ours_hwm, nginx_hwm, duration, ext_mb, runs, rates) = sys.argv[1:]
got, cpu = {}, {}
tck = os.sysconf("SC_CLK_TCK")
for line in open(rates):
    clients, who, rate, ticks = line.split()
    got.setdefault((clients, who), []).append(int(rate))
    # server CPU seconds per GiB sent in this run
    gib = int(rate) * int(duration) / 1024
    cpu.setdefault((clients, who), []).append(int(ticks) / tck / gib if gib else float("nan"))
print(f"## Asset downloads (issue 5)\n")
print(f"Asset: initramfs-amd64.xz of the kit release with 3 x {ext_mb} MiB extensions, "
      f"{int(size) / 1048576:.0f} MiB; cold build through the server took {float(build_s):.1f} s; "
      f"cache.verifyWindowSeconds = {os.environ.get('IF_CACHE_VERIFYWINDOWSECONDS', '0')}.\n")
print("| clients | image-factory (MiB/s), median (runs) | nginx (MiB/s), median (runs) | ratio of medians |")
print("| --- | --- | --- | --- |")
for c in ("1", "16"):
    o, n = got[(c, "ours")], got[(c, "nginx")]
    mo, mn = statistics.median(o), statistics.median(n)
    print(f"| {c} | {mo:.0f} ({', '.join(map(str, o))}) | {mn:.0f} ({', '.join(map(str, n))}) "
          f"| {mo / mn:.2f} |")
# Each round runs ours and then nginx back to back: the ratio within a round cancels the
# host's slower drifts, so the rounds' ratios are reported too.
print()
for c in ("1", "16"):
    pairs = [a / b for a, b in zip(got[(c, "ours")], got[(c, "nginx")]) if b]
    geo = statistics.geometric_mean(pairs)
    print(f"{c} client(s), ours / nginx per round: {' '.join(f'{r:.2f}' for r in pairs)}; "
          f"geometric mean {geo:.2f}, ours ahead in {sum(r >= 1 for r in pairs)} of {len(pairs)}.")
print("\nServer CPU (user + system, all threads; nginx: master + workers) per GiB sent, "
      "median of the runs: "
      + "; ".join(f"{c} client(s): image-factory {statistics.median(cpu[(c, 'ours')]):.2f} s, "
                  f"nginx {statistics.median(cpu[(c, 'nginx')]):.2f} s" for c in ("1", "16"))
      + ".")
print(f"\nPeak RSS (VmHWM) of `image-factory serve` over start, first-serve check and all download "
      f"runs: {int(ours_hwm) / 1024:.1f} MiB; nginx master + workers: {int(nginx_hwm) / 1024:.1f} MiB.\n")
rows = {}
for line in open(cold):
    who, path, t = line.split("\t")
    rows.setdefault((path, who), []).append(float(t))
def pct(xs, p):
    xs = sorted(xs)
    k = (len(xs) - 1) * p
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)
print(f"Cold-miss latency, {runs} runs per kind (seconds):\n")
print("| asset | server p50 | server p95 | `build --rebuild` p50 | p95 | server / CLI (p50) |")
print("| --- | --- | --- | --- | --- | --- |")
for path in ("initramfs-amd64.xz", "metal-amd64-uki.efi", "installer-amd64.tar"):
    s, c = rows[(path, "server")], rows[(path, "cli")]
    print(f"| {path} | {pct(s, .5):.2f} | {pct(s, .95):.2f} | {pct(c, .5):.2f} | {pct(c, .95):.2f} "
          f"| {pct(s, .5) / pct(c, .5):.2f} |")
EOF
