//! Metrics of the asset layer: upstream names (api spec §9) plus queue depth, verification
//! failures, hit ratio and garbage collection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder, SharedString};

const META: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// Histogram buckets of the build and queue latencies (upstream: 1, 10, 60, 180, 600 s).
pub const LATENCY_BUCKETS: [f64; 5] = [1.0, 10.0, 60.0, 180.0, 600.0];

/// Names of the latency histograms (the exporter needs them to set buckets).
pub const HISTOGRAMS: [&str; 2] = [
    "image_factory_assets_concurrency_latency_seconds",
    "image_factory_assets_build_latency_seconds",
];

/// Handles to every asset metric; labelled counters are registered on first use.
#[derive(Clone)]
pub struct AssetMetrics {
    recorder: Arc<dyn Recorder + Send + Sync>,
    hits: Arc<AtomicU64>,
    misses: Arc<AtomicU64>,
    /// Builds waiting for a build slot.
    pub queue_depth: Gauge,
    /// Time spent waiting for a build slot.
    pub concurrency_latency: Histogram,
    /// Build duration.
    pub build_latency: Histogram,
    /// Requests that joined a build already running.
    pub waits: Counter,
    /// Models fetched from a cluster member instead of built.
    pub fetched: Counter,
    /// New builds refused because the build queue was full.
    pub refused: Counter,
    /// `hits / (hits + misses)` since start.
    pub hit_ratio: Gauge,
    /// Assets evicted by garbage collection.
    pub gc_evictions: Counter,
    /// Evicted assets this node held as one of the copies the cluster keeps.
    pub gc_designated_evictions: Counter,
    /// Bytes freed by garbage collection.
    pub gc_freed_bytes: Counter,
    /// Bytes held by cached assets after the last collection.
    pub cache_bytes: Gauge,
    /// Asset body bytes written with `sendfile(2)`.
    pub sent_zero_copy: Counter,
    /// Asset body bytes written as streamed chunks.
    pub sent_streamed: Counter,
}

/// A counter label set: Talos version, output kind, architecture.
pub struct AssetLabels<'a> {
    /// Version tag.
    pub version: &'a str,
    /// Output kind.
    pub kind: &'a str,
    /// Architecture.
    pub arch: &'a str,
}

