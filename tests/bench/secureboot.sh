#!/usr/bin/env bash
# Secure Boot signing benchmark (issue 20): what signing costs a cold build. In the same run,
# alternating, cold `image-factory build --rebuild` (test kit v1.11.0, amd64, the schematic of
# tests/integration/build_boot.rs, site keys from `image-factory keys secureboot generate`) of
#
#   metal-amd64-uki.efi              unsigned UKI
#   metal-amd64-secureboot-uki.efi   the same UKI, plus .pcrpkey/.pcrsig and Authenticode
#   metal-amd64.iso                  the ISO (hybrid: GRUB for BIOS, systemd-boot for UEFI)
#   metal-amd64-secureboot.iso       the Secure Boot ISO (UEFI only: signed systemd-boot and
#                                    UKI, enrolment files) — not the same ISO without signatures
#
# and, as the reference tool, Debian's `sbsign` (sbsigntool) signing the unsigned UKI with the
# same key: our signing overhead (Secure Boot UKI minus UKI) is reported beside it.
#
# Usage: tests/bench/secureboot.sh   env (defaults): RUNS=5 EXT_MB=0 STEP_TIMEOUT=1800 KEEP=0
#                                    CARGO_TARGET_DIR (where the release binary is)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-5}
EXT_MB=${EXT_MB:-0}
STEP_TIMEOUT=${STEP_TIMEOUT:-1800}
VERSION=v1.11.0
BIN=${CARGO_TARGET_DIR:-target}/release/image-factory
command -v sbsign >/dev/null || { echo "secureboot.sh: needs sbsign (Debian sbsigntool)" >&2; exit 1; }

# shellcheck source=tests/bench/kit-setup.sh
. tests/bench/kit-setup.sh
bench_kit_setup secureboot.sh

T "$BIN" keys secureboot generate --out "$W/sb" >/dev/null 2>&1
cat >"$W/sb.yaml" <<YAML
secureBoot:
  enabled: true
  file:
    signingKeyPath: $W/sb/uki-signing-key.pem
    signingCertPath: $W/sb/uki-signing-cert.pem
    pcrKeyPath: $W/sb/pcr-signing-key.pem
YAML

ms() { date +%s%3N; }
build() { # build PATH -> milliseconds
    local t0 t1
    t0=$(ms)
    T "$BIN" build --config "$W/sb.yaml" --data-dir "$W/data" --schematic "$W/S.yaml" \
        --version "$VERSION" --path "$1" --rebuild -o "$W/out" >/dev/null 2>>"$W/build.log"
    t1=$(ms)
    echo $((t1 - t0))
}
sign() {
    local t0 t1
    t0=$(ms)
    T sbsign --key "$W/sb/uki-signing-key.pem" --cert "$W/sb/uki-signing-cert.pem" \
        --output "$W/out/sbsigned.efi" "$W/out/metal-amd64-uki.efi" >/dev/null 2>&1
    t1=$(ms)
    echo $((t1 - t0))
}

declare -A times
for k in uki sbuki iso sbiso sbsign; do times[$k]=""; done
echo "secureboot.sh: $RUNS rounds (untimed warm-up first)..." >&2
build metal-amd64-uki.efi >/dev/null
build metal-amd64-secureboot-uki.efi >/dev/null
for r in $(seq 1 "$RUNS"); do
    times[uki]+=" $(build metal-amd64-uki.efi)"
    times[sbuki]+=" $(build metal-amd64-secureboot-uki.efi)"
    times[sbsign]+=" $(sign)"
    times[iso]+=" $(build metal-amd64.iso)"
    times[sbiso]+=" $(build metal-amd64-secureboot.iso)"
    echo "  round $r done" >&2
done
# The signed UKI verifies with sbverify (what was timed is what a machine gets).
sbverify --cert "$W/sb/uki-signing-cert.pem" "$W/out/metal-amd64-secureboot-uki.efi" >/dev/null

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
uki=$(echo "${times[uki]}" | median)
sbuki=$(echo "${times[sbuki]}" | median)
iso=$(echo "${times[iso]}" | median)
sbiso=$(echo "${times[sbiso]}" | median)
sbs=$(echo "${times[sbsign]}" | median)
size=$(stat -c %s "$W/out/metal-amd64-uki.efi")
echo
echo "| Build (cold, median of $RUNS) | ms | ratio |"
echo "| --- | ---: | ---: |"
echo "| \`metal-amd64-uki.efi\` (unsigned, $((size / 1048576)) MiB) | $uki | 1.00 |"
echo "| \`metal-amd64-secureboot-uki.efi\` | $sbuki | $(awk -v a="$sbuki" -v b="$uki" 'BEGIN { printf "%.2f", a / b }') |"
echo "| our signing overhead (difference) | $((sbuki - uki)) | |"
echo "| reference: \`sbsign\` of the unsigned UKI (Authenticode only) | $sbs | |"
echo "| \`metal-amd64.iso\` (hybrid) | $iso | 1.00 |"
echo "| \`metal-amd64-secureboot.iso\` (UEFI only, signed) | $sbiso | $(awk -v a="$sbiso" -v b="$iso" 'BEGIN { printf "%.2f", a / b }') |"
