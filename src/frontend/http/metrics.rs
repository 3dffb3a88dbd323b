//! Prometheus metrics with a per-server recorder (no global state, so several servers can
//! run in one process, e.g. in tests).

use std::sync::Arc;

use metrics::{Counter, Gauge, Key, Level, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::assets::{AssetMetrics, HISTOGRAMS, LATENCY_BUCKETS};

/// The factory's metrics (upstream names, spec §9).
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
    _recorder: Arc<PrometheusRecorder>,
    /// `image_factory_schematic_get_total`.
    pub schematic_get: Counter,
    /// `image_factory_schematic_create_total`.
    pub schematic_create: Counter,
    /// `image_factory_schematic_duplicate_create_total`.
    pub schematic_duplicate_create: Counter,
    /// `image_factory_schematic_cache_size`.
    pub schematic_cache_size: Gauge,
    /// The asset pipeline's metrics (same registry).
    pub assets: AssetMetrics,
}

const META: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

impl Metrics {
    /// Creates a fresh registry with every metric registered (so all appear at zero).
    pub fn new() -> Self {
        let mut builder = PrometheusBuilder::new();
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
        schematic_get.absolute(0);
        schematic_create.absolute(0);
        schematic_duplicate_create.absolute(0);
        let assets = AssetMetrics::new(recorder.clone());
        Self {
            handle,
            _recorder: recorder,
            assets,
            schematic_get,
            schematic_create,
            schematic_duplicate_create,
            schematic_cache_size,
        }
    }

    /// Renders the Prometheus text exposition.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
