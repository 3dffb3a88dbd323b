//! Document files written after the acknowledgement. A small document kept inline in its
//! index entry is durable with the metadata store's log; its file is the copy the index is
//! rebuilt from, written by a background thread in batches made durable with one `syncfs`
//! each (a file and a directory fsync per document on the request path would cost more than
//! half the throughput of `POST /schematics`). A copy missing after a crash is written again
//! from the index at the next start ([`super::DocStore::check`]).

use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::thread::JoinHandle;

use super::DocStore;

/// Copies waiting to be written, at most (beyond it, a writer writes its own copy).
const QUEUE: usize = 8192;
/// Copies written per `syncfs`, at most.
const BATCH: usize = 1024;

/// Work for the writer thread.
pub(super) enum Job {
    /// Write the document file of `key`.
    Write {
        /// Document key.
        key: String,
        /// Its body.
        body: Vec<u8>,
    },
    /// Answer once every copy submitted before is durable.
    Barrier(std::sync::mpsc::Sender<()>),
}

/// The background writer of one document store.
pub(super) struct LazyWriter {
    tx: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl LazyWriter {
    /// Starts the writer thread for `store` (a store without a writer of its own).
    pub(super) fn start(store: DocStore) -> std::io::Result<LazyWriter> {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name(format!("{}-copies", store.kind.name()))
            .spawn(move || run(&store, &rx))?;
        Ok(LazyWriter {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues the copy of `key`; gives the job back when the queue is full.
    pub(super) fn submit(&self, key: String, body: Vec<u8>) -> Result<(), Job> {
        let Some(tx) = &self.tx else {
            return Err(Job::Write { key, body });
        };
        tx.try_send(Job::Write { key, body }).map_err(|e| match e {
            TrySendError::Full(job) | TrySendError::Disconnected(job) => job,
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
    /// Writes what is queued and stops the thread (it holds the stores: they are released
    /// when this returns).
    fn drop(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread: batches of copies, one `syncfs` per batch, then the barriers.
fn run(store: &DocStore, rx: &Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let mut barriers = Vec::new();
        let mut written = 0;
        for job in jobs {
            match job {
                Job::Write { key, body } => match store.write_copy(&key, &body, false) {
                    Ok(()) => written += 1,
                    Err(e) => tracing::error!(
                        kind = store.kind.name(),
                        key,
                        error = %crate::causes::Causes(&e),
                        "could not write a document copy (the next start writes it from the index)"
                    ),
                },
                Job::Barrier(done) => barriers.push(done),
            }
        }
        if written > 0
            && let Err(e) = store.blobs.sync_filesystem()
        {
            tracing::error!(error = %crate::causes::Causes(&e), "could not sync document copies");
        }
        for done in barriers {
            let _ = done.send(());
        }
    }
}
