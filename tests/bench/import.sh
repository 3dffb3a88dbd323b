#!/usr/bin/env bash
# Import throughput: `image-factory import --from-registry` (pull + verify every cosign signature
# + store + extract boot assets) versus `skopeo copy` of the same images into an OCI layout
# (pull only), from Debian's docker-registry on loopback, in the same run. Prints a markdown
# table with MB/s and peak RSS.
#
# Usage: tests/bench/import.sh            (env: EXT_MB=30 EXTENSIONS=3 RUNS=3)
# Needs: a release build (cargo build --release), docker-registry, skopeo, the test kit inputs
# (tests/kit/fetch-debian.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=target/release/image-factory
EXT_MB=${EXT_MB:-30}
EXTENSIONS=${EXTENSIONS:-3}
RUNS=${RUNS:-3}
VERSION=v1.11.0
WORK=$(mktemp -d)
trap 'kill "${REG_PID:-0}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }

echo "building the synthetic release (extensions of ${EXT_MB} MB)..." >&2
"$BIN" dev synth-release --out "$WORK/kit" --version "$VERSION" --extensions "$EXTENSIONS" \
    --extension-size-mb "$EXT_MB" >/dev/null 2>&1

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/reg"
cat >"$WORK/reg/config.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $WORK/reg/data
http:
  addr: 127.0.0.1:$PORT
EOF
/usr/bin/docker-registry serve "$WORK/reg/config.yml" >/dev/null 2>&1 &
REG_PID=$!
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done

# Push every named image of the bundle (signatures included) under mirror/ with skopeo.
python3 - "$WORK/kit/bundle.tar" >"$WORK/refs.txt" <<'EOF'
import json, sys, tarfile
t = tarfile.open(sys.argv[1])
index = json.load(t.extractfile("index.json"))
for m in index["manifests"]:
    name = m.get("annotations", {}).get("org.opencontainers.image.ref.name")
    if name:
        print(name)
EOF
while read -r ref; do
    repo_tag=${ref#ghcr.io/}
    if [[ "$repo_tag" == *@* ]]; then
        dest="${repo_tag%@*}:pinned-${repo_tag##*sha256:}"
    else
        dest="$repo_tag"
    fi
    skopeo copy -q --all --preserve-digests --dest-tls-verify=false \
        "oci-archive:$WORK/kit/bundle.tar:$ref" "docker://127.0.0.1:$PORT/mirror/$dest" >/dev/null
done <"$WORK/refs.txt"

# The images an import reads (top-level, no signatures), for the skopeo side.
grep -v '\.sig$' "$WORK/refs.txt" >"$WORK/images.txt"
BYTES=$(python3 - "$WORK/kit/bundle.tar" <<'EOF'
import sys, tarfile
t = tarfile.open(sys.argv[1])
print(sum(m.size for m in t.getmembers() if m.name.startswith("blobs/")))
EOF
)

ours=() ; ref=() ; ours_rss=0 ; ref_rss=0
for i in $(seq "$RUNS"); do
    rm -rf "$WORK/data" "$WORK/oci"
    s=$(date +%s.%N)
    /usr/bin/time -f "%M" -o "$WORK/rss" "$BIN" import --from-registry "127.0.0.1:$PORT/mirror" \
        --version "$VERSION" --arch amd64 --data-dir "$WORK/data" \
        --trust-key "$WORK/kit/signing-key.pub" >/dev/null 2>"$WORK/import.log" \
        || { cat "$WORK/import.log" >&2; exit 1; }
    e=$(date +%s.%N); ours+=("$(echo "$e - $s" | bc)")
    r=$(cat "$WORK/rss"); [ "$r" -gt "$ours_rss" ] && ours_rss=$r

    s=$(date +%s.%N)
    peak=0
    while read -r image; do
        repo_tag=${image#ghcr.io/}
        if [[ "$repo_tag" == *@* ]]; then src="${repo_tag%@*}@${repo_tag##*@}"; else src="$repo_tag"; fi
        name=$(echo "$repo_tag" | tr '/:@' '___')
        /usr/bin/time -f "%M" -o "$WORK/rss" skopeo copy -q --src-tls-verify=false \
            --override-arch amd64 "docker://127.0.0.1:$PORT/mirror/$src" "oci:$WORK/oci:$name" >/dev/null
        r=$(cat "$WORK/rss"); [ "$r" -gt "$peak" ] && peak=$r
    done <"$WORK/images.txt"
    e=$(date +%s.%N); ref+=("$(echo "$e - $s" | bc)")
    [ "$peak" -gt "$ref_rss" ] && ref_rss=$peak
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mo=$(median "${ours[@]}"); mr=$(median "${ref[@]}")
mb=$(echo "scale=1; $BYTES / 1000000" | bc)
echo
echo "| tool | what it does | bytes | median time (s, $RUNS runs) | MB/s | peak RSS (MiB) |"
echo "| --- | --- | --- | --- | --- | --- |"
printf "| image-factory import | pull + verify signatures + store + extract | %s MB | %.2f | %.1f | %d |\n" \
    "$mb" "$mo" "$(echo "$BYTES / 1000000 / $mo" | bc -l)" $((ours_rss / 1024))
printf "| skopeo copy (per image) | pull into an OCI layout | %s MB | %.2f | %.1f | %d |\n" \
    "$mb" "$mr" "$(echo "$BYTES / 1000000 / $mr" | bc -l)" $((ref_rss / 1024))
printf "\nratio (image-factory / skopeo time): %.2f\n" "$(echo "$mo / $mr" | bc -l)"
