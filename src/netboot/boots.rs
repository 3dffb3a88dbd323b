//! Boot records: which machine asked `/pxe/boot.ipxe`, when, which assignment it matched and
//! what it was served (or why it was told to retry). Kept in the metadata store (tree
//! `netboot_boots`, keyed by a sequence number), bounded: the last [`BOOTS_PER_MACHINE`] per
//! machine and [`MAX_BOOTS`] in all, the oldest dropped first.
//!
//! Records are diagnostics: a write is not flushed before the script is answered (sled's own
//! periodic flush and the flush at shutdown make it durable), so a boot costs no fsync.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::error::NetbootError;
use crate::store::MetaStore;

/// Metadata tree of boot records.
const TREE: &str = "netboot_boots";
/// Records kept per machine.
pub const BOOTS_PER_MACHINE: usize = 8;
/// Records kept in all.
pub const MAX_BOOTS: usize = 2048;
/// Newest records kept in memory for `/status`.
const RECENT: usize = 16;

/// What a boot request was answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// A Talos boot script.
    Booted,
    /// A script that says what is missing and asks again later.
    Retry,
}

/// One boot request and its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootRecord {
    /// Sequence number (increasing).
    #[serde(default)]
    pub seq: u64,
    /// When (Unix seconds).
    pub at: u64,
    /// When (RFC 3339).
    pub time: String,
    /// The machine (`mac:aa:bb:..`, else `uuid:..`, `serial:..`, `hostname:..`, `unknown`).
    pub machine: String,
    /// MAC address reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// UUID reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Serial number reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Host name reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Architecture booted.
    pub arch: String,
    /// The assignment matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment: Option<String>,
    /// The answer.
    pub outcome: Outcome,
    /// Schematic served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schematic: Option<String>,
    /// Version served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `/pxe` path served (`metal-amd64`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Extra kernel arguments appended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_kernel_args: Vec<String>,
    /// Why the machine was told to retry (or identifiers that were refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Which records exist (keys only; the records are in the store).
#[derive(Default)]
struct Index {
    next: u64,
    /// Every record: sequence number → machine.
    live: BTreeMap<u64, String>,
    /// Each machine's records, oldest first.
    per_machine: HashMap<String, VecDeque<u64>>,
    /// The newest records, newest last.
    recent: VecDeque<BootRecord>,
}

/// The bounded boot log.
pub struct BootLog {
    meta: Arc<dyn MetaStore>,
    index: Mutex<Index>,
    booted: AtomicU64,
    retried: AtomicU64,
}

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn decode(k: &[u8], v: &[u8]) -> Result<BootRecord, NetbootError> {
    serde_json::from_slice(v).map_err(|e| NetbootError::Corrupt {
        what: "boot record",
        key: hex::encode(k),
        source: Box::new(e),
    })
}

