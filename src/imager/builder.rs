//! The `Builder`: one entry point that turns (schematic, version, asset path) into a stored
//! asset — kernel, cmdline, initramfs with extensions, UKI, installer image, raw disk image
//! (`builder/disk.rs`), ISO (`builder/iso.rs`). Used by
//! `image-factory build` and (next) by the HTTP asset pipeline. Blocking: run it on a blocking
//! thread.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::catalog::{ArchRelease, BlobRef, Release, ReleaseStore, Version};
use crate::io_context::io_err;
use crate::oci::{ImageConfig, ImageManifest};
use crate::schematic::Schematic;
use crate::store::{BlobInfo, BlobStore, StoreError};
use crate::trust::secureboot::{SecureBootKeys, authenticode};

use super::cancel::Cancel;
use super::cmdline::kernel_cmdline;
use super::error::ImagerError;
use super::initramfs::{
    ExtensionSource, InitramfsInputs, build_initramfs, embedded_config_extension_tar,
    schematic_extension_tar,
};
use super::installer::{
    BaseImage, InstallerArtifacts, InstallerError, InstallerInputs, build_installer,
    write_docker_archive,
};
use super::path::{content_type, parse_path};
use super::pe::SymbolTable;
use super::profile::{OutputKind, Profile, enhance_from_schematic};
use super::quirks::Quirk;
use super::signed_uki::{MeasuredParts, pcr_signatures, stub_sbat};
use super::tool::ToolRun;
use super::uki::{
    Payload, UkiOptions, UkiParts, UkiPurpose, assemble_uki, os_release, read_kernel_release,
    standard_profiles,
};

mod disk;
mod iso;
mod overlay;
mod secureboot;
mod stage;
#[cfg(test)]
mod tests;

pub use stage::{Stage, StageReporter};

/// Largest manifest or config read from the blob store.
const MAX_METADATA: u64 = 4 << 20;

/// Builder settings.
#[derive(Debug, Clone)]
pub struct BuilderOptions {
    /// The factory identity (goes into the schematic extension's author): the cluster's
    /// factory URL on a member, `http.externalURL` on a standalone node
    /// ([`crate::replication::factory_identity`]).
    pub factory_url: String,
    /// Scratch directory on the data volume.
    pub scratch: PathBuf,
    /// zstd level of the initramfs' appended cpio (upstream: 18).
    pub initramfs_zstd_level: u32,
    /// Compression of disk-image outputs.
    pub compression: super::formats::CompressionLevels,
    /// Where external tools are found and how long one may run.
    pub tools: super::tool::Tools,
    /// Secure Boot keys; `None` refuses `-secureboot` assets (`secure boot is disabled`).
    pub secure_boot: Option<Arc<SecureBootKeys>>,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest<'a> {
    /// The schematic.
    pub schematic: &'a Schematic,
    /// Its ID.
    pub schematic_id: &'a str,
    /// Its canonical YAML.
    pub canonical: &'a str,
    /// Target Talos version.
    pub version: &'a Version,
    /// Asset path, e.g. `initramfs-amd64.xz`.
    pub path: &'a str,
    /// The build's cancellation and deadline.
    pub cancel: Cancel,
}

/// A built (or, for the kernel, referenced) asset in the blob store.
#[derive(Debug, Clone)]
pub struct Built {
    /// The blob.
    pub blob: BlobInfo,
    /// Output kind.
    pub kind: OutputKind,
    /// `Content-Type` for the asset path.
    pub content_type: &'static str,
    /// The profile it was built from.
    pub profile: Profile,
    /// Other blobs the build wrote (an installer's initramfs, UKI and OCI blobs), so the
    /// cache can account for and collect them with the asset. Disk images and ISOs write
    /// none: their initramfs and UKI are scratch files.
    pub intermediates: Vec<BlobInfo>,
}

/// Builds assets from imported releases.
#[derive(Clone)]
pub struct Builder {
    blobs: BlobStore,
    releases: ReleaseStore,
    opts: BuilderOptions,
    stages: StageReporter,
}

fn info(r: &BlobRef) -> BlobInfo {
    BlobInfo {
        blake3: r.blake3.clone(),
        sha256: r.sha256.clone(),
        size: r.size,
    }
}

impl Builder {
    /// A builder over the data directory's stores.
    pub fn new(blobs: BlobStore, releases: ReleaseStore, opts: BuilderOptions) -> Self {
        Builder {
            blobs,
            releases,
            opts,
            stages: StageReporter::default(),
        }
    }

