#!/usr/bin/env bash
# Registry pull benchmark (issue 16), three parts in one run, loopback only:
#
# 1. Warm single pull: `skopeo copy` of the installer image (test kit v1.11.0, amd64, extensions
#    padded with EXT_MB MiB each, the schematic of tests/integration/build_boot.rs) from
#    `image-factory serve` (/v2, built once before timing) into a fresh OCI layout, against the
#    same copy from Debian's `docker-registry` holding the same image (pushed from us with
#    `skopeo copy --all --preserve-digests`, so the bytes and digests are identical),
#    alternating, RUNS times each.
# 2. 16 parallel pulls: 16 `skopeo copy` at once (each into its own layout), wall time of the
#    batch, alternating, RUNS times each.
# 3. Cold pull: for a new schematic each run, `skopeo copy` from our registry (the tag request
#    builds the installer, then the image is pulled) against `image-factory build --path
#    installer-amd64.tar` on a copy of the same data directory followed by `skopeo copy
#    docker-archive:… oci:…` (what a user without the registry would do), RUNS times each.
#
# Usage: tests/bench/registry.sh    env (defaults): RUNS=5 EXT_MB=30 STEP_TIMEOUT=1800 KEEP=0
#        CARGO_TARGET_DIR (where the release binary is)
# Needs: cargo (release build when the binary is older than the sources), skopeo,
# docker-registry, curl, python3, the test kit inputs (tests/kit/fetch-debian.sh, run here).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/image-factory
RUNS=${RUNS:-5}
EXT_MB=${EXT_MB:-30}
STEP_TIMEOUT=${STEP_TIMEOUT:-1800}
VERSION=v1.11.0
PATH=$PATH:/usr/sbin:/sbin

for tool in skopeo curl python3 /usr/bin/docker-registry; do
    command -v "$tool" >/dev/null || {
        echo "registry.sh: $tool not found (apt-get install -y skopeo docker-registry curl python3)" >&2
        exit 1
    }
done
# shellcheck source=tests/bench/kit-setup.sh
. tests/bench/kit-setup.sh
bench_kit_setup registry.sh

SERVER_PID="" REG_PID=""
stop_all() {
    local status=$?
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null || true; fi
    if [ -n "$REG_PID" ]; then kill "$REG_PID" 2>/dev/null; wait "$REG_PID" 2>/dev/null || true; fi
    if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $W" >&2; else rm -rf "$W"; fi
    exit "$status"
}
trap stop_all EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

# A second data directory for the offline baseline (sled allows one process per directory).
cp -a "$W/data" "$W/data-cli"

PORT=$(free_port)
URL=http://127.0.0.1:$PORT
"$BIN" serve --data-dir "$W/data" --http-listen-addr "127.0.0.1:$PORT" --metrics-addr "" \
    >"$W/serve.log" 2>&1 &
SERVER_PID=$!
wait_port "$PORT"
schematic() { curl -sf -X POST --data-binary "$1" "$URL/schematics" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }
ID=$(schematic @"$W/S.yaml")
NAME=metal-installer/$ID

REG_PORT=$(free_port)
cat >"$W/registry.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $W/registry
http:
  addr: 127.0.0.1:$REG_PORT
EOF
/usr/bin/docker-registry serve "$W/registry.yml" >"$W/registry.log" 2>&1 &
REG_PID=$!
wait_port "$REG_PORT"

echo "registry.sh: building the installer once and pushing it to docker-registry..." >&2
T skopeo inspect --tls-verify=false "docker://127.0.0.1:$PORT/$NAME:$VERSION" >/dev/null
T skopeo copy -q --all --preserve-digests --src-tls-verify=false --dest-tls-verify=false \
    "docker://127.0.0.1:$PORT/$NAME:$VERSION" "docker://127.0.0.1:$REG_PORT/$NAME:$VERSION"
