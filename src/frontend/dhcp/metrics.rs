//! ProxyDHCP metrics: answers by client kind, requests ignored and datagrams dropped as
//! malformed, by reason (every series registered at zero).

use std::sync::Arc;

use metrics::Recorder;

use super::decide::ClientKind;
use super::packet::Malformed;
use crate::frontend::Counters;

/// `image_factory_dhcp_offers_total{client, reply}`.
const OFFERS: &str = "image_factory_dhcp_offers_total";
/// `image_factory_dhcp_ignored_total{reason}`.
const IGNORED: &str = "image_factory_dhcp_ignored_total";
/// `image_factory_dhcp_malformed_total{reason}`.
const MALFORMED: &str = "image_factory_dhcp_malformed_total";

/// Reasons a well-formed request gets no answer.
pub const IGNORE_REASONS: [&str; 5] = [
    "not-pxe",
    "message-type",
    "unsupported-arch",
    "missing-file",
    "rate-limited",
];

/// Answer kinds: OFFER on the DHCP port, ACK on the PXE port.
pub const REPLIES: [&str; 2] = ["offer", "ack"];

/// Handles to the ProxyDHCP metrics.
#[derive(Clone)]
pub struct DhcpMetrics {
    counters: Counters,
}

impl DhcpMetrics {
    /// Registers every series with `recorder` at zero.
    pub fn new(recorder: Arc<dyn Recorder + Send + Sync>) -> Self {
        let counters = Counters::new(recorder);
        counters.describe(
            OFFERS,
            "ProxyDHCP answers sent, by client kind and reply (offer on the DHCP port, ack on \
             the PXE port).",
        );
        counters.describe(
            IGNORED,
            "Well-formed DHCP requests the ProxyDHCP responder did not answer, by reason.",
        );
        counters.describe(
            MALFORMED,
            "Datagrams the ProxyDHCP responder dropped as malformed, by reason.",
        );
        for kind in ClientKind::ALL {
            for reply in REPLIES {
                counters.add(OFFERS, &[("client", kind.label()), ("reply", reply)], 0);
            }
        }
        for reason in IGNORE_REASONS {
            counters.add(IGNORED, &[("reason", reason)], 0);
        }
        for reason in Malformed::ALL {
            counters.add(MALFORMED, &[("reason", reason.label())], 0);
        }
        Self { counters }
    }

    /// Counts an answer sent (`reply`: one of [`REPLIES`]).
    pub fn answered(&self, kind: ClientKind, reply: &'static str) {
        self.counters
            .add(OFFERS, &[("client", kind.label()), ("reply", reply)], 1);
    }

    /// Counts a request not answered (`reason`: one of [`IGNORE_REASONS`]).
    pub fn ignored(&self, reason: &'static str) {
        self.counters.add(IGNORED, &[("reason", reason)], 1);
    }

    /// Counts a dropped datagram.
    pub fn malformed(&self, reason: Malformed) {
        self.counters
            .add(MALFORMED, &[("reason", reason.label())], 1);
    }
}
