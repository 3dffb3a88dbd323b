//! What the HTTP handlers share: the node, the metrics registry, the admin token, and the values
//! derived from the configuration once at start.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::{HeaderMap, header};

use super::metrics::Metrics;
use super::parse_pool::ParsePool;
use crate::assets::Assets;
use crate::catalog::{ReleaseStore, Version};
use crate::config::ConfigError;
use crate::netboot::{Machines, NetbootError};
use crate::node::Node;
use crate::store::SchematicStore;
use crate::trust::TrustError;

/// Shared state of the HTTP frontend (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

/// The offered-version rules of the catalog endpoints.
pub struct VersionRules {
    /// `build.minTalosVersion`.
    pub min_version: Version,
    /// `build.brokenTalosVersions`.
    pub broken: Vec<Version>,
}

struct Inner {
    node: Arc<Node>,
    metrics: Metrics,
    admin_token: String,
    /// One admin import at a time.
    import_lock: tokio::sync::Mutex<()>,
    listeners: BTreeMap<String, String>,
    public_listeners: BTreeMap<String, String>,
    rules: VersionRules,
    pxe_base_url: String,
    /// Whether `pxe_base_url` was configured (else both URLs are at their defaults).
    pxe_base_configured: bool,
    /// `https` when the HTTP listener serves TLS.
    scheme: &'static str,
    signing_key_pem: String,
    intake: Arc<tokio::sync::Semaphore>,
    parses: ParsePool,
    /// The registry's index of the imported source images.
    source_images: crate::frontend::registry::SourceCache,
    /// The ProxyDHCP responder, when it runs (set once at start).
    proxy_dhcp: std::sync::OnceLock<crate::frontend::dhcp::Status>,
    /// Machine assignments and boot records.
    machines: Arc<Machines>,
}

/// Schematic uploads read at once (each may hold `http.maxBodyBytes`).
const MAX_UPLOADS: usize = 64;

