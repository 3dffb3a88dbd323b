#!/usr/bin/env bash
# Fetches the Debian packages the synthetic-release test kit is built from and unpacks them
# (dpkg -x, no installation) into one tree: $IF_TESTKIT_DIR (default /var/cache/image-factory/testkit).
#
#   <kit>/debs/<package>_<version>_<arch>.deb   downloaded packages
#   <kit>/root/                                 every package unpacked here (boot/, lib/modules/, usr/...)
#   <kit>/root/.unpacked-<package>              marker: <package> is unpacked (idempotence)
#   <kit>/arm64/debs/, <kit>/arm64/root/         the same for the arm64 packages (own tree: they
#                                               share file names with the amd64 ones)
#
# arm64 (linux-image-<kver>-arm64: only /boot/vmlinuz-*, busybox-static, grub-efi-arm64-bin,
# systemd-boot-efi) is resolved and downloaded through a private apt state under
# <kit>/arm64/apt (APT::Architecture=arm64, its own package lists): the machine's dpkg
# architectures and apt lists are left as they are, and it works on a clean Debian 12.
#
# The kernel package is resolved to its EXACT name through the linux-image-amd64 metapackage
# (`apt-cache depends`), never by a glob: `apt-get download 'linux-image-6.1.0-*'` downloads every
# matching version (gigabytes). Idempotent: packages already unpacked are skipped.
set -euo pipefail

KIT="${1:-${IF_TESTKIT_DIR:-/var/cache/image-factory/testkit}}"
mkdir -p "$KIT/debs" "$KIT/root"

if ! command -v apt-get >/dev/null || ! command -v dpkg >/dev/null; then
    echo "fetch-debian.sh: needs apt-get and dpkg (Debian)" >&2
    exit 1
fi

updated=0
apt_update() {
    if [ "$updated" -eq 0 ]; then
        if [ "$(id -u)" -eq 0 ]; then apt-get update -qq; else sudo apt-get update -qq; fi
        updated=1
    fi
}

kernel_pkg() {
    apt-cache depends linux-image-amd64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1
}

KPKG="$(kernel_pkg || true)"
if [ -z "$KPKG" ]; then
    apt_update
    KPKG="$(kernel_pkg || true)"
fi
if [ -z "$KPKG" ]; then
    echo "fetch-debian.sh: cannot resolve the kernel package behind linux-image-amd64" >&2
    exit 1
fi

PKGS=("$KPKG" systemd-boot-efi busybox-static grub-pc-bin grub-efi-amd64-bin)

for pkg in "${PKGS[@]}"; do
    if [ -e "$KIT/root/.unpacked-$pkg" ]; then
        continue
    fi
    deb="$(ls "$KIT/debs/${pkg}"_*.deb 2>/dev/null | head -n1 || true)"
    if [ -z "$deb" ]; then
        echo "fetch-debian.sh: downloading $pkg" >&2
        if ! (cd "$KIT/debs" && apt-get download -q "$pkg" 2>/dev/null); then
            apt_update
            (cd "$KIT/debs" && apt-get download -q "$pkg")
        fi
        deb="$(ls "$KIT/debs/${pkg}"_*.deb | head -n1)"
    fi
    echo "fetch-debian.sh: unpacking $(basename "$deb")" >&2
    dpkg -x "$deb" "$KIT/root"
    touch "$KIT/root/.unpacked-$pkg"
done

# arm64: a private apt state that knows only arm64 package lists.
A64="$KIT/arm64"
mkdir -p "$A64/debs" "$A64/root" "$A64/apt/lists/partial" "$A64/apt/cache/archives/partial"
[ -e "$A64/apt/status" ] || : > "$A64/apt/status"
APT64=(-o APT::Architecture=arm64 -o APT::Architectures::=arm64
    -o "Dir::State::Lists=$A64/apt/lists" -o "Dir::Cache=$A64/apt/cache"
    -o "Dir::State::Status=$A64/apt/status" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=)
updated64=0
apt_update64() {
    if [ "$updated64" -eq 0 ]; then
        apt-get "${APT64[@]}" update -qq
        updated64=1
    fi
}
kernel_pkg64() {
    apt-cache "${APT64[@]}" depends linux-image-arm64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-arm64\)$/\1/p' | head -n1
}
KPKG64="$(cat "$A64/root/.kernel-package" 2>/dev/null || true)"
if [ -z "$KPKG64" ]; then
    KPKG64="$(kernel_pkg64 || true)"
    if [ -z "$KPKG64" ]; then
        apt_update64
        KPKG64="$(kernel_pkg64 || true)"
    fi
fi
if [ -z "$KPKG64" ]; then
    echo "fetch-debian.sh: cannot resolve the kernel package behind linux-image-arm64" >&2
    exit 1
fi
for pkg in "$KPKG64" busybox-static grub-efi-arm64-bin systemd-boot-efi; do
    if [ -e "$A64/root/.unpacked-$pkg" ]; then
        continue
    fi
    deb="$(ls "$A64/debs/${pkg}"_*_arm64.deb 2>/dev/null | head -n1 || true)"
    if [ -z "$deb" ]; then
        echo "fetch-debian.sh: downloading $pkg:arm64" >&2
        if ! (cd "$A64/debs" && apt-get "${APT64[@]}" download -q "$pkg:arm64" 2>/dev/null); then
            apt_update64
            (cd "$A64/debs" && apt-get "${APT64[@]}" download -q "$pkg:arm64")
        fi
        deb="$(ls "$A64/debs/${pkg}"_*_arm64.deb | head -n1)"
    fi
    echo "fetch-debian.sh: unpacking $(basename "$deb")" >&2
    if [ "$pkg" = "$KPKG64" ]; then
        # Only the kernel image (an EFI-stub Image): the modules are not used on arm64.
        dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$A64/root" --wildcards './boot/vmlinuz-*'
        # the .deb (60 MB) is not needed once the kernel is out
        rm -f "$deb"
    else
        dpkg -x "$deb" "$A64/root"
    fi
    touch "$A64/root/.unpacked-$pkg"
done
echo "$KPKG64" > "$A64/root/.kernel-package"
echo "${KPKG64#linux-image-}" > "$A64/root/.kernel-release.tmp" && mv "$A64/root/.kernel-release.tmp" "$A64/root/.kernel-release"

# Record the kernel package's release so the kit picks it even if an older one is unpacked too.
kver="${KPKG#linux-image-}"
echo "$kver" > "$KIT/root/.kernel-release.tmp" && mv "$KIT/root/.kernel-release.tmp" "$KIT/root/.kernel-release"
echo "fetch-debian.sh: test kit inputs ready in $KIT (kernel $kver)" >&2
