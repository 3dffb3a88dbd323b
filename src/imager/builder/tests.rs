//! Builder-level refusals: what the builder must not build, whatever path reaches it.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::catalog::{Arch, OverlayEntry, Signatures};
use crate::imager::error::ErrorKind;
use crate::oci::Digest;
use crate::store::{MetaStore, SledStore};

const OVERLAY: &str = "overlay:\n  image: siderolabs/sbc-raspberrypi\n  name: rpi_generic\n  \
                       options:\n    configTxtAppend: dtoverlay=foo\n";

struct Env {
    _dir: tempfile::TempDir,
    builder: Builder,
}

/// A builder over a store holding release v1.11.0 (amd64: a kernel blob only) with overlay
/// `rpi_generic`.
fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let meta: Arc<dyn MetaStore> = Arc::new(SledStore::open(&dir.path().join("db")).unwrap());
    let blobs = BlobStore::open(&dir.path().join("blobs"), Arc::clone(&meta)).unwrap();
    let kernel = blobs.put_bytes(b"not a real kernel").unwrap();
    let mut assets = BTreeMap::new();
    assets.insert(
        "vmlinuz".to_string(),
        BlobRef {
            blake3: kernel.blake3,
            sha256: kernel.sha256,
            size: kernel.size,
            mode: 0o644,
        },
    );
    let mut arches = BTreeMap::new();
    arches.insert(
        Arch::Amd64,
        ArchRelease {
            imager: None,
            installer_base: None,
            assets,
            grub: BTreeMap::new(),
        },
    );
    let release = Release {
        version: "v1.11.0".into(),
        imported_at: "2026-01-01T00:00:00Z".into(),
        source: "test".into(),
        signatures: Signatures::Skipped,
        partial: false,
        arches,
        extensions: Vec::new(),
        overlays: vec![OverlayEntry {
            name: "rpi_generic".into(),
            image: "siderolabs/sbc-raspberrypi".into(),
            reference: "ghcr.io/siderolabs/sbc-raspberrypi:v0.1.0".into(),
            digest: Digest::of(b"rpi"),
            images: BTreeMap::new(),
        }],
        catalogs: Vec::new(),
        talosctl: None,
        revision: None,
    };
    let releases = ReleaseStore::new(&blobs);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(releases.put(&release))
        .unwrap();
    let opts = BuilderOptions {
        factory_url: "http://factory.test/".into(),
        scratch: dir.path().join("tmp"),
        initramfs_zstd_level: 3,
        compression: Default::default(),
        tools: Default::default(),
        secure_boot: None,
    };
    Env {
        builder: Builder::new(blobs, releases, opts),
        _dir: dir,
    }
}

/// A parsed schematic and target version, from which build requests are made.
struct Request {
    schematic: Schematic,
    id: String,
    canonical: String,
    version: Version,
}

impl Request {
    fn new(yaml: &str) -> Request {
        let schematic = Schematic::parse(yaml.as_bytes()).unwrap();
        let (id, canonical) = (schematic.id(), schematic.canonical());
        let version = Version::parse_strict("v1.11.0").unwrap();
        Request {
            schematic,
            id,
            canonical,
            version,
        }
    }

    fn for_path<'a>(&'a self, path: &'a str) -> BuildRequest<'a> {
        BuildRequest {
            schematic: &self.schematic,
            schematic_id: &self.id,
            canonical: &self.canonical,
            version: &self.version,
            path,
            cancel: Default::default(),
        }
    }
}

fn build(env: &Env, yaml: &str, path: &str) -> Result<Built, ImagerError> {
    env.builder.build(&Request::new(yaml).for_path(path))
}

const REFUSED: &str = r#"overlay "rpi_generic" is not built into this output by this factory: overlays are built into disk images and installers only"#;

#[test]
fn outputs_that_would_lose_the_overlay_are_refused() {
    // disk images and installers build with the overlay (tests/integration/overlay_sbc.rs);
    // the other outputs that carry it are refused rather than built without its kernel args
    let env = env();
    for path in [
        "initramfs-amd64.xz",
        "metal-amd64-uki.efi",
        "metal-amd64.iso",
    ] {
        let e = build(&env, OVERLAY, path).unwrap_err();
        assert!(
            matches!(e, ImagerError::OverlayNotBuilt { ref name } if name == "rpi_generic"),
            "{path}: {e}"
        );
        assert_eq!(e.to_string(), REFUSED, "{path}");
        assert_eq!(e.kind(), ErrorKind::NotSupported, "{path}");
    }
}

#[test]
fn resolving_refuses_too_so_the_pipeline_answers_before_queueing() {
    let env = env();
    let request = Request::new(OVERLAY);
    let e = env
        .builder
        .profile(&request.for_path("metal-amd64-uki.efi"))
        .unwrap_err();
    assert_eq!(e.to_string(), REFUSED);
}

#[test]
fn a_resolved_profile_with_an_overlay_is_refused_by_the_build() {
    let env = env();
    let request = Request::new("customization: {}\n");
    let req = request.for_path("initramfs-amd64.xz");
    let (mut profile, release) = env.builder.profile(&req).unwrap();
    profile.overlay = Some(crate::imager::profile::ProfileOverlay {
        entry: release.overlays[0].clone(),
        options: serde_json::Value::Object(Default::default()),
        kernel_args: Vec::new(),
        partition_offset: 0,
    });
    let e = env
        .builder
        .build_resolved(&req, profile, &release)
        .unwrap_err();
    assert_eq!(e.to_string(), REFUSED);
}

#[test]
fn kernel_and_cmdline_never_carry_the_overlay_and_still_build() {
    let env = env();
    let kernel = build(&env, OVERLAY, "kernel-amd64").unwrap();
    assert_eq!(kernel.kind, OutputKind::Kernel);
    assert!(kernel.profile.overlay.is_none());
    let cmdline = build(&env, OVERLAY, "cmdline-metal-amd64").unwrap();
    assert_eq!(cmdline.kind, OutputKind::Cmdline);
    assert!(cmdline.profile.overlay.is_none());
}

#[test]
fn a_grub_module_path_leaving_the_tree_is_refused() {
    let env = env();
    let release = env.builder.releases.get("v1.11.0").unwrap().unwrap();
    let kernel = release.arches[&Arch::Amd64].assets["vmlinuz"].clone();
    let top = env._dir.path();
    let dir = top.join("work/grub");
    std::fs::create_dir_all(&dir).unwrap();
    for bad in ["../../keys/x", "/etc/x", "i386-pc/../../../keys/x"] {
        let mut arch = ArchRelease::default();
        arch.grub.insert("i386-pc/boot.img".into(), kernel.clone());
        arch.grub.insert(bad.into(), kernel.clone());
        let e = env.builder.grub_modules(&arch, &dir, None).unwrap_err();
        assert!(e.to_string().contains(bad), "{bad}: {e}");
        assert!(!top.join("keys").exists(), "{bad}: wrote outside the tree");
    }
}

#[test]
fn secure_boot_installers_are_buildable_for_every_target() {
    use crate::imager::profile::Arch as ProfileArch;
    let profile = |v: &str, secureboot: bool| {
        Profile::new(
            ProfileArch::Amd64,
            "metal",
            secureboot,
            Version::parse_strict(v).unwrap(),
            OutputKind::Installer,
        )
    };
    for (v, sb) in [("v1.9.5", true), ("v1.9.5", false), ("v1.11.0", true)] {
        ensure_buildable(&profile(v, sb)).unwrap_or_else(|e| panic!("{v} {sb}: {e}"));
    }
}
