//! Helpers for asset-pipeline tests: a server on an imported kit, requests, metrics.

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};

use sha2::Digest as _;

use super::kit::Kit;
use super::{TestServer, client};

/// The kit release version.
pub const V: &str = "v1.11.0";

pub async fn start(k: &Kit) -> TestServer {
    let data = k.data.display().to_string();
    TestServer::start_with(move |c| {
        c.storage.data_dir = data;
        c.http.external_url = "http://factory.test:8080/".into();
        c.cache.gc_interval_seconds = 0;
        c.cache.scrub_interval_seconds = 0;
    })
    .await
}

pub async fn start_in(data: &std::path::Path, max_bytes: u64) -> TestServer {
    let data = data.display().to_string();
    TestServer::start_with(move |c| {
        c.storage.data_dir = data;
        c.http.external_url = "http://factory.test:8080/".into();
        c.cache.gc_interval_seconds = 0;
        c.cache.scrub_interval_seconds = 0;
        c.cache.max_bytes = max_bytes;
    })
    .await
}

pub async fn create_schematic(s: &TestServer, yaml: &str) -> String {
    let resp = client()
        .post(s.url("/schematics"))
        .body(yaml.to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 201);
    let v: serde_json::Value = resp.json().await.expect("json");
    v["id"].as_str().expect("id").to_string()
}

pub struct Got {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Got {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn get(s: &TestServer, path: &str, headers: &[(&str, &str)]) -> Got {
    send(client().get(s.url(path)), headers).await
}

/// Sends `req` with extra `headers` and collects the answer.
pub async fn send(mut req: reqwest::RequestBuilder, headers: &[(&str, &str)]) -> Got {
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("get");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.expect("body").to_vec();
    Got {
        status,
        headers,
        body,
    }
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

/// The server's `/metrics` text.
pub async fn metrics_text(s: &TestServer) -> String {
    client()
        .get(s.metrics_url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// Sum of a metric's samples whose label set contains every `labels` fragment.
pub async fn metric(s: &TestServer, name: &str, labels: &[&str]) -> f64 {
    metrics_text(s)
        .await
        .lines()
        .filter(|l| {
            l.starts_with(name)
                && l[name.len()..].starts_with(['{', ' '])
                && labels.iter().all(|f| l.contains(f))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits (up to two minutes) until the metric is above zero; returns its value then.
pub async fn metric_above_zero(s: &TestServer, name: &str, labels: &[&str]) -> f64 {
    let mut value = 0.0;
    for _ in 0..600 {
        value = metric(s, name, labels).await;
        if value > 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    value
}

/// Flips one bit of the byte at `at` in the file at `path` (a damaged blob), synced.
#[allow(dead_code)]
pub fn flip_byte(path: &std::path::Path, at: u64) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open blob");
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[b[0] ^ 0x40]).unwrap();
    f.sync_all().unwrap();
}
