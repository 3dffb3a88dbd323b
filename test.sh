#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine, then runs every test.
# Idempotent: packages already present are not reinstalled and `apt-get update` runs
# only when a package is missing. Usage: ./test.sh [extra args for the test runner]
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages the tests (and the build) need.
PACKAGES=(curl ca-certificates openssl build-essential docker-registry skopeo
    cpio squashfs-tools squashfs-tools-ng zstd xz-utils qemu-system-x86 ovmf ipxe-qemu fdisk binutils systemd-boot-efi
    qemu-system-arm qemu-efi-aarch64
    kmod xfsprogs grub-common grub-pc-bin mtools dosfstools xorriso genisoimage strace containerd
    atftp tftp-hpa ipxe iproute2 dnsmasq-base systemd chromium sbsigntool osslsigncode bubblewrap)
# qemu-system-x86 (and -arm) 7.2 on Debian 12 needs the matching qemu-utils, older than the one some
# images preinstall: apt refuses unless the version is pinned and downgrades are allowed.
QEMU_UTILS_PIN="qemu-utils=1:7.2+dfsg-7+deb12u18+b3"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "test.sh: need root (or sudo) to run: $*" >&2; exit 1; fi
}

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    if ! command -v apt-get >/dev/null; then
        echo "test.sh: missing packages ${missing[*]} and no apt-get; install them by hand" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if printf '%s\n' "${missing[@]}" | grep -qxE 'qemu-system-(x86|arm)'; then
        missing+=("$QEMU_UTILS_PIN")
    fi
    echo "test.sh: installing ${missing[*]}" >&2
    apt_install() { as_root apt-get install -y --no-install-recommends --allow-downgrades "$@"; }
    if ! apt_install "${missing[@]}"; then
        as_root apt-get update
        if ! apt_install "${missing[@]}"; then
            # The pinned qemu-utils may have left the archive: try the current one.
            unpinned=()
            for p in "${missing[@]}"; do [ "$p" = "$QEMU_UTILS_PIN" ] || unpinned+=("$p"); done
            apt_install "${unpinned[@]}"
        fi
    fi
fi

# Rust toolchain: use the one on PATH, else install a minimal stable one with rustup.
if ! command -v cargo >/dev/null; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        echo "test.sh: installing the Rust toolchain with rustup" >&2
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
fi

# Python registry client (PyPI `oras`) the registry tests drive; pinned, installed once.
ORAS_PY="oras==0.2.43"
if ! python3 -c 'import oras.provider' 2>/dev/null; then
    echo "test.sh: installing $ORAS_PY (PyPI)" >&2
    python3 -m pip install --quiet "$ORAS_PY" || python3 -m pip install --quiet --break-system-packages "$ORAS_PY"
fi

# Node.js for the web UI's browser test (tests/ui/wizard.mjs): the machine's own when it has
# one (playwright-core below needs Node.js >= 20), else Debian's.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "test.sh: installing nodejs npm" >&2
    as_root apt-get install -y --no-install-recommends nodejs npm || {
        as_root apt-get update
        as_root apt-get install -y --no-install-recommends nodejs npm
    }
fi
# npm's playwright-core (the driver only: it drives Debian's /usr/bin/chromium and downloads
# no browser), pinned, installed once into a cached directory the test reads.
PLAYWRIGHT="playwright-core@1.65.1"
IF_PLAYWRIGHT_DIR="${IF_PLAYWRIGHT_DIR:-/var/cache/image-factory/node}"
export IF_PLAYWRIGHT_DIR
if ! grep -qs '"version": "1.65.1"' "$IF_PLAYWRIGHT_DIR/node_modules/playwright-core/package.json"; then
    echo "test.sh: installing $PLAYWRIGHT (npm) into $IF_PLAYWRIGHT_DIR" >&2
    as_root mkdir -p "$IF_PLAYWRIGHT_DIR"
    as_root npm install --prefix "$IF_PLAYWRIGHT_DIR" --no-audit --no-fund "$PLAYWRIGHT"
fi

# Debian inputs of the synthetic-release test kit (kernel, systemd-boot, busybox, GRUB),
# unpacked into $IF_TESTKIT_DIR (default /var/cache/image-factory/testkit); idempotent.
bash tests/kit/fetch-debian.sh

# Every tool above is installed now: a test that finds one missing fails instead of skipping
# (src/testkit/tools.rs), so this run cannot pass without checking.
export IF_REQUIRE_TOOLS=1

# A cold run gains nothing from incremental state, which costs gigabytes of disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

if command -v cargo-nextest >/dev/null; then
    cargo nextest run --workspace --all-targets --no-fail-fast "$@"
    cargo test --workspace --doc
else
    cargo test --workspace --all-targets --no-fail-fast "$@"
fi
