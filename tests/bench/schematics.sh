#!/usr/bin/env bash
# Schematic API benchmark (issue 2): POST /schematics throughput with every request a new
# schematic (a real durable sled write, 201 only after group-committed flush), duplicate
# POSTs, GET /schematics/{id}, the server's peak RSS, and, as context, nginx returning a
# fixed small 200 body on loopback with the same wrk settings (the machine's HTTP ceiling).
#
# Usage (from anywhere; builds nothing):
#   cargo build --release && tests/bench/schematics.sh
# Needs: target/release/image-factory, wrk, nginx, curl (apt-get install -y wrk nginx curl).
# Env (defaults): DURATION=10s CONNECTIONS=64 THREADS=1 ROUNDS=3 WARMUP=2s
#   BIN=target/release/image-factory  BENCH_LOG_LEVEL=info (server --log-level; logs go to a
#   file)  KEEP_LOGS=1 keeps the work directory (wrk outputs, server log, data).
# Each round runs the four workloads back to back, so a disturbance hits them alike; the
# summary gives the median round per workload. All traffic goes to 127.0.0.1; every wrk
# run is bounded by DURATION and the script stops both servers when it exits.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-2s}
BIN=${BIN:-target/release/image-factory}
BENCH_LOG_LEVEL=${BENCH_LOG_LEVEL:-info}

for tool in wrk nginx curl; do
    command -v "$tool" >/dev/null || {
        echo "schematics.sh: $tool not found (apt-get install -y wrk nginx curl)" >&2
        exit 1
    }
done
[ -x "$BIN" ] || { echo "schematics.sh: $BIN missing; run cargo build --release" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/if-bench.XXXXXX")
SERVER_PID=""
NGINX_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    if [ -n "$NGINX_PID" ]; then kill "$NGINX_PID" 2>/dev/null || true; wait "$NGINX_PID" 2>/dev/null || true; fi
    if [ "${KEEP_LOGS:-0}" = 1 ]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'echo "schematics.sh: failed at line $LINENO" >&2' ERR

# --- wrk scripts ------------------------------------------------------------------------
# Unique POSTs: run tag + wrk thread number + per-thread counter make every body distinct.
cat >"$WORK/post_unique.lua" <<'LUA'
local n = 0
function setup(thread)
    n = n + 1
    thread:set("tid", n)
end
local counter = 0
local tag
function init(args)
    tag = (args[1] or "run") .. "-" .. tostring(tid)
end
function request()
    counter = counter + 1
    local body = "customization:\n  extraKernelArgs:\n    - bench=" .. tag .. "-" .. counter .. "\n"
    return wrk.format("POST", "/schematics", {["Content-Type"] = "application/yaml"}, body)
end
LUA
# Duplicate POSTs: one fixed schematic (stored once, then every POST is an idempotent 201).
cat >"$WORK/post_dup.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/yaml"
wrk.body = "customization:\n  extraKernelArgs:\n    - noapic\n    - nolapic\n"
LUA

# --- helpers ----------------------------------------------------------------------------
# run_wrk OUT DURATION URL [LUA_SCRIPT [SCRIPT_ARGS...]]: wrk output to $WORK/OUT.txt
run_wrk() {
    local out=$1 dur=$2 url=$3 script=()
    shift 3
    if [ $# -gt 0 ]; then script=(-s "$1"); shift; fi
    if ! wrk -t"$THREADS" -c"$CONNECTIONS" -d"$dur" --latency "${script[@]}" "$url" -- "$@" \
        >"$WORK/$out.txt" 2>&1; then
        echo "wrk run $out failed:" >&2; cat "$WORK/$out.txt" >&2; return 1
    fi
}
# wrk_fields FILE: "req/s p50 p99 requests socket_errors non2xx"
wrk_fields() {
    awk '
        /Requests\/sec:/ { rps = $2 }
        /^ +50%/ { p50 = $2 }
        /^ +99%/ { p99 = $2 }
        /requests in/ { reqs = $1 }
        /Socket errors:/ { gsub(",", ""); errs = $4 + $6 + $8 + $10 }
        /Non-2xx or 3xx responses:/ { non2xx = $5 }
        END { printf "%s %s %s %s %d %d\n", rps, p50, p99, reqs, errs, non2xx }
    ' "$1"
}
status_count() {
    curl -fsS "http://$HTTP/status" | sed -n 's/.*"schematics":\([0-9]*\).*/\1/p'
}
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# --- image-factory ----------------------------------------------------------------------
"$BIN" --log-level "$BENCH_LOG_LEVEL" serve --data-dir "$WORK/data" \
    --http-listen-addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0 2>"$WORK/server.log" &
SERVER_PID=$!
HTTP=""
for _ in $(seq 1 100); do
    HTTP=$(sed -n 's/.*http listener bound.*addr=\([0-9.:]*\).*/\1/p' "$WORK/server.log" | head -1)
    [ -n "$HTTP" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$HTTP" ] || { echo "server did not log its address" >&2; cat "$WORK/server.log" >&2; exit 1; }
curl -fsS "http://$HTTP/readyz" >/dev/null
ID=$(curl -fsS -X POST --data-binary $'customization:\n  extraKernelArgs:\n    - noapic\n    - nolapic\n' \
    "http://$HTTP/schematics" | sed -n 's/.*"id":"\([0-9a-f]*\)".*/\1/p')
[ "${#ID}" -eq 64 ] || { echo "could not create the schematic to GET" >&2; exit 1; }
curl -fsS "http://$HTTP/schematics/$ID" >/dev/null

# --- nginx reference: a fixed small 200 body ---------------------------------------------
NGINX_PORT=$(free_port)
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<NGX
worker_processes auto;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    keepalive_requests 100000000;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            default_type application/yaml;
            return 200 "customization:\n    extraKernelArgs:\n        - noapic\n        - nolapic\n";
        }
    }
}
NGX
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
NGINX_PID=$!
for _ in $(seq 1 50); do curl -fsS "http://127.0.0.1:$NGINX_PORT/" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "http://127.0.0.1:$NGINX_PORT/" >/dev/null

