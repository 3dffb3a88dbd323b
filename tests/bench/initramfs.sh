#!/usr/bin/env bash
# Initramfs build benchmark (issue 4): a cold `image-factory build` of initramfs-amd64.xz with the
# test kit's three extensions (kmod-test, fw-test, svc-test, each padded with EXT_MB MiB of
# incompressible data so they are sized like real ones) against the same work done by Debian
# tools, in the same run:
#
#   per extension   microcode -> kernel/x86/microcode/*.bin, firmware -> usr/lib/firmware,
#                   mksquashfs rootfs N.sqsh -all-root -noappend -no-progress -comp zstd
#                   -Xcompression-level 18 (sequential, as the Talos imager runs them)
#   modules.dep     zstd -dc base | cpio -i rootfs.sqsh; unsquashfs usr/lib/modules; merge the
#                   extensions' modules; depmod --all; mksquashfs the modules.* files
#   schematic       the virtual `schematic` extension (built untimed, squashed in the timed part)
#   extensions.yaml written by a few lines of python
#   output          find kernel | cpio -H newc -o (uncompressed) ‖ base initramfs ‖
#                   find . | LC_ALL=C sort | cpio --reproducible -H newc -o | zstd -18 -T0
#
# Flattening the extension images out of the bundle is done once, before any timing, for the
# pipeline only; `image-factory build` flattens them (from its blob store) inside its timed run.
# `image-factory build --rebuild` ignores the asset cache: every call is a cold build. Runs alternate ours/pipeline,
# so a disturbance hits both alike; the table gives the median of RUNS. Peak RSS: ours = the
# process' maximum RSS; pipeline = the maximum over its steps (`/usr/bin/time -f %M` per step;
# for the cpio | zstd step, the largest member of the pipe). A second pair of rows repeats both
# with the appended cpio at zstd level FAST_LEVEL (`image-factory build --zstd-level`, `zstd -N`).
# After timing, the two outputs are checked to hold the same things (segment sizes, base bytes,
# appended file list, each layer's file list).
#
# Usage (from anywhere):
#   tests/bench/initramfs.sh            env (defaults): EXT_MB=20 RUNS=3 FAST_LEVEL=3
#                                       STEP_TIMEOUT=900 (s, per command) KEEP=0 (1 keeps $W)
# Needs: cargo (a release build is made when target/release/image-factory is older than the
# sources, ~6 min on 2 cores), mksquashfs/unsquashfs (squashfs-tools), cpio, zstd, depmod (kmod),
# python3, bc, GNU time (/usr/bin/time), and the test kit inputs (tests/kit/fetch-debian.sh, run
# here; idempotent).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=$ROOT/target/release/image-factory
EXT_MB=${EXT_MB:-20}
RUNS=${RUNS:-3}
FAST_LEVEL=${FAST_LEVEL:-3}
STEP_TIMEOUT=${STEP_TIMEOUT:-900}
VERSION=v1.11.0
PATH=$PATH:/usr/sbin:/sbin

for tool in mksquashfs unsquashfs cpio zstd depmod python3 bc timeout; do
    command -v "$tool" >/dev/null || {
        echo "initramfs.sh: $tool not found (apt-get install -y squashfs-tools cpio zstd kmod python3 bc)" >&2
        exit 1
    }
done
[ -x /usr/bin/time ] || { echo "initramfs.sh: /usr/bin/time not found (apt-get install -y time)" >&2; exit 1; }

# shellcheck source=tests/bench/kit-setup.sh
. tests/bench/kit-setup.sh
bench_kit_setup initramfs.sh

SCHEMATIC_ID=$("$BIN" schematic id "$W/S.yaml")
"$BIN" schematic canonical "$W/S.yaml" >"$W/canonical.yaml"

# --- pipeline inputs, untimed: flattened extension images, base initramfs, schematic ext ------
cat >"$W/flatten.py" <<'EOF'
"""flatten.py BUNDLE REF-PREFIX DEST [ONLY]: extract the linux/amd64 image whose
org.opencontainers.image.ref.name starts with REF-PREFIX, layers in order, into DEST."""
import json, os, sys, tarfile

bundle, prefix, dest = sys.argv[1:4]
only = sys.argv[4] if len(sys.argv) > 4 else None
t = tarfile.open(bundle)
blob = lambda d: t.extractfile("blobs/" + d.replace(":", "/"))
refs = lambda m: m.get("annotations", {}).get("org.opencontainers.image.ref.name", "")
(desc,) = [m for m in json.load(t.extractfile("index.json"))["manifests"]
           if refs(m).startswith(prefix) and not refs(m).endswith(".sig")]
