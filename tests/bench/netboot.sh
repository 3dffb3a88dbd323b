#!/usr/bin/env bash
# Netboot storm benchmark (issue 17), same run, loopback: CLIENTS simulated machines boot at
# once, each fetching undionly.kpxe over TFTP (blksize 1468, as iPXE's loader would), then the
# kernel and the initramfs of a schematic over HTTP, one after the other. Wall time until the
# last machine has everything: ours (our TFTP + our /image/ URLs, warm cache) against
# tftpd-hpa + nginx serving the same files. Goal: ours >= 0.9x (reference time / ours).
# ROUNDS alternating runs each; medians reported. Every file every client got is checked
# against its SHA-256 after the timed part.
#
# Usage: tests/bench/netboot.sh   env (defaults): CLIENTS=50 ROUNDS=3 EXT_MB=20 KEEP=0
#        BIN=path/to/image-factory (default target/release/image-factory, built when missing or
#        older than the sources).
# Needs: atftp, tftpd-hpa's in.tftpd, nginx, curl, python3, Debian's ipxe (undionly.kpxe).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=${BIN:-$ROOT/target/release/image-factory}
CLIENTS=${CLIENTS:-50}
ROUNDS=${ROUNDS:-3}
EXT_MB=${EXT_MB:-20}
STEP_TIMEOUT=${STEP_TIMEOUT:-1800}
VERSION=v1.11.0
IPXE_DIR=/usr/lib/ipxe
PATH=$PATH:/usr/sbin:/sbin

for tool in atftp in.tftpd nginx curl python3 sha256sum; do
    command -v "$tool" >/dev/null || {
        echo "netboot.sh: $tool not found (apt-get install -y atftp tftpd-hpa nginx curl python3)" >&2
        exit 1
    }
done
[ -f "$IPXE_DIR/undionly.kpxe" ] || { echo "netboot.sh: $IPXE_DIR/undionly.kpxe missing (apt-get install -y ipxe)" >&2; exit 1; }

# shellcheck source=tests/bench/kit-setup.sh
. tests/bench/kit-setup.sh
bench_kit_setup netboot.sh
SERVER_PID="" HPA_PID="" NGINX_PID=""
stop_all() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    [ -n "$HPA_PID" ] && kill "$HPA_PID" 2>/dev/null && wait "$HPA_PID" 2>/dev/null
    [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
    return 0
}
trap 'stop_all; if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $W" >&2; else rm -rf "$W"; fi' EXIT

free_port() { python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.$1); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }
now() { date +%s.%N; }
median() { python3 -c 'import statistics,sys; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.3f}")' "$@"; }

# Our server: HTTP, TFTP on Debian's iPXE directory, enough transfers for every client.
HTTP_PORT=$(free_port SOCK_STREAM)
TFTP_PORT=$(free_port SOCK_DGRAM)
IF_TFTP_LISTENADDR=127.0.0.1:$TFTP_PORT IF_TFTP_ROOT=$IPXE_DIR IF_TFTP_MAXTRANSFERS=$((CLIENTS + 8)) \
    "$BIN" serve --data-dir "$W/data" --http-listen-addr "127.0.0.1:$HTTP_PORT" --metrics-addr "" \
    --log-level warn 2>"$W/serve.log" &
