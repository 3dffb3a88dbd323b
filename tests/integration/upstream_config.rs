//! Configuration written for upstream image-factory starts the appliance: its documented
//! defaults as environment variables, and the Helm chart's rendered file; keys that do not
//! apply are logged once each, misspelt keys still stop the start.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{bin, client, spawn_bin_with, spawn_serve};

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/upstream-config")
        .join(name)
}

/// `IF_*` pairs of upstream's documented default environment.
fn upstream_env() -> Vec<(String, String)> {
    std::fs::read_to_string(golden("defaults.env"))
        .expect("defaults.env")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn healthy(srv: &crate::common::BinServer) {
    let resp = client()
        .get(format!("http://{}/healthz", srv.http))
        .send()
        .await
        .expect("healthz");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn upstream_default_environment_starts_and_names_what_it_ignores() {
    let dir = tempfile::tempdir().expect("tmp");
    let vars = upstream_env();
    let env: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut srv = spawn_bin_with(dir.path(), &env, false).unwrap_or_else(|e| panic!("{e}"));
    healthy(&srv).await;
    let log = srv.log_text();
    let _ = srv.child.kill();
    let _ = srv.child.wait();
    let warned = |key: &str| {
        log.lines()
            .filter(|l| l.contains("does not apply") && l.contains(&format!("\"key\":\"{key}\"")))
            .count()
    };
    for key in [
        "cache.s3.bucket",
        "artifacts.refreshinterval",
        "enterprise.vex.data.registry",
        "secureboot.awskms.region",
    ] {
        assert_eq!(warned(key), 1, "{key}:\n{log}");
    }
    // Keys this appliance has are not warned about.
    assert_eq!(warned("http.externalurl"), 0, "{log}");
}

#[tokio::test]
async fn the_helm_charts_rendered_config_starts_with_its_signing_key() {
    let dir = tempfile::tempdir().expect("tmp");
    // The chart mounts an ECDSA key made as its values.yaml says (openssl ecparam ... -noout).
    let key = dir.path().join("cache-signing.key");
    let made = Command::new("openssl")
        .args([
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
        ])
        .arg(&key)
        .status()
        .expect("openssl");
    assert!(made.success());
    let helm = std::fs::read_to_string(golden("helm.yaml")).expect("helm.yaml");
    let config = dir.path().join("config.yaml");
    let text = helm.replace(
        "/etc/image-factory/keys/cache-signing.key",
        &key.display().to_string(),
    );
    assert_ne!(text, helm, "the chart's key path is in helm.yaml");
    std::fs::write(&config, text).expect("write config");
    let data = dir.path().join("data");
    let mut srv = spawn_serve(
        &data,
        &[],
        "127.0.0.1:0",
        Some("127.0.0.1:0"),
        &[],
        false,
        &["--config".as_ref(), config.as_os_str()],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    healthy(&srv).await;
    // The assets are signed with the chart's key: the public key served is its public half.
    let served = client()
        .get(format!("http://{}/oci/cosign/signing-key.pub", srv.http))
        .send()
        .await
        .expect("signing-key.pub")
        .text()
        .await
        .expect("text");
    let _ = srv.child.kill();
    let _ = srv.child.wait();
    let public = Command::new("openssl")
        .args(["ec", "-pubout", "-in"])
        .arg(&key)
        .output()
        .expect("openssl ec");
    assert_eq!(
        served.trim(),
        String::from_utf8_lossy(&public.stdout).trim()
    );
}

#[test]
fn a_misspelt_upstream_key_still_stops_the_start() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(bin())
        .args([
            "serve",
            "--http-listen-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env("IF_TFTP_LISTENADDR", "127.0.0.1:0")
        .env("IF_CACHE_S3_BUKCET", "image-factory")
        .output()
        .expect("serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("unknown key cache.s3.bukcet") && err.contains("IF_CACHE_S3_BUKCET"),
        "{err}"
    );
}
