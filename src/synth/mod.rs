//! Synthetic Talos releases: Talos-shaped releases built from Debian inputs, signed with a
//! kit key, as one offline bundle (`image-factory dev synth-release`). They let an operator
//! evaluate the appliance without Sidero's images, and the tests boot what the appliance
//! builds from them (the QEMU runner lives in the test-support crate, `tests/support`).
//!
//! For every requested Talos version the bundle holds (registry `ghcr.io`, each image an OCI
//! index of `linux/<arch>` manifests, each index cosign-signed at `sha256-<hex>.sig`):
//!
//! * `siderolabs/imager:<v>` — `usr/install/<arch>/{vmlinuz,initramfs.xz,systemd-stub.efi,
//!   systemd-boot.efi}` (Debian kernel, the kit's initramfs, Debian systemd-boot) and
//!   `usr/lib/grub/{i386-pc,x86_64-efi[,arm64-efi]}` (Debian GRUB; arm64 from the Debian arm64
//!   packages when the bundle holds arm64);
//! * `siderolabs/installer-base:<v>` (≥ 1.10) or the legacy two-layer `siderolabs/installer:<v>`;
//! * `siderolabs/extensions:<v>` (`image-digests`, `descriptions.yaml`) and the extension images
//!   it names: `kmod-test` (a real `.ko` under `usr/lib/modules/<kver>/extras/`), `fw-test`
//!   (firmware + Intel/AMD microcode), `svc-test` (an extension service), `plain-<n>`;
//! * `siderolabs/overlays:<v>` (`overlays.yaml`) naming `siderolabs/sbc-test:v0.1.0`.
//!
//! Every kit extension also ships `usr/local/share/if-testkit/<name>.proof` ([`extension_proof`]).
//! The kit's initramfs boots in QEMU, mounts the extensions the way Talos does and prints one
//! [`Marker`] line on the serial console, which shows for each layer whether it was mounted and
//! what the mounted layer holds. Everything is deterministic: the same inputs and key
//! give the same bundle bytes.

pub mod debian;
mod images;
pub mod initramfs;
mod marker;
pub mod sigstore;
pub mod tree;

use std::path::{Path, PathBuf};

pub use debian::{KitInputs, default_kit_dir};
pub use images::{BuiltImage, ImageWriter, Layer, REGISTRY, RuntimeConfig, pseudo_random};
use marker::ADV_LEN;
pub use marker::{Marker, MarkerExtension, parse_adv};
pub use tree::{SOURCE_DATE_EPOCH, Tree};

use crate::oci::{BundleWriter, OciError};
use crate::trust::{SigningKey, TrustError};

/// The first word of the marker line the kit's init prints.
pub const MARKER_PREFIX: &str = "IF-TESTKIT-MARKER";
/// Versions built when none are given.
pub const DEFAULT_VERSIONS: &[&str] = &["v1.10.3", "v1.11.0"];
/// Tag of the kit's overlay image.
pub const OVERLAY_TAG: &str = "v0.1.0";
/// Kernel arguments the kit overlay's installer answers to `get-options`.
pub const SBC_TEST_KERNEL_ARGS: &[&str] = &["console=ttyAMA0,115200", "sbc.test=1"];
/// The GPT offset (LBAs before the primary entries) the kit overlay's installer announces.
pub const SBC_TEST_GPT_OFFSET: u64 = 2048;
/// The LBA the kit overlay's installer writes its u-boot at (in the room the offset leaves).
pub const SBC_TEST_UBOOT_LBA: u64 = 64;

/// The kit overlay's u-boot bytes (`artifacts/arm64/u-boot/test/u-boot.bin`).
pub fn sbc_test_uboot() -> Vec<u8> {
    pseudo_random("sbc-test/u-boot", 64 * 1024)
}

/// Directory (in an extension's rootfs) of the proof file every kit extension ships as
/// `<name>.proof`; the kit's init reads it from each mounted layer (see [`Marker`]).
pub const PROOF_DIR: &str = "usr/local/share/if-testkit";

/// The content of kit extension `name`'s proof file at `version` (the file adds a newline).
pub fn extension_proof(name: &str, version: &str) -> String {
    format!("if-testkit extension {name} {version}")
}