impl AssetMetrics {
    /// Registers every metric with `recorder` (so all appear at zero).
    pub fn new(recorder: Arc<dyn Recorder + Send + Sync>) -> Self {
        let r = recorder.as_ref();
        let describe = |name: &'static str, help: &'static str| {
            r.describe_counter(name.into(), None, SharedString::const_str(help));
        };
        for (name, help) in [
            (
                "image_factory_assets_delivered_cached_total",
                "Assets served from the cache.",
            ),
            ("image_factory_assets_built_total", "Assets built."),
            (
                "image_factory_assets_cached_bytes_total",
                "Bytes of assets served from the cache.",
            ),
            (
                "image_factory_assets_built_bytes_total",
                "Bytes of assets built.",
            ),
            (
                "image_factory_assets_cached_errors_total",
                "Failed asset builds.",
            ),
            (
                "image_factory_profile_system_extension_hits_total",
                "System extensions requested in built profiles.",
            ),
            (
                "image_factory_assets_verification_failures_total",
                "Asset records or blobs that failed verification and were quarantined.",
            ),
        ] {
            describe(name, help);
        }
        let counter = |name: &'static str, help: &'static str| {
            describe(name, help);
            let c = r.register_counter(&Key::from_static_name(name), &META);
            c.absolute(0);
            c
        };
        let labelled_counter = |name: &'static str, help: &'static str, how: &'static str| {
            describe(name, help);
            let key = Key::from_parts(name, vec![Label::new("how", how)]);
            let c = r.register_counter(&key, &META);
            c.absolute(0);
            c
        };
        let gauge = |name: &'static str, help: &'static str| {
            r.describe_gauge(name.into(), None, SharedString::const_str(help));
            let g = r.register_gauge(&Key::from_static_name(name), &META);
            g.set(0.0);
            g
        };
        let histogram = |name: &'static str, help: &'static str| {
            r.describe_histogram(name.into(), None, SharedString::const_str(help));
            r.register_histogram(&Key::from_static_name(name), &META)
        };
        let m = Self {
            queue_depth: gauge(
                "image_factory_assets_build_queue_depth",
                "Builds waiting for a build slot.",
            ),
            concurrency_latency: histogram(
                HISTOGRAMS[0],
                "Seconds a build waited for a build slot.",
            ),
            build_latency: histogram(HISTOGRAMS[1], "Seconds an asset build took."),
            waits: counter(
                "image_factory_assets_build_waits_total",
                "Requests that waited for a build already running.",
            ),
            fetched: counter(
                "image_factory_assets_fetched_total",
                "Models fetched from a cluster member (record and bytes verified) instead of built.",
            ),
            refused: counter(
                "image_factory_assets_build_refused_total",
                "New builds refused because the build queue was full.",
            ),
            hit_ratio: gauge(
                "image_factory_assets_cache_hit_ratio",
                "Share of asset requests answered from the cache since start.",
            ),
            gc_evictions: counter(
                "image_factory_assets_gc_evictions_total",
                "Assets evicted by garbage collection.",
            ),
            gc_designated_evictions: counter(
                "image_factory_assets_gc_designated_evictions_total",
                "Assets evicted by garbage collection although this node held them as one of the copies the cluster keeps (replication.factor): the cache limits could not be met otherwise.",
            ),
            gc_freed_bytes: counter(
                "image_factory_assets_gc_freed_bytes_total",
                "Bytes freed by garbage collection.",
            ),
            cache_bytes: gauge(
                "image_factory_assets_cache_bytes",
                "Bytes held by cached assets (at the last collection).",
            ),
            sent_zero_copy: labelled_counter(
                "image_factory_assets_sent_bytes_total",
                "Asset body bytes sent, by method (sendfile: zero-copy; stream: chunks).",
                "sendfile",
            ),
            sent_streamed: labelled_counter(
                "image_factory_assets_sent_bytes_total",
                "Asset body bytes sent, by method (sendfile: zero-copy; stream: chunks).",
                "stream",
            ),
            hits: Arc::new(AtomicU64::new(0)),
            misses: Arc::new(AtomicU64::new(0)),
            recorder,
        };
        for what in ["record", "blob"] {
            m.counter(
                "image_factory_assets_verification_failures_total",
                vec![Label::new("what", what)],
            )
            .absolute(0);
        }
        m
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &META)
    }

    fn labelled(&self, name: &'static str, l: &AssetLabels<'_>) -> Counter {
        self.counter(
            name,
            vec![
                // Upstream's label carries the version without its `v` (`1.11.0`).
                Label::new(
                    "talos_version",
                    l.version.strip_prefix('v').unwrap_or(l.version).to_string(),
                ),
                Label::new("output_kind", l.kind.to_string()),
                Label::new("arch", l.arch.to_string()),
            ],
        )
    }

    /// Counts an asset served from the cache.
    pub fn delivered_cached(&self, l: &AssetLabels<'_>, bytes: u64) {
        self.labelled("image_factory_assets_delivered_cached_total", l)
            .increment(1);
        self.labelled("image_factory_assets_cached_bytes_total", l)
            .increment(bytes);
    }

    /// Counts a finished build.
    pub fn built(&self, l: &AssetLabels<'_>, bytes: u64) {
        self.labelled("image_factory_assets_built_total", l)
            .increment(1);
        self.labelled("image_factory_assets_built_bytes_total", l)
            .increment(bytes);
    }

    /// Counts a failed build.
    pub fn build_failed(&self, l: &AssetLabels<'_>) {
        self.labelled("image_factory_assets_cached_errors_total", l)
            .increment(1);
    }

    /// Counts a system extension in a built profile.
    pub fn extension_hit(&self, name: &str) {
        self.counter(
            "image_factory_profile_system_extension_hits_total",
            vec![Label::new("extension", name.to_string())],
        )
        .increment(1);
    }

    /// Counts a record or blob that failed verification (`what` = `record` or `blob`).
    pub fn verification_failure(&self, what: &'static str) {
        self.counter(
            "image_factory_assets_verification_failures_total",
            vec![Label::new("what", what)],
        )
        .increment(1);
    }

    /// Records a lookup outcome for the hit ratio.
    pub fn lookup(&self, hit: bool) {
        let (h, m) = if hit {
            (
                self.hits.fetch_add(1, Ordering::Relaxed) + 1,
                self.misses.load(Ordering::Relaxed),
            )
        } else {
            (
                self.hits.load(Ordering::Relaxed),
                self.misses.fetch_add(1, Ordering::Relaxed) + 1,
            )
        };
        self.hit_ratio.set(h as f64 / (h + m) as f64);
    }
}
