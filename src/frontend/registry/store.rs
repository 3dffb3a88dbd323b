//! What the registry has served, by repository and digest: which asset a manifest or blob digest
//! belongs to (so digest requests find it again after a restart), the small documents it made
//! itself (indexes, cosign signatures), and the signature and referrers of each signed digest.
//! Small records in one tree of the metadata store; the bytes of installer images stay in the
//! asset pipeline's blobs.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::oci::Descriptor;
use crate::store::{MetaStore, StoreError};

/// The metadata tree.
const TREE: &str = "registry";

/// What a manifest or blob digest of a repository is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Entry {
    /// A document made here (index, signature manifest, signature payload or config): its
    /// media type and bytes.
    Document {
        /// Media type.
        media_type: String,
        /// The exact bytes.
        bytes: String,
    },
    /// The image manifest, config or a layer of the installer asset `path` of `schematic` at
    /// `version` (the bytes are the asset's blobs).
    Installer {
        /// Schematic ID.
        schematic: String,
        /// Version tag.
        version: String,
        /// Asset path (`installer-amd64.tar`, ...).
        path: String,
    },
}

/// The cosign signature of a digest: the tag-form manifest and the OCI 1.1 referrer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Signed {
    /// SHA-256 hex of the `sha256-<hex>.sig` manifest.
    pub tag_manifest: String,
    /// The referrer descriptor (manifest with `subject`, `artifactType` set).
    pub referrer: Descriptor,
}

/// Typed access to the registry tree.
#[derive(Clone)]
pub struct RegistryStore {
    meta: Arc<dyn MetaStore>,
}

fn entry_key(repo: &str, kind: char, hex: &str) -> Vec<u8> {
    format!("{kind}/{repo}@{hex}").into_bytes()
}

impl RegistryStore {
    /// The registry tree of `meta`.
    pub fn new(meta: Arc<dyn MetaStore>) -> Self {
        Self { meta }
    }

