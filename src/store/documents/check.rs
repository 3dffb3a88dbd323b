//! Checking an index against its documents, and restoring what it lost.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use serde::Serialize;

use super::{DocRef, DocStore};
use crate::store::StoreError;
use crate::store::blobs::{fanout_files, is_blob_name};

/// What a check of an index against its documents found.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DocCheck {
    /// Document kind.
    pub kind: &'static str,
    /// References in the index before the check.
    pub indexed: usize,
    /// Document files found.
    pub documents: usize,
    /// Keys whose document was not (or not correctly) in the index: restored when repairing.
    pub restored: Vec<String>,
    /// Keys the index names whose document is missing or damaged: lost.
    pub missing: Vec<String>,
    /// Document files that fail verification (name, header or content).
    pub damaged: Vec<PathBuf>,
    /// Older documents of a replaced record (removed when repairing).
    pub superseded: usize,
    /// Whether the index was changed (restored references, removed files).
    pub repaired: bool,
}

impl DocCheck {
    /// Whether nothing was wrong.
    pub fn is_clean(&self) -> bool {
        self.restored.is_empty() && self.missing.is_empty() && self.damaged.is_empty()
    }
}

impl DocStore {
    /// The document files on disk, by BLAKE3 name.
    fn files(&self) -> Result<HashMap<String, PathBuf>, StoreError> {
        Ok(fanout_files(&self.dir())?.into_iter().collect())
    }

    /// Compares the index with the documents on disk. `valid(key, body)` checks a document's
    /// body against its key (a schematic's ID is its SHA-256). Unreferenced documents are
    /// always read; with `deep`, referenced ones too (a damaged one counts as missing). With
    /// `repair`, documents the index lost are indexed again (the newest generation per key)
    /// and superseded files removed; call [`MetaStore::flush_blocking`] (or `flush`)
    /// afterwards. Blocking.
    pub fn check(
        &self,
        repair: bool,
        deep: bool,
        valid: &dyn Fn(&str, &[u8]) -> bool,
    ) -> Result<DocCheck, StoreError> {
        let refs: HashMap<String, DocRef> = self.refs()?.into_iter().collect();
        let mut files = self.files()?;
        let mut damaged = Vec::new();
        if deep {
            for (key, r) in &refs {
                let Some(path) = files.get(&r.blake3) else {
                    continue;
                };
                let ok = self
                    .read_file(path, &r.blake3, Some(r.size))
                    .is_ok_and(|p| p.key == *key && valid(&p.key, &p.body));
                if !ok {
                    tracing::error!(kind = self.kind.name(), path = %path.display(), "a document fails verification");
                    damaged.push(path.clone());
                    files.remove(&r.blake3);
                }
            }
        }
        let mut report = DocCheck {
            kind: self.kind.name(),
            indexed: refs.len(),
            documents: files.len() + damaged.len(),
            damaged,
            ..DocCheck::default()
        };
        let referenced: HashSet<&str> = refs.values().map(|r| r.blake3.as_str()).collect();
        // Referenced files are verified on read; unreferenced ones are read here.
        let mut found: HashMap<String, (DocRef, PathBuf)> = HashMap::new();
        let mut stale: Vec<PathBuf> = Vec::new();
        for (name, path) in &files {
            if referenced.contains(name.as_str()) {
                continue;
            }
            let parsed = if is_blob_name(name) {
                self.read_file(path, name, None)
            } else {
                Err(StoreError::InvalidBlobName { name: name.clone() })
            };
            let parsed = match parsed {
                Ok(p) if valid(&p.key, &p.body) => p,
                Ok(_) | Err(_) => {
                    tracing::error!(kind = self.kind.name(), path = %path.display(), "a document fails verification");
                    report.damaged.push(path.clone());
                    continue;
                }
            };
            let r = DocRef {
                blake3: name.clone(),
                size: std::fs::metadata(path).map_or(0, |m| m.len()),
                generation: parsed.generation,
            };
            match found.get(&parsed.key) {
                Some((best, _)) if best.generation >= r.generation => stale.push(path.clone()),
                _ => {
                    if let Some((_, older)) = found.insert(parsed.key, (r, path.clone())) {
                        stale.push(older);
                    }
                }
            }
        }
        for (key, r) in &refs {
            if !files.contains_key(&r.blake3) && !found.contains_key(key) {
                report.missing.push(key.clone());
            }
        }
        for (key, (r, path)) in found {
            let current = refs.get(&key);
            let lost = match current {
                None => true,
                Some(cur) => !files.contains_key(&cur.blake3) || cur.generation < r.generation,
            };
            if !lost {
                stale.push(path);
                continue;
            }
            if repair {
                self.put_ref(&key, &r, false)?;
                report.repaired = true;
            }
            report.restored.push(key);
        }
        report.superseded = stale.len();
        if repair {
            for path in stale {
                let _ = std::fs::remove_file(path);
                report.repaired = true;
            }
        }
        report.restored.sort();
        report.missing.sort();
        report.damaged.sort();
        Ok(report)
    }
}