    /// The same builder reporting its stages to `stages` (default: logged at debug level).
    pub fn with_stages(mut self, stages: StageReporter) -> Self {
        self.stages = stages;
        self
    }

    /// The settings this builder was made with (some of them shape output bytes).
    pub fn options(&self) -> &BuilderOptions {
        &self.opts
    }

    /// Resolves the request into the enhanced profile and the release it builds from.
    pub fn profile(&self, req: &BuildRequest<'_>) -> Result<(Profile, Arc<Release>), ImagerError> {
        let profile = parse_path(req.path, req.version)?;
        let release = self
            .releases
            .get(&req.version.tag())
            .map_err(ImagerError::internal("release store"))?
            .ok_or_else(|| ImagerError::VersionNotAvailable(req.version.to_string()))?;
        let mut profile = enhance_from_schematic(
            profile,
            req.schematic,
            &release,
            self.opts.secure_boot.is_some(),
        )?;
        if profile.schematic_extension.is_some() {
            profile.schematic_extension = Some(req.schematic_id.to_string());
        }
        // Refused here already, so the asset pipeline answers before queueing a build.
        ensure_buildable(&profile)?;
        Ok((profile, release))
    }

    /// Builds the asset for `req` (blocking).
    pub fn build(&self, req: &BuildRequest<'_>) -> Result<Built, ImagerError> {
        let (profile, release) = self.profile(req)?;
        self.build_resolved(req, profile, &release)
    }

    /// Builds the asset for `req` from an already resolved profile and release (blocking).
    pub fn build_resolved(
        &self,
        req: &BuildRequest<'_>,
        mut profile: Profile,
        release: &Release,
    ) -> Result<Built, ImagerError> {
        ensure_buildable(&profile)?;
        if let Some(damage) = self.releases.damage(&release.version)? {
            return Err(ImagerError::ReleaseDamaged {
                version: release.version.clone(),
                damage,
            });
        }
        req.cancel.check()?;
        let mut intermediates = Vec::new();
        let arch = profile.arch;
        let assets = release.arches.get(&arch).ok_or_else(|| {
            ImagerError::Validation(format!("release {} has no {arch} assets", release.version))
        })?;
        // The overlay (host architecture) extracted and asked for its options; removed with
        // `overlay_scratch` when the build ends.
        std::fs::create_dir_all(&self.opts.scratch)?;
        let overlay_scratch = tempfile::tempdir_in(&self.opts.scratch)?;
        let overlay = self.prepare_overlay(req, &mut profile, overlay_scratch.path())?;
        let blob = match profile.output.kind {
            OutputKind::Kernel => {
                let kernel = asset(assets, "vmlinuz")?;
                self.input(kernel)?;
                info(kernel)
            }
            OutputKind::Cmdline => {
                let line = kernel_cmdline(&profile, &[])?;
                self.blobs
                    .put_bytes(line.as_bytes())
                    .map_err(ImagerError::internal("store cmdline"))?
            }
            OutputKind::Initramfs => self.initramfs(req, &profile, assets)?,
            OutputKind::Uki => {
                self.uki(req, &profile, assets, UkiPurpose::Uki, &mut intermediates)?
            }
            OutputKind::Installer => self.installer(
                req,
                &profile,
                release,
                assets,
                overlay_scratch.path(),
                &mut intermediates,
            )?,
            OutputKind::Image => self.disk_image(req, &profile, assets, overlay.as_ref())?,
            OutputKind::Iso => self.iso(req, &profile, assets)?,
        };
        Ok(Built {
            blob,
            kind: profile.output.kind,
            content_type: content_type(req.path),
            profile,
            intermediates,
        })
    }

    /// The path of release blob `r`, read whole and checked against its name first: every
    /// release byte that goes into a build is verified, whether our code or a tool reads it.
    fn input(&self, r: &BlobRef) -> Result<PathBuf, ImagerError> {
        self.blobs
            .checked_path(&r.blake3, r.size)
            .map_err(|e| match e {
                StoreError::BlobDamaged(damage) => ImagerError::DamagedInput(damage),
                other => ImagerError::Store(other),
            })
    }

    /// How this build's external tools run.
    fn tool_run(&self, req: &BuildRequest<'_>) -> ToolRun {
        ToolRun {
            tools: self.opts.tools.clone(),
            cancel: req.cancel.clone(),
        }
    }

