#!/usr/bin/env bash
# Builds the appliance's own bootable OS image: a raw GPT disk image (UEFI, systemd-boot) with
# a minimal Debian 12, the image-factory package installed and enabled, and a separate data
# partition mounted at the service's state directory. See os-image/README.md.
#
#   sudo os-image/build.sh [--out FILE] [--root-size SIZE] [--data-size SIZE]
#                          [--authorized-keys FILE] [--root-password-hash HASH]
#
# Partitions: 1 EFI system (256 MiB: systemd-boot, kernel, initramfs), 2 root (ext4,
# --root-size, default 3G), 3 image-factory-data (ext4, --data-size, default 2G; grows into
# the rest of the disk on boot). No loop device: each file system is made in a file
# (mkfs.ext4 -d, mkfs.vfat + mtools) and written into the disk image at its offset.
#
# Caches: the debootstrap root (appliance/debroot.sh) and, in $IF_OSROOT_CACHE (default
# /var/cache/image-factory/osroot), that root with the kernel and the package's dependencies,
# rebuilt when that package list changes. Every run builds the .deb (release; cargo's own
# cache) and installs it into a copy of the OS root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "build.sh: run it as root (sudo): debootstrap, chroot and apt-get need it" >&2
    exit 2
fi

out=target/os-image/image-factory.raw
root_size=3G
data_size=2G
authorized_keys=
root_password_hash=
while [ $# -gt 0 ]; do
    case "$1" in
    --out) out=$2; shift 2 ;;
    --root-size) root_size=$2; shift 2 ;;
    --data-size) data_size=$2; shift 2 ;;
    --authorized-keys) authorized_keys=$2; shift 2 ;;
    --root-password-hash) root_password_hash=$2; shift 2 ;;
    *) echo "build.sh: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done
if [ -n "$authorized_keys" ] && [ ! -f "$authorized_keys" ]; then
    echo "build.sh: --authorized-keys $authorized_keys: no such file" >&2
    exit 2
fi

# shellcheck source=appliance/debroot.sh
. appliance/debroot.sh
OSROOT="${IF_OSROOT_CACHE:-/var/cache/image-factory/osroot}"
ESP_MIB=256
# Packages of the image besides the .deb and its dependencies.
OS_PACKAGES="linux-image-amd64 initramfs-tools systemd-boot-efi openssh-server iproute2 \
e2fsprogs dosfstools kmod udev libnss-systemd"

if_need_packages debootstrap e2fsprogs dosfstools mtools fdisk util-linux

if_debroot

# The OS root: the Debian root with the kernel, the boot loader and the package's dependencies
# (Cargo.toml's [package.metadata.deb] depends, but for cargo-deb's $auto: libraries the
# minimal root has), rebuilt when that list changes. Made before the package is built.
# shellcheck disable=SC2016 # a literal $auto
deps=$(sed -n 's/^depends = "\(.*\)"/\1/p' Cargo.toml | tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/[[:space:]]//g' |
    grep -v -e '^$' -e '^\$auto$' | sort -u | tr '\n' ' ')
want="$OS_PACKAGES $deps"
if [ "$(cat "$OSROOT.packages" 2>/dev/null)" != "$want" ] || [ ! -x "$OSROOT/usr/bin/systemctl" ]; then
    step "the OS root with the kernel and the package's dependencies in $OSROOT"
    rm -rf "$OSROOT.tmp" "$OSROOT" "$OSROOT.packages"
    if_root_copy "$OSROOT.tmp"
    # shellcheck disable=SC2086
    if_apt_install "$OSROOT.tmp" $want
    chroot "$OSROOT.tmp" apt-get clean
    mv "$OSROOT.tmp" "$OSROOT"
    echo "$want" >"$OSROOT.packages"
fi

step "building the package"
if_build_deb
deb=$IF_DEB

