//! Configuration: one `Config` struct loaded from defaults, an optional YAML file,
//! `IF_*` environment variables and command-line flags (later sources win), then validated.

mod listen;
mod load;
mod netboot;
mod upstream;
mod validate;

pub use listen::ListenAddr;
pub use load::{FlagOverrides, NOT_CONFIG_ENV, REGISTRY_PASSWORD_ENV, load};
pub use netboot::{NetbootConfig, ProxyDhcpConfig};

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Error raised while loading or validating the configuration; the text names the key and value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("invalid config: reading {path}: {source}")]
    Read {
        /// Path of the file.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The configuration file is not valid YAML or has the wrong shape.
    #[error("invalid config: {path}: {source}")]
    Parse {
        /// Path of the file.
        path: PathBuf,
        /// The YAML error.
        #[source]
        source: serde_yaml::Error,
    },
    /// A key (from the file or the environment) does not exist.
    #[error("invalid config: unknown key {key} (from {source_name})")]
    UnknownKey {
        /// Dotted key path.
        key: String,
        /// Where the key came from (file name or environment variable).
        source_name: String,
    },
    /// A key has a value that is not acceptable.
    #[error("invalid config: {key}: {message}")]
    Invalid {
        /// Dotted key path.
        key: String,
        /// What is wrong with the value (quotes the value).
        message: String,
    },
    /// A key's value does not parse.
    #[error("invalid config: {key}: {message}: {source}")]
    Unparsable {
        /// Dotted key path.
        key: String,
        /// What does not parse (quotes the value).
        message: String,
        /// The parser's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The merged configuration does not decode into its shape.
    #[error("invalid config: {key}: {source}")]
    Decode {
        /// `<defaults>` or `<config>`.
        key: &'static str,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
}

fn parse_version(key: &str, v: &str) -> Result<crate::catalog::Version, ConfigError> {
    crate::catalog::Version::parse_strict(v).ok_or_else(|| ConfigError::Invalid {
        key: key.into(),
        message: format!("{v:?} is not a semantic version like 1.2.0"),
    })
}

/// The whole appliance configuration (keys are camelCase as upstream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// HTTP frontend (API, downloads, UI).
    pub http: HttpConfig,
    /// Asset build settings.
    pub build: BuildConfig,
    /// Signed cache settings.
    pub cache: CacheConfig,
    /// Prometheus metrics listener.
    pub metrics: MetricsConfig,
    /// Local storage (metadata and blobs).
    pub storage: StorageConfig,
    /// TFTP netboot frontend (iPXE binaries and chain scripts).
    pub tftp: TftpConfig,
    /// Netboot: machine assignments and ProxyDHCP.
    pub netboot: NetbootConfig,
    /// Signature verification of imported releases.
    pub trust: TrustConfig,
    /// Administrative API (release import into a running appliance).
    pub admin: AdminConfig,
    /// Peer replication (libp2p swarm and cluster membership).
    pub replication: ReplicationConfig,
    /// Releases imported on demand from a registry (connected sites).
    pub artifacts: ArtifactsConfig,
    /// Secure Boot signing (UKI Authenticode and PCR policy keys), as upstream's `secureBoot`.
    pub secure_boot: SecureBootConfig,
}

/// `artifacts.*` keys (upstream's names): where Talos releases come from on demand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ArtifactsConfig {
    /// The registry holding upstream's images.
    pub core: CoreArtifactsConfig,
}

/// `artifacts.core.*` keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct CoreArtifactsConfig {
    /// Registry host (`ghcr.io`, `mirror.site:5000`); empty = no releases on demand.
    pub registry: String,
    /// Path prefix of every image in it (a mirror's project), e.g. `proxy`.
    pub namespace: String,
    /// Plain HTTP or unverified TLS to the registry.
    pub insecure: bool,
}

impl CoreArtifactsConfig {
    /// `registry[/namespace]`, as imports take a registry; `None` when no registry is set.
    pub fn host_ns(&self) -> Option<String> {
        let registry = self.registry.trim().trim_end_matches('/');
        if registry.is_empty() {
            return None;
        }
        let ns = self.namespace.trim().trim_matches('/');
        Some(if ns.is_empty() {
            registry.to_string()
        } else {
            format!("{registry}/{ns}")
        })
    }
}

