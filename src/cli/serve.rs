//! `image-factory serve`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::error::{CliError, finish};
use super::runtime;
use crate::config::{self, FlagOverrides};
use crate::frontend;

/// Flags of `serve` (override the config file and `IF_*` variables).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// YAML configuration file (see config/image-factory.yaml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (storage.dataDir).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// HTTP listen address (http.httpListenAddr), e.g. `:8080` or `127.0.0.1:0`.
    #[arg(long, value_name = "ADDR")]
    pub http_listen_addr: Option<String>,
    /// Metrics listen address (metrics.addr); empty disables the metrics listener.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// First run: make and import the synthetic test-kit release (Debian packages, NOT
    /// Talos; fetched with apt-get when missing) so that downloads work at once; labelled as
    /// a demo wherever it shows.
    #[arg(long)]
    pub demo: bool,
}

/// Runs the server until SIGTERM/SIGINT.
pub fn run(args: ServeArgs) -> ExitCode {
    finish("serve", run_inner(args))
}

fn run_inner(args: ServeArgs) -> Result<(), CliError> {
    let flags = FlagOverrides {
        data_dir: args.data_dir,
        http_listen_addr: args.http_listen_addr,
        metrics_addr: args.metrics_addr,
    };
    let cfg = config::load(args.config.as_deref(), std::env::vars(), &flags)?;
    cfg.validate()?;
    if args.demo {
        super::demo::prepare(&cfg)?;
    }
    runtime()?.block_on(async move {
        let running = frontend::serve(cfg, shutdown_signal()).await?;
        running.wait().await
    })?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        () = term => tracing::info!("SIGTERM received, shutting down"),
    }
}
