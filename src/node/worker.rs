//! Background workers: one small trait for everything a node runs besides answering requests
//! (garbage collection, scrub, and the coming replication and TFTP services), a runner that
//! records each worker's state for `GET /status`, and an ordered stop.
//!
//! A worker alternates between [`Worker::work`] (one unit of work: a pass, a batch, or a whole
//! service loop that returns when asked to stop) and [`Worker::wait_for_work`] (sleeping until
//! the next unit is due). The runner never cancels `work`: it hands it the stop signal and waits
//! for it to return, so a pass is never cut in half; waiting is cancelled at once.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::causes::Causes;
use crate::store::BoxFuture;

/// Any error a worker's unit of work ends with (it comes from the layer the worker drives).
pub type WorkError = Box<dyn StdError + Send + Sync + 'static>;

/// What a worker wants after a unit of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// More work is ready: call `work` again at once.
    Busy,
    /// Nothing to do until `wait_for_work` returns.
    Idle,
    /// Finished for good.
    Done,
}

/// The stop signal a worker's `work` may watch (true once the node is stopping).
pub type StopSignal = watch::Receiver<bool>;

/// A named background task run by [`Workers`].
pub trait Worker: Send + 'static {
    /// Stable name shown in `/status` and logs (e.g. `gc`, `scrub`).
    fn name(&self) -> &str;

    /// Does one unit of work; should return soon after `stop` turns true.
    fn work<'a>(
        &'a mut self,
        stop: &'a mut StopSignal,
    ) -> BoxFuture<'a, Result<WorkerState, WorkError>>;

    /// Waits until the next unit of work is due (cancelled when the node stops).
    fn wait_for_work(&mut self) -> BoxFuture<'_, ()>;

    /// A short description of the last unit's result, shown in `/status`.
    fn progress(&self) -> Option<String> {
        None
    }
}

/// A worker's state as `/status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStatus {
    /// Worker name.
    pub name: String,
    /// `working`, `idle`, `stopping`, `done`, or `panicked`.
    pub state: &'static str,
    /// Units of work finished (successfully or not).
    pub runs: u64,
    /// Units of work that ended in an error.
    pub errors: u64,
    /// The last error with its causes, if the last unit failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The worker's own summary of its last unit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// When the last unit finished (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_finished: Option<String>,
}

type Board = Arc<Mutex<BTreeMap<usize, WorkerStatus>>>;

fn with_status(board: &Board, id: usize, f: impl FnOnce(&mut WorkerStatus)) {
    let mut map = board.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(s) = map.get_mut(&id) {
        f(s);
    }
}

/// A started worker: its stop switch and its task.
struct Running {
    id: usize,
    name: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Runs workers and stops them in order.
pub struct Workers {
    board: Board,
    running: Mutex<Vec<Running>>,
    next_id: Mutex<usize>,
}

impl Default for Workers {
    fn default() -> Self {
        Self::new()
    }
}

/// How long a stopping worker may take to finish its current unit before it is aborted.
pub const STOP_GRACE: Duration = Duration::from_secs(30);

impl Workers {
    /// An empty runner.
    pub fn new() -> Self {
        Self {
            board: Arc::default(),
            running: Mutex::default(),
            next_id: Mutex::new(0),
        }
    }

    /// Starts `worker` on the current tokio runtime.
    pub fn spawn(&self, mut worker: impl Worker) {
        let id = {
            let mut n = self.next_id.lock().unwrap_or_else(PoisonError::into_inner);
            *n += 1;
            *n
        };
        let name = worker.name().to_string();
        self.board
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                id,
                WorkerStatus {
                    name: name.clone(),
                    state: "idle",
                    runs: 0,
                    errors: 0,
                    last_error: None,
                    progress: None,
                    last_finished: None,
                },
            );
        let board = Arc::clone(&self.board);
        let (stop_tx, mut stop) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                if *stop.borrow() {
                    break;
                }
                with_status(&board, id, |s| s.state = "working");
                let result = worker.work(&mut stop).await;
                let progress = worker.progress();
                let next = match result {
                    Ok(next) => {
                        with_status(&board, id, |s| {
                            s.runs += 1;
                            s.last_error = None;
                            s.progress = progress;
                            s.last_finished = Some(crate::clock::now_rfc3339());
                        });
                        next
                    }
                    Err(e) => {
                        let text = Causes(e.as_ref()).to_string();
                        tracing::error!(worker = %worker.name(), error = %text, "background work failed");
                        with_status(&board, id, |s| {
                            s.runs += 1;
                            s.errors += 1;
                            s.last_error = Some(text);
                            s.progress = progress;
                            s.last_finished = Some(crate::clock::now_rfc3339());
                        });
                        WorkerState::Idle
                    }
                };
                match next {
                    WorkerState::Busy => continue,
                    WorkerState::Done => break,
                    WorkerState::Idle => {
                        with_status(&board, id, |s| s.state = "idle");
                        tokio::select! {
                            () = worker.wait_for_work() => {}
                            _ = stop.wait_for(|v| *v) => break,
                        }
                    }
                }
            }
            with_status(&board, id, |s| s.state = "done");
        });
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Running {
                id,
                name,
                stop: stop_tx,
                task,
            });
    }

    /// Every worker's state, in start order.
    pub fn status(&self) -> Vec<WorkerStatus> {
        self.board
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Stops the workers one at a time in reverse start order (a later worker may depend on
    /// an earlier one), each finishing its current unit; one still busy after [`STOP_GRACE`]
    /// is aborted.
    pub async fn stop(&self) {
        let running =
            std::mem::take(&mut *self.running.lock().unwrap_or_else(PoisonError::into_inner));
        for Running {
            id,
            name,
            stop,
            mut task,
        } in running.into_iter().rev()
        {
            let _ = stop.send(true);
            with_status(&self.board, id, |s| {
                if s.state != "done" {
                    s.state = "stopping";
                }
            });
            match tokio::time::timeout(STOP_GRACE, &mut task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(worker = %name, error = %e, "worker panicked");
                    with_status(&self.board, id, |s| s.state = "panicked");
                }
                Err(_) => {
                    tracing::warn!(worker = %name, "worker did not stop in time; aborted");
                    task.abort();
                    with_status(&self.board, id, |s| s.state = "done");
                }
            }
        }
    }
}