    fn get<T: for<'de> Deserialize<'de>>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.meta.get(TREE, key)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    tree: TREE.into(),
                    key: String::from_utf8_lossy(key).into_owned(),
                    source: Box::new(e),
                }),
        }
    }

    fn put_new<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), StoreError> {
        if self.meta.contains(TREE, key)? {
            return Ok(());
        }
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Corrupt {
            tree: TREE.into(),
            key: String::from_utf8_lossy(key).into_owned(),
            source: Box::new(e),
        })?;
        self.meta.put_if_absent(TREE, key, &bytes).map(|_| ())
    }

    /// The manifest `hex` of `repo`.
    pub fn manifest(&self, repo: &str, hex: &str) -> Result<Option<Entry>, StoreError> {
        self.get(&entry_key(repo, 'm', hex))
    }

    /// Records manifest `hex` of `repo` (kept if already recorded).
    pub fn put_manifest(&self, repo: &str, hex: &str, e: &Entry) -> Result<(), StoreError> {
        self.put_new(&entry_key(repo, 'm', hex), e)
    }

    /// The blob `hex` of `repo`.
    pub fn blob(&self, repo: &str, hex: &str) -> Result<Option<Entry>, StoreError> {
        self.get(&entry_key(repo, 'b', hex))
    }

    /// Records blob `hex` of `repo` (kept if already recorded).
    pub fn put_blob(&self, repo: &str, hex: &str, e: &Entry) -> Result<(), StoreError> {
        self.put_new(&entry_key(repo, 'b', hex), e)
    }

    /// The signature of digest `hex` in `repo`.
    pub fn signature(&self, repo: &str, hex: &str) -> Result<Option<Signed>, StoreError> {
        self.get(&entry_key(repo, 's', hex))
    }

    /// Records the signature of digest `hex` in `repo`.
    pub fn put_signature(&self, repo: &str, hex: &str, s: &Signed) -> Result<(), StoreError> {
        self.put_new(&entry_key(repo, 's', hex), s)
    }

    /// The `sha256-<hex>.sig` tags of `repo`: a scan of that repository's signature keys
    /// only (`s/<repo>@`), on a blocking thread.
    pub async fn signature_tags(&self, repo: &str) -> Result<Vec<String>, StoreError> {
        let meta = Arc::clone(&self.meta);
        let prefix = format!("s/{repo}@");
        let records = tokio::task::spawn_blocking({
            let prefix = prefix.clone();
            move || meta.scan_prefix(TREE, prefix.as_bytes())
        })
        .await
        .map_err(StoreError::task("listing signature tags"))??;
        Ok(records
            .into_iter()
            .filter_map(|(k, _)| {
                let k = String::from_utf8(k).ok()?;
                let hex = k.strip_prefix(&prefix)?;
                Some(format!("sha256-{hex}.sig"))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::{Digest, MEDIA_OCI_MANIFEST};
    use crate::store::{Record, SledStore};

    /// A metadata store that refuses whole-tree scans of the registry tree.
    struct NoFullScan(SledStore);

    impl MetaStore for NoFullScan {
        fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.0.get(tree, key)
        }
        fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
            self.0.put(tree, key, value)
        }
        fn put_if_absent(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<bool, StoreError> {
            self.0.put_if_absent(tree, key, value)
        }
        fn contains(&self, tree: &str, key: &[u8]) -> Result<bool, StoreError> {
            self.0.contains(tree, key)
        }
        fn count(&self, tree: &str) -> Result<u64, StoreError> {
            self.0.count(tree)
        }
        fn scan(&self, tree: &str) -> Result<Vec<Record>, StoreError> {
            assert_ne!(tree, TREE, "a tag list scanned the whole registry tree");
            self.0.scan(tree)
        }
        fn scan_prefix(&self, tree: &str, prefix: &[u8]) -> Result<Vec<Record>, StoreError> {
            self.0.scan_prefix(tree, prefix)
        }
        fn remove(&self, tree: &str, key: &[u8]) -> Result<bool, StoreError> {
            self.0.remove(tree, key)
        }
        fn flush(&self) -> crate::store::BoxFuture<'_, Result<(), StoreError>> {
            self.0.flush()
        }
        fn flush_blocking(&self) -> Result<(), StoreError> {
            self.0.flush_blocking()
        }
    }

    fn signed(n: u8) -> Signed {
        Signed {
            tag_manifest: format!("{n:064x}"),
            referrer: Descriptor::for_bytes(MEDIA_OCI_MANIFEST, &[n]),
        }
    }

    #[tokio::test]
    async fn signature_tags_read_only_their_repository() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(NoFullScan(SledStore::open(dir.path()).unwrap()));
        let store = RegistryStore::new(meta);
        let hex = |n: u8| Digest::of(&[n]).hex().to_string();
        // `installer/ab` is a prefix of `installer/abc`: the `@` keeps them apart.
        for (repo, n) in [
            ("installer/ab", 1),
            ("installer/abc", 2),
            ("installer/ab", 3),
        ] {
            store.put_signature(repo, &hex(n), &signed(n)).unwrap();
        }
        store
            .put_manifest(
                "installer/ab",
                &hex(9),
                &Entry::Document {
                    media_type: MEDIA_OCI_MANIFEST.into(),
                    bytes: "{}".into(),
                },
            )
            .unwrap();
        let mut tags = store.signature_tags("installer/ab").await.unwrap();
        tags.sort();
        let mut want = vec![
            format!("sha256-{}.sig", hex(1)),
            format!("sha256-{}.sig", hex(3)),
        ];
        want.sort();
        assert_eq!(tags, want);
        assert_eq!(
            store.signature_tags("installer/abc").await.unwrap(),
            vec![format!("sha256-{}.sig", hex(2))]
        );
        assert!(
            store
                .signature_tags("installer/a")
                .await
                .unwrap()
                .is_empty()
        );
    }
}
