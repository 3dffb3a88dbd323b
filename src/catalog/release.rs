//! The imported-release model and its store: one record per Talos version, written last so a
//! release is visible only when every blob it names is stored.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use crate::oci::Digest;
use crate::store::{BlobStore, DocCheck, DocKind, DocStore, MetaStore, StoreError};

use super::CatalogError;
use super::names::{Arch, RelPath};
use super::version::Version;

/// The metadata tree that held release records themselves (keyed by version tag) before they
/// became documents.
const LEGACY_TREE: &str = "releases";

/// A stored file (boot asset or GRUB module) by identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// BLAKE3 hex (blob file name).
    pub blake3: String,
    /// SHA-256 hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Unix permission bits from the image.
    #[serde(default)]
    pub mode: u32,
}

/// An image held in the blob store (its top-level manifest/index, the platform manifest,
/// config and layers are all blobs addressed by SHA-256).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The upstream reference it was imported as (tag or digest form).
    pub reference: String,
    /// Digest of the top-level index or manifest (the signed digest).
    pub digest: Digest,
    /// Digest of the `linux/<arch>` image manifest.
    pub manifest: Digest,
    /// Total bytes of manifest, config and layers.
    pub size: u64,
}

/// How the release's images were verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum Signatures {
    /// Every image's cosign signature verified with one of these keys (fingerprints).
    Verified {
        /// SHA-256 fingerprints of the public keys that verified images.
        keys: Vec<String>,
    },
    /// Verification was skipped on operator request (`--insecure-skip-signature-verification`).
    Skipped,
}

/// Per-architecture content of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ArchRelease {
    /// The imager image.
    pub imager: Option<ImageRecord>,
    /// The installer base (`installer-base` for >= 1.10, `installer` before).
    pub installer_base: Option<ImageRecord>,
    /// Boot assets from `/usr/install/<arch>/` by file name.
    pub assets: BTreeMap<String, BlobRef>,
    /// GRUB module trees from `/usr/lib/grub/` by relative path (empty when absent).
    pub grub: BTreeMap<String, BlobRef>,
}

/// One extension of the release's catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtensionEntry {
    /// Repository path without registry, e.g. `siderolabs/amd-ucode` (the schematic name).
    pub name: String,
    /// Tagged reference as listed, e.g. `ghcr.io/siderolabs/amd-ucode:20230804`.
    pub reference: String,
    /// Digest from the catalog line.
    pub digest: Digest,
    /// Author from `descriptions.yaml`.
    pub author: String,
    /// Description from `descriptions.yaml`.
    pub description: String,
    /// Imported images per architecture (empty when not imported: partial release).
    #[serde(default)]
    pub images: BTreeMap<Arch, ImageRecord>,
}

/// One overlay of the release's catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayEntry {
    /// Overlay name, e.g. `rpi_generic`.
    pub name: String,
    /// Repository path of the overlay image, e.g. `siderolabs/sbc-raspberrypi`.
    pub image: String,
    /// Tagged reference as written in the catalog.
    pub reference: String,
    /// Digest from the catalog.
    pub digest: Digest,
    /// Imported images per architecture.
    #[serde(default)]
    pub images: BTreeMap<Arch, ImageRecord>,
}

/// The `talosctl` binaries of a release, from its `talosctl-all` image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TalosctlRelease {
    /// The `talosctl-all` image.
    pub image: ImageRecord,
    /// Its root files named `talosctl-<os>-<arch>[.exe]`, by name.
    pub files: BTreeMap<String, BlobRef>,
}

/// Whether `name` is a `talosctl` binary's name as the `talosctl-all` image holds them
/// (`talosctl-<os>-<arch>` with an optional `.exe`).
pub fn is_talosctl_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("talosctl-") else {
        return false;
    };
    let rest = rest.strip_suffix(".exe").unwrap_or(rest);
    let mut parts = rest.split('-');
    let word = |p: Option<&str>| {
        p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric()))
    };
    word(parts.next()) && word(parts.next()) && parts.next().is_none()
}

