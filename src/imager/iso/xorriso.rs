//! The one `xorriso` run that writes an ISO (Debian package `xorriso`; upstream reaches the
//! same program through `grub-mkrescue`). The arguments reproduce upstream's §6.3/§6.4
//! commands; the reproducibility options (§6.1) pin every timestamp and the UUID to
//! [`SOURCE_DATE_EPOCH`], so two runs give the same bytes. xorriso streams file contents from
//! their paths: memory stays bounded whatever the file sizes.
//!
//! xorriso writes a file, not a pipe (`-o -` gives the same bytes): it moves data between its
//! two threads in 2 KiB blocks, and with a consumer hashing the pipe on the other core each
//! hand-over waits for a scheduler slice — 1.2 s instead of 0.15 s for the test-kit ISO. The
//! file is hashed behind it instead (`BlobStore::adopt_following`): xorriso only appends.
//! xorriso runs with the [`pacer`] preloaded, so it exits as soon as its writer is done.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::IsoLabels;
use super::grub::{BiosBoot, ELTORITO_PATH};
use super::pacer;
use crate::imager::SOURCE_DATE_EPOCH;
use crate::imager::disk::fat::epoch_date_time;
use crate::imager::disk::tools;
use crate::imager::error::ImagerError;

/// The tool.
pub const XORRISO: &str = "xorriso";

/// Everything one xorriso run needs.
#[derive(Debug, Clone)]
pub struct IsoPlan {
    /// Volume labels (targets >= 1.8).
    pub labels: Option<IsoLabels>,
    /// Rock Ridge (`-r`, as grub-mkrescue passes it).
    pub rock_ridge: bool,
    /// BIOS El Torito entry and GRUB hybrid MBR code.
    pub bios: Option<BiosBoot>,
    /// The FAT EFI boot image, appended as partition 2 (type 0xEF).
    pub efi_image: PathBuf,
    /// ISO path → source file or directory, in order.
    pub grafts: Vec<(String, PathBuf)>,
    /// Output file.
    pub out: PathBuf,
    /// The xorriso pacer to preload ([`super::pacer`]), if any.
    pub pacer: Option<PathBuf>,
}

/// [`SOURCE_DATE_EPOCH`] as xorriso's 16-digit UUID / date string `YYYYMMDDhhmmss00` (UTC).
pub fn volume_uuid() -> String {
    let t = epoch_date_time(SOURCE_DATE_EPOCH);
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}00",
        t.date.year, t.date.month, t.date.day, t.time.hour, t.time.min, t.time.sec
    )
}

/// Escapes `=` and `\` in a graft-point path (mkisofs `-graft-points` syntax).
fn graft_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('=', "\\=")
}

/// The arguments after `xorriso`.
pub fn xorriso_args(plan: &IsoPlan) -> Vec<OsString> {
    let mut a: Vec<OsString> = ["-as", "mkisofs", "-iso-level", "3"]
        .map(OsString::from)
        .to_vec();
    if plan.rock_ridge {
        a.push("-r".into());
    }
    let uuid = volume_uuid();
    a.push(format!("--modification-date={uuid}").into());
    if let Some(bios) = &plan.bios {
        for s in [
            "-b",
            ELTORITO_PATH,
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            "-boot-info-table",
            "--grub2-boot-info",
            "--grub2-mbr",
        ] {
            a.push(s.into());
        }
        a.push(bios.boot_hybrid.clone().into());
        a.push("-eltorito-alt-boot".into());
    }
    for s in [
        "-e",
        "--interval:appended_partition_2:all::",
        "-no-emul-boot",
        "-append_partition",
        "2",
        "0xef",
    ] {
        a.push(s.into());
    }
    a.push(plan.efi_image.clone().into());
    if plan.bios.is_some() {
        a.push("-appended_part_as_gpt".into());
    }
    for s in [
        "-partition_cyl_align",
        "all",
        "-partition_offset",
        "16",
        "-iso_mbr_part_type",
        "0x83",
        "-o",
    ] {
        a.push(s.into());
    }
    a.push(plan.out.clone().into());
    a.push("-graft-points".into());
    for (iso, src) in &plan.grafts {
        let mut g = OsString::from(graft_escape(iso));
        g.push("=");
        g.push(graft_escape(&src.to_string_lossy()));
        a.push(g);
    }
    for s in [
        "--",
        "-volume_date",
        "all_file_dates",
        &format!("={SOURCE_DATE_EPOCH}"),
        "-volume_date",
        "uuid",
        &uuid,
    ] {
        a.push(s.into());
    }
    // native commands after `--`, as upstream passes them (mkisofs would say `-volset`)
    if let Some(l) = &plan.labels {
        for s in ["-volid", &l.volume_id, "-volset_id", &l.volume_set] {
            a.push(s.into());
        }
    }
    a
}

/// The xorriso command, in UTC with [`SOURCE_DATE_EPOCH`] set, preloading `pacer` if given.
fn xorriso_command(pacer: Option<&Path>) -> Result<Command, ImagerError> {
    let exe = tools::find(XORRISO).ok_or_else(|| {
        ImagerError::Internal(format!(
            "{XORRISO} not found: install Debian package xorriso (needed for ISO images)"
        ))
    })?;
    let mut cmd = Command::new(exe);
    cmd.env("TZ", "UTC")
        .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH.to_string());
    if let Some(lib) = pacer {
        cmd.env(
            "LD_PRELOAD",
            pacer::preload_value(lib, std::env::var_os("LD_PRELOAD")),
        );
    }
    Ok(cmd)
}

fn failed(stderr: &[u8]) -> ImagerError {
    ImagerError::Internal(format!(
        "{XORRISO} failed: {}",
        String::from_utf8_lossy(stderr).trim()
    ))
}

/// Runs xorriso for `plan` (in UTC, with `SOURCE_DATE_EPOCH` set).
pub fn run_xorriso(plan: &IsoPlan) -> Result<(), ImagerError> {
    let res = xorriso_command(plan.pacer.as_deref())?
        .args(xorriso_args(plan))
        .output()
        .map_err(|e| ImagerError::Internal(format!("cannot run {XORRISO}: {e}")))?;
    if !res.status.success() {
        return Err(failed(&res.stderr));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorriso, run as [`run_xorriso`] runs it, really loads the pacer (the dynamic loader's
    /// own report, `LD_DEBUG=files`), and runs without it when there is none.
    #[test]
    fn xorriso_loads_the_pacer() {
        if !testsupport::tools::have(XORRISO, "xorriso") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let lib = pacer::install(dir.path()).expect("the pacer is built and written");
        let loaded = |pacer: Option<&Path>| {
            let out = xorriso_command(pacer)
                .unwrap()
                .env("LD_DEBUG", "files")
                .arg("-version")
                .output()
                .unwrap();
            assert!(out.status.success());
            String::from_utf8_lossy(&out.stderr).contains(lib.to_str().unwrap())
        };
        assert!(loaded(Some(&lib)), "xorriso preloads {}", lib.display());
        assert!(!loaded(None));
    }
}
