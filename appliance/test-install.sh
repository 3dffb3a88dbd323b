#!/usr/bin/env bash
# Scenario test, kept out of ./test.sh (it downloads a Debian root and builds in release mode):
# builds the Debian package with cargo-deb, checks it with lintian, installs it into a fresh
# Debian 12 root made by debootstrap, verifies the unit there, boots the root with
# systemd-nspawn and waits until the service answers /healthz.
#
#   sudo appliance/test-install.sh          # about 10 minutes cold, 3 with caches
#
# The Debian root is cached in $IF_DEBROOT_CACHE (default /var/cache/image-factory/debroot);
# every run installs into a fresh copy of it.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${IF_DEBROOT_CACHE:-/var/cache/image-factory/debroot}"
SUITE=bookworm
MIRROR="${IF_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PORT=18080
CARGO_DEB_VERSION=3.8.0

need=()
for p in debootstrap systemd-container lintian curl; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
    echo "test-install: installing ${need[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" ||
        { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"; }
fi
if ! cargo deb --version >/dev/null 2>&1; then
    echo "test-install: installing cargo-deb $CARGO_DEB_VERSION" >&2
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
fi

step() { printf '\n== %s (%ds)\n' "$*" "$SECONDS" >&2; }

step "building the package"
cargo deb --strip
deb=$(ls -t target/debian/image-factory_*.deb | head -1)
dpkg-deb --info "$deb" | sed -n '/Package:/,/Description:/p' >&2

step "lintian"
# Tags that remain are explained in appliance/README.md; errors fail the run.
lintian --fail-on error --suppress-tags-from-file appliance/lintian-explained "$deb" >&2

if [ ! -x "$CACHE/usr/bin/systemctl" ]; then
    step "debootstrap $SUITE into $CACHE"
    rm -rf "$CACHE.tmp"
    mkdir -p "$(dirname "$CACHE")"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,ca-certificates \
        "$SUITE" "$CACHE.tmp" "$MIRROR" >&2
    rm -rf "$CACHE"
    mv "$CACHE.tmp" "$CACHE"
fi

root=$(mktemp -d /var/tmp/if-debroot.XXXXXX)
nspawn_pid=
cleanup() {
    if [ -n "$nspawn_pid" ]; then
        kill "$nspawn_pid" 2>/dev/null || true
        wait "$nspawn_pid" 2>/dev/null || true
    fi
    rm -rf "$root"
}
trap cleanup EXIT
step "installing the package into a copy of the root"
cp -a "$CACHE/." "$root/"
cp "$deb" "$root/tmp/image-factory.deb"
cp /etc/resolv.conf "$root/etc/resolv.conf"
echo "deb $MIRROR $SUITE main" >"$root/etc/apt/sources.list"
chroot "$root" apt-get update -q >&2
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    /tmp/image-factory.deb >&2
test -x "$root/usr/bin/image-factory"
test -f "$root/etc/image-factory/config.yaml"
chroot "$root" systemctl is-enabled image-factory.service
out=$(chroot "$root" systemd-analyze verify /lib/systemd/system/image-factory.service 2>&1 || true)
if [ -n "$out" ]; then
    echo "systemd-analyze verify in the installed root:" >&2
    echo "$out" >&2
    exit 1
fi

step "booting the root with systemd-nspawn"
# The container shares this host's network: the appliance listens on loopback only.
mkdir -p "$root/etc/systemd/system/image-factory.service.d"
cat >"$root/etc/systemd/system/image-factory.service.d/test.conf" <<CONF
[Service]
Environment=IF_HTTP_HTTPLISTENADDR=127.0.0.1:$PORT
Environment=IF_HTTP_EXTERNALURL=http://127.0.0.1:$PORT/
Environment=IF_TFTP_LISTENADDR=127.0.0.1:0
Environment=IF_METRICS_ADDR=
CONF
systemd-nspawn --quiet --register=no --keep-unit -D "$root" --boot >/var/tmp/if-debroot-console.log 2>&1 &
nspawn_pid=$!
for _ in $(seq 1 180); do
    if curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; then
        step "the installed service answers /healthz"
        curl -fsS "http://127.0.0.1:$PORT/status" | head -c 600 >&2
        echo >&2
        echo "test-install: OK ($SECONDS s)"
        exit 0
    fi
    if ! kill -0 "$nspawn_pid" 2>/dev/null; then
        break
    fi
    sleep 1
done
echo "test-install: the service did not answer /healthz; console:" >&2
tail -50 /var/tmp/if-debroot-console.log >&2
exit 1
