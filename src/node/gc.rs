//! The garbage-collection worker: a pass every `cache.gcIntervalSeconds` (the first at start,
//! so a quota lowered while stopped applies at once), and one as soon as a build or import
//! runs out of disk space ([`Assets::report_out_of_space`]), never inline on a request.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::import::ImportCount;
use super::worker::{StopSignal, WorkError, Worker, WorkerState};
use crate::assets::{Assets, GcPass};
use crate::store::BoxFuture;

/// Why a pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// The node started.
    Start,
    /// The period passed.
    Schedule,
    /// A build or import ran out of space.
    OutOfSpace,
}

impl Trigger {
    fn describe(self) -> &'static str {
        match self {
            Trigger::Start => "at start",
            Trigger::Schedule => "scheduled",
            Trigger::OutOfSpace => "after running out of space",
        }
    }
}

/// Runs garbage-collection passes; its progress (`/status`) is the last pass's summary.
pub(super) struct GcWorker {
    assets: Assets,
    imports: ImportCount,
    period: Duration,
    wake: Arc<Notify>,
    trigger: Trigger,
    last: Option<String>,
}

impl GcWorker {
    /// A worker collecting in `assets` every `period` and when woken by running out of space.
    pub(super) fn new(assets: Assets, imports: ImportCount, period: Duration) -> Self {
        let wake = assets.out_of_space_signal();
        Self {
            assets,
            imports,
            period,
            wake,
            trigger: Trigger::Start,
            last: None,
        }
    }
}

impl Worker for GcWorker {
    fn name(&self) -> &str {
        "gc"
    }

    fn work<'a>(
        &'a mut self,
        _stop: &'a mut StopSignal,
    ) -> BoxFuture<'a, Result<WorkerState, WorkError>> {
        Box::pin(async move {
            let pass = GcPass {
                importing: self.imports.running(),
                ..GcPass::default()
            };
            let r = self.assets.gc(pass).await?;
            let summary = r.summary();
            let trigger = self.trigger.describe();
            if r.short_bytes > 0 {
                tracing::warn!(
                    trigger,
                    short_bytes = r.short_bytes,
                    min_free_bytes = r.min_free_bytes,
                    "garbage collection could not bring free space up to the watermark: {summary}"
                );
            } else if !r.evicted.is_empty() || !r.orphans.is_empty() {
                tracing::info!(
                    trigger,
                    evicted = r.evicted.len(),
                    orphans = r.orphans.len(),
                    freed_bytes = r.freed_bytes + r.orphan_bytes,
                    bytes = r.bytes_after,
                    "garbage collection: {summary}"
                );
            }
            self.last = Some(format!("{trigger}: {summary}"));
            Ok(WorkerState::Idle)
        })
    }

    fn wait_for_work(&mut self) -> BoxFuture<'_, ()> {
        let wake = Arc::clone(&self.wake);
        Box::pin(async move {
            self.trigger = tokio::select! {
                () = tokio::time::sleep(self.period) => Trigger::Schedule,
                () = wake.notified() => Trigger::OutOfSpace,
            };
        })
    }

    fn progress(&self) -> Option<String> {
        self.last.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use crate::config::Config;
    use crate::node::{Node, NodeOptions, WorkerStatus};

    /// The `gc` worker's state once `done` holds for it (panics after 10 s).
    async fn wait_for(node: &Node, done: impl Fn(&WorkerStatus) -> bool) -> WorkerStatus {
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let status = node.workers().status();
            if let Some(gc) = status.into_iter().find(|w| w.name == "gc" && done(w)) {
                return gc;
            }
            assert!(Instant::now() < deadline, "{:?}", node.workers().status());
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn running_out_of_space_wakes_the_collector_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.storage.data_dir = dir.path().display().to_string();
        config.cache.gc_interval_seconds = 3600;
        config.cache.scrub_interval_seconds = 0;
        let node = Node::open(config, NodeOptions::default()).unwrap();
        node.start_maintenance();
        let first = wait_for(&node, |w| w.runs == 1).await;
        assert!(first.progress.unwrap_or_default().starts_with("at start: "));
        // Hours before the next scheduled pass, a build reports a full disk.
        node.assets().report_out_of_space();
        let woken = wait_for(&node, |w| w.runs == 2).await;
        let progress = woken.progress.unwrap_or_default();
        assert!(
            progress.starts_with("after running out of space: removed 0 orphan blob(s)"),
            "{progress}"
        );
        node.close().await.unwrap();
    }
}
