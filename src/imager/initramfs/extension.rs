//! Extension acquisition, ordering and loading (imager spec §3.1–§3.3).
//!
//! Every input is extracted into `<extensions>/<j>` (j = 0, 1, …), then the directory is listed
//! sorted by name as strings (so `10` comes before `2`), and each directory is loaded: exactly
//! `manifest.yaml` and `rootfs/`, manifest `version: v1alpha1`, compatibility constraint checked
//! against the target's core version.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use super::constraint;
use super::process::sorted_names;
use super::yaml::Manifest;
use super::{ExtensionSource, InitramfsError};
use crate::catalog::Version;
use crate::io_context::io_err;
use crate::oci::{
    Descriptor, Digest, FlattenOptions, ImageManifest, LayerOpener, MEDIA_OCI_LAYER_TAR, OciError,
    flatten,
};
use crate::store::BlobStore;

/// Largest accepted image manifest or extension `manifest.yaml`.
const MANIFEST_LIMIT: u64 = 4 << 20;

/// A loaded, validated extension directory.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Directory name (`0`, `1`, …, `modules.dep`): the layer image is `<dir>.sqsh`.
    pub dir: String,
    /// Its `rootfs/`.
    pub rootfs: PathBuf,
    /// The parsed manifest.
    pub manifest: Manifest,
    /// `security.selinux` labels from PAX records, by path relative to `rootfs/`.
    pub labels: BTreeMap<String, String>,
}