/// `http.*` keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address of the HTTP frontend (`:PORT`, `HOST:PORT`, `[::1]:PORT`).
    #[serde(rename = "httpListenAddr")]
    pub http_listen_addr: String,
    /// Public base URL of this factory.
    #[serde(rename = "externalURL")]
    pub external_url: String,
    /// Public base URL used inside iPXE scripts (empty = `externalURL`).
    #[serde(rename = "externalPXEURL")]
    pub external_pxe_url: String,
    /// CORS allowed origins (`*` = any).
    #[serde(rename = "allowedOrigins")]
    pub allowed_origins: Vec<String>,
    /// Maximum accepted request body in bytes (larger bodies get 413).
    #[serde(rename = "maxBodyBytes")]
    pub max_body_bytes: u64,
    /// Seconds a client may take to send a whole request head.
    #[serde(rename = "readHeaderTimeoutSeconds")]
    pub read_header_timeout_seconds: u64,
    /// Seconds a kept-alive connection may wait for its next request.
    #[serde(rename = "idleTimeoutSeconds")]
    pub idle_timeout_seconds: u64,
    /// Seconds a response may wait for the client to take any bytes.
    #[serde(rename = "writeTimeoutSeconds")]
    pub write_timeout_seconds: u64,
    /// Connections open at once (0 = from the open-file limit).
    #[serde(rename = "maxConnections")]
    pub max_connections: u64,
    /// PEM certificate chain for TLS on the HTTP listener (empty = plain HTTP).
    #[serde(rename = "certFile")]
    pub cert_file: String,
    /// PEM private key of `certFile`.
    #[serde(rename = "keyFile")]
    pub key_file: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            http_listen_addr: ":8080".into(),
            external_url: "http://localhost:8080/".into(),
            external_pxe_url: String::new(),
            allowed_origins: vec!["*".into()],
            max_body_bytes: 1024 * 1024,
            read_header_timeout_seconds: 10,
            idle_timeout_seconds: 60,
            write_timeout_seconds: 60,
            max_connections: 0,
            cert_file: String::new(),
            key_file: String::new(),
        }
    }
}

/// `build.*` keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct BuildConfig {
    /// Maximum simultaneous image builds (0 = number of CPU cores).
    pub max_concurrency: u64,
    /// Builds that may wait for a slot (0 = four times the concurrency); more are refused.
    pub max_queue: u64,
    /// Directories searched for external tools before `PATH`.
    pub tool_dirs: Vec<String>,
    /// Longest run of one external tool, in seconds; it is killed beyond.
    pub tool_timeout_seconds: u64,
    /// Oldest Talos version offered.
    pub min_talos_version: String,
    /// Talos versions withheld from the version list.
    pub broken_talos_versions: Vec<String>,
    /// Compression of disk-image outputs (`.xz`, `.gz`, `.zst`, OVA grains).
    pub compression: crate::imager::formats::CompressionLevels,
}

impl Default for BuildConfig {
    fn default() -> Self {
        Self {
            max_concurrency: 0,
            max_queue: 0,
            tool_dirs: Vec::new(),
            tool_timeout_seconds: 600,
            min_talos_version: "1.2.0".into(),
            broken_talos_versions: Vec::new(),
            compression: crate::imager::formats::CompressionLevels::default(),
        }
    }
}

impl BuildConfig {
    /// The effective build concurrency (resolves 0 to the number of CPU cores).
    pub fn effective_concurrency(&self) -> usize {
        if self.max_concurrency == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            usize::try_from(self.max_concurrency).unwrap_or(usize::MAX)
        }
    }

    /// The effective queue length (resolves 0 to four times the concurrency).
    pub fn effective_queue(&self) -> usize {
        if self.max_queue == 0 {
            self.effective_concurrency().saturating_mul(4)
        } else {
            usize::try_from(self.max_queue).unwrap_or(usize::MAX)
        }
    }
}