# --- rounds -----------------------------------------------------------------------------
run_wrk warmup "$WARMUP" "http://$HTTP/schematics" "$WORK/post_unique.lua" warmup
CREATED_TOTAL=0
UNIQUE_TOTAL=0
for round in $(seq 1 "$ROUNDS"); do
    before=$(status_count)
    run_wrk "post_unique.$round" "$DURATION" "http://$HTTP/schematics" "$WORK/post_unique.lua" "r$round"
    after=$(status_count)
    read -r _ _ _ reqs _ _ < <(wrk_fields "$WORK/post_unique.$round.txt")
    # wrk counts completed responses only; the server may have finished a few more.
    if [ $((after - before)) -lt "$reqs" ]; then
        echo "round $round: wrk saw $reqs responses but only $((after - before)) schematics were created" >&2
        exit 1
    fi
    CREATED_TOTAL=$((CREATED_TOTAL + after - before))
    UNIQUE_TOTAL=$((UNIQUE_TOTAL + reqs))
    run_wrk "post_dup.$round" "$DURATION" "http://$HTTP/schematics" "$WORK/post_dup.lua"
    run_wrk "get.$round" "$DURATION" "http://$HTTP/schematics/$ID"
    run_wrk "nginx.$round" "$DURATION" "http://127.0.0.1:$NGINX_PORT/"
done

RSS_PEAK_KB=$(awk '/^VmHWM:/ { print $2 }' "/proc/$SERVER_PID/status")
RSS_NOW_KB=$(awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER_PID/status")
kill -TERM "$SERVER_PID"
wait "$SERVER_PID" || { echo "server exited with an error" >&2; tail -5 "$WORK/server.log" >&2; exit 1; }
SERVER_PID=""
kill -QUIT "$NGINX_PID"; wait "$NGINX_PID" 2>/dev/null || true
NGINX_PID=""
LOG_LINES=$(wc -l <"$WORK/server.log")

# --- report -----------------------------------------------------------------------------
# median NAME: the wrk fields of the round with the median req/s
median() {
    local name=$1 r
    for r in $(seq 1 "$ROUNDS"); do wrk_fields "$WORK/$name.$r.txt"; done | sort -g -k1,1 |
        sed -n "$(((ROUNDS + 1) / 2))p"
}
read -r NGINX_RPS _ < <(median nginx)
LABELS=("post_unique:POST /schematics, unique (durable write)"
        "post_dup:POST /schematics, duplicate"
        "get:GET /schematics/{id}"
        "nginx:nginx static 200 (reference)")

echo
echo "machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), kernel $(uname -r)"
echo "data dir: $WORK ($(stat -f -c %T "$WORK") filesystem)"
echo "wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'): -t$THREADS -c$CONNECTIONS -d$DURATION --latency, $ROUNDS rounds (client and servers share the $(nproc) cores)"
echo "load average before / after: $LOAD_BEFORE / $(cut -d' ' -f1-3 /proc/loadavg) (anything else running skews the numbers)"
echo "server: $BIN --log-level $BENCH_LOG_LEVEL ($LOG_LINES log lines written)"
echo
echo "Median round per workload:"
echo
echo "| workload | req/s | vs nginx | p50 | p99 | errors | non-2xx |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for row in "${LABELS[@]}"; do
    name=${row%%:*}
    read -r rps p50 p99 _ errs non2xx < <(median "$name")
    ratio=$(awk -v a="$rps" -v b="$NGINX_RPS" 'BEGIN { printf "%.2f", a / b }')
    echo "| ${row#*:} | $rps | $ratio | $p50 | $p99 | $errs | $non2xx |"
done
echo
echo "Every round (req/s):"
echo
header="| workload |"; sep="| --- |"
for r in $(seq 1 "$ROUNDS"); do header+=" round $r |"; sep+=" ---: |"; done
echo "$header"; echo "$sep"
for row in "${LABELS[@]}"; do
    name=${row%%:*}; line="| ${row#*:} |"
    for r in $(seq 1 "$ROUNDS"); do read -r rps _ < <(wrk_fields "$WORK/$name.$r.txt"); line+=" $rps |"; done
    echo "$line"
done
echo
echo "unique POSTs: $CREATED_TOTAL schematics created, $UNIQUE_TOTAL responses counted by wrk"
echo "image-factory peak RSS (VmHWM): $((RSS_PEAK_KB / 1024)) MiB; RSS at end: $((RSS_NOW_KB / 1024)) MiB"
