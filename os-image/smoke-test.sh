#!/usr/bin/env bash
# Scenario test of the OS image, kept out of ./test.sh (it downloads Debian packages, builds in
# release mode and boots a VM under emulation):
#
#   sudo os-image/smoke-test.sh
#
# Builds the image (os-image/build.sh), boots it in QEMU (TCG, OVMF, user networking with no
# route out and one forwarded port on 127.0.0.1) on a disk 8 GiB large, so that the data
# partition has room to grow, and waits (bounded: $IF_OSIMAGE_BOOT_TIMEOUT, default 900 s)
# until the appliance answers /healthz through the forwarded port. Then checks the serial
# console for the URL line and the data partition line of the first boot, for the URL above
# the login prompt, that the data partition grew, and that the first-boot Secure Boot keys
# are in use
# (/secureboot/signing-cert.pem answers); then logs in over SSH (a forwarded port, a key made
# for the run) to check the appliance's own keys are on the data partition. The console is kept in $IF_OSIMAGE_CONSOLE
# (default target/os-image/smoke-console.log).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "smoke-test: run it as root (sudo): debootstrap, chroot and apt-get need it" >&2
    exit 2
fi

# shellcheck source=appliance/debroot.sh
. appliance/debroot.sh
TIMEOUT="${IF_OSIMAGE_BOOT_TIMEOUT:-900}"
CONSOLE="${IF_OSIMAGE_CONSOLE:-target/os-image/smoke-console.log}"
IMAGE=target/os-image/image-factory.raw
OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd
OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd

if_need_packages qemu-system-x86 qemu-utils ovmf curl iproute2 openssh-client

work=$(mktemp -d /var/tmp/if-osimage-smoke.XXXXXX)
qemu_pid=
cleanup() {
    if [ -n "$qemu_pid" ]; then
        kill "$qemu_pid" 2>/dev/null || true
        wait "$qemu_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# A key of this run only, for root's SSH login in the image (--authorized-keys).
ssh-keygen -q -t ed25519 -N "" -C "image-factory smoke test" -f "$work/id"

step "building the image"
os-image/build.sh --out "$IMAGE" --authorized-keys "$work/id.pub"
built=$SECONDS

# Free ports on loopback for the forwarded HTTP and SSH ports.
free_port() {
    local p
    for _ in $(seq 1 50); do
        p=$((20000 + RANDOM % 40000))
        if [ -z "$(ss -Htln "sport = :$p")" ]; then
            echo "$p"
            return
        fi
    done
    echo "smoke-test: no free local port found" >&2
    exit 1
}
port=$(free_port)
ssh_port=$(free_port)
[ "$port" != "$ssh_port" ] || ssh_port=$(free_port)

step "booting the image in QEMU (TCG), HTTP forwarded to 127.0.0.1:$port"
# A copy-on-write disk over the image, larger than it: the image stays as built.
qemu-img create -q -f qcow2 -b "$(realpath "$IMAGE")" -F raw "$work/disk.qcow2" 8G
cp "$OVMF_VARS" "$work/vars.fd"
mkdir -p "$(dirname "$CONSOLE")"
: >"$CONSOLE"
# restrict=on: the guest reaches nothing outside the VM; only the forwarded port comes in.
qemu-system-x86_64 -accel tcg -machine q35 -cpu max -smp 2 -m 2048 \
    -drive if=pflash,format=raw,readonly=on,file="$OVMF_CODE" \
    -drive if=pflash,format=raw,file="$work/vars.fd" \
    -drive file="$work/disk.qcow2",format=qcow2,if=virtio \
    -nic user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:"$port"-:8080,hostfwd=tcp:127.0.0.1:"$ssh_port"-:22 \
    -display none -serial file:"$CONSOLE" -monitor none -no-reboot &
qemu_pid=$!
boot=$SECONDS

fail() {
    echo "smoke-test: $*; the console's last lines:" >&2
    tail -40 "$CONSOLE" >&2
    exit 1
}

until curl -fsS -m 5 "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; do
    kill -0 "$qemu_pid" 2>/dev/null || fail "QEMU exited"
    [ $((SECONDS - boot)) -lt "$TIMEOUT" ] || fail "no answer on /healthz within $TIMEOUT s"
    sleep 2
done
step "the appliance answers /healthz ($((SECONDS - boot)) s after power-on)"

# The announce unit runs once the service is ready; give it a little time.
url_line="image-factory appliance: http://10.0.2.15:8080/"
for _ in $(seq 1 60); do
    grep -qa "image-factory data partition:" "$CONSOLE" && break
    sleep 1
done
grep -a "image-factory appliance: " "$CONSOLE" | tr -d '\r' | sort -u >&2 || true
grep -qaF "$url_line" "$CONSOLE" || fail "no line '$url_line' on the console"

data_line=$(grep -a "image-factory data partition:" "$CONSOLE" | tr -d '\r' | tail -1)
[ -n "$data_line" ] || fail "no data partition line on the console"
echo "$data_line" >&2
# "image-factory data partition: /dev/vda3 ext4 5.6G at /var/lib/image-factory (... bytes)"
case "$data_line" in
*"/dev/vda3 ext4 "*" at /var/lib/image-factory"*) ;;
*) fail "the data partition is not /dev/vda3 (ext4) at the state directory" ;;
esac
bytes=$(echo "$data_line" | sed -n 's/.*(\([0-9]*\) bytes).*/\1/p')
# Built at 2 GiB; on the 8 GiB disk it grows to about 5.7 GiB.
[ "${bytes:-0}" -gt $((4 * 1024 * 1024 * 1024)) ] || fail "the data partition did not grow (${bytes:-?} bytes)"

