//! `image-factory doctor`: checks what the appliance needs on this host and the data
//! directory's storage, and says how to fix it; `--repair` restores the metadata index from
//! the data directory (see `node::doctor`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::causes::Causes;
use crate::config::{self, Config, FlagOverrides};
use crate::imager::initramfs::check_tools;
use crate::node::DoctorReport;
use crate::trust::secureboot::SecureBootKeys;

/// Flags of `doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// YAML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory to check.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// Repair the storage (appliance stopped): restore the metadata index from the schematic
    /// and release documents, move a metadata store that does not open aside and rebuild it,
    /// and index blobs the index lost (hashing them).
    #[arg(long)]
    pub repair: bool,
    /// With --repair: move the metadata store aside and rebuild it even if it opens.
    #[arg(long, requires = "repair")]
    pub rebuild: bool,
}

/// Runs the checks; exits 1 when a required one fails.
pub fn run(args: DoctorArgs) -> ExitCode {
    let mut failed = false;
    let mut report = |ok: bool, what: &str, detail: String| {
        println!("[{}] {what}: {detail}", if ok { " ok " } else { "FAIL" });
        failed |= !ok;
    };
    let flags = FlagOverrides {
        data_dir: args.data_dir.clone(),
        ..FlagOverrides::default()
    };
    match config::load(args.config.as_deref(), std::env::vars(), &flags)
        .and_then(|c| c.validate().map(|()| c))
    {
        Ok(cfg) => {
            report(true, "configuration", "valid".into());
            let dir = cfg.data_dir();
            let writable = std::fs::create_dir_all(dir)
                .and_then(|()| tempfile::tempfile_in(dir).map(|_| ()))
                .is_ok();
            report(
                writable,
                "data directory",
                format!(
                    "{} {}",
                    dir.display(),
                    if writable {
                        "is writable"
                    } else {
                        "is not writable"
                    }
                ),
            );
            for key in &cfg.trust.public_keys {
                let ok = std::fs::read_to_string(key).is_ok();
                report(
                    ok,
                    "trusted key",
                    format!("{key} {}", if ok { "readable" } else { "unreadable" }),
                );
            }
            secure_boot(&cfg, &mut report);
            if writable {
                storage(&cfg, &args, &mut report);
            }
        }
        Err(e) => report(false, "configuration", e.to_string()),
    }
    match check_tools() {
        Ok(path) => report(
            true,
            "depmod (kmod)",
            format!("{} (extensions with kernel modules)", path.display()),
        ),
        Err(e) => report(
            false,
            "depmod (kmod)",
            format!("{e} (needed for extensions with kernel modules)"),
        ),
    }
    for (tool, found) in crate::imager::disk::tools::check() {
        let what = format!("{} ({})", tool.name, tool.package);
        match found {
            Ok(path) => report(
                true,
                &what,
                format!("{} ({})", path.display(), tool.purpose),
            ),
            Err(e) => report(false, &what, e.to_string()),
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Reports the Secure Boot keys: off, or loaded with the certificate's fingerprint and expiry
/// (a certificate expiring within 30 days fails the check, so monitoring sees it in time).
fn secure_boot(cfg: &Config, report: &mut dyn FnMut(bool, &str, String)) {
    let Some(paths) = crate::node::secure_boot_paths(cfg) else {
        report(
            true,
            "secure boot",
            "disabled (secureBoot.enabled: false)".into(),
        );
        return;
    };
    let now = crate::clock::now_secs();
    match SecureBootKeys::load(&paths, now) {
        Ok(keys) => {
            let left_days = (keys.not_after() - now as i64) / 86_400;
            report(
                left_days >= 30,
                "secure boot keys",
                format!(
                    "certificate SHA-256 {} expires {} ({left_days} days){}",
                    keys.fingerprint(),
                    crate::clock::rfc3339_utc(keys.not_after().max(0) as u64),
                    if left_days < 30 {
                        ": rotate the keys (docs/operator-guide.md, Secure Boot)"
                    } else {
                        ""
                    }
                ),
            );
        }
        Err(e) => report(false, "secure boot keys", Causes(&e).to_string()),
    }
}

/// Checks (or repairs) the data directory's storage and reports each part.
fn storage(cfg: &Config, args: &DoctorArgs, report: &mut dyn FnMut(bool, &str, String)) {
    let r = match crate::node::doctor(cfg, args.repair, args.rebuild) {
        Ok(r) => r,
        Err(e) if e.is_locked() => {
            report(
                !args.repair,
                "storage",
                "the data directory is in use by a running appliance (its /status shows the \
                 storage check made at its start); stop it to check deeper or to repair"
                    .into(),
            );
            return;
        }
        Err(e) => {
            report(false, "storage", format!("{}", Causes(&e)));
            return;
        }
    };
    print_storage(&r, args.repair, report);
}

fn print_storage(r: &DoctorReport, repair: bool, report: &mut dyn FnMut(bool, &str, String)) {
    if let Some(to) = &r.moved_aside {
        report(
            true,
            "metadata store",
            format!(
                "moved aside to {} and rebuilt from the data directory (asset records are not \
                 rebuilt: assets are built again on request)",
                to.display()
            ),
        );
    }
    let hint = if repair {
        "restored"
    } else {
        "not indexed: run `image-factory doctor --repair` (or start the appliance)"
    };
    for check in [&r.health.schematics, &r.health.releases] {
        let ok = check.missing.is_empty()
            && check.damaged.is_empty()
            && (repair || check.restored.is_empty());
        let mut detail = format!("{} indexed, {} document(s)", check.indexed, check.documents);
        if !check.restored.is_empty() {
            detail += &format!("; {} {hint}", check.restored.len());
        }
        if !check.missing.is_empty() {
            detail += &format!(
                "; {} lost (no document): {:?}",
                check.missing.len(),
                check.missing
            );
        }
        if !check.damaged.is_empty() {
            detail += &format!("; damaged documents: {:?}", check.damaged);
        }
        report(ok, &format!("{} index", check.kind), detail);
    }
    let x = &r.reindex;
    let mut detail = format!(
        "{} blob(s), {} not in the SHA-256 index",
        x.blobs, x.unindexed
    );
    if repair {
        detail += &format!(
            "; {} indexed again ({:.1} MiB hashed)",
            x.reindexed,
            x.hashed_bytes as f64 / (1024.0 * 1024.0)
        );
    } else if x.unindexed > 0 {
        detail += " (leftovers of interrupted writes, or lost entries: --repair indexes them)";
    }
    if !x.damaged.is_empty() {
        detail += &format!("; damaged, moved to quarantine: {:?}", x.damaged);
    }
    report(x.damaged.is_empty(), "blob index", detail);
    for (version, d) in &r.damaged_releases {
        report(
            false,
            "release",
            format!(
                "{version} is damaged: blob {} failed verification at {} ({}); builds from it \
                 are refused until it is imported again",
                d.blob,
                crate::clock::rfc3339_utc(d.at),
                d.reason
            ),
        );
    }
    let missing = &r.health.release_blobs_missing;
    report(
        missing.is_empty(),
        "release blobs",
        if missing.is_empty() {
            "every blob the releases name is stored and indexed".into()
        } else {
            format!(
                "{} missing: {missing:?} (import the releases again{})",
                missing.len(),
                if repair { "" } else { ", or run --repair" }
            )
        },
    );
}
