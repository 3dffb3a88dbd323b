# shellcheck shell=bash
# Shared setup of the build benchmarks (sourced by disk.sh and initramfs.sh, not run).
#
# bench_kit_setup NAME: makes a release build when $BIN is missing or older than the sources,
# fetches the test kit inputs, creates the work directory $W (removed at exit unless KEEP=1),
# defines T (a command under $STEP_TIMEOUT), replaces $BIN by a private copy (a concurrent
# `cargo build` must not swap the binary in the middle of the runs), synthesizes the kit
# release $VERSION with extensions of $EXT_MB MiB (and the flags in $SYNTH_ARGS), imports it
# into $W/data, and writes the schematic of tests/integration/build_boot.rs to $W/S.yaml.

bench_kit_setup() {
    local name=$1
    if [ ! -x "$BIN" ] || [ -n "$(find src Cargo.toml Cargo.lock -newer "$BIN" -print -quit 2>/dev/null)" ]; then
        echo "$name: $BIN is missing or older than the sources: cargo build --release" >&2
        timeout 3600 cargo build --release >&2
    fi
    echo "$name: test kit inputs (tests/kit/fetch-debian.sh)..." >&2
    timeout 1800 tests/kit/fetch-debian.sh >&2

    W=$(mktemp -d "${TMPDIR:-/tmp}/if-bench-${name%.sh}.XXXXXX")
    trap 'if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $W" >&2; else rm -rf "$W"; fi' EXIT
    # shellcheck disable=SC2064 # the name is fixed now, the line number at the failure
    trap "echo \"$name: failed at line \$LINENO\" >&2" ERR
    T() { timeout "$STEP_TIMEOUT" "$@"; }
    cp "$BIN" "$W/image-factory"
    BIN=$W/image-factory

    echo "$name: synthesizing the kit release (extensions of ${EXT_MB} MiB) and importing it..." >&2
    # shellcheck disable=SC2086 # SYNTH_ARGS: extra flags, word-split on purpose
    T "$BIN" dev synth-release --out "$W/kit" --version "$VERSION" --extension-size-mb "$EXT_MB" \
        ${SYNTH_ARGS:-} >/dev/null 2>"$W/synth.log" || { cat "$W/synth.log" >&2; exit 1; }
    T "$BIN" import "$W/kit/bundle.tar" --data-dir "$W/data" --trust-key "$W/kit/signing-key.pub" \
        >/dev/null 2>"$W/import.log" || { cat "$W/import.log" >&2; exit 1; }
    cat >"$W/S.yaml" <<'YAML'
customization:
  extraKernelArgs:
    - if.test=hello
  meta:
    - key: 0xa
      value: '{"addr":"1.2.3.4"}'
  systemExtensions:
    officialExtensions:
      - siderolabs/kmod-test
      - siderolabs/fw-test
      - siderolabs/svc-test
YAML
}