# The login prompt on the serial port shows the URL too (/etc/issue.d), not only the unit's
# journal line.
for _ in $(seq 1 120); do
    grep -qa "image-factory login:" "$CONSOLE" && break
    sleep 1
done
grep -qa "image-factory login:" "$CONSOLE" || fail "no login prompt on the serial console"
tr -d '\r' <"$CONSOLE" | grep -a -v 'os-image-boot\[' | grep -qaF "$url_line" ||
    fail "the login prompt does not show '$url_line' (/etc/issue.d)"

grep -qa "first boot: generating SSH host keys" "$CONSOLE" || fail "no SSH host keys made on first boot"
curl -fsS -m 10 "http://127.0.0.1:$port/secureboot/signing-cert.pem" | grep -q "BEGIN CERTIFICATE" ||
    fail "/secureboot/signing-cert.pem: the first boot's Secure Boot keys are not in use"

# Inside, over SSH with the build's authorized key: the appliance's own first-start keys (its
# signing key and admin token) are on the data partition, behind systemd's state directory
# symlink, owned by the service's dynamic user.
inside=$(ssh -i "$work/id" -p "$ssh_port" -o BatchMode=yes -o StrictHostKeyChecking=no \
    -o UserKnownHostsFile=/dev/null -o ConnectTimeout=20 root@127.0.0.1 \
    'readlink /var/lib/image-factory; findmnt -n -o SOURCE -T /var/lib/image-factory/keys/admin-token;
     stat -c %u:%U /var/lib/image-factory/keys/admin-token; systemctl is-active image-factory' 2>/dev/null) ||
    fail "no SSH login with the build's authorized key"
echo "$inside" >&2
[ "$(echo "$inside" | sed -n 1p)" = "private/image-factory" ] || fail "/var/lib/image-factory is not systemd's symlink"
[ "$(echo "$inside" | sed -n 2p)" = "/dev/vda3" ] || fail "the admin token is not on the data partition"
# systemd's dynamic users are UIDs 61184-65519, named after the unit (libnss-systemd).
owner=$(echo "$inside" | sed -n 3p)
uid=${owner%%:*}
if ! { [ "${uid:-0}" -ge 61184 ] && [ "$uid" -le 65519 ] && [ "${owner#*:}" = image-factory ]; }; then
    fail "the admin token is owned by $owner, not the service's dynamic user"
fi
[ "$(echo "$inside" | sed -n 4p)" = "active" ] || fail "image-factory.service is not active"

echo "smoke-test: OK (build $built s, boot to /healthz $((SECONDS - boot)) s, total $SECONDS s)"
