#!/usr/bin/env bash
# Scenario test, kept out of ./test.sh (it downloads a Debian root and builds in release mode):
# builds the Debian package with cargo-deb, checks it with lintian, installs it into a fresh
# Debian 12 root made by debootstrap, verifies the unit there, boots the root with
# systemd-nspawn and waits until the service answers /healthz.
#
#   sudo appliance/test-install.sh          # about 10 minutes cold, 3 with caches
#
# The Debian root is cached in $IF_DEBROOT_CACHE (default /var/cache/image-factory/debroot);
# every run installs into a fresh copy of it. The steps it shares with os-image/build.sh are in
# appliance/debroot.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=18080
# shellcheck source=appliance/debroot.sh
. appliance/debroot.sh

if_need_packages debootstrap systemd-container lintian curl

step "building the package"
if_build_deb
deb=$IF_DEB
dpkg-deb --info "$deb" | sed -n '/Package:/,/Description:/p' >&2

step "lintian"
# Tags that remain are explained in appliance/README.md; errors fail the run.
lintian --fail-on error --suppress-tags-from-file appliance/lintian-explained "$deb" >&2

if_debroot

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
if_root_copy "$root"
if_apt_install "$root" "$deb"
if_check_installed "$root"

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