/// Errors of the test kit.
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    /// A Debian input is not there.
    #[error(
        "missing test-kit input {path}: install Debian package {package} (run tests/kit/fetch-debian.sh)"
    )]
    MissingInput {
        /// The file or directory looked for.
        path: PathBuf,
        /// The package that ships it.
        package: String,
    },
    /// Bad options.
    #[error("{0}")]
    Invalid(String),
    /// Building content failed.
    #[error("building test kit content: {0}")]
    Build(String),
    /// A catalog file of the kit could not be encoded.
    #[error("building test kit content: {what}: {source}")]
    Encode {
        /// The file.
        what: &'static str,
        /// The encoder's error.
        #[source]
        source: serde_yaml::Error,
    },
    /// File I/O failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Writing the bundle failed.
    #[error(transparent)]
    Oci(#[from] OciError),
    /// Key handling failed.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// A marker line in console output is not the JSON the kit's init prints.
    #[error("{source} in marker line {line:?}")]
    Marker {
        /// The line after the prefix.
        line: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// Extension layers the init did not mount, or that do not show their own content (one
    /// text per layer).
    #[error("{}", .0.join("; "))]
    Layers(Vec<String>),
    /// The marker's `meta_raw` is not base64.
    #[error("meta_raw is not base64: {0}")]
    MetaBase64(#[source] base64::DecodeError),
    /// The marker's `meta_raw` is not gzip.
    #[error("meta_raw is not gzip: {0}")]
    MetaGzip(#[source] std::io::Error),
    /// A Talos ADV copy is shorter than 256 KiB.
    #[error("ADV block is {0} bytes, expected {ADV_LEN}")]
    AdvSize(usize),
    /// A Talos ADV copy lacks its magic numbers.
    #[error("ADV magic mismatch")]
    AdvMagic,
    /// A Talos ADV copy's checksum does not match its content.
    #[error("ADV checksum mismatch")]
    AdvChecksum,
    /// A Talos ADV entry runs past the data area.
    #[error("ADV entry {tag} at {offset} overruns the data area")]
    AdvOverrun {
        /// The entry's tag.
        tag: u32,
        /// Its offset in the copy.
        offset: usize,
    },
}

impl KitError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> KitError {
        KitError::Io {
            context: context.into(),
            source,
        }
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct SynthOptions {
    /// Output directory (`bundle.tar`, `signing-key.pub`, `signing-key.pem`).
    pub out: PathBuf,
    /// Talos versions (`vX.Y.Z`).
    pub versions: Vec<String>,
    /// Architectures: `amd64` and `arm64`, each with its own Debian kernel, busybox,
    /// systemd-boot and GRUB (`fetch-debian.sh` fetches both).
    pub arches: Vec<String>,
    /// Plain extensions beyond the three fixed ones.
    pub extensions: usize,
    /// Incompressible padding per extension, MiB (0 = none).
    pub extension_size_mb: u64,
    /// Directory `tests/kit/fetch-debian.sh` filled.
    pub kit_dir: PathBuf,
    /// Signing key; `None` = reuse `<out>/signing-key.pem` or generate it.
    pub key: Option<SigningKey>,
    /// Also sign every image keyless with the kit's Sigstore stack ([`sigstore`]), writing
    /// `<out>/sigstore-trusted-root.json` (identity [`sigstore::TEST_SUBJECT`],
    /// [`sigstore::TEST_ISSUER`]).
    pub keyless: bool,
    /// With `keyless`: attach the keyless signatures as Sigstore bundles (OCI referrers, as
    /// cosign 3 does) instead of as `.sig` layers.
    pub keyless_bundles: bool,
}

impl SynthOptions {
    /// Defaults: [`DEFAULT_VERSIONS`], amd64, no extra extensions, no padding,
    /// [`default_kit_dir`].
    pub fn new(out: &Path) -> Self {
        SynthOptions {
            out: out.to_path_buf(),
            versions: DEFAULT_VERSIONS.iter().map(|s| s.to_string()).collect(),
            arches: vec!["amd64".into()],
            extensions: 0,
            extension_size_mb: 0,
            kit_dir: default_kit_dir(),
            key: None,
            keyless: false,
            keyless_bundles: false,
        }
    }
}

/// What was built.
#[derive(Debug, Clone)]
pub struct SynthReport {
    /// `<out>/bundle.tar`.
    pub bundle: PathBuf,
    /// `<out>/signing-key.pub` (PKIX PEM).
    pub public_key: PathBuf,
    /// `<out>/sigstore-trusted-root.json` when the images are also signed keyless.
    pub trusted_root: Option<PathBuf>,
    /// Every image (with its signature), in build order.
    pub images: Vec<BuiltImage>,
    /// Kernel release of the Debian kernel used.
    pub kernel_release: String,
    /// Blob bytes in the bundle.
    pub blob_bytes: u64,
}

/// `(major, minor, patch)` of `vX.Y.Z[-pre]`.
fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let core = v.strip_prefix('v')?.split(['-', '+']).next()?;
    let mut it = core.split('.').map(|p| p.parse::<u64>().ok());
    let r = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(r)
}

/// Builds the bundle described by `opts`.
pub fn synth_release(opts: &SynthOptions) -> Result<SynthReport, KitError> {
    let mut versions = Vec::new();
    for v in &opts.versions {
        let v = if v.starts_with('v') {
            v.clone()
        } else {
            format!("v{v}")
        };
        let parsed = parse_version(&v)
            .ok_or_else(|| KitError::Invalid(format!("version {v:?} is not vX.Y.Z")))?;
        if !versions.iter().any(|(_, x)| x == &v) {
            versions.push((parsed, v));
        }
    }
    if versions.is_empty() {
        return Err(KitError::Invalid("no versions to build".into()));
    }
    versions.sort();
    let mut arches = opts.arches.clone();
    arches.dedup();
    if arches.is_empty() {
        return Err(KitError::Invalid("no architectures to build".into()));
    }
    for a in &arches {
        if a != "amd64" && a != "arm64" {
            return Err(KitError::Invalid(format!(
                "architecture {a:?}: the kit builds amd64 and arm64 only"
            )));
        }
    }
    let inputs = KitInputs::locate(&opts.kit_dir)?;
    std::fs::create_dir_all(&opts.out)
        .map_err(|e| KitError::io(format!("create {}", opts.out.display()), e))?;
    let key = match &opts.key {
        Some(k) => k.clone(),
        None => SigningKey::load_or_generate(&opts.out.join("signing-key.pem"))?.0,
    };
    let public_key = opts.out.join("signing-key.pub");
    std::fs::write(&public_key, key.public_key_pem()?)
        .map_err(|e| KitError::io(format!("write {}", public_key.display()), e))?;

    let sigstore = opts
        .keyless
        .then(|| sigstore::TestSigstore::new("image-factory test kit"));
    let trusted_root = match &sigstore {
        Some(stack) => {
            let path = opts.out.join("sigstore-trusted-root.json");
            std::fs::write(&path, stack.trusted_root_json())
                .map_err(|e| KitError::io(format!("write {}", path.display()), e))?;
            Some(path)
        }
        None => None,
    };
    let bundle_path = opts.out.join("bundle.tar");
    let mut bundle = BundleWriter::create(&bundle_path)?;
    let mut w = ImageWriter {
        bundle: &mut bundle,
        key: &key,
        sigstore: sigstore.as_ref(),
        bundles: opts.keyless_bundles,
        arches: &arches,
        images: Vec::new(),
    };
    let shared = release::Shared::load(&inputs, &opts.kit_dir, &arches)?;
    let overlay = release::overlay_image(&mut w, &inputs)?;
    for (_, v) in &versions {
        tracing::info!(version = %v, "test kit: building release");
        release::version(&mut w, &inputs, &shared, opts, v, &overlay)?;
    }
    let images = w.images;
    let blob_bytes = bundle.bytes_written();
    bundle.finish()?;
    Ok(SynthReport {
        bundle: bundle_path,
        public_key,
        trusted_root,
        images,
        kernel_release: inputs.kernel_release.clone(),
        blob_bytes,
    })
}

mod release;