    fn writer(&self) -> Result<crate::store::BlobWriter, ImagerError> {
        self.blobs
            .writer()
            .map_err(ImagerError::internal("blob writer"))
    }

    /// The initramfs with the profile's extensions, the schematic extension and the embedded
    /// configuration, stored as a blob (an output, or an input of an installer).
    fn initramfs(
        &self,
        req: &BuildRequest<'_>,
        profile: &Profile,
        assets: &ArchRelease,
    ) -> Result<BlobInfo, ImagerError> {
        let mut w = self.writer()?;
        self.write_initramfs(req, profile, assets, &mut w)?;
        w.finish().map_err(ImagerError::internal("store initramfs"))
    }

    /// Writes the initramfs of [`Builder::initramfs`] into `out`.
    fn write_initramfs<W: Write + ?Sized>(
        &self,
        req: &BuildRequest<'_>,
        profile: &Profile,
        assets: &ArchRelease,
        out: &mut W,
    ) -> Result<(), ImagerError> {
        let mut extensions: Vec<ExtensionSource> = profile
            .system_extensions
            .iter()
            .map(|e| ExtensionSource::Image {
                name: e.name.clone(),
                manifest: e.image.manifest.clone(),
            })
            .collect();
        if let Some(id) = &profile.schematic_extension {
            let tar = schematic_extension_tar(id, &self.opts.factory_url, req.canonical)
                .map_err(ImagerError::internal("schematic extension"))?;
            extensions.push(ExtensionSource::Tar {
                name: "schematic".into(),
                tar,
            });
        }
        let config = &profile.customization.embedded_machine_configuration;
        if !config.is_empty() {
            let tar = embedded_config_extension_tar(config.as_bytes())
                .map_err(ImagerError::internal("embedded-config extension"))?;
            extensions.push(ExtensionSource::Tar {
                name: "embedded-config".into(),
                tar,
            });
        }
        let mut inputs = InitramfsInputs::new(
            profile.version.clone(),
            asset(assets, "initramfs.xz")?.clone(),
            extensions,
        );
        inputs.scratch = Some(self.opts.scratch.clone());
        inputs.cpio_level = self.opts.initramfs_zstd_level;
        inputs.tools = self.tool_run(req);
        std::fs::create_dir_all(&self.opts.scratch).map_err(ImagerError::Io)?;
        build_initramfs(&inputs, &self.blobs, out, &mut |p| {
            self.stages.report(Stage::Initramfs(&p))
        })
        .map_err(ImagerError::internal("initramfs"))?;
        Ok(())
    }

    /// A UKI for `purpose` (its own initramfs and the profile's command line).
    fn uki(
        &self,
        req: &BuildRequest<'_>,
        profile: &Profile,
        assets: &ArchRelease,
        purpose: UkiPurpose,
        intermediates: &mut Vec<BlobInfo>,
    ) -> Result<BlobInfo, ImagerError> {
        let initramfs = self.initramfs(req, profile, assets)?;
        intermediates.push(initramfs.clone());
        self.uki_with(profile, assets, purpose, &initramfs)
    }

    /// A UKI for `purpose` around an already built initramfs, stored as a blob.
    fn uki_with(
        &self,
        profile: &Profile,
        assets: &ArchRelease,
        purpose: UkiPurpose,
        initramfs: &BlobInfo,
    ) -> Result<BlobInfo, ImagerError> {
        let mut w = BufWriter::new(self.writer()?);
        self.write_uki(
            profile,
            assets,
            purpose,
            &self.blobs.path(&initramfs.blake3)?,
            &mut w,
        )?;
        let w = w.into_inner().map_err(|e| io_err("uki")(e.into_error()))?;
        w.finish().map_err(ImagerError::internal("store uki"))
    }