/// `cache.*` keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct CacheConfig {
    /// PEM file of the cluster signing key (empty = `<dataDir>/keys/signing-key.pem`, generated).
    pub signing_key_path: String,
    /// Quota for built assets in bytes; least recently served go first (0 = `maxPercent`).
    pub max_bytes: u64,
    /// Quota as a percentage of the size of the filesystem holding the data directory, used
    /// when `maxBytes` is 0 (both 0 = no quota).
    pub max_percent: u64,
    /// Free space garbage collection keeps on the data directory's filesystem, in bytes, by
    /// evicting least recently served assets (0 = `minFreePercent`).
    pub min_free_bytes: u64,
    /// The free-space watermark as a percentage of the filesystem's size, used when
    /// `minFreeBytes` is 0 (both 0 = no watermark).
    pub min_free_percent: u64,
    /// Seconds a blob nothing references must have been left unwritten before garbage
    /// collection deletes it.
    pub orphan_grace_seconds: u64,
    /// Seconds between background garbage-collection passes (0 = never).
    pub gc_interval_seconds: u64,
    /// Seconds between background scrubs that re-hash every cached asset (0 = never).
    pub scrub_interval_seconds: u64,
    /// Seconds a successful BLAKE3 pass over a blob also covers downloads that start after it
    /// (0 = every download is covered by a pass made while it is sent).
    pub verify_window_seconds: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            signing_key_path: String::new(),
            max_bytes: 0,
            max_percent: 50,
            min_free_bytes: 0,
            min_free_percent: 5,
            orphan_grace_seconds: 3600,
            gc_interval_seconds: 600,
            scrub_interval_seconds: 86_400,
            verify_window_seconds: 0,
        }
    }
}

/// Shortest `cache.orphanGraceSeconds`: the build timeout, so that a build that wrote a blob
/// has finished — recorded it or failed — before the blob can be taken for an orphan.
pub const MIN_ORPHAN_GRACE_SECONDS: u64 = 20 * 60;

/// `metrics.*` keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricsConfig {
    /// Listen address of the metrics endpoint (empty disables it).
    pub addr: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            addr: ":2122".into(),
        }
    }
}

/// `storage.*` keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct StorageConfig {
    /// Data directory (sled metadata under `meta/`, blobs under `blobs/`, keys under `keys/`).
    pub data_dir: String,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: "./data".into(),
        }
    }
}

/// `trust.*` keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct TrustConfig {
    /// PEM files with cosign public keys (PKIX `PUBLIC KEY`) trusted for imported images.
    pub public_keys: Vec<String>,
    /// A Sigstore `trusted_root.json` (Fulcio CAs, Rekor keys): keyless signatures verify
    /// against it offline; empty = keyless verification off.
    pub sigstore_trusted_root: String,
    /// Whose keyless signatures are accepted (any one entry).
    pub identities: Vec<IdentityConfig>,
}

/// Upstream's Fulcio OIDC issuer of Sidero's release signatures.
pub const SIDERO_ISSUER: &str = "https://accounts.google.com";
/// Upstream's subject pattern of Sidero's release signatures.
pub const SIDERO_SUBJECT_REGEXP: &str =
    r"(@siderolabs\.com$|^releasemgr-svc@talos-production\.iam\.gserviceaccount\.com$)";

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            public_keys: Vec::new(),
            sigstore_trusted_root: String::new(),
            identities: vec![IdentityConfig {
                issuer: SIDERO_ISSUER.into(),
                issuer_reg_exp: String::new(),
                subject_reg_exp: SIDERO_SUBJECT_REGEXP.into(),
            }],
        }
    }
}

/// One `trust.identities` entry: a keyless signer (certificate identity and OIDC issuer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct IdentityConfig {
    /// The OIDC issuer, exactly (the certificate's Fulcio issuer extension).
    pub issuer: String,
    /// Or a pattern the issuer must match (Go RE2 syntax, unanchored like upstream's).
    pub issuer_reg_exp: String,
    /// A pattern the certificate's subject (SAN email or URI) must match.
    pub subject_reg_exp: String,
}

/// `secureBoot.*` keys (upstream's names; only the file provider exists here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct SecureBootConfig {
    /// Serve `-secureboot` assets and `/secureboot/signing-cert.pem`.
    pub enabled: bool,
    /// The key files.
    pub file: SecureBootFileConfig,
}

