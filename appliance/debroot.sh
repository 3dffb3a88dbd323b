# Shared steps of the scenarios that install the Debian package into a Debian 12 root
# (appliance/test-install.sh, os-image/build.sh). Sourced, not run: every function exits the
# calling script on failure (the callers run with `set -euo pipefail` from the checkout's root).
#
#   IF_DEBROOT_CACHE   the cached debootstrap root (default /var/cache/image-factory/debroot)
#   IF_DEBIAN_MIRROR   the Debian mirror (default http://deb.debian.org/debian)
#   IF_NICE            niceness of the release build (default 0; 19 on a shared machine)

IF_SUITE=bookworm
IF_MIRROR="${IF_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
IF_DEBROOT="${IF_DEBROOT_CACHE:-/var/cache/image-factory/debroot}"
IF_CARGO_DEB_VERSION=3.8.0

# step MESSAGE: a progress line on stderr with the seconds since the script started.
step() { printf '\n== %s (%ds)\n' "$*" "$SECONDS" >&2; }

# if_need_packages PKG...: installs the host packages that are missing (apt-get update only
# when the first attempt fails, as on a machine whose package lists are stale or empty).
if_need_packages() {
    local need=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
    done
    if [ "${#need[@]}" -gt 0 ]; then
        echo "installing ${need[*]}" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >&2 ||
            { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >&2; }
    fi
}

# if_build_deb: builds the package in release mode (cargo-deb installed first if missing) and
# sets IF_DEB to the path of the .deb (a variable, not output: errexit does not reach into a
# command substitution).
if_build_deb() {
    if ! command -v cargo >/dev/null 2>&1; then
        if [ -x "$HOME/.cargo/bin/cargo" ]; then
            export PATH="$HOME/.cargo/bin:$PATH"
        else
            echo "no cargo on PATH nor in $HOME/.cargo/bin: install the Rust toolchain as ./test.sh does (rustup)" >&2
            return 1
        fi
    fi
    if ! cargo deb --version >/dev/null 2>&1; then
        echo "installing cargo-deb $IF_CARGO_DEB_VERSION" >&2
        cargo install cargo-deb --locked --version "$IF_CARGO_DEB_VERSION" >&2
    fi
    nice -n "${IF_NICE:-0}" cargo deb --strip >&2
    IF_DEB=$(ls -t target/debian/image-factory_*.deb | head -1)
}

# if_debroot: makes the cached minimal Debian root with systemd if it is not there yet.
if_debroot() {
    if [ ! -x "$IF_DEBROOT/usr/bin/systemctl" ]; then
        step "debootstrap $IF_SUITE into $IF_DEBROOT"
        rm -rf "$IF_DEBROOT.tmp"
        mkdir -p "$(dirname "$IF_DEBROOT")"
        debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,ca-certificates \
            "$IF_SUITE" "$IF_DEBROOT.tmp" "$IF_MIRROR" >&2
        rm -rf "$IF_DEBROOT"
        mv "$IF_DEBROOT.tmp" "$IF_DEBROOT"
    fi
}

# if_root_copy DEST [SRC]: a fresh copy of the cached root (or of SRC) in DEST (empty or
# missing), with apt pointed at the mirror and this host's resolver so apt-get works inside it.
if_root_copy() {
    local dest=$1 src=${2:-$IF_DEBROOT}
    mkdir -p "$dest"
    cp -a "$src/." "$dest/"
    cp /etc/resolv.conf "$dest/etc/resolv.conf"
    echo "deb $IF_MIRROR $IF_SUITE main" >"$dest/etc/apt/sources.list"
    chroot "$dest" apt-get update -q >&2
}

# if_apt_install ROOT PKG-OR-DEB...: apt-get install inside ROOT, without recommends. A .deb
# path on the host is copied into ROOT first.
if_apt_install() {
    local root=$1 args=() a
    shift
    for a in "$@"; do
        if [ -f "$a" ]; then
            cp "$a" "$root/tmp/$(basename "$a")"
            args+=("/tmp/$(basename "$a")")
        else
            args+=("$a")
        fi
    done
    chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${args[@]}" >&2
}

# if_check_installed ROOT: the package's files are in place in ROOT, its unit is enabled and
# `systemd-analyze verify` has nothing to say about it there.
if_check_installed() {
    local root=$1 out
    test -x "$root/usr/bin/image-factory"
    test -f "$root/etc/image-factory/config.yaml"
    chroot "$root" systemctl is-enabled image-factory.service >&2
    out=$(chroot "$root" systemd-analyze verify /lib/systemd/system/image-factory.service 2>&1 || true)
    if [ -n "$out" ]; then
        echo "systemd-analyze verify in the installed root:" >&2
        echo "$out" >&2
        return 1
    fi
}
