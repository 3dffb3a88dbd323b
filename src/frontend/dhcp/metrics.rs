//! ProxyDHCP metrics: answers by client kind, requests ignored and datagrams dropped as
//! malformed, by reason (every series registered at zero).

use std::sync::Arc;

use metrics::{Key, Label, Level, Metadata, Recorder, SharedString};

use super::decide::ClientKind;
use super::packet::Malformed;

const META: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

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
    recorder: Arc<dyn Recorder + Send + Sync>,
}

impl DhcpMetrics {
    /// Registers every series with `recorder` at zero.
    pub fn new(recorder: Arc<dyn Recorder + Send + Sync>) -> Self {
        for (name, help) in [
            (
                OFFERS,
                "ProxyDHCP answers sent, by client kind and reply (offer on the DHCP port, ack \
                 on the PXE port).",
            ),
            (
                IGNORED,
                "Well-formed DHCP requests the ProxyDHCP responder did not answer, by reason.",
            ),
            (
                MALFORMED,
                "Datagrams the ProxyDHCP responder dropped as malformed, by reason.",
            ),
        ] {
            recorder.describe_counter(name.into(), None, SharedString::const_str(help));
        }
        let m = Self { recorder };
        for kind in ClientKind::ALL {
            for reply in REPLIES {
                m.count(OFFERS, offer_labels(kind, reply), 0);
            }
        }
        for reason in IGNORE_REASONS {
            m.count(IGNORED, reason_label(reason), 0);
        }
        for reason in Malformed::ALL {
            m.count(MALFORMED, reason_label(reason.label()), 0);
        }
        m
    }

    fn count(&self, name: &'static str, labels: Vec<Label>, by: u64) {
        let c = self
            .recorder
            .register_counter(&Key::from_parts(name, labels), &META);
        if by == 0 {
            c.absolute(0);
        } else {
            c.increment(by);
        }
    }

    /// Counts an answer sent (`reply`: one of [`REPLIES`]).
    pub fn answered(&self, kind: ClientKind, reply: &'static str) {
        self.count(OFFERS, offer_labels(kind, reply), 1);
    }

    /// Counts a request not answered (`reason`: one of [`IGNORE_REASONS`]).
    pub fn ignored(&self, reason: &'static str) {
        self.count(IGNORED, reason_label(reason), 1);
    }

    /// Counts a dropped datagram.
    pub fn malformed(&self, reason: Malformed) {
        self.count(MALFORMED, reason_label(reason.label()), 1);
    }
}

fn offer_labels(kind: ClientKind, reply: &'static str) -> Vec<Label> {
    vec![
        Label::new("client", kind.label()),
        Label::new("reply", reply),
    ]
}

fn reason_label(reason: &'static str) -> Vec<Label> {
    vec![Label::new("reason", reason)]
}
