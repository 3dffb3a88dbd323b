//! Models and releases across a cluster, with real `image-factory serve` processes on loopback,
//! each in its own data directory holding the synthetic kit release: every member builds as the
//! cluster's one factory identity (the same model is byte-identical whichever member built it),
//! while each keeps its own URL in what points at itself (PXE scripts).

use std::path::{Path, PathBuf};

use image_factory::synth::{self, SynthOptions};

use crate::common::assets::{V, sha256_hex};
use crate::common::client;
use crate::common::kit;
use crate::replication::{Node, join};

/// The synthetic kit release (signed bundle and its trust key) in `dir`; `None` (with a
/// notice) without the kit inputs.
pub(crate) fn kit_bundle(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    kit::kit_inputs()?;
    let opts = SynthOptions {
        out: dir.join("kit"),
        versions: vec![V.into()],
        arches: vec!["amd64".into()],
        extensions: 0,
        extension_size_mb: 0,
        kit_dir: synth::default_kit_dir(),
        key: None,
    };
    synth::synth_release(&opts).expect("synth release");
    Some((dir.join("kit/bundle.tar"), dir.join("kit/signing-key.pub")))
}

/// `image-factory import` of `bundle` into the data directory `data`.
pub(crate) fn import(data: &Path, (bundle, key): &(PathBuf, PathBuf)) {
    kit::bin(&[
        "import",
        &bundle.display().to_string(),
        "--data-dir",
        &data.display().to_string(),
        "--trust-key",
        &key.display().to_string(),
    ]);
}

/// GET `path` from `node`: status and body.
pub(crate) async fn fetch(node: &Node, path: &str) -> (u16, Vec<u8>) {
    let resp = client()
        .get(format!("http://{}{path}", node.srv.http))
        .send()
        .await
        .expect("get");
    let status = resp.status().as_u16();
    (status, resp.bytes().await.expect("body").to_vec())
}

/// The factory URL the cluster is founded with, and two other URLs the members have.
const SITE: &str = "http://factory.site:8080/";
const URL_A: &str = "http://node-a.site:8080/";
const URL_B: &str = "http://node-b.site:8080/";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_with_their_own_urls_build_the_same_model_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(bundle) = kit_bundle(tmp.path()) else {
        return;
    };
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    import(&a, &bundle);
    import(&b, &bundle);
    // A founds the cluster while its URL is the site's; B joins it.
    let inv = tmp.path().join("b.invitation");
    let out = std::process::Command::new(crate::common::bin())
        .args(["cluster", "invite", "--data-dir"])
        .arg(&a)
        .arg("--out")
        .arg(&inv)
        .env("IF_HTTP_EXTERNALURL", SITE)
        .env_remove("RUST_LOG")
        .output()
        .expect("invite");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    join(&b, &inv);

    // Each member now has a URL of its own (A's changed since it founded the cluster).
    let node_a = Node::start_with(&a, &[], &[("IF_HTTP_EXTERNALURL", URL_A)]);
    let node_b = Node::start_with(&b, &[], &[("IF_HTTP_EXTERNALURL", URL_B)]);
    let mut ids = Vec::new();
    for n in [&node_a, &node_b] {
        let resp = client()
            .post(format!("http://{}/schematics", n.srv.http))
            .body(kit::SCHEMATIC)
            .send()
            .await
            .expect("post schematic");
        assert!(resp.status().is_success());
        let v: serde_json::Value = resp.json().await.expect("json");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids[0], ids[1]);
    let id = &ids[0];

    // The initramfs holds the schematic extension, whose author names the factory.
    let path = format!("/image/{id}/{V}/initramfs-amd64.xz");
    let (sa, on_a) = fetch(&node_a, &path).await;
    let (sb, on_b) = fetch(&node_b, &path).await;
    assert_eq!((sa, sb), (200, 200));
    assert_eq!(
        sha256_hex(&on_a),
        sha256_hex(&on_b),
        "two members built different bytes for the same model"
    );
    for n in [&node_a, &node_b] {
        assert!(
            n.log()
                .contains("models are built as the cluster's factory URL"),
            "{}",
            n.log()
        );
    }

    // What points at the node itself keeps the node's own URL.
    for (n, own) in [(&node_a, URL_A), (&node_b, URL_B)] {
        let (st, script) = fetch(n, &format!("/pxe/{id}/{V}/metal-amd64")).await;
        let script = String::from_utf8_lossy(&script).into_owned();
        assert_eq!(st, 200, "{script}");
        assert!(script.contains(own), "{own} not in\n{script}");
        assert!(!script.contains(SITE), "{SITE} in\n{script}");
        let status = n.status().await;
        assert_eq!(status["replication"]["cluster"]["factoryURL"], SITE);
    }
}
