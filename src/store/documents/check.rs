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
    /// Documents found (files and copies in the copy log).
    pub documents: usize,
    /// Keys whose document was not (or not correctly) in the index: restored when repairing.
    pub restored: Vec<String>,
    /// Keys the index names whose document is missing or damaged: lost.
    pub missing: Vec<String>,
    /// Document files that fail verification (name, header or content).
    pub damaged: Vec<PathBuf>,
    /// Older documents of a replaced record (removed when repairing).
    pub superseded: usize,
    /// Files of entries kept inline that were missing (a crash before the background writer
    /// wrote them): written from the index when repairing. Not a loss.
    pub rewritten: usize,
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

    /// Whether the index entry `r` of `key` holds what it claims: its inline body (if any) is
    /// valid for its key, or else its file verifies. `None` when the
    /// file to check is not there.
    fn ref_verifies(
        &self,
        key: &str,
        r: &DocRef,
        files: &HashMap<String, PathBuf>,
        valid: &dyn Fn(&str, &[u8]) -> bool,
    ) -> Option<bool> {
        if let Some(body) = &r.inline {
            // Its name follows from the body: the body is checked against its key.
            return Some(valid(key, body.as_bytes()));
        }
        let path = files.get(&r.blake3)?;
        Some(
            self.read_file(path, &r.blake3, Some(r.size))
                .is_ok_and(|p| p.key == key && valid(&p.key, &p.body)),
        )
    }

    /// The reference to restore for the verified document `p` named `blake3` (`size` bytes):
    /// with its body inline when its kind keeps it so.
    fn found_ref(&self, blake3: &str, size: u64, p: &super::Parsed) -> DocRef {
        DocRef {
            blake3: blake3.to_string(),
            size,
            generation: p.generation,
            inline: self
                .inline_ref(&p.key, &p.body)
                .filter(|i| i.blake3 == blake3)
                .and_then(|i| i.inline),
        }
    }

    /// Compares the index with the documents on disk. `valid(key, body)` checks a document's
    /// body against its key (a schematic's ID is its SHA-256). Unreferenced documents are
    /// always read; with `deep`, every index entry is verified too (a damaged one counts as
    /// missing unless a document restores it). With `repair`, documents the index lost are
    /// indexed again (the newest generation per key), superseded files removed and the files
    /// of inline entries a crash cut off written; call [`MetaStore::flush_blocking`] (or
    /// `flush`) afterwards. Blocking.
    pub fn check(
        &self,
        repair: bool,
        deep: bool,
        valid: &dyn Fn(&str, &[u8]) -> bool,
    ) -> Result<DocCheck, StoreError> {
        let refs: HashMap<String, DocRef> = self.refs()?.into_iter().collect();
        let mut files = self.files()?;
        let mut damaged = Vec::new();
        // Index entries that do not hold what they claim.
        let mut bad: HashSet<&str> = HashSet::new();
        if deep {
            for (key, r) in &refs {
                if self.ref_verifies(key, r, &files, valid) == Some(false) {
                    tracing::error!(
                        kind = self.kind.name(),
                        key,
                        "an index entry fails verification"
                    );
                    bad.insert(key);
                    if r.inline.is_none()
                        && let Some(path) = files.remove(&r.blake3)
                    {
                        damaged.push(path);
                    }
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
        let referenced: HashSet<&str> = refs
            .iter()
            .filter(|(key, _)| !bad.contains(key.as_str()))
            .map(|(_, r)| r.blake3.as_str())
            .collect();
        // Referenced files are verified on read; unreferenced ones are read here (a copy in
        // the copy log has no path: it is never removed).
        let mut found: HashMap<String, (DocRef, Option<PathBuf>)> = HashMap::new();
        let mut stale: Vec<PathBuf> = Vec::new();
        let mut consider = |r: DocRef, key: String, path: Option<PathBuf>| match found.get(&key) {
            Some((best, _)) if best.generation >= r.generation => stale.extend(path),
            _ => {
                if let Some((_, older)) = found.insert(key, (r, path)) {
                    stale.extend(older);
                }
            }
        };
        for (name, path) in &files {
            if referenced.contains(name.as_str()) {
                continue;
            }
            let parsed = if is_blob_name(name) {
                self.read_file(path, name, None)
            } else {
                Err(StoreError::InvalidBlobName { name: name.clone() })
            };
            match parsed {
                Ok(p) if valid(&p.key, &p.body) => {
                    let size = std::fs::metadata(path).map_or(0, |m| m.len());
                    let r = self.found_ref(name, size, &p);
                    consider(r, p.key, Some(path.clone()));
                }
                Ok(_) | Err(_) => {
                    tracing::error!(kind = self.kind.name(), path = %path.display(), "a document fails verification");
                    report.damaged.push(path.clone());
                }
            }
        }
        // Copies of inline entries: which are there, and those the index does not name.
        let mut copied: HashSet<String> = HashSet::new();
        if let Some((log, _)) = &self.copies {
            let mut wrong = Vec::new();
            let scan = log.scan(|record| {
                if !referenced.contains(record.blake3.as_str()) {
                    match self.parse(&record.blake3, record.document.to_vec()) {
                        Ok(p) if valid(&p.key, &p.body) => {
                            let size = record.document.len() as u64;
                            consider(self.found_ref(&record.blake3, size, &p), p.key, None);
                        }
                        // Intact bytes, but not what they claim to be.
                        Ok(_) | Err(_) => wrong.push(PathBuf::from(format!(
                            "{}#{}",
                            record.segment.display(),
                            record.blake3
                        ))),
                    }
                }
                copied.insert(record.blake3);
            })?;
            for w in &wrong {
                tracing::error!(kind = self.kind.name(), copy = %w.display(), "a document copy fails verification");
            }
            report.damaged.extend(wrong);
            report.documents += copied.len();
            report.damaged.extend(scan.damaged);
        }
        // An entry is usable if it verifies and its body is inline or its file is there.
        let usable = |key: &str, r: &DocRef| {
            !bad.contains(key) && (r.inline.is_some() || files.contains_key(&r.blake3))
        };
        let mut copies: Vec<(&str, &[u8])> = Vec::new();
        for (key, r) in &refs {
            if !usable(key, r) {
                if !found.contains_key(key) {
                    report.missing.push(key.clone());
                }
            } else if let Some(body) = &r.inline
                && !files.contains_key(&r.blake3)
                && !copied.contains(&r.blake3)
            {
                copies.push((key, body.as_bytes()));
            }
        }
        for (key, (r, path)) in found {
            let lost = match refs.get(&key) {
                None => true,
                Some(cur) => !usable(&key, cur) || cur.generation < r.generation,
            };
            if !lost {
                stale.extend(path);
                continue;
            }
            if repair {
                self.put_ref(&key, &r, false)?;
                report.repaired = true;
            }
            report.restored.push(key);
        }
        report.superseded = stale.len();
        report.rewritten = copies.len();
        if repair {
            for path in stale {
                let _ = std::fs::remove_file(path);
                report.repaired = true;
            }
            self.append_copies(&copies)?;
        }
        report.restored.sort();
        report.missing.sort();
        report.damaged.sort();
        Ok(report)
    }
}
