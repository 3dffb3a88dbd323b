#!/usr/bin/env bash
# TFTP throughput benchmark (issue 17), same run, loopback, same client (atftp) for both servers:
#
# 1. One SIZE_MB MiB file at blksize 1468: ours at windowsize 1 vs tftpd-hpa (which has no
#    windowsize; goal >= 1.0x), and ours at windowsize 16 against the same tftpd-hpa figure.
#    ROUNDS alternating runs each; the median is reported.
# 2. CLIENTS simultaneous clients each fetching a MANY_MB MiB file at blksize 1468, window 1:
#    wall time until the last finishes, ours vs tftpd-hpa.
# Every download is checked against the file's SHA-256.
#
# Usage: tests/bench/tftp.sh   env (defaults): SIZE_MB=50 ROUNDS=3 CLIENTS=50 MANY_MB=5 KEEP=0
#        BIN=path/to/image-factory (default target/release/image-factory, built when missing or
#        older than the sources).
# Needs: atftp, tftpd-hpa's in.tftpd (apt-get install -y atftp tftpd-hpa; stop the tftpd-hpa
# service if the package started one: it is run here on its own port), python3.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SIZE_MB=${SIZE_MB:-50}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-50}
MANY_MB=${MANY_MB:-5}
PATH=$PATH:/usr/sbin:/sbin

for tool in atftp in.tftpd python3 sha256sum; do
    command -v "$tool" >/dev/null || {
        echo "tftp.sh: $tool not found (apt-get install -y atftp tftpd-hpa python3)" >&2
        exit 1
    }
done
if [ -z "${BIN:-}" ]; then
    BIN=$ROOT/target/release/image-factory
    if [ ! -x "$BIN" ] || [ -n "$(find src Cargo.toml Cargo.lock -newer "$BIN" -print -quit 2>/dev/null)" ]; then
        echo "tftp.sh: $BIN is missing or older than the sources: cargo build --release" >&2
        timeout 3600 cargo build --release >&2
    fi
fi

W=$(mktemp -d "${TMPDIR:-/tmp}/if-bench-tftp.XXXXXX")
chmod 755 "$W"
OURS_PID="" HPA_PID=""
cleanup() {
    [ -n "$OURS_PID" ] && kill "$OURS_PID" 2>/dev/null && wait "$OURS_PID" 2>/dev/null
    [ -n "$HPA_PID" ] && kill "$HPA_PID" 2>/dev/null && wait "$HPA_PID" 2>/dev/null
    if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'echo "tftp.sh: failed at line $LINENO" >&2' ERR

free_udp_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }

mkdir -p "$W/root" "$W/out" "$W/data"
chmod 755 "$W/root"
head -c $((SIZE_MB * 1024 * 1024)) /dev/urandom >"$W/root/big.bin"
head -c $((MANY_MB * 1024 * 1024)) /dev/urandom >"$W/root/many.bin"
chmod 644 "$W/root/"*.bin
BIG_SHA=$(sha256sum <"$W/root/big.bin" | cut -d' ' -f1)
MANY_SHA=$(sha256sum <"$W/root/many.bin" | cut -d' ' -f1)

OURS_PORT=$(free_udp_port)
IF_TFTP_LISTENADDR=127.0.0.1:$OURS_PORT IF_TFTP_ROOT=$W/root IF_TFTP_MAXTRANSFERS=$((CLIENTS + 8)) \
    "$BIN" serve --http-listen-addr 127.0.0.1:0 --metrics-addr "" --data-dir "$W/data" \
    2>"$W/ours.log" &
OURS_PID=$!
HPA_PORT=$(free_udp_port)
HPA_ARGS=(-L -a "127.0.0.1:$HPA_PORT")
# --secure chroots into the root (needs root); otherwise names are relative by our own prefix.
if [ "$(id -u)" -eq 0 ]; then HPA_ARGS+=(-s "$W/root"); HPA_PREFIX=""; else HPA_ARGS+=("$W/root"); HPA_PREFIX="$W/root/"; fi
in.tftpd "${HPA_ARGS[@]}" 2>"$W/hpa.log" &
HPA_PID=$!
for _ in $(seq 100); do
    grep -q "tftp listener bound" "$W/ours.log" 2>/dev/null && break
    sleep 0.1