doc = json.load(blob(desc["digest"]))
if "manifests" in doc:
    (m,) = [m for m in doc["manifests"] if m.get("platform", {}).get("architecture") == "amd64"]
    doc = json.load(blob(m["digest"]))
os.makedirs(dest, exist_ok=True)
for layer in doc["layers"]:
    with tarfile.open(fileobj=blob(layer["digest"]), mode="r|*") as lt:
        for member in lt:
            if only is None or member.name.lstrip("./") == only:
                lt.extract(member, dest, filter="tar")
EOF
# Directories 0, 1, 2 in schematic order, 3 = the virtual schematic extension (api spec §6.4).
i=0
for name in kmod-test fw-test svc-test; do
    python3 "$W/flatten.py" "$W/kit/bundle.tar" "ghcr.io/siderolabs/$name:" "$W/flat/$i"
    i=$((i + 1))
done
python3 "$W/flatten.py" "$W/kit/bundle.tar" "ghcr.io/siderolabs/imager:$VERSION" "$W/imager" \
    usr/install/amd64/initramfs.xz
BASE=$W/imager/usr/install/amd64/initramfs.xz
mkdir -p "$W/flat/3/rootfs/usr/local/share/schematic"
: >"$W/flat/3/rootfs/usr/local/share/schematic/$SCHEMATIC_ID"
{
    printf 'version: v1alpha1\nmetadata:\n  name: schematic\n  version: %s\n' "$SCHEMATIC_ID"
    printf '  author: Image Factory (http://localhost:8080/)\n'
    printf '  description: Virtual extension which specifies the schematic of the image built with schematic.\n'
    printf "  compatibility:\n    talos:\n      version: '>= 1.0.0'\n  extraInfo: |\n"
    sed 's/^/    /' "$W/canonical.yaml"
} >"$W/flat/3/manifest.yaml"

# extensions.yaml in go-yaml's layout from the manifests, in layer order.
cat >"$W/extensions_yaml.py" <<'EOF'
import sys
out = ["layers:"]
for image, manifest in zip(sys.argv[1::2], sys.argv[2::2]):
    out += [f"    - image: {image}", "      metadata:"]
    lines = open(manifest).read().splitlines()
    block = None  # [output indent of the `|` key, input indent of its first line, input indent of the key]
    for line in lines[lines.index("metadata:") + 1:]:
        body = line.lstrip(" ")
        old = len(line) - len(body)
        if block and old > block[2]:
            if block[1] is None:
                block[1] = old
            out.append(" " * (block[0] + 4 + old - block[1]) + body)
            continue
        new = 8 + 2 * (old - 2)
        out.append(" " * new + body)
        block = [new, None, old] if body.endswith(("|", "|-", "|+")) else None
print("\n".join(out))
EOF

# The timed pipeline: $1 = zstd level of the appended cpio, $2 = run directory. Every step is
# run under /usr/bin/time, appending its max RSS (KiB) to $2/rss.
cat >"$W/pipeline.sh" <<'EOF'
set -euo pipefail
LEVEL=$1 R=$2 BASE=$3 W=$4
S() { /usr/bin/time -a -o "$R/rss" -f %M "$@"; }
cd "$R"
mkdir -p work
# Microcode and firmware (imager §3.4.1-2), processing order 0, 1, 2, 3.
for d in ext/*/; do
    d=${d%/}; fw=$d/rootfs/usr/lib/firmware
    [ -d "$fw" ] && [ ! -L "$fw" ] || continue
    for spec in "intel-ucode * GenuineIntel.bin" "amd-ucode microcode_amd*.bin AuthenticAMD.bin"; do
        read -r dir glob dest <<<"$spec"
        files=$(find "$fw/$dir" -maxdepth 1 -type f -name "$glob" 2>/dev/null | LC_ALL=C sort)
        [ -n "$files" ] || continue
        mkdir -p work/kernel/x86/microcode
        S cat $files >>"work/kernel/x86/microcode/$dest"
        rm -f $files
    done
    # Files only (upstream creates a directory where a file lands, so emptied ucode dirs vanish).
    mkdir -p work/usr/lib/firmware
    (cd "$fw" && S bash -c "find . ! -type d | cpio -pdmu --quiet '$R/work/usr/lib/firmware'")
    rm -rf "$fw"
done
# modules.dep (imager §3.5): the base's module tree + every extension's, depmod, one more layer.
mkdir mods
(cd mods && S bash -c "zstd -dc '$BASE' | cpio -i --quiet rootfs.sqsh")
S unsquashfs -q -n -d mods/root mods/rootfs.sqsh usr/lib/modules >/dev/null
KVER=$(ls mods/root/usr/lib/modules)
for d in ext/*/; do
    m=${d}rootfs/usr/lib/modules/$KVER
    [ -d "$m" ] && S cp -a "$m/." "mods/root/usr/lib/modules/$KVER/"