    /// The initramfs and, with `uki`, the UKI for that purpose around it, written as plain
    /// files under `dir` (`initramfs.xz`, `uki.efi`): inputs that an ISO or a disk image
    /// copies into itself and that are not served, so they are neither hashed, synced nor
    /// stored (the output that holds them is, with both digests). Removed with `dir`.
    fn scratch_payloads(
        &self,
        req: &BuildRequest<'_>,
        profile: &Profile,
        assets: &ArchRelease,
        uki: Option<UkiPurpose>,
        dir: &Path,
    ) -> Result<(PathBuf, Option<PathBuf>), ImagerError> {
        let initramfs = dir.join("initramfs.xz");
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&initramfs)?);
        self.write_initramfs(req, profile, assets, &mut out)?;
        out.into_inner()
            .map_err(|e| io_err("initramfs")(e.into_error()))?;
        let Some(purpose) = uki else {
            return Ok((initramfs, None));
        };
        let path = dir.join("uki.efi");
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&path)?);
        self.write_uki(profile, assets, purpose, &initramfs, &mut out)?;
        out.into_inner()
            .map_err(|e| io_err("uki")(e.into_error()))?;
        Ok((initramfs, Some(path)))
    }

    /// Writes the UKI of [`Builder::uki_with`] around the initramfs at `initramfs` into `out`;
    /// for a Secure Boot profile with `.pcrpkey` and `.pcrsig` sections, Authenticode-signed.
    fn write_uki(
        &self,
        profile: &Profile,
        assets: &ArchRelease,
        purpose: UkiPurpose,
        initramfs: &Path,
        out: &mut impl Write,
    ) -> Result<(), ImagerError> {
        self.stages.report(Stage::Uki);
        let keys = match (profile.secureboot, &self.opts.secure_boot) {
            (false, _) => None,
            (true, Some(keys)) => Some(keys),
            (true, None) => return Err(ImagerError::SecureBootDisabled),
        };
        let cmdline = profile_cmdline(profile)?;
        let kernel = asset(assets, "vmlinuz")?;
        let stub = std::fs::read(self.input(asset(assets, "systemd-stub.efi")?)?)
            .map_err(ImagerError::Io)?;
        let kernel = self.input(kernel)?;
        let uname = read_kernel_release(File::open(&kernel)?)?;
        let osrel = os_release("Talos", &profile.version.tag());
        let profiles = standard_profiles(
            purpose,
            &cmdline,
            profile.quirks().has(Quirk::SupportsUkiProfiles),
        );
        let (pcrpkey, pcrsigs) = match keys {
            Some(keys) => {
                let sbat = stub_sbat(&stub)?;
                let measured = MeasuredParts {
                    osrel: &osrel,
                    cmdline: &cmdline,
                    uname: uname.as_deref(),
                    sbat: &sbat,
                    kernel: &kernel,
                    initrd: initramfs,
                };
                let sigs = pcr_signatures(keys, &measured, &profiles)?;
                (Some(keys.pcr_public_pem().to_string()), sigs)
            }
            None => (None, Vec::new()),
        };
        let parts = UkiParts {
            osrel,
            profiles,
            cmdline,
            uname,
            kernel: Payload::file(&kernel)?,
            initrd: Payload::file(initramfs)?,
            pcrpkey,
            pcrsigs,
        };
        // Stubs may carry a COFF symbol table (Debian's does); it is debug-only and dropped.
        let opts = UkiOptions {
            symbol_table: SymbolTable::Drop,
            ..UkiOptions::default()
        };
        let Some(keys) = keys else {
            assemble_uki(&stub, parts, &opts, out).map_err(ImagerError::internal("uki"))?;
            return Ok(());
        };
        // Signing patches the header after the sections are written: assemble into a
        // scratch file, sign it in place, then copy it out.
        std::fs::create_dir_all(&self.opts.scratch)?;
        let mut scratch = tempfile::tempfile_in(&self.opts.scratch)?;
        {
            let mut w = BufWriter::with_capacity(1 << 20, &mut scratch);
            assemble_uki(&stub, parts, &opts, &mut w).map_err(ImagerError::internal("uki"))?;
            w.flush()?;
        }
        authenticode::sign(&mut scratch, keys).map_err(ImagerError::internal("sign uki"))?;
        scratch.seek(SeekFrom::Start(0))?;
        std::io::copy(&mut scratch, out)?;
        Ok(())
    }

    /// The installer image (docker-archive tarball); its OCI blobs stay in the store too.
    fn installer(
        &self,
        req: &BuildRequest<'_>,
        profile: &Profile,
        release: &Release,
        assets: &ArchRelease,
        overlay_scratch: &Path,
        intermediates: &mut Vec<BlobInfo>,
    ) -> Result<BlobInfo, ImagerError> {
        let base_record = assets.installer_base.as_ref().ok_or_else(|| {
            ImagerError::Validation(format!("release {} has no installer base", release.version))
        })?;
        let read_json = |digest: &crate::oci::Digest| -> Result<Vec<u8>, ImagerError> {
            self.blobs
                .read_sha256(digest.hex(), MAX_METADATA)
                .map_err(ImagerError::internal("installer base"))?
                .ok_or_else(|| {
                    ImagerError::internal("installer base")(InstallerError::MissingBlob(
                        digest.clone(),
                    ))
                })
        };
        let manifest: ImageManifest = serde_json::from_slice(&read_json(&base_record.manifest)?)
            .map_err(ImagerError::internal("installer base manifest"))?;
        let config: ImageConfig = serde_json::from_slice(&read_json(&manifest.config.digest)?)
            .map_err(ImagerError::internal("installer base config"))?;
        let base = BaseImage {
            reference: base_record.reference.clone(),
            manifest,
            config,
        };
        // A signed systemd-boot (Secure Boot) is a scratch file until the layer is written.
        std::fs::create_dir_all(&self.opts.scratch)?;
        let scratch = tempfile::tempdir_in(&self.opts.scratch)?;
        let sd_boot = profile.quirks().has(Quirk::UseSdBootForUefi);
        let artifacts = if sd_boot || profile.secureboot {
            let uki = self.uki(req, profile, assets, UkiPurpose::Installer, intermediates)?;
            intermediates.push(uki.clone());
            InstallerArtifacts::Uki {
                uki: self.blobs.path(&uki.blake3)?,
                systemd_boot: self.systemd_boot(profile, assets, scratch.path())?,
                signed_name: !sd_boot,
            }
        } else {
            let initramfs = self.initramfs(req, profile, assets)?;
            intermediates.push(initramfs.clone());
            InstallerArtifacts::Legacy {
                kernel: self.input(asset(assets, "vmlinuz")?)?,
                initramfs: self.blobs.path(&initramfs.blake3)?,
            }
        };
        self.stages.report(Stage::Installer);
        let arch = profile.arch.as_str().to_string();
        let overlay = self.overlay_installer(profile, overlay_scratch)?;
        let inputs = InstallerInputs {
            base: &base,
            arch: &arch,
            artifacts: &artifacts,
            overlay: overlay.as_ref(),
            gzip_level: 1,
        };
        let image =
            build_installer(&self.blobs, &inputs).map_err(ImagerError::internal("installer"))?;
        // The artifacts (and overlay) layers, config and manifest are new; base layers belong
        // to the release.
        let new_layers = 1 + usize::from(overlay.is_some());
        let first_new = image.layers.len().saturating_sub(new_layers);
        for d in image.layers[first_new..]
            .iter()
            .map(Some)
            .chain([Some(&image.config), Some(&image.manifest)])
            .flatten()
        {
            if let Some(b) = self
                .blobs
                .by_sha256(d.digest.hex())
                .map_err(ImagerError::internal("installer blobs"))?
            {
                intermediates.push(b);
            }
        }
        let mut w = BufWriter::new(self.writer()?);
        write_docker_archive(&self.blobs, &image, &mut w)
            .map_err(ImagerError::internal("installer archive"))?;
        w.flush().map_err(ImagerError::Io)?;
        let w = w
            .into_inner()
            .map_err(|e| io_err("installer archive")(e.into_error()))?;
        w.finish().map_err(ImagerError::internal("store installer"))
    }
}

