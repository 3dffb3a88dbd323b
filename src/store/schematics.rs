//! Schematic store facade: canonical YAML keyed by schematic ID, kept as documents in the blob
//! store with their references in the metadata store (see `documents.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{BlobStore, DocCheck, DocKind, DocStore, StoreError};

/// The metadata tree that held schematics themselves before they became documents.
const LEGACY_TREE: &str = "schematics";

/// Whether a put created a new record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The schematic was new.
    Created,
    /// The schematic already existed (idempotent re-post).
    Existed,
}

/// Stores canonical schematic YAML by ID; writes are durable when `put` returns.
#[derive(Clone)]
pub struct SchematicStore {
    docs: DocStore,
    count: Arc<AtomicU64>,
}

/// Whether `body` is the schematic with ID `id` (the SHA-256 of its canonical YAML).
fn is_schematic(id: &str, body: &[u8]) -> bool {
    crate::sha256::hex_digest(body) == id
}

impl SchematicStore {
    /// The schematics of `blobs` (whose metadata store holds the index). Moves schematics an
    /// older version kept in the metadata store into documents, and counts them. Blocking.
    pub fn new(blobs: &BlobStore) -> Result<Self, StoreError> {
        let docs = DocStore::new(DocKind::Schematic, blobs.clone())?;
        let migrated = docs.migrate_legacy(LEGACY_TREE)?;
        if migrated > 0 {
            tracing::info!(
                migrated,
                "moved schematics out of the metadata store into documents"
            );
        }
        let n = docs.count()?;
        Ok(Self {
            docs,
            count: Arc::new(AtomicU64::new(n)),
        })
    }

    /// Stores `canonical` under `id` and waits until it is durable.
    pub async fn put(&self, id: &str, canonical: &str) -> Result<PutOutcome, StoreError> {
        let (created, _) = self.docs.put(id, canonical.as_bytes().to_vec()).await?;
        Ok(if created {
            self.count.fetch_add(1, Ordering::AcqRel);
            PutOutcome::Created
        } else {
            PutOutcome::Existed
        })
    }

    /// Returns the canonical YAML of `id`, if stored.
    pub fn get(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.docs.get_text(id)
    }

    /// Whether schematic `id` is stored (reads only its reference).
    pub fn contains(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.docs.get_ref(id)?.is_some())
    }

    /// The IDs of every stored schematic (a scan of the index). Blocking.
    pub fn ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.docs.refs()?.into_iter().map(|(k, _)| k).collect())
    }

    /// Number of stored schematics.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// Checks the index against the schematic documents (see [`DocStore::check`]); with
    /// `repair`, restores what the index lost and makes that durable. Blocking.
    pub fn check(&self, repair: bool, deep: bool) -> Result<DocCheck, StoreError> {
        let report = self.docs.check(repair, deep, &is_schematic)?;
        if report.repaired {
            self.docs.flush_blocking()?;
            self.count.store(self.docs.count()?, Ordering::Release);
        }
        Ok(report)
    }

    /// Makes all writes durable (used at shutdown).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.docs.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::blobs::tests::store;

    const YAML: &str = "customization: {}\n";
    const ID: &str = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";

    #[tokio::test]
    async fn round_trip_and_reopen() {
        let (dir, blobs) = store();
        {
            let s = SchematicStore::new(&blobs).unwrap();
            assert_eq!(s.put(ID, YAML).await.unwrap(), PutOutcome::Created);
            assert_eq!(s.put(ID, YAML).await.unwrap(), PutOutcome::Existed);
            assert_eq!(s.get(ID).unwrap().as_deref(), Some(YAML));
            assert_eq!(s.get(&"b".repeat(64)).unwrap(), None);
            assert_eq!(s.count(), 1);
            assert_eq!(s.ids().unwrap(), [ID]);
        }
        drop(blobs);
        let meta: Arc<dyn crate::store::MetaStore> =
            Arc::new(crate::store::SledStore::open(&dir.path().join("meta")).unwrap());
        let blobs = BlobStore::open(&dir.path().join("blobs"), meta).unwrap();
        let s = SchematicStore::new(&blobs).unwrap();
        assert_eq!(s.count(), 1);
        assert_eq!(s.get(ID).unwrap().as_deref(), Some(YAML));
    }

    #[tokio::test]
    async fn a_document_whose_body_is_not_its_id_is_not_restored() {
        let (_dir, blobs) = store();
        let s = SchematicStore::new(&blobs).unwrap();
        s.put(ID, YAML).await.unwrap();
        // A document claiming an ID its body does not hash to.
        s.put(&"c".repeat(64), YAML).await.unwrap();
        // The document copies of small schematics are written in the background.
        s.flush().await.unwrap();
        blobs
            .meta()
            .remove("schematic_docs", ID.as_bytes())
            .unwrap();
        let wrong = "c".repeat(64);
        blobs
            .meta()
            .remove("schematic_docs", wrong.as_bytes())
            .unwrap();
        let report = s.check(true, false).unwrap();
        assert_eq!(report.restored, [ID]);
        assert_eq!(report.damaged.len(), 1);
        assert_eq!(s.count(), 1);
        assert_eq!(s.get(ID).unwrap().as_deref(), Some(YAML));
        assert_eq!(s.get(&wrong).unwrap(), None);
    }
}
