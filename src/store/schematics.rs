//! Schematic store facade: canonical YAML keyed by schematic ID.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{MetaStore, StoreError};

const TREE: &str = "schematics";

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
    meta: Arc<dyn MetaStore>,
    count: Arc<AtomicU64>,
}

impl SchematicStore {
    /// Wraps a metadata store (counts existing schematics once).
    pub fn new(meta: Arc<dyn MetaStore>) -> Result<Self, StoreError> {
        let n = meta.count(TREE)?;
        Ok(Self {
            meta,
            count: Arc::new(AtomicU64::new(n)),
        })
    }

    /// Stores `canonical` under `id` and waits until it is durable.
    pub async fn put(&self, id: &str, canonical: &str) -> Result<PutOutcome, StoreError> {
        let created = self
            .meta
            .put_if_absent(TREE, id.as_bytes(), canonical.as_bytes())?;
        if created {
            self.count.fetch_add(1, Ordering::AcqRel);
        }
        // Flush even for duplicates: the first writer may not have finished its flush yet.
        self.meta.flush().await?;
        Ok(if created {
            PutOutcome::Created
        } else {
            PutOutcome::Existed
        })
    }

    /// Returns the canonical YAML of `id`, if stored.
    pub fn get(&self, id: &str) -> Result<Option<String>, StoreError> {
        match self.meta.get(TREE, id.as_bytes())? {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    tree: TREE.into(),
                    key: id.into(),
                    message: e.to_string(),
                }),
        }
    }

    /// Number of stored schematics.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// Makes all writes durable (used at shutdown).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.meta.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    #[tokio::test]
    async fn round_trip_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SchematicStore::new(Arc::new(SledStore::open(dir.path()).unwrap())).unwrap();
            assert_eq!(s.put("a", "x\n").await.unwrap(), PutOutcome::Created);
            assert_eq!(s.put("a", "x\n").await.unwrap(), PutOutcome::Existed);
            assert_eq!(s.get("a").unwrap().as_deref(), Some("x\n"));
            assert_eq!(s.get("b").unwrap(), None);
            assert_eq!(s.count(), 1);
        }
        let s = SchematicStore::new(Arc::new(SledStore::open(dir.path()).unwrap())).unwrap();
        assert_eq!(s.count(), 1);
        assert_eq!(s.get("a").unwrap().as_deref(), Some("x\n"));
    }
}
