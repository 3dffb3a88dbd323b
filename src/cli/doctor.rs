//! `image-factory doctor`: checks what the appliance needs on this host and says how to fix it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::config::{self, FlagOverrides};
use crate::imager::initramfs::check_tools;

/// Flags of `doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// YAML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory to check.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
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
