//! `image-factory import`: bring a Talos release into the appliance from an offline bundle or a
//! registry, verifying every signature.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::catalog::{
    ImportOptions, ImportProgress, ImportSummary, Importer, ReleaseStore, Selection, Version,
    bundle_versions,
};
use crate::config::{self, Config, FlagOverrides};
use crate::oci::{ImageSource, LayoutSource, RegistryOptions, RegistrySource};
use crate::store::{self, BlobStore, MetaStore, StoreError};
use crate::trust::{TrustPolicy, TrustedKeys};

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
    /// Architectures, comma-separated (default: every architecture the release carries).
    #[arg(long, value_name = "ARCH[,ARCH]", value_delimiter = ',')]
    pub arch: Vec<String>,
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
    /// Import through a running appliance instead (server mode), e.g. `http://127.0.0.1:8080`.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Admin token file for `--server` (default: `admin.tokenFile`, else
    /// `<dataDir>/keys/admin-token`).
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
pub fn versions(args: &[String]) -> Result<Vec<Version>, String> {
    args.iter()
        .map(|v| {
            Version::parse_strict(v)
                .ok_or_else(|| format!("--version {v:?} is not a version like v1.11.0"))
        })
        .collect()
}

/// Builds a registry source from the flags.
pub fn registry_source(
    args: &SourceArgs,
    host_ns: &str,
) -> Result<(RegistrySource, String), String> {
    let host = host_ns.split('/').next().unwrap_or(host_ns).to_string();
    let mut opts = RegistryOptions {
        insecure: args.insecure_registry,
        ..RegistryOptions::default()
    };
    if let Some(user) = &args.registry_user {
        let password = std::env::var("IF_REGISTRY_PASSWORD").unwrap_or_default();
        opts.credentials = Some((user.clone(), password));
    }
    let source = RegistrySource::new(&host, opts).map_err(|e| e.to_string())?;
    Ok((source, host_ns.trim_end_matches('/').to_string()))
}

fn trust_policy(args: &ImportArgs, cfg: &Config) -> Result<TrustPolicy, String> {
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
        keys.add_file(&path).map_err(|e| e.to_string())?;
    }
    if keys.is_empty() {
        return Err(
            "no trusted keys: give --trust-key KEY.pub or configure trust.publicKeys \
                    (or, insecurely, --insecure-skip-signature-verification)"
                .into(),
        );
    }
    Ok(TrustPolicy::keys(keys))
}

/// Opens the data directory for direct import, with a clear message when a server holds it.
pub fn open_direct(cfg: &Config) -> Result<(Arc<dyn MetaStore>, BlobStore), String> {
    let dir = cfg.data_dir();
    let meta = match store::open_data_dir(dir) {
        Ok(m) => m,
        Err(StoreError::Locked { .. }) => {
            return Err(format!(
                "data directory {} is in use by a running appliance; stop it, or import through \
                 it with --server URL",
                dir.display()
            ));
        }
        Err(e) => return Err(e.to_string()),
    };
    let meta: Arc<dyn MetaStore> = Arc::new(meta);
    let blobs = BlobStore::open(&dir.join("blobs"), meta.clone()).map_err(|e| e.to_string())?;
    Ok((meta, blobs))
}

fn print_summary(s: &ImportSummary, elapsed: std::time::Duration) {
    let r = &s.release;
    let exts = r.extensions.iter().filter(|e| !e.images.is_empty()).count();
    eprintln!(
        "imported {} ({}): {} architecture(s) [{}], {} of {} extension(s), {} overlay(s){}",
        r.version,
        match &r.signatures {
            crate::catalog::Signatures::Verified { keys } =>
                format!("verified by {} key(s)", keys.len()),
            crate::catalog::Signatures::Skipped => "SIGNATURES NOT VERIFIED".into(),
        },
        r.arches.len(),
        r.arches.keys().cloned().collect::<Vec<_>>().join(","),
        exts,
        r.extensions.len(),
        r.overlays.len(),
        if r.partial { ", partial" } else { "" }
    );
    eprintln!(
        "  {} images read, {} blobs stored ({:.1} MB), {} already present, {:.1} s",
        s.images,
        s.blobs_stored,
        s.bytes_stored as f64 / 1e6,
        s.blobs_reused,
        elapsed.as_secs_f64()
    );
}

/// Where an import writes to and how it verifies.
struct Target {
    policy: TrustPolicy,
    releases: ReleaseStore,
    blobs: BlobStore,
    scratch: PathBuf,
}

async fn import_versions<S: ImageSource>(
    source: &S,
    registry: &str,
    versions: &[Version],
    args: &ImportArgs,
    t: &Target,
) -> Result<(), String> {
    for v in versions {
        let started = std::time::Instant::now();
        eprintln!("importing Talos {} from {}", v.tag(), source.describe());
        let progress = BarProgress::new();
        let opts = ImportOptions {
            version: v.clone(),
            arches: args.source.arch.clone(),
            extensions: selection(&args.source.extensions),
            registry: registry.to_string(),
        };
        let result = Importer::new(
            source,
            &t.blobs,
            &t.releases,
            &t.policy,
            &progress,
            &t.scratch,
        )
        .run(&opts)
        .await;
        progress.finish();
        let summary = result.map_err(|e| format!("import of {} failed: {e}", v.tag()))?;
        print_summary(&summary, started.elapsed());
    }
    Ok(())
}

/// Runs `import`.
pub fn run(args: ImportArgs) -> ExitCode {
    match run_inner(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("image-factory import: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_inner(args: &ImportArgs) -> Result<(), String> {
    let flags = FlagOverrides {
        data_dir: args.data_dir.clone(),
        ..FlagOverrides::default()
    };
    let cfg = config::load(args.config.as_deref(), std::env::vars(), &flags)
        .and_then(|c| c.validate().map(|()| c))
        .map_err(|e| e.to_string())?;
    if let Some(server) = &args.server {
        return super::import_remote::run(args, &cfg, server);
    }
    let policy = trust_policy(args, &cfg)?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let (meta, blobs) = open_direct(&cfg)?;
    eprintln!(
        "direct mode: importing into data directory {}",
        cfg.data_dir().display()
    );
    let target = Target {
        policy,
        releases: ReleaseStore::new(meta),
        blobs,
        scratch: cfg.data_dir().join("tmp"),
    };
    match (&args.bundle, &args.source.from_registry) {
        (Some(_), Some(_)) => Err("give either a BUNDLE or --from-registry, not both".into()),
        (None, None) => Err("give a BUNDLE file or --from-registry HOST[/NAMESPACE]".into()),
        (Some(path), None) => rt.block_on(async {
            let layout = LayoutSource::open_async(path.clone())
                .await
                .map_err(|e| e.to_string())?;
            let mut wanted = versions(&args.source.versions)?;
            if wanted.is_empty() {
                wanted = bundle_versions(&layout);
                if wanted.is_empty() {
                    return Err(format!(
                        "{} holds no siderolabs/imager image",
                        path.display()
                    ));
                }
            }
            import_versions(&layout, "ghcr.io", &wanted, args, &target).await
        }),
        (None, Some(host_ns)) => rt.block_on(async {
            let wanted = versions(&args.source.versions)?;
            if wanted.is_empty() {
                return Err("--from-registry needs --version vX.Y.Z".into());
            }
            let (source, registry) = registry_source(&args.source, host_ns)?;
            import_versions(&source, &registry, &wanted, args, &target).await
        }),
    }
}
