//! Command line (clap): `serve` and `schematic` subcommands; logs go to stderr.

mod build;
mod bundle;
mod cluster;
pub mod demo;
mod dev;
mod doctor;
pub mod error;
mod gc;
pub mod import;
mod import_remote;
mod keys;
mod machines;
mod peers;
mod remote;
mod schematic;
mod serve;

use std::path::Path;
use std::process::ExitCode;

use crate::config::{self, Config, FlagOverrides};
use error::CliError;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Image Factory appliance: builds and serves Talos Linux boot assets on-prem.
#[derive(Debug, Parser)]
#[command(name = "image-factory", version, about, propagate_version = true)]
pub struct Cli {
    /// Log options (valid before or after the subcommand).
    #[command(flatten)]
    pub log: LogArgs,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Logging flags.
#[derive(Debug, Args, Clone)]
pub struct LogArgs {
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log level or filter directives (e.g. `info`, `debug`, `image_factory=debug,info`).
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the appliance (HTTP API and metrics) until SIGTERM/SIGINT.
    Serve(serve::ServeArgs),
    /// Work with schematics: compute IDs and canonical forms, talk to a server.
    #[command(subcommand)]
    Schematic(schematic::SchematicCommand),
    /// Import Talos releases from an offline bundle or a registry (signatures verified).
    #[command(disable_version_flag = true)]
    Import(import::ImportArgs),
    /// Build one asset offline (same code path as the server), e.g. `initramfs-amd64.xz`.
    #[command(disable_version_flag = true)]
    Build(build::BuildArgs),
    /// Evict least recently served assets over `cache.maxBytes` (or show what would go).
    Gc(gc::GcArgs),
    /// Check this host: configuration, data directory, external tools.
    Doctor(doctor::DoctorArgs),
    /// Netboot machine assignments (through the running appliance's admin API).
    #[command(subcommand)]
    Machines(machines::MachinesCommand),
    /// The cluster's peers as the running appliance sees them (state, connection, RTT).
    #[command(disable_version_flag = true)]
    Peers(peers::PeersArgs),
    /// Cluster membership: invite a node, join with an invitation, remove a member.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Offline bundles for air-gapped sites.
    #[command(subcommand)]
    Bundle(bundle::BundleCommand),
    /// Key material: `keys secureboot generate` makes a site's Secure Boot keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Developer tools: the synthetic-release test kit.
    #[command(subcommand)]
    Dev(dev::DevCommand),
}

/// The validated configuration of a command: `--config`, `IF_*` variables, `--data-dir`.
fn load_config(file: Option<&Path>, data_dir: Option<&str>) -> Result<Config, CliError> {
    let flags = FlagOverrides {
        data_dir: data_dir.map(str::to_string),
        ..FlagOverrides::default()
    };
    let cfg = config::load(file, std::env::vars(), &flags)?;
    cfg.validate()?;
    Ok(cfg)
}

/// A multi-threaded runtime for a command.
fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| CliError::Io {
            context: "cannot start the async runtime".into(),
            source,
        })
}

/// Installs the tracing subscriber (stderr, text or JSON).
pub fn init_logging(args: &LogArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Parses the command line and runs the command; returns the process exit code.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Schematic(cmd) => schematic::run(cmd),
        Command::Dev(cmd) => dev::run(cmd),
        Command::Import(args) => import::run(args),
        Command::Bundle(cmd) => bundle::run(cmd),
        Command::Cluster(cmd) => cluster::run(cmd),
        Command::Peers(args) => peers::run(args),
        Command::Build(args) => build::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Gc(args) => gc::run(args),
        Command::Machines(cmd) => machines::run(cmd),
        Command::Keys(cmd) => keys::run(cmd),
    }
}