/// A complete imported Talos release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// Version tag, e.g. `v1.11.0`.
    pub version: String,
    /// When the release was first imported (RFC 3339, UTC).
    pub imported_at: String,
    /// Where it was imported from.
    pub source: String,
    /// Signature verification state.
    pub signatures: Signatures,
    /// True when only a subset of the catalog's extensions/overlays was imported.
    pub partial: bool,
    /// Per-architecture content.
    pub arches: BTreeMap<Arch, ArchRelease>,
    /// The extension catalog, in catalog order.
    pub extensions: Vec<ExtensionEntry>,
    /// The overlay catalog, in catalog order.
    pub overlays: Vec<OverlayEntry>,
    /// The extension and overlay catalog images themselves (read at import; kept, like every
    /// imported image, so they are never collected and can be served as imported). Records
    /// written before this field existed have none.
    #[serde(default)]
    pub catalogs: Vec<ImageRecord>,
    /// The `talosctl` binaries, when the source held the release's `talosctl-all` image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub talosctl: Option<TalosctlRelease>,
    /// Which record of this version replaces which across a cluster. Records written before
    /// this field existed have none, and every revision replaces them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<Revision>,
}

/// The order of the records one version has had: an import numbers its record one above the
/// record it replaces, and members keep the highest. Two imports of one number (on members
/// that had not yet seen each other's record) are ordered by their tags, which hash their
/// content, so every member settles on the same record and two equal imports on one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Revision {
    /// 1 for a first import, else one above the revision of the record replaced.
    pub number: u64,
    /// The first 128 bits of the BLAKE3 of the record without its revision, in hex.
    pub tag: String,
}

impl Revision {
    /// Highest revision number taken from a member (a record imported again four billion
    /// times is not a record anyone wrote; a higher number would pin the version for ever).
    pub const MAX_NUMBER: u64 = u32::MAX as u64;

    /// Whether a revision a member sent is one this node could have written: a number up to
    /// [`Revision::MAX_NUMBER`] and a tag of 32 lowercase hex digits.
    pub fn is_well_formed(&self) -> bool {
        self.number <= Self::MAX_NUMBER
            && self.tag.len() == 32
            && self
                .tag
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }
}

impl Release {
    /// Gives the record the revision that replaces `previous` (the record of this version
    /// held before; `None` for a first import or a record from before revisions).
    pub fn revise(&mut self, previous: Option<&Revision>) -> Result<(), CatalogError> {
        self.revision = None;
        let bytes = serde_json::to_vec(&*self).map_err(|source| StoreError::Encode {
            what: "release record",
            source,
        })?;
        let hash = blake3::hash(&bytes);
        self.revision = Some(Revision {
            number: previous.map_or(0, |p| p.number).saturating_add(1),
            tag: hex::encode(&hash.as_bytes()[..16]),
        });
        Ok(())
    }

    /// The parsed version.
    pub fn parsed_version(&self) -> Option<Version> {
        Version::parse_strict(&self.version)
    }

    /// Checks every name of the record that reaches the filesystem or a URL: the version, each
    /// boot-asset and GRUB-module path (relative, without `..`, see [`RelPath`]) and each
    /// `talosctl` binary's name. Architecture keys are checked by their type.
    pub fn check_names(&self) -> Result<(), CatalogError> {
        if Version::parse_strict(&self.version).is_none() {
            return Err(CatalogError::InvalidVersion(self.version.clone()));
        }
        for arch in self.arches.values() {
            for path in arch.assets.keys().chain(arch.grub.keys()) {
                RelPath::parse(path)?;
            }
        }
        for name in self.talosctl.iter().flat_map(|t| t.files.keys()) {
            if !is_talosctl_name(name) {
                return Err(CatalogError::Catalog(format!(
                    "release {} names {name:?} as a talosctl binary",
                    self.version
                )));
            }
        }
        Ok(())
    }

