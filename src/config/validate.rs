//! Startup validation: every error names the key and quotes the offending value.

use super::{Config, ConfigError, ListenAddr};

fn invalid(key: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message,
    }
}

/// Validates the whole configuration.
pub(super) fn validate(cfg: &Config) -> Result<(), ConfigError> {
    ListenAddr::parse_key("http.httpListenAddr", &cfg.http.http_listen_addr)?;
    check_identities(cfg)?;
    check_url("http.externalURL", &cfg.http.external_url)?;
    if !cfg.http.external_pxe_url.is_empty() {
        check_url("http.externalPXEURL", &cfg.http.external_pxe_url)?;
    }
    if cfg.http.allowed_origins.is_empty() {
        return Err(invalid(
            "http.allowedOrigins",
            "must not be empty (use [\"*\"] to allow any origin)".into(),
        ));
    }
    for origin in &cfg.http.allowed_origins {
        if origin != "*" && !is_origin(origin) {
            return Err(invalid(
                "http.allowedOrigins",
                format!("{origin:?} must be \"*\" or an origin like \"https://host[:port]\""),
            ));
        }
    }
    if cfg.http.max_body_bytes == 0 {
        return Err(invalid("http.maxBodyBytes", "0 must be at least 1".into()));
    }
    for (key, value, lo, hi) in [
        (
            "http.readHeaderTimeoutSeconds",
            cfg.http.read_header_timeout_seconds,
            1,
            300,
        ),
        (
            "http.idleTimeoutSeconds",
            cfg.http.idle_timeout_seconds,
            1,
            3600,
        ),
        (
            "build.toolTimeoutSeconds",
            cfg.build.tool_timeout_seconds,
            1,
            86_400,
        ),
        (
            "http.writeTimeoutSeconds",
            cfg.http.write_timeout_seconds,
            1,
            3600,
        ),
        ("cache.maxPercent", cfg.cache.max_percent, 0, 100),
        ("cache.minFreePercent", cfg.cache.min_free_percent, 0, 90),
    ] {
        if !(lo..=hi).contains(&value) {
            return Err(invalid(
                key,
                format!("{value} must be between {lo} and {hi}"),
            ));
        }
    }
    if cfg.cache.orphan_grace_seconds < super::MIN_ORPHAN_GRACE_SECONDS {
        return Err(invalid(
            "cache.orphanGraceSeconds",
            format!(
                "{} must be at least {} (the build timeout)",
                cfg.cache.orphan_grace_seconds,
                super::MIN_ORPHAN_GRACE_SECONDS
            ),
        ));
    }
    for (cert_key, cert, key_key, key) in [
        (
            "http.certFile",
            &cfg.http.cert_file,
            "http.keyFile",
            &cfg.http.key_file,
        ),
        (
            "admin.certFile",
            &cfg.admin.cert_file,
            "admin.keyFile",
            &cfg.admin.key_file,
        ),
    ] {
        if cert.is_empty() != key.is_empty() {
            let (given, missing) = if cert.is_empty() {
                (key_key, cert_key)
            } else {
                (cert_key, key_key)
            };
            return Err(invalid(
                missing,
                format!("must be set together with {given}"),
            ));
        }
    }
    let admin = cfg.admin_listen()?;
    if !cfg.admin.cert_file.is_empty() && matches!(admin, super::AdminListen::Unix(_)) {
        return Err(invalid(
            "admin.certFile",
            "TLS applies to a TCP admin listener (admin.listenAddr HOST:PORT)".into(),
        ));
    }
    check_version("build.minTalosVersion", &cfg.build.min_talos_version)?;
    for v in &cfg.build.broken_talos_versions {
        check_version("build.brokenTalosVersions", v)?;
    }
    let c = &cfg.build.compression;
    for (key, value, lo, hi) in [
        ("build.compression.xz", i64::from(c.xz), 0, 9),
        ("build.compression.gzip", i64::from(c.gzip), 0, 9),
        ("build.compression.zstd", i64::from(c.zstd), 1, 22),
        (
            "build.compression.vmdkDeflate",
            i64::from(c.vmdk_deflate),
            0,
            9,
        ),
        ("build.compression.threads", i64::from(c.threads), 1, 256),
    ] {
        if !(lo..=hi).contains(&value) {
            return Err(invalid(
                key,
                format!("{value} must be between {lo} and {hi}"),
            ));
        }
    }
    if c.zstd_window_log != 0 && !(10..=27).contains(&c.zstd_window_log) {
        return Err(invalid(
            "build.compression.zstdWindowLog",
            format!("{} must be 0 (off) or between 10 and 27", c.zstd_window_log),
        ));
    }
    if !cfg.metrics.addr.is_empty() {
        ListenAddr::parse_key("metrics.addr", &cfg.metrics.addr)?;
    }
    if cfg.storage.data_dir.trim().is_empty() {
        return Err(invalid("storage.dataDir", "\"\" must not be empty".into()));
    }
    if !cfg.tftp.listen_addr.is_empty() {
        ListenAddr::parse_key("tftp.listenAddr", &cfg.tftp.listen_addr)?;
    }
    let t = &cfg.tftp;
    if t.max_transfers == 0 {
        return Err(invalid("tftp.maxTransfers", "0 must be at least 1".into()));
    }
    if !(8..=65464).contains(&t.max_block_size) {
        return Err(invalid(
            "tftp.maxBlockSize",
            format!("{} must be between 8 and 65464", t.max_block_size),
        ));
    }
    if !(1..=64).contains(&t.max_window_size) {
        return Err(invalid(
            "tftp.maxWindowSize",
            format!("{} must be between 1 and 64", t.max_window_size),
        ));
    }
    cfg.netboot.proxy_dhcp.validate()?;
    for a in &cfg.replication.listen_addrs {
        check_multiaddr("replication.listenAddrs", a, false)?;
    }
    for a in &cfg.replication.bootstrap_peers {
        check_multiaddr("replication.bootstrapPeers", a, true)?;
    }
    let factor = cfg.replication.factor;
    if !(1..=super::MAX_REPLICATION_FACTOR).contains(&factor) {
        return Err(invalid(
            "replication.factor",
            format!(
                "{factor} must be between 1 (fetch on demand only) and {}",
                super::MAX_REPLICATION_FACTOR
            ),
        ));
    }
    let memory = cfg.replication.transfer_memory_mib;
    if memory > super::MAX_TRANSFER_MEMORY_MIB {
        return Err(invalid(
            "replication.transferMemoryMiB",
            format!(
                "{memory} is more than {} (MiB)",
                super::MAX_TRANSFER_MEMORY_MIB
            ),
        ));
    }
    Ok(())
}