/// Why the HTTP state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A configuration value did not parse.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The public key could not be encoded.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// The schematic parser threads could not be started.
    #[error("starting the schematic parser threads failed")]
    Threads(#[source] std::io::Error),
    /// The machine assignments could not be loaded (a machines file that does not check).
    #[error("cannot load the machine assignments")]
    Netboot(#[source] NetbootError),
}

impl AppState {
    /// The state over `node`, with its metrics registry, admin token and bound listeners.
    pub fn new(
        node: Arc<Node>,
        metrics: Metrics,
        admin_token: String,
        listeners: BTreeMap<String, String>,
    ) -> Result<Self, StateError> {
        let config = node.config();
        let rules = VersionRules {
            min_version: config.min_talos_version()?,
            broken: config.broken_talos_versions()?,
        };
        let pxe_base_url = if config.http.external_pxe_url.is_empty() {
            config.http.external_url.clone()
        } else {
            config.http.external_pxe_url.clone()
        };
        let pxe_base_configured = !config.http.external_pxe_url.is_empty()
            || config.http.external_url != crate::config::HttpConfig::default().external_url;
        let scheme = if config.http.cert_file.is_empty() {
            "http"
        } else {
            "https"
        };
        let signing_key_pem = node.signing_key().public_key_pem()?;
        metrics
            .schematic_cache_size
            .set(node.schematics().count() as f64);
        let machines = Machines::open(
            Arc::clone(node.meta()),
            node.schematics().clone(),
            &config.netboot.machines_file,
        )
        .map_err(StateError::Netboot)?;
        Ok(Self {
            inner: Arc::new(Inner {
                node,
                metrics,
                admin_token,
                import_lock: tokio::sync::Mutex::new(()),
                public_listeners: listeners
                    .iter()
                    .map(|(name, addr)| {
                        let shown = if addr.starts_with("unix:") {
                            "unix"
                        } else {
                            addr
                        };
                        (name.clone(), shown.to_string())
                    })
                    .collect(),
                listeners,
                rules,
                pxe_base_url,
                pxe_base_configured,
                scheme,
                signing_key_pem,
                intake: Arc::new(tokio::sync::Semaphore::new(MAX_UPLOADS)),
                parses: ParsePool::new(
                    std::thread::available_parallelism().map_or(1, |n| n.get()),
                    MAX_UPLOADS,
                )
                .map_err(StateError::Threads)?,
                source_images: Default::default(),
                proxy_dhcp: std::sync::OnceLock::new(),
                machines: Arc::new(machines),
            }),
        })
    }

    /// The node.
    pub fn node(&self) -> &Arc<Node> {
        &self.inner.node
    }

    /// Stored schematics.
    pub fn schematics(&self) -> &SchematicStore {
        self.inner.node.schematics()
    }

    /// Imported releases.
    pub fn releases(&self) -> &ReleaseStore {
        self.inner.node.releases()
    }

    /// The asset pipeline.
    pub fn assets(&self) -> &Assets {
        self.inner.node.assets()
    }

    /// The offered-version rules.
    pub fn version_rules(&self) -> &VersionRules {
        &self.inner.rules
    }

    /// Base URL of iPXE script links (`http.externalPXEURL`, else `http.externalURL`).
    pub fn pxe_base_url(&self) -> &str {
        &self.inner.pxe_base_url
    }

    /// Base URL of the links in an iPXE script answered over HTTP: the configured one, or,
    /// while neither `http.externalPXEURL` nor `http.externalURL` is set, the host the client
    /// reached this appliance at (a zero-configuration appliance's default `localhost` would
    /// send every machine to itself).
    pub fn pxe_base_url_for(&self, headers: &HeaderMap) -> Cow<'_, str> {
        match request_host(headers) {
            Some(host) if !self.inner.pxe_base_configured => {
                Cow::Owned(format!("{}://{host}/", self.inner.scheme))
            }
            _ => Cow::Borrowed(&self.inner.pxe_base_url),
        }
    }

    /// The cluster public key, PKIX PEM.
    pub fn signing_key_pem(&self) -> &str {
        &self.inner.signing_key_pem
    }

    /// The admin bearer token.
    pub fn admin_token(&self) -> &str {
        &self.inner.admin_token
    }

    /// Held by the admin import running now.
    pub fn import_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.inner.import_lock
    }

    /// Bound address of every listener, by name (`unix:<path>` for a Unix socket).
    pub fn listeners(&self) -> &BTreeMap<String, String> {
        &self.inner.listeners
    }

    /// As [`Self::listeners`], with Unix socket paths withheld (shown as `unix`).
    pub fn public_listeners(&self) -> &BTreeMap<String, String> {
        &self.inner.public_listeners
    }

    /// `http.maxBodyBytes`.
    pub fn max_body_bytes(&self) -> u64 {
        self.inner.node.config().http.max_body_bytes
    }

    /// Permits for schematic uploads being read.
    pub fn intake(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.inner.intake
    }

    /// The threads that parse uploaded schematics (one per core, bounded queue).
    pub fn parses(&self) -> &ParsePool {
        &self.inner.parses
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Records that the ProxyDHCP responder runs (shown on `/status`); later calls are ignored.
    pub fn set_proxy_dhcp(&self, status: crate::frontend::dhcp::Status) {
        let _ = self.inner.proxy_dhcp.set(status);
    }

    /// The ProxyDHCP responder as `/status` shows it (`running: false` when off).
    pub fn proxy_dhcp(&self) -> crate::frontend::dhcp::Status {
        self.inner.proxy_dhcp.get().cloned().unwrap_or_default()
    }

    /// Machine assignments and boot records.
    pub fn machines(&self) -> &Arc<Machines> {
        &self.inner.machines
    }

    /// The registry's index of the imported source images (built on first use).
    pub fn source_images(&self) -> &crate::frontend::registry::SourceCache {
        &self.inner.source_images
    }
}

/// The `Host` header of a request when it is a plain `host[:port]` (letters, digits, `.-:[]`,
/// at most 255 bytes): safe to write into a URL or a script.
pub(crate) fn request_host(headers: &HeaderMap) -> Option<&str> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let plain = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    plain.then_some(host)
}
