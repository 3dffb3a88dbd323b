//! `image-factory dev …`: developer tools (the synthetic-release test kit).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::error::finish;
use crate::synth::{self, SynthOptions};

/// Developer subcommands.
#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Build a synthetic signed Talos release bundle from Debian packages (the test kit):
    /// writes DIR/bundle.tar and DIR/signing-key.pub (DIR/signing-key.pem is reused if present).
    #[command(disable_version_flag = true)]
    SynthRelease(SynthArgs),
}

/// `dev synth-release` flags.
#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Talos version to synthesize (repeatable); default v1.10.3 and v1.11.0.
    #[arg(long = "version", value_name = "vX.Y.Z")]
    pub versions: Vec<String>,
    /// Architecture (repeatable; arm64 from the Debian arm64 packages `fetch-debian.sh` fetches).
    #[arg(long = "arch", value_name = "ARCH", default_value = "amd64")]
    pub arches: Vec<String>,
    /// Plain extensions to add beyond kmod-test, fw-test and svc-test.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub extensions: usize,
    /// Pad every extension with this many MiB of incompressible data.
    #[arg(long, value_name = "M", default_value_t = 0)]
    pub extension_size_mb: u64,
    /// Where tests/kit/fetch-debian.sh unpacked the Debian inputs.
    #[arg(long, value_name = "DIR", env = "IF_TESTKIT_DIR", default_value = synth::debian::DEFAULT_KIT_DIR)]
    pub kit_dir: PathBuf,
    /// Also sign every image keyless with the kit's own Sigstore stack (Fulcio-like CA,
    /// Rekor-like log) and write `sigstore-trusted-root.json` beside the bundle; its identity
    /// is issuer `https://issuer.test-kit.example`, subject `release@test-kit.example`.
    #[arg(long)]
    pub keyless: bool,
    /// With --keyless: attach the keyless signatures as Sigstore bundles (OCI referrers, as
    /// cosign 3 signs newer Talos) instead of as `.sig` layers.
    #[arg(long, requires = "keyless")]
    pub keyless_bundles: bool,
}

/// Runs a `dev` subcommand.
pub fn run(cmd: DevCommand) -> ExitCode {
    match cmd {
        DevCommand::SynthRelease(a) => {
            let mut opts = SynthOptions::new(&a.out);
            if !a.versions.is_empty() {
                opts.versions = a.versions;
            }
            opts.arches = a.arches;
            opts.extensions = a.extensions;
            opts.extension_size_mb = a.extension_size_mb;
            opts.kit_dir = a.kit_dir;
            opts.keyless = a.keyless;
            opts.keyless_bundles = a.keyless_bundles;
            let start = std::time::Instant::now();
            match synth::synth_release(&opts) {
                Ok(r) => {
                    println!(
                        "wrote {} ({} images + signatures, {:.1} MiB of blobs, kernel {}) in {:.1}s",
                        r.bundle.display(),
                        r.images.len(),
                        r.blob_bytes as f64 / (1024.0 * 1024.0),
                        r.kernel_release,
                        start.elapsed().as_secs_f64()
                    );
                    for i in &r.images {
                        println!("  {}@{}", i.reference(), i.index.digest);
                    }
                    println!("public key: {}", r.public_key.display());
                    if let Some(root) = &r.trusted_root {
                        println!(
                            "sigstore trusted root: {} (issuer {}, subject {})",
                            root.display(),
                            synth::sigstore::TEST_ISSUER,
                            synth::sigstore::TEST_SUBJECT
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => finish("dev synth-release", Err(e.into())),
            }
        }
    }
}