/// `trust.identities`: each entry a subject pattern and an issuer (exact and/or pattern), every
/// pattern valid; at least one entry when keyless verification is on.
fn check_identities(cfg: &Config) -> Result<(), ConfigError> {
    let t = &cfg.trust;
    if !t.sigstore_trusted_root.is_empty() && t.identities.is_empty() {
        return Err(invalid(
            "trust.identities",
            "must name at least one {issuer, subjectRegExp} when trust.sigstoreTrustedRoot is set"
                .into(),
        ));
    }
    for (i, id) in t.identities.iter().enumerate() {
        let key = |field: &str| format!("trust.identities[{i}].{field}");
        if id.subject_reg_exp.is_empty() {
            return Err(invalid(&key("subjectRegExp"), "must be set".into()));
        }
        if id.issuer.is_empty() && id.issuer_reg_exp.is_empty() {
            return Err(invalid(
                &key("issuer"),
                "issuer or issuerRegExp must be set".into(),
            ));
        }
        for (field, pattern) in [
            ("subjectRegExp", &id.subject_reg_exp),
            ("issuerRegExp", &id.issuer_reg_exp),
        ] {
            if let Err(e) = crate::trust::keyless::compile_pattern(pattern) {
                return Err(invalid(&key(field), format!("{pattern:?}: {e}")));
            }
        }
    }
    Ok(())
}

fn check_url(key: &str, s: &str) -> Result<(), ConfigError> {
    let url = url::Url::parse(s).map_err(|e| ConfigError::Unparsable {
        key: key.to_string(),
        message: format!("{s:?} is not a URL"),
        source: Box::new(e),
    })?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(invalid(key, format!("{s:?} must be an http or https URL")));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(key, format!("{s:?} must have a host")));
    }
    Ok(())
}

fn is_origin(s: &str) -> bool {
    let Ok(url) = url::Url::parse(s) else {
        return false;
    };
    matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some()
        && (url.path() == "/" || url.path().is_empty())
        && !s.ends_with('/')
        && url.query().is_none()
        && http::HeaderValue::from_str(s).is_ok()
}

/// Accepts `X.Y.Z` with an optional leading `v` and an optional `-pre` suffix.
fn check_version(key: &str, s: &str) -> Result<(), ConfigError> {
    match crate::catalog::Version::parse_strict(s) {
        Some(_) => Ok(()),
        None => Err(invalid(key, format!("{s:?} is not a version like 1.2.0"))),
    }
}