SERVER_PID=$!
URL=http://127.0.0.1:$HTTP_PORT
for _ in $(seq 200); do curl -sf "$URL/healthz" >/dev/null && break; sleep 0.1; done
curl -sf "$URL/healthz" >/dev/null || { cat "$W/serve.log" >&2; exit 1; }
ID=$(curl -sf -X POST --data-binary @"$W/S.yaml" "$URL/schematics" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
chmod 755 "$W"  # nginx workers run unprivileged
mkdir -p "$W/www" "$W/out"
echo "netboot.sh: building kernel and initramfs once (cold, not timed)..." >&2
T curl -sf -o "$W/www/kernel-amd64" "$URL/image/$ID/$VERSION/kernel-amd64"
T curl -sf -o "$W/www/initramfs-amd64.xz" "$URL/image/$ID/$VERSION/initramfs-amd64.xz"
chmod -R a+rX "$W/www"
SHA_LOADER=$(sha256sum <"$IPXE_DIR/undionly.kpxe" | cut -d' ' -f1)
SHA_KERNEL=$(sha256sum <"$W/www/kernel-amd64" | cut -d' ' -f1)
SHA_INITRD=$(sha256sum <"$W/www/initramfs-amd64.xz" | cut -d' ' -f1)
echo "netboot.sh: loader $(stat -c %s "$IPXE_DIR/undionly.kpxe") B, kernel $(stat -c %s "$W/www/kernel-amd64") B, initramfs $(stat -c %s "$W/www/initramfs-amd64.xz") B" >&2

# The reference: tftpd-hpa on the same directory, nginx on the same two files.
HPA_PORT=$(free_port SOCK_DGRAM)
if [ "$(id -u)" -eq 0 ]; then HPA_ARGS=(-s "$IPXE_DIR"); HPA_PREFIX=""; else HPA_ARGS=("$IPXE_DIR"); HPA_PREFIX="$IPXE_DIR/"; fi
in.tftpd -L -a "127.0.0.1:$HPA_PORT" "${HPA_ARGS[@]}" 2>"$W/hpa.log" &
HPA_PID=$!
NGINX_PORT=$(free_port SOCK_STREAM)
# shellcheck source=tests/bench/nginx-files.sh
. tests/bench/nginx-files.sh
start_nginx_files "$W" "$W/www" "$NGINX_PORT"
for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$NGINX_PORT/kernel-amd64" && break; sleep 0.1; done

# machine N TFTP_PORT LOADER_NAME HTTP_BASE: one simulated boot into $W/out/N.*
machine() {
    atftp --option "blksize 1468" -g -r "$3" -l "$W/out/$1.loader" 127.0.0.1 "$2" >/dev/null 2>&1 &&
        curl -sf -o "$W/out/$1.kernel" "$4/kernel-amd64" &&
        curl -sf -o "$W/out/$1.initrd" "$4/initramfs-amd64.xz"
}
check() { [ "$(sha256sum <"$1" | cut -d' ' -f1)" = "$2" ] || { echo "netboot.sh: $1 differs" >&2; exit 1; }; }
# storm TFTP_PORT LOADER_NAME HTTP_BASE: wall seconds for CLIENTS machines at once
storm() {
    local t0 t1 pids=() i
    rm -f "$W/out/"*
    t0=$(now)
    for i in $(seq "$CLIENTS"); do
        machine "$i" "$1" "$2" "$3" &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || { echo "netboot.sh: a machine failed" >&2; exit 1; }; done
    t1=$(now)
    for i in $(seq "$CLIENTS"); do
        check "$W/out/$i.loader" "$SHA_LOADER"
        check "$W/out/$i.kernel" "$SHA_KERNEL"
        check "$W/out/$i.initrd" "$SHA_INITRD"
    done
    python3 -c "print(f'{$t1 - $t0:.3f}')"
}

ours=() ref=()
for r in $(seq "$ROUNDS"); do
    ref+=("$(storm "$HPA_PORT" "${HPA_PREFIX}undionly.kpxe" "http://127.0.0.1:$NGINX_PORT")")
    ours+=("$(storm "$TFTP_PORT" undionly.kpxe "$URL/image/$ID/$VERSION")")
    echo "round $r: tftpd-hpa + nginx ${ref[-1]} s, ours ${ours[-1]} s" >&2
done
R=$(median "${ref[@]}") O=$(median "${ours[@]}")
python3 - "$CLIENTS" "$R" "$O" "${ref[*]}" "${ours[*]}" <<'EOF'
import sys
n, r, o, refs, ourss = sys.argv[1:]
n, r, o = int(n), float(r), float(o)
print("| run | tftpd-hpa + nginx | ours | ratio (reference / ours; goal >= 0.9) | rounds (reference · ours) |")
print("| --- | --- | --- | --- | --- |")
print(f"| {n} machines: undionly.kpxe (TFTP) + kernel + initramfs (HTTP) | {r:.2f} s | {o:.2f} s | {r/o:.2f}x | {refs} · {ourss} |")
EOF
