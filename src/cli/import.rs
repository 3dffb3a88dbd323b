//! `image-factory import`: bring a Talos release into the appliance from an offline bundle or a
//! registry, verifying every signature.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::error::{CliError, finish, open_error};
use super::{load_config, runtime};
use crate::catalog::{Arch, ImportProgress, ImportSummary, Selection, Version};
use crate::config::Config;
use crate::node::{ImportFrom, ImportJob, Node, NodeOptions};
use crate::oci::RegistryOptions;
use crate::trust::{KeylessPolicy, TrustPolicy, TrustedKeys};

/// Where release images come from, shared by `import` and `bundle create`.
#[derive(Debug, Args, Clone)]
pub struct SourceArgs {
    /// Pull from this registry (and optional namespace) instead of a bundle file,
    /// e.g. `registry.local:5000/mirror`.
    #[arg(long, value_name = "HOST[/NAMESPACE]")]
    pub from_registry: Option<String>,
    /// Allow plain HTTP / unverified TLS to a non-loopback registry.
    #[arg(long)]
    pub insecure_registry: bool,
    /// Registry user name (password from IF_REGISTRY_PASSWORD).
    #[arg(long, value_name = "USER")]
    pub registry_user: Option<String>,
    /// Talos versions to import (repeatable; default: every version found in a bundle).
    #[arg(long = "version", value_name = "vX.Y.Z")]
    pub versions: Vec<String>,
    /// Architectures, comma-separated: `amd64`, `arm64` (default: every architecture the
    /// release carries).
    #[arg(long, value_name = "ARCH[,ARCH]", value_delimiter = ',')]
    pub arch: Vec<Arch>,
    /// Extensions to import: `all` or a comma-separated list of names.
    #[arg(long, value_name = "all|NAME[,NAME]", default_value = "all")]
    pub extensions: String,
}

/// Flags of `import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Offline bundle (OCI image layout tar) written by `image-factory bundle create`.
    #[arg(value_name = "BUNDLE")]
    pub bundle: Option<PathBuf>,
    /// Where the images come from.
    #[command(flatten)]
    pub source: SourceArgs,
    /// Trusted cosign public key (PEM); repeatable; adds to `trust.publicKeys`.
    #[arg(long = "trust-key", value_name = "KEY.pub")]
    pub trust_keys: Vec<PathBuf>,
    /// Import without verifying signatures (insecure; recorded on the release and warned about).
    #[arg(long)]
    pub insecure_skip_signature_verification: bool,
    /// YAML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory to import into (direct mode; no server may be running on it).
    #[arg(long, value_name = "DIR", conflicts_with = "server")]
    pub data_dir: Option<String>,
    /// Import through a running appliance's admin API instead (server mode), e.g.
    /// `unix:/var/lib/image-factory/admin.sock` (the default admin listener) or `https://host:port`.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Admin token file for `--server` (default: `admin.tokenFile`, else the data
    /// directory's that holds the `--server` socket, else `<dataDir>/keys/admin-token`).
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
}

/// An indicatif-backed progress display: a byte bar with rate and ETA, steps printed above it.
pub struct BarProgress {
    bar: ProgressBar,
}