/// Refuses profiles this appliance would build wrong. Overlays are built for disk images and
/// installers (the SBC outputs: upstream's overlay profiles are disk images, and Talos
/// upgrades an SBC with the overlay-aware installer); an overlay on an ISO, UKI or initramfs
/// is refused rather than built without the overlay's kernel arguments. (Kernel and cmdline
/// outputs never carry the overlay, api spec §2.8, so they still build.)
fn ensure_buildable(profile: &Profile) -> Result<(), ImagerError> {
    let kind = profile.output.kind;
    if let Some(overlay) = &profile.overlay
        && !matches!(kind, OutputKind::Image | OutputKind::Installer)
    {
        return Err(ImagerError::OverlayNotBuilt {
            name: overlay.entry.name.clone(),
        });
    }
    Ok(())
}

/// The profile's kernel command line, with its overlay's `get-options` kernel arguments.
pub(super) fn profile_cmdline(profile: &Profile) -> Result<String, ImagerError> {
    let args = profile
        .overlay
        .as_ref()
        .map_or(&[][..], |o| o.kernel_args.as_slice());
    kernel_cmdline(profile, args)
}

fn asset<'a>(assets: &'a ArchRelease, name: &str) -> Result<&'a BlobRef, ImagerError> {
    assets
        .assets
        .get(name)
        .ok_or_else(|| ImagerError::Validation(format!("the release has no {name}")))
}