BYTES=$(T skopeo inspect --tls-verify=false --raw "docker://127.0.0.1:$PORT/$NAME@$(
    T skopeo inspect --tls-verify=false --raw "docker://127.0.0.1:$PORT/$NAME:$VERSION" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["manifests"][0]["digest"])')" |
    python3 -c 'import json,sys; m=json.load(sys.stdin); print(m["config"]["size"]+sum(l["size"] for l in m["layers"]))')

# pull HOST DEST: one skopeo copy of the image into a fresh OCI layout.
pull() { T skopeo copy -q --src-tls-verify=false "docker://$1/$NAME:$VERSION" "oci:$2:installer"; }
# batch HOST N: N parallel pulls; fails if any fails.
batch() {
    local pids=() i
    for i in $(seq "$2"); do pull "$1" "$W/par-$i" & pids+=($!); done
    for p in "${pids[@]}"; do wait "$p"; done
    rm -rf "$W"/par-*
}

RESULTS=$W/results.tsv
: >"$RESULTS"
for r in $(seq "$RUNS"); do
    echo "registry.sh: round $r/$RUNS" >&2
    for side in ours registry; do
        host=127.0.0.1:$PORT
        [ "$side" = registry ] && host=127.0.0.1:$REG_PORT
        sync
        t0=$(now); pull "$host" "$W/single"; t1=$(now)
        rm -rf "$W/single"
        printf 'single\t%s\t%s\n' "$side" "$(echo "$t1 - $t0" | bc)" >>"$RESULTS"
        t0=$(now); batch "$host" 16; t1=$(now)
        printf 'parallel16\t%s\t%s\n' "$side" "$(echo "$t1 - $t0" | bc)" >>"$RESULTS"
    done
    # Cold: a schematic nobody built yet (the benchmark schematic with one more kernel
    # argument, so the same extensions), through the registry and offline.
    sed "s/- if.test=hello/- if.test=hello\n    - if.bench=$r/" "$W/S.yaml" >"$W/cold.yaml"
    cid=$(schematic @"$W/cold.yaml")
    t0=$(now)
    T skopeo copy -q --src-tls-verify=false "docker://127.0.0.1:$PORT/metal-installer/$cid:$VERSION" "oci:$W/cold:installer"
    t1=$(now)
    printf 'cold\tours\t%s\n' "$(echo "$t1 - $t0" | bc)" >>"$RESULTS"
    rm -rf "$W/cold" "$W/cold-out"
    t0=$(now)
    T "$BIN" build --data-dir "$W/data-cli" --schematic "$W/cold.yaml" --version "$VERSION" \
        --path installer-amd64.tar -o "$W/cold-out" >/dev/null 2>"$W/build.log"
    T skopeo copy -q "docker-archive:$W/cold-out/installer-amd64.tar" "oci:$W/cold:installer"
    t1=$(now)
    printf 'cold\tbuild+copy\t%s\n' "$(echo "$t1 - $t0" | bc)" >>"$RESULTS"
    rm -rf "$W/cold" "$W/cold-out"
done

python3 - "$RESULTS" "$BYTES" "$RUNS" "$EXT_MB" <<'PY'
import collections, statistics, sys
path, size, runs, ext = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
t = collections.defaultdict(list)
for line in open(path):
    part, side, secs = line.split()
    t[(part, side)].append(float(secs))
med = lambda k: statistics.median(t[k])
print(f"image: {size/2**20:.1f} MiB of config + layers (EXT_MB={ext}), {runs} runs per row\n")
print("| pull | ours: median (s) | other: median (s) | ours / other | speed (ours / other) |")
print("| --- | --- | --- | --- | --- |")
for part, other, what in (("single", "registry", "docker-registry"),
                          ("parallel16", "registry", "docker-registry"),
                          ("cold", "build+copy", "`image-factory build` + `skopeo copy`")):
    o, x = med((part, "ours")), med((part, other))
    print(f"| {part} vs {what} | {o:.2f} | {x:.2f} | {o/x:.2f} | {x/o:.2f}x |")
print()
for k, v in sorted(t.items()):
    print(f"{k[0]} {k[1]}: " + " ".join(f"{s:.2f}" for s in v))
PY
