//! `image-factory build`: build one asset offline, through the same asset pipeline the server
//! uses (a cached asset is reused unless `--rebuild`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget};

use super::import::open_direct;
use crate::assets::{AssetMetrics, AssetRequest, Assets, DataStores, Outcome, Served};
use crate::catalog::Version;
use crate::config::{self, FlagOverrides};
use crate::imager::builder::StageReporter;
use crate::schematic::{Schematic, is_valid_id};
use crate::store::SchematicStore;
use crate::trust::SigningKey;

/// Flags of `build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Schematic: a YAML file, `-` for stdin, or the ID of a stored schematic.
    #[arg(long, value_name = "FILE|ID")]
    pub schematic: String,
    /// Talos version, e.g. `v1.11.0` (must be imported).
    #[arg(long = "version", value_name = "vX.Y.Z")]
    pub version: String,
    /// Asset path as in `/image/<id>/<version>/<path>`, e.g. `initramfs-amd64.xz`.
    #[arg(long, value_name = "PATH")]
    pub path: String,
    /// Directory to write the asset to (file name = PATH); default: only store it.
    #[arg(short = 'o', long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// YAML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (direct mode; no server may be running on it).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// zstd level of the initramfs' appended cpio (1–22; upstream and default: 18). Its
    /// payload is already-compressed squashfs, so lower levels are much faster for a few KiB.
    #[arg(long, value_name = "N", default_value_t = 18,
          value_parser = clap::value_parser!(u32).range(1..=22))]
    pub zstd_level: u32,
    /// Build even when the asset is cached (the fresh build replaces the cached record).
    #[arg(long)]
    pub rebuild: bool,
}

/// Runs `build`.
pub fn run(args: BuildArgs) -> ExitCode {
    match run_inner(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("image-factory build: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load_schematic(arg: &str, store: &SchematicStore) -> Result<Schematic, String> {
    if is_valid_id(arg) && !std::path::Path::new(arg).exists() {
        let canonical = store
            .get(arg)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("schematic {arg} is not stored in this data directory"))?;
        return Schematic::parse(canonical.as_bytes()).map_err(|e| e.to_string());
    }
    let bytes = if arg == "-" {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut b).map_err(|e| e.to_string())?;
        b
    } else {
        std::fs::read(arg).map_err(|e| format!("{arg}: {e}"))?
    };
    Schematic::parse(&bytes).map_err(|e| format!("invalid schematic: {e}"))
}

/// The asset service over the data directory (direct mode), as `serve` builds it; build
/// stages go to `stages`.
pub fn open_assets(
    cfg: &config::Config,
    zstd_level: u32,
    stages: StageReporter,
) -> Result<(Assets, SchematicStore), String> {
    let (meta, blobs) = open_direct(cfg)?;
    let schematics = SchematicStore::new(Arc::clone(&meta)).map_err(|e| e.to_string())?;
    let (key, _) =
        SigningKey::load_or_generate(&cfg.signing_key_path()).map_err(|e| e.to_string())?;
    let stores = DataStores {
        meta,
        blobs,
        key: Arc::new(key),
    };
    let metrics = AssetMetrics::new(Arc::new(metrics::NoopRecorder));
    Ok((
        Assets::from_config(cfg, stores, metrics, zstd_level, stages),
        schematics,
    ))
}

fn run_inner(args: &BuildArgs) -> Result<(), String> {
    let flags = FlagOverrides {
        data_dir: args.data_dir.clone(),
        ..FlagOverrides::default()
    };
    let cfg = config::load(args.config.as_deref(), std::env::vars(), &flags)
        .and_then(|c| c.validate().map(|()| c))
        .map_err(|e| e.to_string())?;
    let version = Version::parse_strict(&args.version)
        .ok_or_else(|| format!("--version {:?} is not a version like v1.11.0", args.version))?;
    let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    let (assets, schematics) =
        open_assets(&cfg, args.zstd_level, stage_display(&spinner, &args.path))?;
    let schematic = load_schematic(&args.schematic, &schematics)?;
    let (canonical, id) = (schematic.canonical(), schematic.id());
    eprintln!(
        "building {} for schematic {id}, Talos {}",
        args.path,
        version.tag()
    );
    spinner.set_message(format!("building {}", args.path));
    spinner.enable_steady_tick(Duration::from_millis(120));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let req = AssetRequest {
        schematic_id: id.clone(),
        canonical,
        version,
        path: args.path.clone(),
        rebuild: args.rebuild,
    };
    let result = build_and_copy(&runtime, &assets, req, &spinner, args.out.as_deref());
    let (served, elapsed) = result?;
    let record = &served.record;
    eprintln!(
        "{}: {} bytes, sha256 {}, {:.2} s ({})",
        args.path,
        record.size,
        record.sha256,
        elapsed.as_secs_f64(),
        match served.outcome {
            Outcome::Hit => "cached",
            Outcome::Built | Outcome::Waited => "built",
        }
    );
    Ok(())
}