    /// Every blob SHA-256 the release depends on (for GC protection and integrity checks).
    pub fn image_records(&self) -> Vec<&ImageRecord> {
        let mut out = Vec::new();
        for a in self.arches.values() {
            out.extend(a.imager.iter());
            out.extend(a.installer_base.iter());
        }
        for e in &self.extensions {
            out.extend(e.images.values());
        }
        for o in &self.overlays {
            out.extend(o.images.values());
        }
        out.extend(self.catalogs.iter());
        out.extend(self.talosctl.iter().map(|t| &t.image));
        out
    }
}

/// Typed access to release records, kept as documents in the blob store (see
/// `store::DocStore`), with the decoded records kept in memory (a record names every blob of a
/// release — hundreds of GRUB modules — and every asset request reads one). A cached record
/// is used while the index still names the document it was decoded from, so every
/// `ReleaseStore` over the same data directory sees a replaced record at once.
#[derive(Clone)]
pub struct ReleaseStore {
    docs: DocStore,
    meta: Arc<dyn MetaStore>,
    decoded: Arc<Mutex<Decoded>>,
}

/// Serialises the record writes that compare revisions (an import and a member's record
/// finishing at once), so the comparison and the write are one step.
static RECORD_WRITES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Decoded records by version tag, with the BLAKE3 name of the document each came from.
type Decoded = HashMap<String, (String, Arc<Release>)>;

impl ReleaseStore {
    /// The release records of `blobs` (whose metadata store holds the index).
    pub fn new(blobs: &BlobStore) -> Self {
        Self {
            docs: DocStore::releases(blobs.clone()),
            meta: Arc::clone(blobs.meta()),
            decoded: Arc::default(),
        }
    }

    /// [`ReleaseStore::new`], first moving records an older version kept in the metadata
    /// store into documents. Blocking.
    pub fn open(blobs: &BlobStore) -> Result<Self, StoreError> {
        let store = Self::new(blobs);
        let migrated = store.docs.migrate_legacy(LEGACY_TREE)?;
        if migrated > 0 {
            tracing::info!(
                migrated,
                "moved release records out of the metadata store into documents"
            );
        }
        Ok(store)
    }

    /// An empty store in a new temporary directory (kept alive by the first element).
    #[cfg(test)]
    pub(crate) fn temporary() -> (tempfile::TempDir, Self) {
        use crate::store::SledStore;
        let dir = tempfile::tempdir().expect("temporary directory");
        let meta: Arc<dyn MetaStore> =
            Arc::new(SledStore::open(dir.path()).expect("metadata store"));
        let blobs = BlobStore::open(&dir.path().join("blobs"), meta).expect("blob store");
        (dir, Self::new(&blobs))
    }

    /// The metadata store (for the catalog's small records).
    pub(super) fn meta(&self) -> &Arc<dyn MetaStore> {
        &self.meta
    }

