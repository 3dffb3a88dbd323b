//! Copies written after the acknowledgement. A small document kept inline in its index entry
//! is durable with the metadata store's log; its copy in the copy log (`copies.rs`) is what
//! the index is rebuilt from after damage. A background thread appends the copies in batches
//! (one write and one `fdatasync` per batch, at most one batch per [`PERIOD`] unless someone
//! waits for it) instead of the request doing it: each `fdatasync` is a journal commit that
//! the metadata store's own syncs would otherwise queue behind. A copy a crash cut off is
//! written again from the index at the next start ([`super::DocStore::check`]).

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::copies::CopyLog;

/// Copies waiting to be written, at most (beyond it, a writer appends its own copy).
const QUEUE: usize = 16384;
/// Copies appended per batch, at most.
const BATCH: usize = 4096;
/// How long a batch collects copies before it is appended (a barrier ends it at once).
const PERIOD: Duration = Duration::from_millis(100);

/// Work for the writer thread.
pub(super) enum Job {
    /// Append a document (header line and body).
    Copy(Vec<u8>),
    /// Answer once every copy submitted before is durable.
    Barrier(std::sync::mpsc::Sender<()>),
}

/// The background writer of one copy log.
pub(super) struct LazyWriter {
    tx: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl LazyWriter {
    /// Starts the writer thread (`name`) for `log`.
    pub(super) fn start(name: String, log: Arc<CopyLog>) -> std::io::Result<LazyWriter> {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || run(&log, &rx))?;
        Ok(LazyWriter {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues a copy; gives the document back when the queue is full.
    pub(super) fn submit(&self, document: Vec<u8>) -> Result<(), Vec<u8>> {
        let Some(tx) = &self.tx else {
            return Err(document);
        };
        tx.try_send(Job::Copy(document)).map_err(|e| match e {
            TrySendError::Full(Job::Copy(d)) | TrySendError::Disconnected(Job::Copy(d)) => d,
            TrySendError::Full(Job::Barrier(_)) | TrySendError::Disconnected(Job::Barrier(_)) => {
                Vec::new()
            }
        })
    }

    /// Waits until every copy queued so far is durable. Blocking.
    pub(super) fn barrier(&self) {
        let (done, wait) = std::sync::mpsc::channel();
        if let Some(tx) = &self.tx
            && tx.send(Job::Barrier(done)).is_ok()
        {
            let _ = wait.recv();
        }
    }
}

impl Drop for LazyWriter {
    /// Appends what is queued and stops the thread.
    fn drop(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread: batches of copies (collected for up to [`PERIOD`], until a barrier),
/// one append each, then the barriers.
fn run(log: &CopyLog, rx: &Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let until = Instant::now() + PERIOD;
        let mut documents = Vec::new();
        let mut barriers = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Copy(d) => documents.push(d),
                Job::Barrier(done) => barriers.push(done),
            }
            next = if documents.len() >= BATCH {
                None
            } else if !barriers.is_empty() {
                // Someone waits: what arrived meanwhile goes in as well, without waiting more.
                rx.try_recv().ok()
            } else {
                rx.recv_timeout(until.saturating_duration_since(Instant::now()))
                    .ok()
            };
        }
        if let Err(e) = log.append(&documents) {
            tracing::error!(
                copies = documents.len(),
                error = %crate::causes::Causes(&e),
                "could not append document copies (the next start writes them from the index)"
            );
        }
        for done in barriers {
            let _ = done.send(());
        }
    }
}
