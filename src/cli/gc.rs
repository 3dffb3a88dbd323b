//! `image-factory gc`: one garbage-collection pass over built assets, directly on the data
//! directory or through a running appliance (`--server`, admin token).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::error::{CliError, finish, open_error};
use super::remote::{AdminClient, send, text};
use super::{load_config, runtime};
use crate::assets::GcReport;
use crate::node::{Node, NodeOptions};

/// Flags of `gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Show what would be evicted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// A quota for this pass instead of `cache.maxBytes` (bytes; 0 = no quota), directly or
    /// in the appliance of `--server`.
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
    /// Admin token file for `--server` (default: `admin.tokenFile`, else the data
    /// directory's that holds the `--server` socket, else `<dataDir>/keys/admin-token`).
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
}

/// Runs `gc`.
pub fn run(args: GcArgs) -> ExitCode {
    finish("gc", run_inner(&args).map(|report| print(&report)))
}

fn run_inner(args: &GcArgs) -> Result<GcReport, CliError> {
    let cfg = load_config(args.config.as_deref(), args.data_dir.as_deref())?;
    let rt = runtime()?;
    if let Some(server) = &args.server {
        let admin = AdminClient::new(server, args.admin_token_file.as_deref(), &cfg)?;
        eprintln!("collecting garbage in the appliance at {server}");
        let mut query = format!("admin/gc?dryRun={}", args.dry_run);
        if let Some(n) = args.max_bytes {
            query.push_str(&format!("&maxBytes={n}"));
        }
        let url = admin.url(&query)?;
        return rt.block_on(async {
            let resp = send("POST", &url, admin.post(url.clone())).await?;
            let body = text("POST", &url, resp).await?;
            serde_json::from_str(&body).map_err(|_| CliError::Unexpected {
                url: url.to_string(),
                body,
            })
        });
    }
    let dir = cfg.data_dir().to_path_buf();
    eprintln!("collecting garbage in {} (direct mode)", dir.display());
    let node = {
        let on_error = open_error(&cfg);
        Node::open(cfg, NodeOptions::default()).map_err(on_error)?
    };
    let report = rt.block_on(node.collect_garbage(args.dry_run, args.max_bytes));
    rt.block_on(node.close())?;
    Ok(report?)
}

fn print(r: &GcReport) {
    let set_aside = if r.dry_run {
        "would quarantine"
    } else {
        "quarantined"
    };
    for q in &r.quarantined {
        eprintln!(
            "{set_aside} asset record {} (fails verification: {}); not followed",
            q.key, q.reason
        );
    }
    let verb = if r.dry_run { "would evict" } else { "evicted" };
    for e in &r.evicted {
        println!(
            "{verb} {} {} {} ({:.1} MiB, key {}){}",
            e.schematic,
            e.version,
            e.path,
            e.bytes as f64 / (1024.0 * 1024.0),
            e.key,
            if e.designated {
                ", a copy held for the cluster (replication.factor)"
            } else {
                ""
            }
        );
    }
    let verb = if r.dry_run { "would remove" } else { "removed" };
    for b in &r.orphans {
        println!("{verb} orphan blob {b}");
    }
    eprintln!("{}", r.summary());
}