work=$(mktemp -d /var/tmp/if-osimage.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root
step "installing the package into a copy of the OS root"
if_root_copy "$root" "$OSROOT"
if_apt_install "$root" "$deb"
if_check_installed "$root"
chroot "$root" apt-get clean

step "configuring the OS"
# Owned by root and not group-writable whoever checked the files out (no cp -a: it would also
# give /etc the checkout's owner and mode).
(umask 022 && cp -R os-image/rootfs/. "$root/")
echo image-factory >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\timage-factory\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
# No identity of the build host or of the build: the machine ID (first boot makes one), the
# resolver, SSH host keys (first boot makes them, image-factory-prepare.service).
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id" "$root"/etc/ssh/ssh_host_*
: >"$root/etc/resolv.conf"
# systemd-firstboot would prompt on the console for locale, time zone and root password.
ln -sf /dev/null "$root/etc/systemd/system/systemd-firstboot.service"
chroot "$root" systemctl enable systemd-networkd.service image-factory-prepare.service \
    image-factory-announce.service >&2
# The image's units and drop-ins, as systemd will load them there.
verify=$(chroot "$root" systemd-analyze verify --man=no image-factory.service image-factory-prepare.service \
    image-factory-announce.service ssh.service systemd-networkd-wait-online.service 2>&1 || true)
if [ -n "$verify" ]; then
    echo "systemd-analyze verify of the image's units:" >&2
    echo "$verify" >&2
    exit 1
fi
install -d -m 0700 "$root/var/lib/private"
install -d -m 0755 "$root/var/lib/private/image-factory" "$root/boot/efi"
if [ -n "$authorized_keys" ]; then
    install -d -m 0700 "$root/root/.ssh"
    install -m 0600 "$authorized_keys" "$root/root/.ssh/authorized_keys"
fi
if [ -n "$root_password_hash" ]; then
    chroot "$root" usermod -p "$root_password_hash" root
fi

esp_uuid=$(cat /proc/sys/kernel/random/uuid)
root_partuuid=$(cat /proc/sys/kernel/random/uuid)
data_partuuid=$(cat /proc/sys/kernel/random/uuid)
root_fsuuid=$(cat /proc/sys/kernel/random/uuid)
data_fsuuid=$(cat /proc/sys/kernel/random/uuid)
esp_fsid=$(printf '%08X' $((RANDOM * 65536 + RANDOM)))
cat >"$root/etc/fstab" <<FSTAB
# <file system>                            <mount point>                  <type> <options>                    <dump> <pass>
UUID=$root_fsuuid  /                              ext4   errors=remount-ro            0 1
UUID=${esp_fsid:0:4}-${esp_fsid:4:4}                             /boot/efi                      vfat   umask=0077                   0 2
# The data partition, at the service's state directory (DynamicUser keeps it in
# /var/lib/private; /var/lib/image-factory is systemd's symlink to it). It grows with its partition.
UUID=$data_fsuuid  /var/lib/private/image-factory ext4   defaults,x-systemd.growfs    0 2
FSTAB

step "the EFI system partition"
esp=$work/esp
mkdir -p "$esp/EFI/BOOT" "$esp/loader/entries"
cp "$root/usr/lib/systemd/boot/efi/systemd-bootx64.efi" "$esp/EFI/BOOT/BOOTX64.EFI"
# What the kernel hook (etc/kernel/postinst.d/zz-image-factory-esp) copies on later updates.
cp "$root/$(readlink "$root/vmlinuz")" "$esp/vmlinuz"
cp "$root/$(readlink "$root/initrd.img")" "$esp/initrd.img"
cat >"$esp/loader/loader.conf" <<'LOADER'
default image-factory.conf
timeout 0
LOADER
cat >"$esp/loader/entries/image-factory.conf" <<ENTRY
title   image-factory appliance (Debian 12)
linux   /vmlinuz
initrd  /initrd.img
options root=PARTUUID=$root_partuuid rw console=tty0 console=ttyS0,115200n8
ENTRY
rm -f "$work/esp.img"
mkfs.vfat -F 32 -n ESP -i "$esp_fsid" -C "$work/esp.img" $((ESP_MIB * 1024)) >&2
mcopy -s -i "$work/esp.img" "$esp"/* ::/

step "the root and data file systems"
truncate -s "$root_size" "$work/root.img"
mkfs.ext4 -q -L if-root -U "$root_fsuuid" -d "$root" "$work/root.img"
empty=$work/data
mkdir -p "$empty"
truncate -s "$data_size" "$work/data.img"
mkfs.ext4 -q -L if-data -U "$data_fsuuid" -d "$empty" "$work/data.img"

step "the disk image $out"
mib() { echo $(($(stat -c %s "$1") / 1048576)); }
root_mib=$(mib "$work/root.img")
data_mib=$(mib "$work/data.img")
# 1 MiB before the first partition, 1 MiB after the last for the backup GPT.
total_mib=$((1 + ESP_MIB + root_mib + data_mib + 1))
mkdir -p "$(dirname "$out")"
rm -f "$out.tmp"
truncate -s "${total_mib}M" "$out.tmp"
sfdisk --quiet "$out.tmp" <<LAYOUT
label: gpt
unit: sectors
start=2048, size=$((ESP_MIB * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$esp_uuid, name="ESP"
size=$((root_mib * 2048)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$root_partuuid, name="image-factory-root"
size=$((data_mib * 2048)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=$data_partuuid, name="image-factory-data"
LAYOUT
dd if="$work/esp.img" of="$out.tmp" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$work/root.img" of="$out.tmp" bs=1M seek=$((1 + ESP_MIB)) conv=notrunc,sparse status=none
dd if="$work/data.img" of="$out.tmp" bs=1M seek=$((1 + ESP_MIB + root_mib)) conv=notrunc,sparse status=none
mv "$out.tmp" "$out"
sfdisk --list "$out" >&2
echo "build.sh: $out ($((total_mib)) MiB, $(du -m "$out" | cut -f1) MiB allocated; $SECONDS s)" >&2
