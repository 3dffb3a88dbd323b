//! The kit's base initramfs in the Talos shape: a zstd-compressed newc cpio of `.`, `init`,
//! `rootfs.sqsh`, plus what the kit's busybox `init` needs (`bin/busybox`, `dev/console`, the
//! kernel modules it loads).

use super::debian::{Arm64Inputs, KitInputs, ModuleInfo, modules_dep};
use super::tree::Tree;
use super::{KitError, MARKER_PREFIX, PROOF_DIR};

/// Modules the init loads (with their dependencies), in this order; names the kernel has built
/// in or does not ship are skipped. `loop`, `squashfs`, `overlay` mount the root and the
/// extension layers; the rest read the META partition of a booted disk (virtio or ATA/SCSI) or
/// an ISO.
pub const INIT_MODULES: &[&str] = &[
    "loop",
    "squashfs",
    "overlay",
    "virtio_pci",
    "virtio_blk",
    "scsi_mod",
    "libata",
    "ata_piix",
    "ahci",
    "sd_mod",
    "cdrom",
    "sr_mod",
    "isofs",
];

/// zstd level of the kit's initramfs (Talos uses a high level; the kit favours build speed).
const ZSTD_LEVEL: i32 = 9;

/// The `/init` script. `@KVER@` and `@MODULES@` are substituted.
const INIT: &str = r#"#!/bin/busybox sh
# Image Factory test kit init: does what Talos' init does with system extensions
# (spec talos-imager.md §3.8), then prints one marker line and powers off.
/bin/busybox mkdir -p /proc /sys /dev /tmp /layers /newroot
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/bin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
log() { echo "testkit-init: $*"; }

for m in @MODULES@; do
    insmod "/lib/modules/@KVER@/$m" 2>/dev/null || log "insmod $m failed (built in?)"
done

# Talos init: no layers -> mount rootfs.sqsh directly; otherwise loop-mount every layer and
# the root, overlay lowerdir = layerN-1:...:layer0:root (the last layer is the top-most).
LAYERS=/tmp/layers.tsv
: > "$LAYERS"
if [ -f /extensions.yaml ]; then
    awk '
    function val(s) { sub(/^[^:]*:[ ]*/, "", s); gsub(/^["'\'']|["'\'']$/, "", s); return s }
    function flush() { if (img != "") printf "%s\t%s\t%s\n", img, name, ver; img = ""; name = ""; ver = ""; nind = -1 }
    BEGIN { nind = -1 }
    /^[ ]*- image:/ { flush(); img = val($0); next }
    /^[ ]*name:/ { if (img != "" && nind < 0) { match($0, /^[ ]*/); nind = RLENGTH; name = val($0) } next }
    /^[ ]*version:/ { if (img != "") { match($0, /^[ ]*/); if (RLENGTH == nind && ver == "") ver = val($0) } next }
    END { flush() }
    ' /extensions.yaml > "$LAYERS"
fi
mkdir -p /layers/root
mount -t squashfs -o loop,ro /rootfs.sqsh /layers/root || log "cannot mount /rootfs.sqsh"
n=0
lower=/layers/root
while IFS="$(printf '\t')" read -r img name ver; do
    mkdir -p /layers/layer$n
    mount -t squashfs -o loop,ro "/$img" /layers/layer$n || log "cannot mount /$img"
    lower="/layers/layer$n:$lower"
    n=$((n + 1))
done < "$LAYERS"
if [ "$n" -eq 0 ]; then
    mount --bind /layers/root /newroot
else
    mount -t overlay overlay -o "ro,lowerdir=$lower" /newroot || log "overlay mount failed"
fi
[ -f /extensions.yaml ] && [ -e /newroot/etc/extensions.yaml ] && mount --bind -o ro /extensions.yaml /newroot/etc/extensions.yaml
[ -d /usr/lib/firmware ] && [ -d /newroot/usr/lib/firmware ] && mount --bind /usr/lib/firmware /newroot/usr/lib/firmware

js() { awk 'BEGIN { ORS = "" } { gsub(/\\/, "\\\\"); gsub(/"/, "\\\""); gsub(/\t/, "\\t"); gsub(/\r/, "\\r"); if (NR > 1) printf "\\n"; printf "%s", $0 }'; }
jlist() { sep=""; printf '['; while read -r x; do printf '%s"%s"' "$sep" "$(printf '%s' "$x" | js)"; sep=","; done; printf ']'; }

