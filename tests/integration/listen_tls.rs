//! TLS on the HTTP listener (`http.certFile`/`http.keyFile`) and on a TCP admin listener,
//! with a throw-away certificate made by openssl for 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::TestServer;

/// A self-signed P-256 certificate for `127.0.0.1` and its key, or `None` without openssl.
fn certificate(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    if !testsupport::tools::have("openssl", "openssl") {
        return None;
    }
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=image-factory test"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some((cert, key))
}

fn tls_client(cert: &Path) -> reqwest::Client {
    crate::common::init();
    let pem = std::fs::read(cert).expect("cert");
    reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_and_admin_listeners_serve_tls() {
    let dir = tempfile::tempdir().unwrap();
    let Some((cert, key)) = certificate(dir.path()) else {
        return;
    };
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    let srv = TestServer::start_with(move |cfg| {
        cfg.http.cert_file = c.clone();
        cfg.http.key_file = k.clone();
        cfg.admin.listen_addr = "127.0.0.1:0".into();
        cfg.admin.cert_file = c;
        cfg.admin.key_file = k;
    })
    .await;
    let client = tls_client(&cert);
    let resp = client
        .get(format!("https://{}/healthz", srv.addrs.http))
        .send()
        .await
        .expect("https GET");
    assert_eq!(resp.status(), 200);
    // An asset path (the zero-copy path without TLS) is answered over TLS too.
    let resp = client
        .get(format!(
            "https://{}/image/{}/v1.11.0/kernel-amd64",
            srv.addrs.http,
            "0".repeat(64)
        ))
        .send()
        .await
        .expect("https GET");
    assert_eq!(resp.status(), 404);
    // Plain HTTP to the TLS listener gets no HTTP answer.
    let plain = crate::common::client()
        .get(format!("http://{}/healthz", srv.addrs.http))
        .send()
        .await;
    assert!(plain.is_err() || plain.is_ok_and(|r| r.status() != 200));

    let image_factory::frontend::AdminAddr::Tcp(admin) = srv.addrs.admin.clone() else {
        panic!("the admin listener should be TCP");
    };
    let token = std::fs::read_to_string(srv.dir.path().join("keys/admin-token")).unwrap();
    let resp = client
        .get(format!("https://{admin}/admin/status"))
        .bearer_auth(token.trim())
        .send()
        .await
        .expect("admin over TLS");
    assert_eq!(resp.status(), 200);
    srv.stop().await;
}

#[test]
fn a_certificate_without_its_key_is_refused_by_name() {
    let mut cfg = image_factory::config::Config::default();
    cfg.http.cert_file = "/etc/cert.pem".into();
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("http.keyFile"), "{err}");
    let mut cfg = image_factory::config::Config::default();
    cfg.admin.cert_file = "/etc/cert.pem".into();
    cfg.admin.key_file = "/etc/key.pem".into();
    let err = cfg.validate().unwrap_err().to_string();
    assert!(
        err.contains("admin.certFile") && err.contains("TCP"),
        "{err}"
    );
}