/// `secureBoot.file.*` keys: PEM files as `talosctl gen secureboot` or
/// `image-factory keys secureboot generate` write them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct SecureBootFileConfig {
    /// RSA private key that signs UKIs and systemd-boot (`uki-signing-key.pem`).
    pub signing_key_path: String,
    /// Its X.509 certificate (`uki-signing-cert.pem`).
    pub signing_cert_path: String,
    /// RSA private key that signs the PCR 11 policy (`pcr-signing-key.pem`).
    pub pcr_key_path: String,
}

/// `admin.*` keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct AdminConfig {
    /// File holding the admin bearer token; empty = `<dataDir>/keys/admin-token`, generated on
    /// first start (mode 0600).
    pub token_file: String,
    /// Where the admin API listens: empty = the Unix socket `<dataDir>/admin.sock`;
    /// `unix:PATH` = another Unix socket; `HOST:PORT` = TCP.
    pub listen_addr: String,
    /// PEM certificate chain for TLS on a TCP admin listener (empty = plain).
    pub cert_file: String,
    /// PEM private key of `certFile`.
    pub key_file: String,
}

/// Where the admin API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminListen {
    /// A Unix socket (file permissions guard it).
    Unix(PathBuf),
    /// A TCP address.
    Tcp(ListenAddr),
}

/// `tftp.*` keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct TftpConfig {
    /// Listen address of the TFTP server (UDP; empty disables it).
    pub listen_addr: String,
    /// Directory whose files are served (the iPXE binaries).
    pub root: String,
    /// Transfers running at once; more requests get a TFTP "server busy" error.
    pub max_transfers: u64,
    /// Largest `blksize` granted (8 to 65464; larger requests are clamped).
    pub max_block_size: u64,
    /// Largest `windowsize` granted (1 to 64; larger requests are clamped).
    pub max_window_size: u64,
}

/// The default `tftp.listenAddr`; failing to bind it only warns (see `serve`).
pub const DEFAULT_TFTP_LISTEN_ADDR: &str = ":69";

impl Default for TftpConfig {
    fn default() -> Self {
        Self {
            listen_addr: DEFAULT_TFTP_LISTEN_ADDR.into(),
            root: "/usr/lib/ipxe".into(),
            max_transfers: 256,
            max_block_size: 1468,
            max_window_size: 64,
        }
    }
}

/// `replication.*` keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ReplicationConfig {
    /// Whether this node runs the peer swarm (off: standalone, nothing is bound).
    pub enabled: bool,
    /// libp2p multiaddrs to listen on (`/ip4/…/udp/N/quic-v1`, `/ip4/…/tcp/N`; port 0 = any).
    pub listen_addrs: Vec<String>,
    /// libp2p multiaddrs of peers to contact at start, each ending in `/p2p/<peer id>`.
    pub bootstrap_peers: Vec<String>,
    /// Find peers on the local link by multicast DNS as well.
    pub mdns: bool,
    /// Copies of each model the cluster keeps: a node that builds one asks `factor - 1`
    /// members chosen by rendezvous hashing to fetch it (1 = fetch on demand only).
    pub factor: u32,
    /// Chunk memory (MiB, one 1 MiB chunk each) all of this node's blob transfers from members
    /// share, beyond one buffer each transfer has of its own (0 = one chunk at a time each).
    #[serde(rename = "transferMemoryMiB")]
    pub transfer_memory_mib: u32,
}

/// Largest `replication.transferMemoryMiB` accepted.
pub const MAX_TRANSFER_MEMORY_MIB: u32 = 1024;

/// Largest `replication.factor` accepted (a cluster has tens of members, not hundreds).
pub const MAX_REPLICATION_FACTOR: u32 = 32;

/// The default libp2p port (UDP for QUIC, TCP for the fallback).
pub const DEFAULT_REPLICATION_PORT: u16 = 4001;

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen_addrs: vec![
                format!("/ip4/0.0.0.0/udp/{DEFAULT_REPLICATION_PORT}/quic-v1"),
                format!("/ip4/0.0.0.0/tcp/{DEFAULT_REPLICATION_PORT}"),
            ],
            bootstrap_peers: Vec::new(),
            mdns: false,
            factor: 1,
            transfer_memory_mib: 4,
        }
    }
}