impl BootLog {
    /// The boot log of `meta` (reads every record once; blocking). Records that do not
    /// decode are dropped with a warning: they are diagnostics, not state.
    pub fn open(meta: Arc<dyn MetaStore>) -> Result<BootLog, NetbootError> {
        let mut index = Index::default();
        let mut records = Vec::new();
        for (k, v) in meta.scan(TREE)? {
            let Ok(seq_bytes) = <[u8; 8]>::try_from(k.as_slice()) else {
                meta.remove(TREE, &k)?;
                continue;
            };
            let seq = u64::from_be_bytes(seq_bytes);
            match decode(&k, &v) {
                Ok(mut r) => {
                    r.seq = seq;
                    records.push(r);
                }
                Err(e) => {
                    tracing::warn!(error = %crate::causes::Causes(&e), "dropping a boot record");
                    meta.remove(TREE, &k)?;
                }
            }
        }
        for r in records {
            index.next = index.next.max(r.seq + 1);
            index.live.insert(r.seq, r.machine.clone());
            index
                .per_machine
                .entry(r.machine.clone())
                .or_default()
                .push_back(r.seq);
            index.recent.push_back(r);
            if index.recent.len() > RECENT {
                index.recent.pop_front();
            }
        }
        let log = BootLog {
            meta,
            index: Mutex::new(index),
            booted: AtomicU64::new(0),
            retried: AtomicU64::new(0),
        };
        {
            let mut index = log.lock();
            log.enforce_bounds(&mut index, None)?;
        }
        Ok(log)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Drops the oldest records beyond the per-machine bound (of `machine`, or of every
    /// machine) and the global bound.
    fn enforce_bounds(&self, index: &mut Index, machine: Option<&str>) -> Result<(), NetbootError> {
        let mut drop: Vec<u64> = Vec::new();
        let mut trim = |seqs: &mut VecDeque<u64>| {
            while seqs.len() > BOOTS_PER_MACHINE {
                if let Some(s) = seqs.pop_front() {
                    drop.push(s);
                }
            }
        };
        match machine {
            Some(m) => index.per_machine.get_mut(m).into_iter().for_each(&mut trim),
            None => index.per_machine.values_mut().for_each(&mut trim),
        }
        for s in &drop {
            index.live.remove(s);
        }
        while index.live.len() > MAX_BOOTS {
            let Some((s, machine)) = index.live.pop_first() else {
                break;
            };
            if let Some(seqs) = index.per_machine.get_mut(&machine) {
                seqs.retain(|x| *x != s);
                if seqs.is_empty() {
                    index.per_machine.remove(&machine);
                }
            }
            drop.push(s);
        }
        for s in drop {
            self.meta.remove(TREE, &key(s))?;
        }
        Ok(())
    }

    /// Records one boot request (its `seq` is assigned here); returns the record stored.
    pub fn record(&self, mut record: BootRecord) -> Result<BootRecord, NetbootError> {
        match record.outcome {
            Outcome::Booted => self.booted.fetch_add(1, Ordering::Relaxed),
            Outcome::Retry => self.retried.fetch_add(1, Ordering::Relaxed),
        };
        let mut index = self.lock();
        record.seq = index.next;
        index.next += 1;
        let bytes = serde_json::to_vec(&record).map_err(|source| {
            NetbootError::Store(crate::store::StoreError::Encode {
                what: "boot record",
                source,
            })
        })?;
        self.meta.put(TREE, &key(record.seq), &bytes)?;
        index.live.insert(record.seq, record.machine.clone());
        index
            .per_machine
            .entry(record.machine.clone())
            .or_default()
            .push_back(record.seq);
        index.recent.push_back(record.clone());
        if index.recent.len() > RECENT {
            index.recent.pop_front();
        }
        self.enforce_bounds(&mut index, Some(&record.machine))?;
        Ok(record)
    }

    /// The newest `n` records (at most 16), newest first.
    pub fn recent(&self, n: usize) -> Vec<BootRecord> {
        self.lock().recent.iter().rev().take(n).cloned().collect()
    }

    /// Records kept, newest first: every machine's, or `machine`'s; at most `limit`.
    pub fn list(
        &self,
        machine: Option<&str>,
        limit: usize,
    ) -> Result<Vec<BootRecord>, NetbootError> {
        let seqs: Vec<u64> = {
            let index = self.lock();
            match machine {
                Some(m) => index
                    .per_machine
                    .get(m)
                    .map(|s| s.iter().rev().copied().collect())
                    .unwrap_or_default(),
                None => index.live.keys().rev().copied().collect(),
            }
        };
        let mut out = Vec::new();
        for s in seqs.into_iter().take(limit) {
            let k = key(s);
            // A record dropped between the two reads is simply not listed.
            if let Some(v) = self.meta.get(TREE, &k)? {
                let mut r = decode(&k, &v)?;
                r.seq = s;
                out.push(r);
            }
        }
        Ok(out)
    }

    /// The newest record of each assignment (by name).
    pub fn last_by_assignment(&self) -> Result<HashMap<String, BootRecord>, NetbootError> {
        let mut out: HashMap<String, BootRecord> = HashMap::new();
        for r in self.list(None, MAX_BOOTS)? {
            if let Some(a) = r.assignment.clone() {
                out.entry(a).or_insert(r);
            }
        }
        Ok(out)
    }

    /// Records kept now.
    pub fn stored(&self) -> usize {
        self.lock().live.len()
    }

    /// Boot scripts served since start.
    pub fn booted_since_start(&self) -> u64 {
        self.booted.load(Ordering::Relaxed)
    }

    /// Retry scripts served since start.
    pub fn retried_since_start(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(machine: &str, assignment: Option<&str>) -> BootRecord {
        BootRecord {
            seq: 0,
            at: 1,
            time: "1970-01-01T00:00:01Z".into(),
            machine: machine.into(),
            mac: None,
            uuid: None,
            serial: None,
            hostname: None,
            arch: "amd64".into(),
            assignment: assignment.map(str::to_string),
            outcome: Outcome::Booted,
            schematic: None,
            version: None,
            path: None,
            extra_kernel_args: vec![],
            reason: None,
        }
    }

    #[test]
    fn records_are_bounded_per_machine_and_in_all_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let meta: Arc<dyn MetaStore> = Arc::new(crate::store::SledStore::open(dir.path()).unwrap());
        let log = BootLog::open(Arc::clone(&meta)).unwrap();
        for _ in 0..BOOTS_PER_MACHINE + 5 {
            log.record(rec("mac:a", Some("x"))).unwrap();
        }
        assert_eq!(
            log.list(Some("mac:a"), 100).unwrap().len(),
            BOOTS_PER_MACHINE
        );
        assert_eq!(meta.count(TREE).unwrap() as usize, BOOTS_PER_MACHINE);
        // The newest are kept, newest first.
        let seqs: Vec<u64> = log.list(None, 3).unwrap().iter().map(|r| r.seq).collect();
        let top = (BOOTS_PER_MACHINE + 4) as u64;
        assert_eq!(seqs, [top, top - 1, top - 2]);
        for i in 0..MAX_BOOTS + 10 {
            log.record(rec(&format!("mac:{i}"), None)).unwrap();
        }
        assert_eq!(log.stored(), MAX_BOOTS);
        assert_eq!(meta.count(TREE).unwrap() as usize, MAX_BOOTS);
        // Machine a's records were the oldest: gone.
        assert!(log.list(Some("mac:a"), 100).unwrap().is_empty());
        assert_eq!(log.recent(2)[0].machine, format!("mac:{}", MAX_BOOTS + 9));
        drop(log);
        let again = BootLog::open(meta).unwrap();
        assert_eq!(again.stored(), MAX_BOOTS);
        let next = again.record(rec("mac:b", Some("y"))).unwrap();
        assert_eq!(next.seq, (BOOTS_PER_MACHINE + 5 + MAX_BOOTS + 10) as u64);
        assert_eq!(again.last_by_assignment().unwrap()["y"].machine, "mac:b");
    }
}