/// A worker that runs `pass` every `period`, the first time `first_after` after it starts.
pub struct Periodic<F> {
    name: &'static str,
    period: Duration,
    pass: F,
    /// The delay before the first pass, until it has been waited for.
    first_after: Option<Duration>,
    last: Option<String>,
}

impl<F, Fut> Periodic<F>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<String, WorkError>> + Send + 'static,
{
    /// A worker named `name` running `pass` (which answers a one-line summary) every `period`,
    /// the first time `first_after` after start.
    pub fn new(name: &'static str, period: Duration, first_after: Duration, pass: F) -> Self {
        Self {
            name,
            period,
            pass,
            first_after: Some(first_after).filter(|d| !d.is_zero()),
            last: None,
        }
    }
}

impl<F, Fut> Worker for Periodic<F>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<String, WorkError>> + Send + 'static,
{
    fn name(&self) -> &str {
        self.name
    }

    fn work<'a>(
        &'a mut self,
        _stop: &'a mut StopSignal,
    ) -> BoxFuture<'a, Result<WorkerState, WorkError>> {
        Box::pin(async move {
            if self.first_after.is_none() {
                self.last = Some((self.pass)().await?);
            }
            Ok(WorkerState::Idle)
        })
    }

    fn wait_for_work(&mut self) -> BoxFuture<'_, ()> {
        let delay = self.first_after.take().unwrap_or(self.period);
        Box::pin(tokio::time::sleep(delay))
    }

    fn progress(&self) -> Option<String> {
        self.last.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Counting {
        name: &'static str,
        runs: Arc<AtomicU64>,
        fail_every: u64,
        order: Arc<Mutex<Vec<&'static str>>>,
    }

    impl Worker for Counting {
        fn name(&self) -> &str {
            self.name
        }
        fn work<'a>(
            &'a mut self,
            _stop: &'a mut StopSignal,
        ) -> BoxFuture<'a, Result<WorkerState, WorkError>> {
            Box::pin(async move {
                let n = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
                if self.fail_every > 0 && n.is_multiple_of(self.fail_every) {
                    return Err(std::io::Error::other("disk on fire").into());
                }
                Ok(WorkerState::Idle)
            })
        }
        fn wait_for_work(&mut self) -> BoxFuture<'_, ()> {
            Box::pin(tokio::time::sleep(Duration::from_millis(5)))
        }
        fn progress(&self) -> Option<String> {
            Some(format!("{} runs", self.runs.load(Ordering::SeqCst)))
        }
    }

    impl Drop for Counting {
        fn drop(&mut self) {
            self.order
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(self.name);
        }
    }

    #[tokio::test]
    async fn workers_run_report_errors_and_stop_in_reverse_order() {
        let workers = Workers::new();
        let order = Arc::new(Mutex::new(Vec::new()));
        let (a, b) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        workers.spawn(Counting {
            name: "first",
            runs: a.clone(),
            fail_every: 0,
            order: order.clone(),
        });
        workers.spawn(Counting {
            name: "second",
            runs: b.clone(),
            fail_every: 2,
            order: order.clone(),
        });
        while b.load(Ordering::SeqCst) < 4 || a.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let status = workers.status();
        assert_eq!(status.len(), 2);
        assert_eq!(status[0].name, "first");
        assert_eq!(status[0].errors, 0);
        assert!(status[1].errors >= 1, "{status:?}");
        assert!(status[1].runs >= 3, "{status:?}");
        workers.stop().await;
        let status = workers.status();
        assert!(status.iter().all(|s| s.state == "done"), "{status:?}");
        // The second worker (started last) was stopped and dropped first.
        assert_eq!(*order.lock().unwrap(), vec!["second", "first"]);
        let runs = a.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(a.load(Ordering::SeqCst), runs, "a stopped worker ran again");
    }

    #[tokio::test]
    async fn a_failed_unit_shows_its_cause_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("scrub pass failed")]
        struct Outer(#[source] std::io::Error);
        let workers = Workers::new();
        let done = Arc::new(AtomicU64::new(0));
        let d = done.clone();
        workers.spawn(Periodic::new(
            "scrub",
            Duration::from_millis(1),
            Duration::ZERO,
            move || {
                let d = d.clone();
                async move {
                    d.fetch_add(1, Ordering::SeqCst);
                    Err::<String, WorkError>(Box::new(Outer(std::io::Error::other("EIO"))))
                }
            },
        ));
        while done.load(Ordering::SeqCst) < 1 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        let s = &workers.status()[0];
        let err = s.last_error.as_deref().unwrap_or_default();
        assert!(
            err.contains("scrub pass failed") && err.contains("EIO"),
            "{err}"
        );
        workers.stop().await;
    }
}
