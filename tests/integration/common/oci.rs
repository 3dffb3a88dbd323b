//! Helpers for registry tests: a server on the imported kit with a schematic, `/v2` requests,
//! and the content of an installer tarball.

use std::collections::BTreeMap;
use std::io::Read as _;

use super::assets::{Got, V, create_schematic, send, start};
use super::kit::{self, Kit};
use super::{TestServer, client};

/// A freshly imported kit (keep it alive), a server on it, and the kit schematic's ID; `None`
/// without kit inputs.
pub async fn setup() -> Option<(Kit, TestServer, String)> {
    let kit = kit::imported(0)?;
    let server = start(&kit).await;
    let id = create_schematic(&server, kit::SCHEMATIC).await;
    Some((kit, server, id))
}

/// `method` of `/v2/<path>` with extra headers.
pub async fn request(s: &TestServer, method: &str, path: &str, headers: &[(&str, &str)]) -> Got {
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    send(client().request(m, s.url(&format!("/v2/{path}"))), headers).await
}

/// The error code of an OCI error envelope.
pub fn error_code(g: &Got) -> String {
    let v: serde_json::Value = serde_json::from_slice(&g.body)
        .unwrap_or_else(|e| panic!("not an error envelope ({e}): {}", g.text()));
    v["errors"][0]["code"].as_str().expect("code").to_string()
}

/// The entries of the installer tarball `installer-amd64.tar` of `id` from the server at
/// `base` (`http://<addr>`), by name.
pub async fn installer_tarball(base: &str, id: &str) -> BTreeMap<String, Vec<u8>> {
    let url = format!("{base}/image/{id}/{V}/installer-amd64.tar");
    let g = send(client().get(url), &[]).await;
    assert_eq!(g.status, 200, "{}", g.text());
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(&g.body[..]);
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("path").display().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("read");
        out.insert(name, bytes);
    }
    out
}
