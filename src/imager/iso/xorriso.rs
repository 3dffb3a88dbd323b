//! The one `xorriso` run that writes an ISO (Debian package `xorriso`; upstream reaches the
//! same program through `grub-mkrescue`). The arguments reproduce upstream's §6.3/§6.4
//! commands; the reproducibility options (§6.1) pin every timestamp and the UUID to
//! [`SOURCE_DATE_EPOCH`], so two runs give the same bytes. xorriso streams file contents from
//! their paths: memory stays bounded whatever the file sizes.
//!
//! xorriso writes a file, not a pipe (`-o -` gives the same bytes): it moves data between its
//! two threads in 2 KiB blocks, and with a consumer hashing the pipe on the other core each
//! hand-over waits for a scheduler slice — 1.2 s instead of 0.15 s for the test-kit ISO. The
//! finished file is hashed and stored instead (`BlobStore::adopt_file`).
//!
//! xorriso notices that its writer has finished only at its next status check, once per
//! second by default; [`PACIFIER`] (xorriso's own `-pacifier interval=`, at its smallest
//! setting) makes that every 0.1 s. It changes xorriso's progress messages, never the image.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

use super::IsoLabels;
use super::grub::{BiosBoot, ELTORITO_PATH};
use crate::imager::SOURCE_DATE_EPOCH;
use crate::imager::disk::fat::epoch_date_time;
use crate::imager::error::ImagerError;
use crate::imager::tool::{ToolError, ToolRun};

/// The tool.
pub const XORRISO: &str = "xorriso";

/// The native command that comes first on xorriso's command line: check the writer (and
/// report progress) every 0.1 s, the smallest interval xorriso accepts, instead of every
/// second (`man xorriso`, `-pacifier`).
pub const PACIFIER: [&str; 2] = ["-pacifier", "interval=0.1"];

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

/// The arguments after `xorriso`: [`PACIFIER`], then the mkisofs emulation.
pub fn xorriso_args(plan: &IsoPlan) -> Vec<OsString> {
    let mut a: Vec<OsString> = PACIFIER
        .into_iter()
        .chain(["-as", "mkisofs", "-iso-level", "3"])
        .map(OsString::from)
        .collect();
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

/// The xorriso command, in UTC with [`SOURCE_DATE_EPOCH`] set.
fn xorriso_command(run: &ToolRun) -> Result<Command, ImagerError> {
    let exe = run.tools.locate(XORRISO).ok_or(ToolError::NotFound {
        tool: XORRISO,
        package: "xorriso",
        purpose: "ISO images",
    })?;
    let mut cmd = Command::new(exe);
    cmd.env("TZ", "UTC")
        .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH.to_string());
    Ok(cmd)
}

/// Runs xorriso for `plan` (in UTC, with `SOURCE_DATE_EPOCH` set) as `run` says.
pub fn run_xorriso(plan: &IsoPlan, run: &ToolRun) -> Result<(), ImagerError> {
    let mut cmd = xorriso_command(run)?;
    cmd.args(xorriso_args(plan));
    run.run(XORRISO, cmd)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`PACIFIER`], given before `-as mkisofs` as [`xorriso_args`] gives it, is the interval
    /// xorriso runs with (its own `-status` report), and a plain run keeps the default.
    #[test]
    fn xorriso_takes_the_pacifier_interval() {
        if !testsupport::tools::have(XORRISO, "xorriso") {
            return;
        }
        let interval = |pacifier: &[&str]| {
            let out = xorriso_command(&ToolRun::default())
                .unwrap()
                .args(pacifier)
                .args(["-as", "mkisofs", "-iso-level", "3", "--"])
                .args(["-status", "-pacifier"])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            // in mkisofs emulation xorriso reports on stderr (stdout may be the image)
            let text = String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned();
            text.lines()
                .find_map(|l| l.strip_prefix("-pacifier interval="))
                .map(str::to_string)
                .unwrap_or_else(|| panic!("no interval in {text:?}"))
        };
        assert_eq!(interval(&PACIFIER), "0.100000");
        assert_eq!(interval(&[]), "1.000000");
    }
}