    fn decoded(&self) -> MutexGuard<'_, Decoded> {
        self.decoded.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads one release by tag (`v1.11.0`).
    pub fn get(&self, tag: &str) -> Result<Option<Arc<Release>>, StoreError> {
        let Some(r) = self.docs.get_ref(tag)? else {
            return Ok(None);
        };
        if let Some((blake3, release)) = self.decoded().get(tag)
            && *blake3 == r.blake3
        {
            return Ok(Some(Arc::clone(release)));
        }
        let Some((r, bytes)) = self.docs.get(tag)? else {
            return Ok(None);
        };
        let release: Release = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            tree: DocKind::Release.name().into(),
            key: tag.into(),
            source: Box::new(e),
        })?;
        let release = Arc::new(release);
        self.decoded()
            .insert(tag.to_string(), (r.blake3, Arc::clone(&release)));
        Ok(Some(release))
    }

    /// All releases, sorted by version.
    pub fn list(&self) -> Result<Vec<Arc<Release>>, StoreError> {
        let mut out = Vec::new();
        for (tag, _) in self.docs.refs()? {
            out.extend(self.get(&tag)?);
        }
        out.sort_by_key(|r| r.parsed_version());
        Ok(out)
    }

    /// Publishes an imported record, numbered one above the record of its version held now
    /// (see [`Revision`]; checked and written as one step, so a member's record stored during
    /// the import is replaced, never outranks it).
    pub async fn put_imported(&self, release: &mut Release) -> Result<(), CatalogError> {
        let _one_at_a_time = RECORD_WRITES.lock().await;
        let held = self.get(&release.version)?;
        release.revise(held.as_ref().and_then(|h| h.revision.as_ref()))?;
        self.put(release).await
    }

    /// Publishes a record a member sent unless the record of its version held here is newer
    /// and undamaged (an import here since the record was asked for); whether it was stored.
    pub async fn put_replicated(&self, release: &Release) -> Result<bool, CatalogError> {
        let _one_at_a_time = RECORD_WRITES.lock().await;
        if self.damage(&release.version)?.is_none()
            && let Some(held) = self.get(&release.version)?
            && held.revision > release.revision
        {
            return Ok(false);
        }
        self.put(release).await?;
        Ok(true)
    }

    /// Publishes a release record and waits until it is durable. A record naming an unsafe
    /// path is refused (see [`Release::check_names`]).
    pub async fn put(&self, release: &Release) -> Result<(), CatalogError> {
        release.check_names()?;
        let bytes = serde_json::to_vec(release).map_err(|source| StoreError::Encode {
            what: "release record",
            source,
        })?;
        self.decoded().remove(&release.version);
        self.docs.put(&release.version, bytes).await?;
        // Imported again: every blob it names was checked and written where one was missing
        // (a damaged blob is set aside when found), so a damage mark no longer holds.
        if self.damage(&release.version)?.is_some() {
            self.clear_damage(&release.version)?;
            self.meta.flush().await?;
        }
        Ok(())
    }

    /// Checks the index against the release documents (see `store::DocStore::check`); with
    /// `repair`, restores what the index lost and makes that durable. Blocking.
    pub fn check(&self, repair: bool, deep: bool) -> Result<DocCheck, StoreError> {
        let valid = |tag: &str, body: &[u8]| {
            serde_json::from_slice::<Release>(body).is_ok_and(|r| r.version == tag)
        };
        let report = self.docs.check(repair, deep, &valid)?;
        if report.repaired {
            self.docs.flush_blocking()?;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record of v1.11.0 with a kernel and one GRUB module at `grub_path`, as JSON.
    fn record(grub_path: &str) -> serde_json::Value {
        let blob =
            serde_json::json!({"blake3": "b".repeat(64), "sha256": "a".repeat(64), "size": 1});
        serde_json::json!({
            "version": "v1.11.0", "imported_at": "", "source": "test",
            "signatures": {"state": "skipped"}, "partial": false,
            "arches": {"amd64": {"imager": null, "installer_base": null,
                "assets": {"vmlinuz": blob}, "grub": {grub_path: blob}}},
            "extensions": [], "overlays": [],
        })
    }

    fn release(grub_path: &str) -> Release {
        serde_json::from_value(record(grub_path)).unwrap()
    }

    #[tokio::test]
    async fn records_naming_unsafe_paths_are_refused() {
        let (_dir, store) = ReleaseStore::temporary();
        let e = store.put(&release("../../keys/x")).await.unwrap_err();
        assert!(
            matches!(&e, CatalogError::UnsafePath { path, .. } if path == "../../keys/x"),
            "{e}"
        );
        assert!(
            store.get("v1.11.0").unwrap().is_none(),
            "a refused record was stored"
        );
        store.put(&release("i386-pc/boot.img")).await.unwrap();
        // An architecture key that is not an architecture does not even decode.
        let mut bad = record("i386-pc/boot.img");
        bad["arches"]["../keys"] = bad["arches"]["amd64"].take();
        bad["arches"].as_object_mut().unwrap().remove("amd64");
        store
            .docs
            .put("v1.12.0", bad.to_string().into_bytes())
            .await
            .unwrap();
        assert!(matches!(
            store.get("v1.12.0"),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_revision_counts_replacements_and_its_tag_hashes_the_content() {
        let mut first = release("i386-pc/boot.img");
        first.revise(None).unwrap();
        let r1 = first.revision.clone().unwrap();
        assert_eq!(r1.number, 1);
        assert!(r1.is_well_formed(), "{r1:?}");
        // The same content imported elsewhere: the same revision, so nothing to settle.
        let mut same = release("i386-pc/boot.img");
        same.revise(None).unwrap();
        assert_eq!(same.revision, first.revision);
        // Other content: another tag; imported over the first: one number higher.
        let mut other = release("i386-pc/other.img");
        other.revise(None).unwrap();
        assert_ne!(other.revision.as_ref().unwrap().tag, r1.tag);
        let mut again = release("i386-pc/other.img");
        again.revise(Some(&r1)).unwrap();
        let r2 = again.revision.clone().unwrap();
        assert_eq!(r2.number, 2);
        // The tag ignores the revision it replaces, and the record's own.
        assert_eq!(r2.tag, other.revision.as_ref().unwrap().tag);
        let mut twice = again.clone();
        twice.revise(twice.revision.clone().as_ref()).unwrap();
        assert_eq!(twice.revision.as_ref().unwrap().number, 3);
        assert_eq!(twice.revision.as_ref().unwrap().tag, r2.tag);
        // The number orders first, then the tag; a record from before revisions is oldest.
        assert!(r2 > r1);
        let low_tag = Revision {
            number: 2,
            tag: "0".repeat(32),
        };
        assert!(low_tag < r2 && low_tag > r1);
        assert!(None < Some(&r1));
        // A member's revision past the highest number, or with another tag, is not taken.
        for bad in [
            Revision {
                number: Revision::MAX_NUMBER + 1,
                tag: r1.tag.clone(),
            },
            Revision {
                number: 1,
                tag: r1.tag.to_uppercase(),
            },
            Revision {
                number: 1,
                tag: format!("{}0", r1.tag),
            },
        ] {
            assert!(!bad.is_well_formed(), "{bad:?}");
        }
        // The revision survives the store.
        let json = serde_json::to_vec(&again).unwrap();
        let back: Release = serde_json::from_slice(&json).unwrap();
        assert_eq!(back.revision, Some(r2));
        // A record without one writes no field (its bytes stay as before revisions).
        let plain = serde_json::to_value(release("i386-pc/boot.img")).unwrap();
        assert!(plain.get("revision").is_none());
    }

    #[tokio::test]
    async fn an_import_outranks_the_record_held_and_a_member_record_never_replaces_a_newer_one() {
        let (_dir, store) = ReleaseStore::temporary();
        let number = |store: &ReleaseStore| {
            store
                .get("v1.11.0")
                .unwrap()
                .unwrap()
                .revision
                .clone()
                .unwrap()
                .number
        };
        // A member's record at revision 5 arrives (stored: nothing held).
        let mut theirs = release("i386-pc/theirs.img");
        theirs.revision = Some(Revision {
            number: 5,
            tag: "f".repeat(32),
        });
        assert!(store.put_replicated(&theirs).await.unwrap());
        // An import numbers above what is held when it is written: 6.
        let mut ours = release("i386-pc/ours.img");
        store.put_imported(&mut ours).await.unwrap();
        assert_eq!(number(&store), 6);
        // The member's older record does not replace it...
        assert!(!store.put_replicated(&theirs).await.unwrap());
        assert_eq!(number(&store), 6);
        // ...unless the record held is damaged: then any member's copy heals it.
        let mark = crate::catalog::Damage {
            blob: "b".repeat(64),
            reason: "test".into(),
            at: 0,
        };
        store.mark_damaged("v1.11.0", &mark).await.unwrap();
        assert!(store.put_replicated(&theirs).await.unwrap());
        assert_eq!(number(&store), 5);
        assert!(store.damage("v1.11.0").unwrap().is_none());
    }
}