impl Config {
    /// Checks every key; the error names the key and the bad value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate::validate(self)
    }

    /// The data directory as a path.
    pub fn data_dir(&self) -> &Path {
        Path::new(&self.storage.data_dir)
    }

    /// Where Secure Boot key files default to: `<dataDir>/keys/secureboot/`.
    pub fn secure_boot_dir(&self) -> PathBuf {
        self.data_dir().join("keys").join("secureboot")
    }

    /// Path of the admin token file (configured, or the default under the data directory).
    pub fn admin_token_path(&self) -> PathBuf {
        if self.admin.token_file.is_empty() {
            self.data_dir().join("keys").join("admin-token")
        } else {
            PathBuf::from(&self.admin.token_file)
        }
    }

    /// `build.minTalosVersion`, parsed (a leading `v` is optional).
    pub fn min_talos_version(&self) -> Result<crate::catalog::Version, ConfigError> {
        parse_version("build.minTalosVersion", &self.build.min_talos_version)
    }

    /// `build.brokenTalosVersions`, parsed.
    pub fn broken_talos_versions(&self) -> Result<Vec<crate::catalog::Version>, ConfigError> {
        self.build
            .broken_talos_versions
            .iter()
            .map(|v| parse_version("build.brokenTalosVersions", v))
            .collect()
    }

    /// Path of the cluster signing key (configured, or the default under the data directory).
    pub fn signing_key_path(&self) -> PathBuf {
        if self.cache.signing_key_path.is_empty() {
            self.data_dir().join("keys").join("signing-key.pem")
        } else {
            PathBuf::from(&self.cache.signing_key_path)
        }
    }

    /// The parsed HTTP listen address.
    pub fn http_listen(&self) -> Result<ListenAddr, ConfigError> {
        ListenAddr::parse_key("http.httpListenAddr", &self.http.http_listen_addr)
    }

    /// Where the admin API listens (`admin.listenAddr`).
    pub fn admin_listen(&self) -> Result<AdminListen, ConfigError> {
        let addr = &self.admin.listen_addr;
        if addr.is_empty() {
            return Ok(AdminListen::Unix(self.data_dir().join("admin.sock")));
        }
        if let Some(path) = addr.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "admin.listenAddr".into(),
                    message: format!("{addr:?} names no socket path"),
                });
            }
            return Ok(AdminListen::Unix(PathBuf::from(path)));
        }
        ListenAddr::parse_key("admin.listenAddr", addr).map(AdminListen::Tcp)
    }

    /// The parsed TFTP listen address, `None` when disabled.
    pub fn tftp_listen(&self) -> Result<Option<ListenAddr>, ConfigError> {
        if self.tftp.listen_addr.is_empty() {
            return Ok(None);
        }
        ListenAddr::parse_key("tftp.listenAddr", &self.tftp.listen_addr).map(Some)
    }

    /// The parsed metrics listen address, `None` when disabled.
    pub fn metrics_listen(&self) -> Result<Option<ListenAddr>, ConfigError> {
        if self.metrics.addr.is_empty() {
            return Ok(None);
        }
        ListenAddr::parse_key("metrics.addr", &self.metrics.addr).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_config_file_equals_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/image-factory.yaml");
        let cfg = load(Some(&path), std::iter::empty(), &FlagOverrides::default())
            .expect("documented config loads");
        assert_eq!(cfg, Config::default());
        cfg.validate().expect("defaults are valid");
    }

    #[test]
    fn the_appliance_config_loads_with_the_units_paths() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("appliance/config.yaml");
        let cfg = load(Some(&path), std::iter::empty(), &FlagOverrides::default())
            .expect("appliance config loads");
        cfg.validate().expect("appliance config is valid");
        // The unit's StateDirectory and the Debian `ipxe` package's files.
        assert_eq!(cfg.storage.data_dir, "/var/lib/image-factory");
        assert_eq!(cfg.tftp.root, "/usr/lib/ipxe");
        let unit = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("appliance/image-factory.service"),
        )
        .expect("unit");
        assert!(unit.contains("StateDirectory=image-factory\n"));
        assert!(unit.contains("--config /etc/image-factory/config.yaml"));
    }

    #[test]
    fn defaults_validate() {
        Config::default().validate().expect("defaults are valid");
    }
}