cmdline="$(cat /proc/cmdline)"
# Per layer: whether /layers/layerN is a mount point now, the kit proof file read from the
# mounted layer itself (not the merged root) and every non-directory entry it holds.
exts="["
sep=""
n=0
while IFS="$(printf '\t')" read -r img name ver; do
    l=/layers/layer$n
    n=$((n + 1))
    mounted=false
    awk -v d="$l" '$2 == d { f = 1 } END { exit !f }' /proc/mounts && mounted=true
    proof=""
    [ -f "$l/@PROOF_DIR@/$name.proof" ] && proof="$(cat "$l/@PROOF_DIR@/$name.proof")"
    files="$( (cd "$l" && find . ! -type d | sed 's|^\./||' | sort) | jlist)"
    exts="$exts$sep{\"image\":\"$(printf '%s' "$img" | js)\",\"name\":\"$(printf '%s' "$name" | js)\",\"version\":\"$(printf '%s' "$ver" | js)\",\"mounted\":$mounted,\"proof\":\"$(printf '%s' "$proof" | js)\",\"files\":$files}"
    sep=","
done < "$LAYERS"
exts="$exts]"
schematic=""
if [ -d /newroot/usr/local/share/schematic ]; then
    schematic="$(ls /newroot/usr/local/share/schematic | head -n 1)"
fi