/// Gets (builds on a miss) the asset of `req` and copies it into `out` if given; returns it
/// with the time the get took.
fn build_and_copy(
    runtime: &tokio::runtime::Runtime,
    assets: &Assets,
    req: AssetRequest,
    spinner: &ProgressBar,
    out: Option<&std::path::Path>,
) -> Result<(Served, Duration), String> {
    let started = Instant::now();
    let path = req.path.clone();
    let served = runtime.block_on(assets.get(req));
    spinner.finish_and_clear();
    let served = served.map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    if let Some(dir) = out {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let dest = dir.join(&path);
        runtime
            .block_on(copy_asset(assets, &served, &dest))
            .map_err(|e| format!("{}: {e}", dest.display()))?;
        eprintln!("wrote {}", dest.display());
    }
    Ok((served, elapsed))
}

/// Shows build stages on the spinner (`building <path>: <stage>`); without a terminal (the
/// spinner is hidden) each stage is printed as a line instead, so logs show them too.
fn stage_display(spinner: &ProgressBar, path: &str) -> StageReporter {
    let spinner = spinner.clone();
    let label = format!("building {path}");
    StageReporter::new(move |stage| {
        if spinner.is_hidden() {
            eprintln!("  {stage}");
        } else {
            spinner.set_message(format!("{label}: {stage}"));
        }
    })
}

/// Streams a verified asset into `dest`.
async fn copy_asset(
    assets: &Assets,
    served: &Served,
    dest: &std::path::Path,
) -> Result<(), String> {
    use futures_util::StreamExt as _;
    use tokio::io::{AsyncSeekExt as _, AsyncWriteExt as _};
    let body = assets.open(served, None).map_err(|e| e.to_string())?;
    let out = std::fs::File::create(dest).map_err(|e| e.to_string())?;
    // Checked already (just built or just verified): copied in the kernel, holes kept.
    if let Some(copied) = body.copy_to_file(&out) {
        return copied.map(|_| ()).map_err(|e| e.to_string());
    }
    let mut out = tokio::fs::File::from_std(out);
    let mut stream = std::pin::pin!(body.into_stream());
    // All-zero chunks become holes: disk images are mostly zeros and stay sparse.
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        if crate::zeros::is_zero(&chunk) {
            let len = i64::try_from(chunk.len()).map_err(|e| e.to_string())?;
            out.seek(std::io::SeekFrom::Current(len))
                .await
                .map_err(|e| e.to_string())?;
        } else {
            out.write_all(&chunk).await.map_err(|e| e.to_string())?;
        }
        size += chunk.len() as u64;
    }
    out.flush().await.map_err(|e| e.to_string())?;
    out.set_len(size).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::BuildArgs;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BuildArgs,
    }

    fn parse(extra: &[&str]) -> Result<BuildArgs, clap::Error> {
        let base = [
            "build",
            "--schematic",
            "s.yaml",
            "--version",
            "v1.11.0",
            "--path",
            "p",
        ];
        Cli::try_parse_from(base.iter().chain(extra)).map(|c| c.args)
    }

    #[test]
    fn zstd_level_defaults_to_upstream_and_is_bounded() {
        assert_eq!(parse(&[]).unwrap().zstd_level, 18);
        assert_eq!(parse(&["--zstd-level", "3"]).unwrap().zstd_level, 3);
        assert_eq!(parse(&["--zstd-level", "22"]).unwrap().zstd_level, 22);
        assert!(parse(&["--zstd-level", "0"]).is_err());
        assert!(parse(&["--zstd-level", "23"]).is_err());
    }
}
