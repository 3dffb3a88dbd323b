//! The threads that parse and hash uploaded schematics: a fixed pool (one thread per core)
//! fed through a bounded queue, so parsing never runs on a runtime worker and at most one
//! parse per core runs at a time.
//!
//! Why not `spawn_blocking` behind a semaphore: each parse there is handed to a pool thread
//! that has gone to sleep since the last one, and under a flood of small uploads those
//! wake-ups cost more than the parses (docs/benchmarks-history.md, "2026-12-06 the schematic
//! POST path after hardening").
//! Threads of their own take the next upload from the queue without sleeping while there
//! is one.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};

/// A unit of work for the pool.
type Job = Box<dyn FnOnce() + Send>;

/// Why a job did not run.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// More jobs are waiting than the queue holds.
    #[error("too many schematics are waiting to be parsed")]
    Full,
    /// The pool's threads are gone (the server is shutting down).
    #[error("the schematic parser is shut down")]
    Closed,
}

/// A fixed set of parser threads and their queue.
pub struct ParsePool {
    queue: SyncSender<Job>,
}

impl ParsePool {
    /// Starts `threads` threads behind a queue of `capacity` jobs.
    pub fn new(threads: usize, capacity: usize) -> std::io::Result<Self> {
        let (queue, jobs) = std::sync::mpsc::sync_channel::<Job>(capacity);
        let jobs = Arc::new(Mutex::new(jobs));
        for i in 0..threads.max(1) {
            let jobs = Arc::clone(&jobs);
            std::thread::Builder::new()
                .name(format!("schematic-parse-{i}"))
                .spawn(move || work(&jobs))?;
        }
        Ok(Self { queue })
    }

    /// Queues `f` for a pool thread at once (or refuses it), and gives a future of its
    /// result.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = Result<T, PoolError>> + Send + 'static {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        let queued = self.queue.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => PoolError::Full,
            TrySendError::Disconnected(_) => PoolError::Closed,
        });
        async move {
            queued?;
            rx.await.map_err(|_| PoolError::Closed)
        }
    }
}

/// A pool thread: takes jobs until every sender is gone. A job that panics ends only its
/// own result (its requester sees [`PoolError::Closed`]); the thread goes on.
fn work(jobs: &Mutex<Receiver<Job>>) {
    loop {
        let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = job else { return };
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_off_the_runtime_and_survives_a_panicking_one() {
        let pool = ParsePool::new(2, 4).unwrap();
        let name = pool
            .run(|| std::thread::current().name().map(str::to_string))
            .await
            .unwrap();
        assert!(name.is_some_and(|n| n.starts_with("schematic-parse-")));
        assert!(matches!(
            pool.run(|| panic!("a bad job")).await,
            Err::<(), _>(PoolError::Closed)
        ));
        assert_eq!(pool.run(|| 6 * 7).await.unwrap(), 42);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_instead_of_waiting() {
        let pool = ParsePool::new(1, 1).unwrap();
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        // The one thread is busy, the one queue slot taken: the next job is refused.
        let busy = pool.run(move || {
            let _ = started_tx.send(());
            let _ = hold_rx.recv();
        });
        started_rx.recv().unwrap();
        let queued = pool.run(|| 1);
        assert!(matches!(pool.run(|| 2).await, Err(PoolError::Full)));
        hold_tx.send(()).unwrap();
        busy.await.unwrap();
        assert_eq!(queued.await.unwrap(), 1);
    }
}