impl BarProgress {
    /// A progress display on stderr (hidden when stderr is not a terminal).
    pub fn new() -> Self {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        ) {
            bar.set_style(style);
        }
        Self { bar }
    }

    /// A handle to the underlying bar (for byte counting from a stream).
    pub fn clone_handle(&self) -> ProgressBar {
        self.bar.clone()
    }

    /// Prints `text` above the bar (or plainly without a terminal).
    pub fn println(&self, text: &str) {
        if self.bar.is_hidden() {
            eprintln!("{text}");
        } else {
            self.bar.println(text);
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Default for BarProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl ImportProgress for BarProgress {
    fn step(&self, message: &str) {
        if self.bar.is_hidden() {
            eprintln!("  {message}");
        } else {
            self.bar.println(format!("  {message}"));
        }
    }
    fn add_total(&self, bytes: u64) {
        self.bar.inc_length(bytes);
    }
    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
}

/// Parses `--extensions`.
pub fn selection(arg: &str) -> Selection {
    if arg.trim().eq_ignore_ascii_case("all") {
        Selection::All
    } else {
        Selection::Only(
            arg.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        )
    }
}

/// Parses `--version` values (a missing `v` is added).
pub fn versions(args: &[String]) -> Result<Vec<Version>, CliError> {
    args.iter()
        .map(|v| {
            Version::parse_strict(v).ok_or_else(|| {
                CliError::Usage(format!("--version {v:?} is not a version like v1.11.0"))
            })
        })
        .collect()
}

/// Transport options of `--from-registry` from the flags (password from
/// `IF_REGISTRY_PASSWORD`).
pub fn registry_options(args: &SourceArgs) -> RegistryOptions {
    let mut opts = RegistryOptions {
        insecure: args.insecure_registry,
        ..RegistryOptions::default()
    };
    if let Some(user) = &args.registry_user {
        let password = std::env::var(crate::config::REGISTRY_PASSWORD_ENV).unwrap_or_default();
        opts.credentials = Some((user.clone(), password));
    }
    opts
}

fn trust_policy(args: &ImportArgs, cfg: &Config) -> Result<TrustPolicy, CliError> {
    if args.insecure_skip_signature_verification {
        eprintln!(
            "WARNING: --insecure-skip-signature-verification: imported images are NOT verified; \
             the release is marked unverified and the server warns about it on every start"
        );
        return Ok(TrustPolicy::insecure_skip());
    }
    let mut keys = TrustedKeys::new();
    for path in cfg
        .trust
        .public_keys
        .iter()
        .map(PathBuf::from)
        .chain(args.trust_keys.iter().cloned())
    {
        keys.add_file(&path)?;
    }
    let keyless = KeylessPolicy::from_config(&cfg.trust)?.map(std::sync::Arc::new);
    if keys.is_empty() && keyless.is_none() {
        return Err(CliError::Usage(
            "no trusted keys: give --trust-key KEY.pub, configure trust.publicKeys or \
             trust.sigstoreTrustedRoot (or, insecurely, --insecure-skip-signature-verification)"
                .into(),
        ));
    }
    Ok(TrustPolicy::keys_or_keyless(keys, keyless))
}

/// What an import did, in two lines.
fn summary_lines(s: &ImportSummary, elapsed: std::time::Duration) -> String {
    format!(
        "{}\n  {} images read, {} blobs stored ({:.1} MB), {} already present, {:.1} s",
        summary_line(s),
        s.images,
        s.blobs_stored,
        s.bytes_stored as f64 / 1e6,
        s.blobs_reused,
        elapsed.as_secs_f64()
    )
}

fn summary_line(s: &ImportSummary) -> String {
    let r = &s.release;
    let exts = r.extensions.iter().filter(|e| !e.images.is_empty()).count();
    format!(
        "imported {} ({}): {} architecture(s) [{}], {} of {} extension(s), {} overlay(s){}",
        r.version,
        match &r.signatures {
            crate::catalog::Signatures::Verified { keys } =>
                format!("verified by {} key(s)", keys.len()),
            crate::catalog::Signatures::Skipped => "SIGNATURES NOT VERIFIED".into(),
        },
        r.arches.len(),
        r.arches
            .keys()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(","),
        exts,
        r.extensions.len(),
        r.overlays.len(),
        if r.partial { ", partial" } else { "" }
    )
}

/// Runs `import`.
pub fn run(args: ImportArgs) -> ExitCode {
    finish("import", run_inner(&args))
}

/// The refusal of a call naming both `BUNDLE` and `--from-registry`, or neither.
pub fn source_error(both: bool) -> CliError {
    CliError::Usage(if both {
        "give either a BUNDLE or --from-registry, not both".into()
    } else {
        "give a BUNDLE file or --from-registry HOST[/NAMESPACE]".into()
    })
}

fn run_inner(args: &ImportArgs) -> Result<(), CliError> {
    let cfg = load_config(args.config.as_deref(), args.data_dir.as_deref())?;
    if let Some(server) = &args.server {
        return super::import_remote::run(args, &cfg, server);
    }
    let versions = versions(&args.source.versions)?;
    let from = match (&args.bundle, &args.source.from_registry) {
        (Some(_), Some(_)) => return Err(source_error(true)),
        (None, None) => return Err(source_error(false)),
        (Some(path), None) => ImportFrom::Bundle(path.clone()),
        (None, Some(host_ns)) => {
            if versions.is_empty() {
                return Err(CliError::Usage(
                    "--from-registry needs --version vX.Y.Z".into(),
                ));
            }
            ImportFrom::Registry {
                host_ns: host_ns.clone(),
                options: registry_options(&args.source),
            }
        }
    };
    let job = ImportJob {
        from,
        versions,
        arches: args.source.arch.clone(),
        extensions: selection(&args.source.extensions),
        policy: trust_policy(args, &cfg)?,
    };
    import_direct(cfg, &job)
}

/// Runs `job` directly on the data directory of `cfg` (no appliance may hold it), with a
/// progress bar and one summary per imported version.
pub(super) fn import_direct(cfg: Config, job: &ImportJob) -> Result<(), CliError> {
    let rt = runtime()?;
    let dir = cfg.data_dir().to_path_buf();
    let node = {
        let on_error = open_error(&cfg);
        Node::open(cfg, NodeOptions::default()).map_err(on_error)?
    };
    eprintln!(
        "direct mode: importing into data directory {}",
        dir.display()
    );
    let progress = BarProgress::new();
    let started = std::time::Instant::now();
    let result = rt.block_on(job.run(&node, &progress, |summary| {
        progress.println(&summary_lines(summary, started.elapsed()));
    }));
    progress.finish();
    rt.block_on(node.close())?;
    Ok(result?)
}
