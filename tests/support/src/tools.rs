//! Test prerequisites (external tools, OVMF, the kit's Debian inputs). A test whose
//! prerequisite is missing skips with a notice, so a bare `cargo test` runs anywhere; with
//! `IF_REQUIRE_TOOLS=1` (set by `./test.sh`, which installs everything) a missing
//! prerequisite fails the test instead, so a run cannot pass without checking.

use std::path::Path;
use std::process::Command;

use crate::qemu;

/// The environment variable that turns missing test prerequisites into failures (the
/// appliance's configuration loader ignores it: `image_factory::config::NOT_CONFIG_ENV`).
pub const REQUIRE_TOOLS_ENV: &str = "IF_REQUIRE_TOOLS";

/// Whether missing test prerequisites are failures (`IF_REQUIRE_TOOLS=1`).
pub fn tools_required() -> bool {
    std::env::var(REQUIRE_TOOLS_ENV).is_ok_and(|v| v == "1")
}

/// Returns `ok`; when it is false, reports `missing` (what is missing and how to install it):
/// a panic under `IF_REQUIRE_TOOLS=1`, else a `SKIPPED:` line. Callers skip on `false`.
pub fn require(ok: bool, missing: &str) -> bool {
    if !ok {
        assert!(
            !tools_required(),
            "{missing} ({REQUIRE_TOOLS_ENV}=1: a missing test prerequisite is a failure)"
        );
        println!("SKIPPED: {missing}");
    }
    ok
}

/// Whether `cmd` is on `PATH` or in `/usr/sbin` (not on a user's `PATH` on Debian).
pub fn on_path(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(r#"command -v "$0" >/dev/null || test -x "/usr/sbin/$0""#)
        .arg(cmd)
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `cmd` is installed; otherwise [`require`] reports it with its Debian `package`.
pub fn have(cmd: &str, package: &str) -> bool {
    require(
        on_path(cmd),
        &format!("{cmd} is not installed (Debian package {package})"),
    )
}

/// Whether QEMU is installed; otherwise [`require`] reports it.
pub fn qemu() -> bool {
    require(
        qemu::available(),
        &format!(
            "{} is not installed (Debian package qemu-system-x86)",
            qemu::QEMU
        ),
    )
}

/// Whether QEMU and OVMF (UEFI boots) are installed; otherwise [`require`] reports them.
pub fn qemu_ovmf() -> bool {
    qemu()
        && require(
            Path::new(qemu::OVMF_CODE).exists(),
            &format!("{} is missing (Debian package ovmf)", qemu::OVMF_CODE),
        )
}

/// Whether arm64 QEMU and AAVMF (arm64 UEFI boots) are installed; otherwise [`require`]
/// reports them.
pub fn qemu_aarch64_aavmf() -> bool {
    require(
        qemu::aarch64_available(),
        &format!(
            "{} is not installed (Debian package qemu-system-arm)",
            qemu::QEMU_AARCH64
        ),
    ) && require(
        Path::new(qemu::AAVMF_CODE).exists(),
        &format!(
            "{} is missing (Debian package qemu-efi-aarch64)",
            qemu::AAVMF_CODE
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tools_and_passes_when_present() {
        assert!(on_path("sh"));
        assert!(!on_path("if-no-such-tool-here"));
        assert!(require(true, "never reported"));
        assert!(have("sh", "dash"));
    }

    #[test]
    fn a_missing_tool_skips_or_fails_by_the_switch() {
        let missing = std::panic::catch_unwind(|| have("if-no-such-tool-here", "none"));
        if tools_required() {
            let e = missing.expect_err("IF_REQUIRE_TOOLS=1 must fail");
            let text = e.downcast_ref::<String>().cloned().unwrap_or_default();
            assert!(
                text.contains("if-no-such-tool-here is not installed"),
                "{text}"
            );
        } else {
            assert!(!missing.expect("a skip, not a failure"));
        }
    }
}