# META from the kernel command line: talos.environment=INSTALLER_META_BASE64=<base64[gzip]>.
meta="{}"
for w in $cmdline; do
    case "$w" in
    talos.environment=INSTALLER_META_BASE64=*)
        printf '%s' "${w#talos.environment=INSTALLER_META_BASE64=}" | base64 -d > /tmp/meta.raw 2>/dev/null
        if [ "$(head -c 2 /tmp/meta.raw | od -An -tx1 | tr -d ' \n')" = "1f8b" ]; then
            gunzip -c < /tmp/meta.raw > /tmp/meta.txt
        else
            cp /tmp/meta.raw /tmp/meta.txt
        fi
        meta="$(awk 'BEGIN { RS = ";"; ORS = ""; printf "{" }
            { i = index($0, "="); if (i == 0) next; k = substr($0, 1, i - 1); v = substr($0, i + 1)
              gsub(/\\/, "\\\\", v); gsub(/"/, "\\\"", v); gsub(/\n/, "\\n", v); gsub(/\t/, "\\t", v); gsub(/\r/, "\\r", v)
              printf "%s\"%s\":\"%s\"", sep, k, v; sep = "," }
            END { printf "}" }' /tmp/meta.txt)"
        ;;
    esac
done

# META partition (GPT name META): the first Talos ADV copy (256 KiB), gzip, base64.
find_meta() { grep -l '^PARTNAME=META$' /sys/class/block/*/uevent 2>/dev/null | head -n 1; }
ev="$(find_meta)"
if [ -z "$ev" ]; then
    # Disk drivers probe asynchronously: give them a moment when a disk exists or may appear.
    i=0
    while [ -z "$ev" ] && [ $i -lt 15 ]; do
        if [ $i -ge 4 ] && ! ls /sys/class/block/ 2>/dev/null | grep -q '^[sv]d[a-z]*$'; then break; fi
        sleep 0.2
        ev="$(find_meta)"
        i=$((i + 1))
    done
fi
meta_raw=""
if [ -n "$ev" ]; then
    dev="/dev/$(sed -n 's/^DEVNAME=//p' "$ev")"
    meta_raw="$(dd if="$dev" bs=4096 count=64 2>/dev/null | gzip -9 | base64 | tr -d '\n')"
fi

firmware="$( (cd /usr/lib/firmware 2>/dev/null && find . -type f | sed 's|^\./||' | sort) | jlist)"
microcode="$( (cd /kernel/x86/microcode 2>/dev/null && ls) | jlist)"
extras="$(grep -o '^extras/[^:]*' /newroot/usr/lib/modules/*/modules.dep 2>/dev/null | sort | jlist)"
osver="$(sed -n 's/^VERSION_ID=//p' /newroot/etc/os-release 2>/dev/null | tr -d '"')"

line="@PREFIX@ {\"cmdline\":\"$(printf '%s' "$cmdline" | js)\",\"extensions\":$exts,\"schematic\":\"$schematic\",\"meta\":$meta,\"meta_raw\":\"$meta_raw\",\"firmware\":$firmware,\"microcode\":$microcode,\"extra_modules\":$extras,\"talos_version\":\"$osver\"}"
echo "$line"
# The serial port too, when /dev/console is another console (tty0 last on the command line):
# ttyS0 on amd64, the PL011 ttyAMA0 on arm64.
[ -c /dev/ttyS0 ] && echo "$line" > /dev/ttyS0 2>/dev/null
[ -c /dev/ttyAMA0 ] && echo "$line" > /dev/ttyAMA0 2>/dev/null
sync
poweroff -f
echo o > /proc/sysrq-trigger
sleep 5
"#;

/// The init script with the module list and kernel release filled in.
pub fn init_script(kernel_release: &str, modules: &[ModuleInfo]) -> String {
    let list: Vec<&str> = modules.iter().map(|m| m.path.as_str()).collect();
    INIT.replace("@KVER@", kernel_release)
        .replace("@MODULES@", &list.join(" "))
        .replace("@PREFIX@", MARKER_PREFIX)
        .replace("@PROOF_DIR@", PROOF_DIR)
}

/// The root filesystem tree of `rootfs.sqsh` for Talos `version`: `etc/os-release`, a bind
/// target for `/etc/extensions.yaml` and `/usr/lib/firmware`, and `usr/lib/modules/<kver>/`
/// with the package's `modules.builtin*`/`modules.order`, the given modules under `kernel/` and
/// a `modules.dep` for them (what the imager's modules.dep step, spec §3.5, reads).
pub fn rootfs_tree(
    inputs: &KitInputs,
    version: &str,
    modules: &[ModuleInfo],
) -> Result<Tree, KitError> {
    let mut builtin = Vec::new();
    for f in [
        "modules.builtin",
        "modules.builtin.modinfo",
        "modules.order",
    ] {
        if let Ok(bytes) = std::fs::read(inputs.modules_dir.join(f)) {
            builtin.push((f, bytes));
        }
    }
    Ok(rootfs_with(
        &inputs.kernel_release,
        version,
        modules,
        builtin,
    ))
}

/// The root tree of [`rootfs_tree`] for kernel `kernel_release`, with the package's
/// `modules.*` index files `builtin` (name, bytes).
fn rootfs_with(
    kernel_release: &str,
    version: &str,
    modules: &[ModuleInfo],
    builtin: Vec<(&str, Vec<u8>)>,
) -> Tree {
    let mut t = Tree::new();
    let vid = version.trim_start_matches('v');
    t.file(
        "etc/os-release",
        0o644,
        format!(
            "NAME=\"Talos\"\nID=talos\nVERSION_ID={version}\nPRETTY_NAME=\"Talos ({version}, Image Factory test kit)\"\nHOME_URL=\"https://www.talos.dev/\"\nBUILD_ID={vid}\n"
        )
        .into_bytes(),
    );
    t.file("etc/extensions.yaml", 0o644, Vec::new());
    t.dir("usr/lib/firmware", 0o755);
    t.dir("usr/local/share", 0o755);
    t.dir("usr/bin", 0o755);
    let mdir = format!("usr/lib/modules/{kernel_release}");
    for (f, bytes) in builtin {
        t.file(&format!("{mdir}/{f}"), 0o644, bytes);
    }
    for m in modules {
        t.file(&format!("{mdir}/{}", m.path), 0o644, m.bytes.clone());
    }
    t.file(
        &format!("{mdir}/modules.dep"),
        0o644,
        modules_dep(modules).into_bytes(),
    );
    t
}

/// Builds the base initramfs (`initramfs.xz`, zstd despite the name, as Talos ≥ 1.8) for
/// Talos `version`.
pub fn base_initramfs(inputs: &KitInputs, version: &str) -> Result<Vec<u8>, KitError> {
    let modules = inputs.module_closure(INIT_MODULES)?;
    let rootfs = rootfs_tree(inputs, version, &modules)?;
    assemble(&inputs.busybox, &inputs.kernel_release, &modules, &rootfs)
}

/// The arm64 base initramfs for Talos `version`: the same init with arm64 busybox and no
/// kernel modules (the kit takes only the arm64 kernel image, whose loop, squashfs and
/// overlay drivers are modules): it prints the marker, command line included, without
/// mounting the root or the extension layers.
pub fn base_initramfs_arm64(inputs: &Arm64Inputs, version: &str) -> Result<Vec<u8>, KitError> {
    let rootfs = rootfs_with(&inputs.kernel_release, version, &[], Vec::new());
    assemble(&inputs.busybox, &inputs.kernel_release, &[], &rootfs)
}

fn assemble(
    busybox: &std::path::Path,
    kernel_release: &str,
    modules: &[ModuleInfo],
    rootfs: &Tree,
) -> Result<Vec<u8>, KitError> {
    let rootfs = rootfs.to_squashfs()?;
    let busybox = std::fs::read(busybox)
        .map_err(|e| KitError::io(format!("read {}", busybox.display()), e))?;
    let mut t = Tree::new();
    t.file(
        "init",
        0o755,
        init_script(kernel_release, modules).into_bytes(),
    );
    t.file("rootfs.sqsh", 0o644, rootfs);
    t.file("bin/busybox", 0o755, busybox);
    t.char_dev("dev/console", 0o600, 5, 1);
    for d in ["proc", "sys", "tmp", "layers", "newroot"] {
        t.dir(d, 0o755);
    }
    for m in modules {
        t.file(
            &format!("lib/modules/{kernel_release}/{}", m.path),
            0o644,
            m.bytes.clone(),
        );
    }
    let cpio = t.to_cpio()?;
    zstd::bulk::compress(&cpio, ZSTD_LEVEL).map_err(|e| KitError::io("zstd initramfs", e))
}