done
grep -q "tftp listener bound" "$W/ours.log" || { cat "$W/ours.log" >&2; exit 1; }

# fetch PORT NAME OUT WINDOW: one atftp download at blksize 1468 (window 0 = no option).
fetch() {
    local opts=(--option "blksize 1468")
    [ "$4" -gt 0 ] && opts+=(--option "windowsize $4")
    atftp "${opts[@]}" -g -r "$2" -l "$3" 127.0.0.1 "$1" >/dev/null 2>&1
}
check() { [ "$(sha256sum <"$1" | cut -d' ' -f1)" = "$2" ] || { echo "tftp.sh: $1 differs" >&2; exit 1; }; }
# one_run PORT NAME WINDOW: seconds for one download of big.bin
one_run() {
    rm -f "$W/out/big"
    local t0 t1
    t0=$(now)
    fetch "$1" "$2" "$W/out/big" "$3"
    t1=$(now)
    check "$W/out/big" "$BIG_SHA"
    python3 -c "print(f'{$t1 - $t0:.3f}')"
}
median() { python3 -c 'import statistics,sys; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.3f}")' "$@"; }

hpa=() ours1=() ours16=()
for r in $(seq "$ROUNDS"); do
    hpa+=("$(one_run "$HPA_PORT" "${HPA_PREFIX}big.bin" 0)")
    ours1+=("$(one_run "$OURS_PORT" big.bin 1)")
    ours16+=("$(one_run "$OURS_PORT" big.bin 16)")
    echo "round $r: tftpd-hpa ${hpa[-1]} s, ours w1 ${ours1[-1]} s, ours w16 ${ours16[-1]} s" >&2
done
H=$(median "${hpa[@]}") O1=$(median "${ours1[@]}") O16=$(median "${ours16[@]}")

# many PORT NAME: wall seconds for CLIENTS simultaneous downloads of many.bin
many() {
    local t0 t1 pids=()
    t0=$(now)
    for i in $(seq "$CLIENTS"); do
        fetch "$1" "$2" "$W/out/m$i" 1 &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
    t1=$(now)
    for i in $(seq "$CLIENTS"); do check "$W/out/m$i" "$MANY_SHA"; rm -f "$W/out/m$i"; done
    python3 -c "print(f'{$t1 - $t0:.3f}')"
}
MH=$(many "$HPA_PORT" "${HPA_PREFIX}many.bin")
MO=$(many "$OURS_PORT" many.bin)

python3 - "$SIZE_MB" "$H" "$O1" "$O16" "$CLIENTS" "$MANY_MB" "$MH" "$MO" <<'EOF'
import sys
size, h, o1, o16, n, many, mh, mo = sys.argv[1:]
size, h, o1, o16, many, mh, mo = int(size), float(h), float(o1), float(o16), int(many), float(mh), float(mo)
print(f"| run | tftpd-hpa | ours | ratio (tftpd-hpa / ours; goal >= 1.0) |")
print(f"| --- | --- | --- | --- |")
print(f"| {size} MiB, blksize 1468, window 1 | {h:.2f} s ({size/h:.1f} MiB/s) | {o1:.2f} s ({size/o1:.1f} MiB/s) | {h/o1:.2f}x |")
print(f"| {size} MiB, blksize 1468, ours window 16 | {h:.2f} s | {o16:.2f} s ({size/o16:.1f} MiB/s) | {h/o16:.2f}x |")
print(f"| {n} clients x {many} MiB, blksize 1468, window 1 | {mh:.2f} s | {mo:.2f} s | {mh/mo:.2f}x |")
EOF
