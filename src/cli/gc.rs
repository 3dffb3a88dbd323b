//! `image-factory gc`: one garbage-collection pass over built assets, directly on the data
//! directory or through a running appliance (`--server`, admin token).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::build::open_assets;
use crate::assets::{DEFAULT_INITRAMFS_ZSTD_LEVEL, GcReport};
use crate::config::{self, FlagOverrides};

/// Flags of `gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Show what would be evicted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Override `cache.maxBytes` for this pass (bytes; 0 = no quota).
    #[arg(long, value_name = "BYTES")]
    pub max_bytes: Option<u64>,
    /// YAML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (direct mode; no server may be running on it).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// Run the pass in this running appliance instead (e.g. `http://127.0.0.1:8080/`).
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Admin token file for `--server` (default: `admin.tokenFile`).
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
}

/// Runs `gc`.
pub fn run(args: GcArgs) -> ExitCode {
    match run_inner(&args) {
        Ok(report) => {
            print(&report);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("image-factory gc: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_inner(args: &GcArgs) -> Result<GcReport, String> {
    let flags = FlagOverrides {
        data_dir: args.data_dir.clone(),
        ..FlagOverrides::default()
    };
    let mut cfg = config::load(args.config.as_deref(), std::env::vars(), &flags)
        .and_then(|c| c.validate().map(|()| c))
        .map_err(|e| e.to_string())?;
    if let Some(n) = args.max_bytes {
        cfg.cache.max_bytes = n;
    }
    let rt = tokio::runtime::Runtime::new().map_err(|e| format!("runtime: {e}"))?;
    if let Some(server) = &args.server {
        if args.max_bytes.is_some() {
            return Err(
                "--max-bytes applies to direct mode; a server uses its cache.maxBytes".into(),
            );
        }
        let token_path = args
            .admin_token_file
            .clone()
            .unwrap_or_else(|| cfg.admin_token_path());
        let token = std::fs::read_to_string(&token_path)
            .map(|t| t.trim().to_string())
            .map_err(|e| {
                format!(
                    "admin token {}: {e} (give --admin-token-file)",
                    token_path.display()
                )
            })?;
        eprintln!("collecting garbage in the appliance at {server}");
        return rt.block_on(async {
            let url = url::Url::parse(server)
                .and_then(|u| u.join(&format!("admin/gc?dryRun={}", args.dry_run)))
                .map_err(|e| format!("--server {server:?}: {e}"))?;
            let resp = reqwest::Client::new()
                .post(url)
                .bearer_auth(&token)
                .send()
                .await
                .map_err(|e| format!("{server}: {e}"))?;
            let status = resp.status();
            let body = resp.text().await.map_err(|e| e.to_string())?;
            if !status.is_success() {
                return Err(format!("{server}: {status}: {}", body.trim()));
            }
            serde_json::from_str(&body).map_err(|e| format!("unexpected answer: {e}"))
        });
    }
    eprintln!(
        "collecting garbage in {} (direct mode)",
        cfg.data_dir().display()
    );
    let (assets, _) = open_assets(&cfg, DEFAULT_INITRAMFS_ZSTD_LEVEL, Default::default())?;
    rt.block_on(assets.gc(args.dry_run))
        .map_err(|e| e.to_string())
}

fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0))
}

fn print(r: &GcReport) {
    let verb = if r.dry_run { "would evict" } else { "evicted" };
    for e in &r.evicted {
        println!(
            "{verb} {} {} {} ({}, key {})",
            e.schematic,
            e.version,
            e.path,
            mib(e.bytes),
            e.key
        );
    }
    let quota = if r.max_bytes == 0 {
        "no quota".to_string()
    } else {
        format!("quota {}", mib(r.max_bytes))
    };
    eprintln!(
        "{} asset(s), {} before, {} after ({quota}); {verb} {}, freeing {}{}",
        r.records,
        mib(r.bytes_before),
        mib(r.bytes_after),
        r.evicted.len(),
        mib(r.freed_bytes),
        if r.skipped_busy > 0 {
            format!("; {} in use and kept", r.skipped_busy)
        } else {
            String::new()
        }
    );
}
