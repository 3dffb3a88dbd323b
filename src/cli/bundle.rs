//! `image-factory bundle create`: on the connected side of an air gap, pull a release (images
//! and signatures) from a registry once and write the offline bundle to carry in.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::error::{CliError, finish};
use super::import::{BarProgress, SourceArgs, registry_options, selection, versions};
use super::runtime;
use crate::catalog::Arch;
use crate::catalog::export::{ExportOptions, export_release};
use crate::oci::{BundleWriter, RegistrySource};

/// `bundle` subcommands.
#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Pull releases from a registry into one offline bundle file.
    #[command(disable_version_flag = true)]
    Create(CreateArgs),
}

/// Flags of `bundle create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Where the images come from (`--from-registry` is required).
    #[command(flatten)]
    pub source: SourceArgs,
    /// The bundle file to write (written under a temporary name, renamed when complete).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Runs a `bundle` subcommand.
pub fn run(cmd: BundleCommand) -> ExitCode {
    let BundleCommand::Create(args) = cmd;
    finish("bundle create", create(&args))
}

fn create(args: &CreateArgs) -> Result<(), CliError> {
    let host_ns =
        args.source.from_registry.as_deref().ok_or_else(|| {
            CliError::Usage("--from-registry HOST[/NAMESPACE] is required".into())
        })?;
    let wanted = versions(&args.source.versions)?;
    if wanted.is_empty() {
        return Err(CliError::Usage("give at least one --version vX.Y.Z".into()));
    }
    let arches = if args.source.arch.is_empty() {
        Arch::ALL.to_vec()
    } else {
        args.source.arch.clone()
    };
    let rt = runtime()?;
    let host = host_ns.split('/').next().unwrap_or(host_ns);
    let registry = host_ns.trim_end_matches('/').to_string();
    let source = {
        let _guard = rt.enter();
        RegistrySource::new(host, registry_options(&args.source))?
    };
    let started = std::time::Instant::now();
    let mut writer = BundleWriter::create(&args.out)?;
    let progress = BarProgress::new();
    let handle = rt.handle().clone();
    let mut images = 0;
    for v in &wanted {
        eprintln!("copying Talos {} from {}", v.tag(), registry);
        let opts = ExportOptions {
            version: v.clone(),
            arches: arches.clone(),
            extensions: selection(&args.source.extensions),
            registry: registry.clone(),
        };
        // Called outside the runtime: the exporter drives async reads through the handle.
        let summary = export_release(&source, &mut writer, &opts, &progress, handle.clone())
            .map_err(|source| CliError::Export {
                version: v.tag(),
                source,
            })?;
        images += summary.images;
    }
    let bytes = writer.bytes_written();
    let path = writer.finish()?;
    progress.finish();
    eprintln!(
        "wrote {}: {} images with signatures, {:.1} MB, {:.1} s",
        path.display(),
        images,
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
