//! Prometheus metrics with a per-server recorder (no global state, so several servers can
//! run in one process, e.g. in tests).

use std::sync::Arc;

use metrics::{Counter, Gauge, Key, Label, Level, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::assets::{HISTOGRAMS, LATENCY_BUCKETS};

/// The factory's metrics (upstream names, spec §9).
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
    recorder: Arc<PrometheusRecorder>,
    /// The standard `process_*` metrics (CPU, memory, file descriptors, threads, start time).
    process: metrics_process::Collector,
    /// `image_factory_schematic_get_total`.
    pub schematic_get: Counter,
    /// `image_factory_schematic_create_total`.
    pub schematic_create: Counter,
    /// `image_factory_schematic_duplicate_create_total`.
    pub schematic_duplicate_create: Counter,
    /// `image_factory_schematic_cache_size`.
    pub schematic_cache_size: Gauge,
}

/// `http_request_duration_seconds` (slok/go-http-metrics names, label `handler` = route).
const HTTP_DURATION: &str = "http_request_duration_seconds";
/// `http_response_size_bytes`.
const HTTP_SIZE: &str = "http_response_size_bytes";
/// `http_requests_inflight`.
const HTTP_INFLIGHT: &str = "http_requests_inflight";
/// `image_factory_registry_pulls_total`.
const REGISTRY_PULLS: &str = "image_factory_registry_pulls_total";
/// `image_factory_netboot_boots_total`.
const NETBOOT_BOOTS: &str = "image_factory_netboot_boots_total";
/// `image_factory_netboot_retries_total`.
const NETBOOT_RETRIES: &str = "image_factory_netboot_retries_total";
/// Prometheus' default buckets, as go-http-metrics uses.
const HTTP_DURATION_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// go-http-metrics' size buckets (100 B × 10ⁿ).
const HTTP_SIZE_BUCKETS: [f64; 8] = [100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

const META: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

impl Metrics {
    /// The registry, for other layers to register their metrics in (the asset pipeline's).
    pub fn recorder(&self) -> Arc<dyn Recorder + Send + Sync> {
        self.recorder.clone()
    }

    /// Creates a fresh registry with every metric registered (so all appear at zero).
    pub fn new() -> Self {
        let mut builder = PrometheusBuilder::new();
        builder = match builder.set_buckets_for_metric(
            Matcher::Full(HTTP_DURATION.to_string()),
            &HTTP_DURATION_BUCKETS,
        ) {
            Ok(b) => b,
            Err(_) => PrometheusBuilder::new(),
        };
        builder = match builder
            .set_buckets_for_metric(Matcher::Full(HTTP_SIZE.to_string()), &HTTP_SIZE_BUCKETS)
        {
            Ok(b) => b,
            Err(_) => PrometheusBuilder::new(),
        };
        for name in HISTOGRAMS {
            // Only fails for an empty bucket list, which LATENCY_BUCKETS is not.
            builder = match builder
                .set_buckets_for_metric(Matcher::Full(name.to_string()), &LATENCY_BUCKETS)
            {
                Ok(b) => b,
                Err(_) => PrometheusBuilder::new(),
            };
        }
        let recorder = Arc::new(builder.build_recorder());
        let handle = recorder.handle();
        let counter = |name: &'static str, help: &'static str| {
            recorder.describe_counter(name.into(), None, SharedString::const_str(help));
            recorder.register_counter(&Key::from_static_name(name), &META)
        };
        let schematic_get = counter(
            "image_factory_schematic_get_total",
            "Number of times schematics were retrieved.",
        );
        let schematic_create = counter(
            "image_factory_schematic_create_total",
            "Number of times schematics were created.",
        );
        let schematic_duplicate_create = counter(
            "image_factory_schematic_duplicate_create_total",
            "Number of times schematics were created as duplicates.",
        );
        recorder.describe_gauge(
            "image_factory_schematic_cache_size".into(),
            None,
            SharedString::const_str("Number of schematics stored."),
        );
        let schematic_cache_size = recorder.register_gauge(
            &Key::from_static_name("image_factory_schematic_cache_size"),
            &META,
        );
        recorder.describe_counter(
            NETBOOT_BOOTS.into(),
            None,
            SharedString::const_str(
                "Boot scripts served by /pxe/boot.ipxe, by machine assignment name.",
            ),
        );
        recorder.describe_counter(
            NETBOOT_RETRIES.into(),
            None,
            SharedString::const_str(
                "Retry scripts served by /pxe/boot.ipxe, by reason (unassigned, unavailable, invalid).",
            ),
        );
        for reason in ["unassigned", "unavailable", "invalid"] {
            recorder
                .register_counter(
                    &Key::from_parts(NETBOOT_RETRIES, vec![Label::new("reason", reason)]),
                    &META,
                )
                .absolute(0);
        }
        schematic_get.absolute(0);
        schematic_create.absolute(0);
        schematic_duplicate_create.absolute(0);
        let process = metrics_process::Collector::default();
        metrics::with_local_recorder(recorder.as_ref(), || process.describe());
        Self {
            handle,
            recorder,
            process,
            schematic_get,
            schematic_create,
            schematic_duplicate_create,
            schematic_cache_size,
        }
    }

    /// Records one finished request.
    pub fn http_observe(&self, handler: &str, method: &str, code: u16, secs: f64, bytes: u64) {
        let labels = vec![
            Label::new("handler", handler.to_string()),
            Label::new("method", method.to_string()),
            Label::new("code", code.to_string()),
        ];
        self.recorder
            .register_histogram(&Key::from_parts(HTTP_DURATION, labels.clone()), &META)
            .record(secs);
        self.recorder
            .register_histogram(&Key::from_parts(HTTP_SIZE, labels), &META)
            .record(bytes as f64);
    }

    /// Counts one manifest pull of an installer image (`image_factory_registry_pulls_total`,
    /// label `image`: the image name, e.g. `metal-installer`).
    pub fn registry_pull(&self, image: &str) {
        self.recorder
            .register_counter(
                &Key::from_parts(REGISTRY_PULLS, vec![Label::new("image", image.to_string())]),
                &META,
            )
            .increment(1);
    }

    /// Counts one boot script served for assignment `name`
    /// (`image_factory_netboot_boots_total{assignment}`; names are bounded by the assignment
    /// budget, never a machine's identifiers).
    pub fn netboot_boot(&self, name: &str) {
        self.recorder
            .register_counter(
                &Key::from_parts(
                    NETBOOT_BOOTS,
                    vec![Label::new("assignment", name.to_string())],
                ),
                &META,
            )
            .increment(1);
    }

    /// Counts one retry script (`image_factory_netboot_retries_total{reason}`).
    pub fn netboot_retry(&self, reason: &'static str) {
        self.recorder
            .register_counter(
                &Key::from_parts(NETBOOT_RETRIES, vec![Label::new("reason", reason)]),
                &META,
            )
            .increment(1);
    }

    /// The in-flight gauge of a route.
    pub fn http_inflight(&self, handler: &str) -> Gauge {
        self.recorder.register_gauge(
            &Key::from_parts(
                HTTP_INFLIGHT,
                vec![Label::new("handler", handler.to_string())],
            ),
            &META,
        )
    }

    /// Renders the Prometheus text exposition (the process metrics read at this moment).
    pub fn render(&self) -> String {
        metrics::with_local_recorder(self.recorder.as_ref(), || self.process.collect());
        self.handle.render()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