/// A libp2p multiaddr; `peer` = it must name its peer (`/p2p/<peer id>` at the end).
fn check_multiaddr(key: &str, s: &str, peer: bool) -> Result<(), ConfigError> {
    let addr: libp2p::Multiaddr = s.parse().map_err(|source| ConfigError::Unparsable {
        key: key.into(),
        message: format!("{s:?} is not a multiaddr like /ip4/0.0.0.0/tcp/4001"),
        source: Box::new(source),
    })?;
    let names_peer = matches!(
        addr.iter().last(),
        Some(libp2p::multiaddr::Protocol::P2p(_))
    );
    if peer && !names_peer {
        return Err(invalid(
            key,
            format!("{s:?} does not end in /p2p/<peer id> (the peer's ID from its /status)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(f: impl FnOnce(&mut Config)) -> String {
        let mut c = Config::default();
        f(&mut c);
        c.validate().unwrap_err().to_string()
    }

    #[test]
    fn external_url_must_be_http() {
        assert_eq!(
            err(|c| c.http.external_url = "ftp://x".into()),
            "invalid config: http.externalURL: \"ftp://x\" must be an http or https URL"
        );
        assert!(err(|c| c.http.external_pxe_url = "nope".into()).contains("http.externalPXEURL"));
    }

    #[test]
    fn identities_need_a_subject_one_issuer_and_valid_patterns() {
        use crate::config::IdentityConfig;
        let id = |issuer: &str, issuer_re: &str, subject: &str| IdentityConfig {
            issuer: issuer.into(),
            issuer_reg_exp: issuer_re.into(),
            subject_reg_exp: subject.into(),
        };
        assert!(Config::default().validate().is_ok());
        assert!(
            err(|c| c.trust.identities = vec![id("https://i", "", "")])
                .contains("trust.identities[0].subjectRegExp: must be set")
        );
        assert!(
            err(|c| c.trust.identities = vec![id("", "", "s")])
                .contains("trust.identities[0].issuer: issuer or issuerRegExp must be set")
        );
        assert!(
            err(|c| c.trust.identities = vec![id("https://i", "", "s"), id("x", "", "(")])
                .contains("trust.identities[1].subjectRegExp")
        );
        assert!(
            err(|c| {
                c.trust.identities.clear();
                c.trust.sigstore_trusted_root = "/root.json".into();
            })
            .contains("trust.identities: must name at least one")
        );
        let mut c = Config::default();
        c.trust.identities = vec![id("", "^https://.*$", "@example\\.org$")];
        assert!(c.validate().is_ok());
    }

    #[test]
    fn other_keys() {
        assert!(err(|c| c.http.http_listen_addr = "x".into()).contains("http.httpListenAddr"));
        assert!(err(|c| c.metrics.addr = "1:2:3".into()).contains("metrics.addr"));
        assert!(err(|c| c.http.max_body_bytes = 0).contains("http.maxBodyBytes"));
        assert!(err(|c| c.build.min_talos_version = "one".into()).contains("\"one\""));
        assert!(
            err(|c| c.http.allowed_origins = vec!["http://a/path".into()])
                .contains("http.allowedOrigins")
        );
        assert!(
            err(|c| c.replication.bootstrap_peers = vec!["peer".into()])
                .contains("replication.bootstrapPeers")
        );
        assert!(
            err(|c| c.replication.bootstrap_peers = vec!["/ip4/10.0.0.1/tcp/4001".into()])
                .contains("does not end in /p2p/")
        );
        assert!(
            err(|c| c.replication.listen_addrs = vec!["/ip4/1.2.3/tcp/1".into()])
                .contains("replication.listenAddrs")
        );
        assert!(
            err(|c| c.replication.factor = 0)
                .contains("replication.factor: 0 must be between 1 (fetch on demand only) and 32")
        );
        assert!(err(|c| c.replication.factor = 33).contains("replication.factor: 33"));
        assert!(
            err(|c| c.replication.transfer_memory_mib = 1025)
                .contains("replication.transferMemoryMiB: 1025 is more than 1024 (MiB)")
        );
        assert!(err(|c| c.storage.data_dir = String::new()).contains("storage.dataDir"));
        assert!(err(|c| c.tftp.listen_addr = "69".into()).contains("tftp.listenAddr"));
        assert!(err(|c| c.tftp.max_transfers = 0).contains("tftp.maxTransfers"));
        assert!(err(|c| c.tftp.max_block_size = 7).contains("tftp.maxBlockSize"));
        assert!(err(|c| c.tftp.max_block_size = 65465).contains("tftp.maxBlockSize"));
        assert!(err(|c| c.tftp.max_window_size = 65).contains("tftp.maxWindowSize"));
        assert!(
            err(|c| c.netboot.proxy_dhcp.enabled = true).contains("netboot.proxyDhcp.interface")
        );
        assert!(
            err(|c| c.netboot.proxy_dhcp.server_addr = "x".into())
                .contains("netboot.proxyDhcp.serverAddr")
        );
        assert_eq!(
            err(|c| c.cache.max_percent = 101),
            "invalid config: cache.maxPercent: 101 must be between 0 and 100"
        );
        assert!(err(|c| c.cache.min_free_percent = 95).contains("cache.minFreePercent"));
        assert_eq!(
            err(|c| c.cache.orphan_grace_seconds = 60),
            "invalid config: cache.orphanGraceSeconds: 60 must be at least 1200 (the build timeout)"
        );
    }

    #[test]
    fn valid_variants() {
        let mut c = Config::default();
        c.metrics.addr = String::new();
        c.http.http_listen_addr = "[::1]:0".into();
        c.http.allowed_origins = vec!["https://ui.example:8443".into()];
        c.build.broken_talos_versions = vec!["v1.9.0-beta.1".into()];
        c.replication.bootstrap_peers =
            vec!["/ip4/10.0.0.1/udp/4001/quic-v1/p2p/12D3KooWPjceQrSwdWXPyLLeABRXmuqt69Rg3sBYbU1Nft9HyQ6X".into()];
        c.validate().unwrap();
    }
}
