//! TFTP metrics: requests by outcome, transfers finished or failed, bytes and retransmissions
//! of finished transfers, and the transfers running now.

use std::sync::Arc;

use metrics::{Gauge, Recorder};

use crate::frontend::Counters;

/// `image_factory_tftp_requests_total{result}`.
const REQUESTS: &str = "image_factory_tftp_requests_total";
/// `image_factory_tftp_transfers_total{result}`.
const TRANSFERS: &str = "image_factory_tftp_transfers_total";
/// `image_factory_tftp_sent_bytes_total`.
const SENT: &str = "image_factory_tftp_sent_bytes_total";
/// `image_factory_tftp_retransmits_total`.
const RETRANSMITS: &str = "image_factory_tftp_retransmits_total";
/// `image_factory_tftp_active_transfers`.
const ACTIVE: &str = "image_factory_tftp_active_transfers";

/// What became of a datagram on the listen socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestResult {
    /// A read request that started a transfer.
    Started,
    /// A write request (refused: read-only server).
    Write,
    /// Not a well-formed request.
    Malformed,
    /// Every transfer slot was taken.
    Busy,
    /// No such file, a path outside the root, or options that cannot be granted.
    Refused,
}

impl RequestResult {
    const ALL: [RequestResult; 5] = [
        RequestResult::Started,
        RequestResult::Write,
        RequestResult::Malformed,
        RequestResult::Busy,
        RequestResult::Refused,
    ];

    fn label(self) -> &'static str {
        match self {
            RequestResult::Started => "started",
            RequestResult::Write => "write-refused",
            RequestResult::Malformed => "malformed",
            RequestResult::Busy => "busy",
            RequestResult::Refused => "refused",
        }
    }
}

/// Handles to the TFTP metrics.
#[derive(Clone)]
pub struct TftpMetrics {
    counters: Counters,
    active: Gauge,
}

impl TftpMetrics {
    /// Registers every series with `recorder` at zero.
    pub fn new(recorder: Arc<dyn Recorder + Send + Sync>) -> Self {
        let counters = Counters::new(recorder);
        counters.describe(
            REQUESTS,
            "TFTP requests on the listen socket, by result (started, write-refused, malformed, \
             busy, refused).",
        );
        counters.describe(TRANSFERS, "TFTP transfers ended, by result (done, failed).");
        counters.describe(SENT, "File bytes delivered by finished TFTP transfers.");
        counters.describe(
            RETRANSMITS,
            "DATA packets finished TFTP transfers sent again (timeouts, window restarts).",
        );
        counters.describe_gauge(ACTIVE, "TFTP transfers running now.");
        for r in RequestResult::ALL {
            counters.add(REQUESTS, &[("result", r.label())], 0);
        }
        for r in ["done", "failed"] {
            counters.add(TRANSFERS, &[("result", r)], 0);
        }
        counters.add(SENT, &[], 0);
        counters.add(RETRANSMITS, &[], 0);
        let active = counters.gauge(ACTIVE);
        active.set(0.0);
        Self { counters, active }
    }

    /// Counts a datagram on the listen socket.
    pub fn request(&self, result: RequestResult) {
        self.counters
            .add(REQUESTS, &[("result", result.label())], 1);
    }

    /// A transfer starts running; the returned guard ends it.
    pub fn running(&self) -> Running {
        self.active.increment(1.0);
        Running(self.active.clone())
    }

    /// Counts a finished transfer.
    pub fn done(&self, bytes: u64, retransmits: u64) {
        self.counters.add(TRANSFERS, &[("result", "done")], 1);
        if bytes > 0 {
            self.counters.add(SENT, &[], bytes);
        }
        if retransmits > 0 {
            self.counters.add(RETRANSMITS, &[], retransmits);
        }
    }

    /// Counts a transfer that failed after it started sending.
    pub fn failed(&self) {
        self.counters.add(TRANSFERS, &[("result", "failed")], 1);
    }
}

/// A running transfer (the gauge goes down when it is dropped).
pub struct Running(Gauge);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