/// Extracts `source` into `dest`; returns the SELinux labels it carried (paths relative to the
/// extension root, e.g. `rootfs/usr/…`).
pub fn extract(
    source: &ExtensionSource,
    blobs: &BlobStore,
    dest: &Path,
) -> Result<BTreeMap<String, String>, InitramfsError> {
    let opts = FlattenOptions {
        record_selinux: true,
        ..FlattenOptions::default()
    };
    let report = match source {
        ExtensionSource::Image { manifest, .. } => {
            let bytes = blobs
                .read_sha256(manifest.hex(), MANIFEST_LIMIT)?
                .ok_or_else(|| InitramfsError::MissingBlob(manifest.to_string()))?;
            if Digest::of(&bytes) != *manifest {
                return Err(InitramfsError::Invalid(format!(
                    "stored manifest {manifest} does not match its digest"
                )));
            }
            let m: ImageManifest = serde_json::from_slice(&bytes)
                .map_err(OciError::decode(format!("image manifest {manifest}")))?;
            let mut open = crate::catalog::stored_layer_opener(blobs.clone());
            flatten(&m.layers, &mut open as &mut LayerOpener<'_>, dest, &opts)?
        }
        ExtensionSource::Tar { tar, .. } => {
            let desc = Descriptor::for_bytes(MEDIA_OCI_LAYER_TAR, tar);
            let data = tar.clone();
            let mut open = move |_: &Descriptor| -> Result<Box<dyn Read + Send>, OciError> {
                Ok(Box::new(Cursor::new(data.clone())))
            };
            flatten(&[desc], &mut open as &mut LayerOpener<'_>, dest, &opts)?
        }
    };
    Ok(report.selinux_labels)
}

/// The extension directory names under `root`, sorted as strings (upstream's `os.ReadDir`
/// order: with ≥ 11 extensions `0, 1, 10, 2, …`).
pub fn listing(root: &Path) -> Result<Vec<String>, InitramfsError> {
    let mut names = Vec::new();
    for e in fs::read_dir(root).map_err(io_err(format!("read {}", root.display())))? {
        let e = e.map_err(io_err(format!("read {}", root.display())))?;
        let name = e.file_name().into_string().map_err(|n| {
            InitramfsError::Invalid(format!("extension directory name {n:?} is not UTF-8"))
        })?;
        names.push(name);
    }
    names.sort();
    Ok(names)
}

/// The order in which `n` inputs are processed: their indices, sorted as decimal strings.
pub fn processing_order(n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    v.sort_by_key(|i| i.to_string());
    v
}

/// Loads `<root>/<dir>` (`Load` upstream): exactly `manifest.yaml` and `rootfs`.
pub fn load(root: &Path, dir: &str) -> Result<Loaded, InitramfsError> {
    let path = root.join(dir);
    let fail = |message: String| InitramfsError::Extension {
        dir: dir.to_string(),
        message,
    };
    let mut manifest: Option<Manifest> = None;
    let mut rootfs = None;
    for name in sorted_names(&path)? {
        let full = path.join(&name);
        let meta =
            fs::symlink_metadata(&full).map_err(io_err(format!("stat {}", full.display())))?;
        match name.to_str() {
            Some("manifest.yaml") if meta.is_file() => {
                if meta.len() > MANIFEST_LIMIT {
                    return Err(fail("manifest.yaml is too large".into()));
                }
                let text = fs::read_to_string(&full)
                    .map_err(io_err(format!("read {}", full.display())))?;
                let m: Manifest = serde_yaml::from_str(&text).map_err(|source| {
                    InitramfsError::ExtensionManifest {
                        dir: dir.to_string(),
                        source,
                    }
                })?;
                if m.version != "v1alpha1" {
                    return Err(fail(format!(
                        "unsupported manifest version: {:?}",
                        m.version
                    )));
                }
                manifest = Some(m);
            }
            Some("rootfs") if meta.is_dir() => rootfs = Some(full),
            _ => {
                return Err(fail(format!(
                    "unexpected file {:?}",
                    name.to_string_lossy()
                )));
            }
        }
    }
    let manifest = manifest
        .filter(|m| *m != Manifest::default())
        .ok_or_else(|| fail("extension manifest is missing".into()))?;
    let rootfs = rootfs.ok_or_else(|| fail("extension rootfs is missing".into()))?;
    Ok(Loaded {
        dir: dir.to_string(),
        rootfs,
        manifest,
        labels: BTreeMap::new(),
    })
}

/// The compatibility check of §3.2 for a loaded extension.
pub fn validate(ext: &Loaded, target: &Version) -> Result<(), InitramfsError> {
    let c = &ext.manifest.metadata.compatibility.talos.version;
    constraint::check(c, target).map_err(|source| InitramfsError::Incompatible {
        name: ext.manifest.metadata.name.clone(),
        constraint: c.clone(),
        source,
    })
}

/// The full path of `rel` under `root` when every component is a real directory (never a
/// symlink, which could lead outside the extension); `None` otherwise.
pub fn real_dir(root: &Path, rel: &str) -> Result<Option<PathBuf>, InitramfsError> {
    let mut p = root.to_path_buf();
    for c in rel.split('/').filter(|c| !c.is_empty()) {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(m) => {
                if m.file_type().is_symlink() {
                    tracing::warn!(path = %p.display(), "not following a symlink in an extension");
                }
                return Ok(None);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(format!("stat {}", p.display()))(e).into()),
        }
    }
    Ok(Some(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_ext(root: &Path, dir: &str, manifest: &str) {
        let d = root.join(dir);
        fs::create_dir_all(d.join("rootfs")).unwrap();
        fs::write(d.join("manifest.yaml"), manifest).unwrap();
    }

    const OK: &str = "version: v1alpha1\nmetadata:\n  name: a\n  version: v1\n  author: me\n  description: d\n  compatibility:\n    talos:\n      version: '>= v1.8.0'\n";

    #[test]
    fn order_quirk() {
        assert_eq!(processing_order(3), [0, 1, 2]);
        assert_eq!(processing_order(12), [0, 1, 10, 11, 2, 3, 4, 5, 6, 7, 8, 9]);
        let d = tempfile::tempdir().unwrap();
        for i in 0..11 {
            fs::create_dir(d.path().join(i.to_string())).unwrap();
        }
        let l = listing(d.path()).unwrap();
        assert_eq!(l[..4], ["0", "1", "10", "2"]);
    }

    #[test]
    fn load_checks_layout_and_manifest() {
        let d = tempfile::tempdir().unwrap();
        write_ext(d.path(), "0", OK);
        let l = load(d.path(), "0").unwrap();
        assert_eq!(l.manifest.metadata.name, "a");
        let v = |s| Version::parse_strict(s).unwrap();
        validate(&l, &v("1.10.0")).unwrap();
        let e = validate(&l, &v("1.7.0")).unwrap_err().to_string();
        assert!(e.contains("\"a\"") && e.contains(">= v1.8.0"), "{e}");

        write_ext(d.path(), "1", OK);
        fs::write(d.path().join("1/README"), "x").unwrap();
        let e = load(d.path(), "1").unwrap_err().to_string();
        assert!(e.contains("unexpected file \"README\""), "{e}");

        write_ext(d.path(), "2", "version: v1alpha2\nmetadata:\n  name: a\n");
        let e = load(d.path(), "2").unwrap_err().to_string();
        assert!(e.contains("unsupported manifest version"), "{e}");

        fs::create_dir_all(d.path().join("3/rootfs")).unwrap();
        let e = load(d.path(), "3").unwrap_err().to_string();
        assert!(e.contains("manifest is missing"), "{e}");

        fs::create_dir_all(d.path().join("4")).unwrap();
        fs::write(d.path().join("4/manifest.yaml"), OK).unwrap();
        let e = load(d.path(), "4").unwrap_err().to_string();
        assert!(e.contains("rootfs is missing"), "{e}");
    }

    #[test]
    fn real_dir_refuses_symlinks() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("/lib/firmware", d.path().join("usr/lib/firmware")).unwrap();
        assert!(real_dir(d.path(), "usr/lib/firmware").unwrap().is_none());
        assert!(real_dir(d.path(), "usr/lib").unwrap().is_some());
        assert!(real_dir(d.path(), "usr/nope").unwrap().is_none());
    }
}
