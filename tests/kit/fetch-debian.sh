#!/usr/bin/env bash
# Fetches the Debian packages the synthetic-release test kit is built from and unpacks them
# (dpkg -x, no installation) into one tree: $IF_TESTKIT_DIR (default /var/cache/image-factory/testkit).
#
#   <kit>/debs/<package>_<version>_<arch>.deb   downloaded packages
#   <kit>/root/                                 every package unpacked here (boot/, lib/modules/, usr/...)
#   <kit>/root/.unpacked-<package>              marker: <package> is unpacked (idempotence)
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

# Record the kernel package's release so the kit picks it even if an older one is unpacked too.
kver="${KPKG#linux-image-}"
echo "$kver" > "$KIT/root/.kernel-release.tmp" && mv "$KIT/root/.kernel-release.tmp" "$KIT/root/.kernel-release"
echo "fetch-debian.sh: test kit inputs ready in $KIT (kernel $kver)" >&2
