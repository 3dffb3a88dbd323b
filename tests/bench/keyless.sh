#!/usr/bin/env bash
# Keyless verification benchmark (issue 20): what verifying Sidero-style keyless signatures
# costs an import, against verifying a site key. The test kit's release is signed both ways in
# one bundle (`dev synth-release --keyless`: each image's `.sig` manifest carries a cosign
# key signature and a keyless one — Fulcio-like certificate chain, Rekor-like signed entry
# timestamp — from the kit's own Sigstore stack). In the same run, alternating, each into a
# fresh data directory:
#
#   key       image-factory import BUNDLE --trust-key signing-key.pub
#   keyless   image-factory import BUNDLE with only trust.sigstoreTrustedRoot and
#             trust.identities (the kit's issuer and subject)
#
# Usage: tests/bench/keyless.sh   env (defaults): RUNS=7 EXT_MB=0 STEP_TIMEOUT=1800 KEEP=0
#                                 CARGO_TARGET_DIR (where the release binary is)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-7}
EXT_MB=${EXT_MB:-0}
STEP_TIMEOUT=${STEP_TIMEOUT:-1800}
VERSION=v1.11.0
BIN=${CARGO_TARGET_DIR:-target}/release/image-factory
SYNTH_ARGS=--keyless

# shellcheck source=tests/bench/kit-setup.sh
. tests/bench/kit-setup.sh
bench_kit_setup keyless.sh

ROOT=$W/kit/sigstore-trusted-root.json
[ -f "$ROOT" ] || { echo "keyless.sh: $ROOT was not written" >&2; exit 1; }
IDENTITIES='[{"issuer":"https://issuer.test-kit.example","subjectRegExp":"^release@test-kit\\.example$"}]'

ms() { date +%s%3N; }
run=0
import() { # import key|keyless -> milliseconds
    local t0 t1 data
    run=$((run + 1))
    data=$W/d$run
    t0=$(ms)
    if [ "$1" = key ]; then
        T "$BIN" import "$W/kit/bundle.tar" --data-dir "$data" --trust-key "$W/kit/signing-key.pub" \
            >/dev/null 2>>"$W/runs.log"
    else
        IF_TRUST_SIGSTORETRUSTEDROOT=$ROOT IF_TRUST_IDENTITIES=$IDENTITIES \
            T "$BIN" import "$W/kit/bundle.tar" --data-dir "$data" >/dev/null 2>>"$W/runs.log"
    fi
    t1=$(ms)
    rm -rf "$data"
    echo $((t1 - t0))
}

key="" keyless=""
echo "keyless.sh: $RUNS rounds (untimed warm-up first)..." >&2
import key >/dev/null
import keyless >/dev/null
for r in $(seq 1 "$RUNS"); do
    key+=" $(import key)"
    keyless+=" $(import keyless)"
    echo "  round $r done" >&2
done
# (A failed import stops the script: with no --trust-key, only keyless verification can pass.)

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
k=$(echo "$key" | median)
kl=$(echo "$keyless" | median)
echo
echo "| Import of the kit release $VERSION (fresh data directory, median of $RUNS) | ms | ratio |"
echo "| --- | ---: | ---: |"
echo "| verified with the site key (\`--trust-key\`) | $k | 1.00 |"
echo "| verified keyless (trusted root + identity) | $kl | $(awk -v a="$kl" -v b="$k" 'BEGIN { printf "%.2f", a / b }') |"