done
echo "search extras built-in" >mods/depmod.conf
S env LC_ALL=C depmod --all --basedir mods/root/usr --config mods/depmod.conf "$KVER"
mkdir -p "ext/modules.dep/rootfs/usr/lib/modules/$KVER"
find "mods/root/usr/lib/modules/$KVER" -maxdepth 1 -type f -name 'modules.*' \
    -exec cp {} "ext/modules.dep/rootfs/usr/lib/modules/$KVER/" \;
printf 'version: v1alpha1\nmetadata:\n  name: modules.dep\n  version: %s\n  author: Talos Machinery\n  description: Combined modules.dep for all extensions\n  compatibility:\n    talos:\n      version: ""\n' \
    "$KVER" >ext/modules.dep/manifest.yaml
# One squashfs per layer, in order (the imager runs mksquashfs once per extension).
args=()
for n in 0 1 2 3 modules.dep; do
    S mksquashfs "ext/$n/rootfs" "work/$n.sqsh" -all-root -noappend -no-progress -quiet \
        -comp zstd -Xcompression-level 18 >/dev/null
    args+=("$n.sqsh" "ext/$n/manifest.yaml")
done
python3 "$W/extensions_yaml.py" "${args[@]}" >work/extensions.yaml
# The three segments.
(cd work && S bash -c 'find kernel | LC_ALL=C sort | cpio --quiet --reproducible -H newc -o' >../microcode.cpio)
(cd work && S bash -c "find . -path ./kernel -prune -o -print | LC_ALL=C sort |
    cpio --quiet --reproducible -H newc -o | zstd -q -$LEVEL -T0" >../appended.cpio.zst)
S cat microcode.cpio "$BASE" appended.cpio.zst >initramfs-amd64.xz
EOF

# --- timed runs ---------------------------------------------------------------------------------
now() { date +%s.%N; }
declare -A secs rss bytes
record() { # key seconds rss_kib bytes
    secs[$1]="${secs[$1]:-} $2"
    if [ "$3" -gt "${rss[$1]:-0}" ]; then rss[$1]=$3; fi
    bytes[$1]=$4
}
run_ours() { # key level
    rm -rf "$W/out-$1"
    local s e
    sync
    s=$(now)
    T /usr/bin/time -f %M -o "$W/rss" "$BIN" build --schematic "$W/S.yaml" --version "$VERSION" \
        --path initramfs-amd64.xz --data-dir "$W/data" -o "$W/out-$1" --zstd-level "$2" --rebuild \
        >/dev/null 2>"$W/build.log" || { cat "$W/build.log" >&2; exit 1; }
    e=$(now)
    record "$1" "$(echo "$e - $s" | bc)" "$(cat "$W/rss")" "$(stat -c %s "$W/out-$1/initramfs-amd64.xz")"
}
run_pipeline() { # key level
    local R=$W/run-$1 s e
    rm -rf "$R"
    mkdir -p "$R/ext"
    cp -a "$W/flat/." "$R/ext/" # the flattened images (untimed)
    sync
    s=$(now)
    T bash "$W/pipeline.sh" "$2" "$R" "$BASE" "$W" || exit 1
    e=$(now)
    record "$1" "$(echo "$e - $s" | bc)" "$(sort -n "$R/rss" | tail -n1)" "$(stat -c %s "$R/initramfs-amd64.xz")"
}
for i in $(seq "$RUNS"); do
    echo "initramfs.sh: run $i/$RUNS (load average $(cut -d" " -f1-3 /proc/loadavg))..." >&2
    run_ours ours 18
    run_pipeline pipe 18
    run_ours ours_fast "$FAST_LEVEL"
    run_pipeline pipe_fast "$FAST_LEVEL"
done

# --- same work? (untimed) -------------------------------------------------------------------------
check() { # key-ours key-pipeline
    local O=$W/out-$1/initramfs-amd64.xz P=$W/run-$2 C=$W/cmp-$1
    local mc base kver
    mc=$(stat -c %s "$P/microcode.cpio"); base=$(stat -c %s "$BASE")
    kver=$(ls "$P/mods/root/usr/lib/modules")
    rm -rf "$C"; mkdir -p "$C/ours" "$C/pipe"
    cmp -s <(head -c "$mc" "$O" | cpio -it --quiet | LC_ALL=C sort) \
        <(cpio -it --quiet <"$P/microcode.cpio" | LC_ALL=C sort) || { echo "microcode segment differs" >&2; return 1; }
    cmp -s <(head -c "$mc" "$O" | cpio -i --to-stdout --quiet 'kernel/x86/microcode/*') \
        <(cpio -i --to-stdout --quiet 'kernel/x86/microcode/*' <"$P/microcode.cpio") || { echo "microcode bytes differ" >&2; return 1; }
    cmp -s <(tail -c +$((mc + 1)) "$O" | head -c "$base") "$BASE" || { echo "base segment differs" >&2; return 1; }
    (cd "$C/ours" && tail -c +$((mc + base + 1)) "$O" | zstd -dc | cpio -id --quiet)
    (cd "$C/pipe" && zstd -dc "$P/appended.cpio.zst" | cpio -id --quiet)
    diff <(cd "$C/ours" && find . | LC_ALL=C sort) <(cd "$C/pipe" && find . | LC_ALL=C sort) >&2 \
        || { echo "appended file lists differ" >&2; return 1; }
    diff -r "$C/ours/usr" "$C/pipe/usr" >&2 || { echo "firmware differs" >&2; return 1; }
    diff "$C/ours/extensions.yaml" "$C/pipe/extensions.yaml" >&2 || { echo "extensions.yaml differs" >&2; return 1; }
    for n in 0 1 2 3 modules.dep; do
        diff <(unsquashfs -lc "$C/ours/$n.sqsh" | sed 's|^squashfs-root||' | LC_ALL=C sort) \
            <(unsquashfs -lc "$C/pipe/$n.sqsh" | sed 's|^squashfs-root||' | LC_ALL=C sort) >&2 \
            || { echo "layer $n.sqsh: file lists differ" >&2; return 1; }
    done
    cmp -s <(unsquashfs -cat "$C/ours/modules.dep.sqsh" "usr/lib/modules/$kver/modules.dep") \
        <(unsquashfs -cat "$C/pipe/modules.dep.sqsh" "usr/lib/modules/$kver/modules.dep") \
        || { echo "modules.dep differs" >&2; return 1; }
    echo "same work ($1 vs $2): microcode files and bytes, base bytes, appended file list," \
        "firmware, extensions.yaml, every layer's file list and modules.dep match" >&2
}
check ours pipe
check ours_fast pipe_fast

# --- report ---------------------------------------------------------------------------------------
median() { printf '%s\n' $1 | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
row() { # key label ratio-against
    local m r
    m=$(median "${secs[$1]}")
    if [ -n "$3" ]; then r=$(printf '%.2f' "$(echo "$m / $(median "${secs[$3]}")" | bc -l)"); else r="1.00"; fi
    printf '| %s | %.2f | %s | %s | %d |\n' "$2" "$m" "$r" "${bytes[$1]}" $((rss[$1] / 1024))
}
echo
echo "EXT_MB=$EXT_MB, RUNS=$RUNS, load average $(cut -d" " -f1-3 /proc/loadavg), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo
echo "| tool | median time (s) | ratio (ours / pipeline, same level) | output bytes | peak RSS (MiB) |"
echo "| --- | --- | --- | --- | --- |"
row pipe "Debian pipeline, appended cpio zstd -18 -T0" ""
row ours "image-factory build (zstd 18)" pipe
row pipe_fast "Debian pipeline, appended cpio zstd -$FAST_LEVEL -T0" ""
row ours_fast "image-factory build --zstd-level $FAST_LEVEL" pipe_fast
echo
echo "all times (s): ours${secs[ours]} | pipeline${secs[pipe]} | ours fast${secs[ours_fast]} | pipeline fast${secs[pipe_fast]}"
