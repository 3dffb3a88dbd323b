//! Garbage collection never follows a record it cannot trust: a record whose signature does
//! not verify, or a signed one naming something that is not a blob, is quarantined and
//! reported, and the file it names is left alone.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use image_factory::assets::AssetRecord;
use image_factory::store::{MetaStore, SledStore};
use image_factory::trust::SigningKey;

/// A record of a 4 KiB asset whose blob is `blake3`, under cache key `key`.
fn record(key: &str, blake3: &str) -> AssetRecord {
    AssetRecord {
        key: key.into(),
        schematic: "s".repeat(64),
        version: "v1.11.0".into(),
        path: "kernel-amd64".into(),
        kind: "kernel".into(),
        arch: "amd64".into(),
        size: 4096,
        sha256: "a".repeat(64),
        blake3: blake3.into(),
        content_type: "application/octet-stream".into(),
        created: 1,
        inputs: BTreeMap::new(),
        intermediates: vec![],
    }
}

fn gc(data: &Path, extra: &[&str]) -> String {
    let out = Command::new(crate::common::bin())
        .arg("gc")
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "gc failed: {err}");
    err
}

#[test]
fn gc_never_follows_a_tampered_record_out_of_the_blob_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    gc(&data, &[]); // creates the data directory and the cluster signing key
    let victim = data.join("keys/signing-key.pem");
    let before = std::fs::read(&victim).unwrap();
    // `blobs/<first two characters>/<name>`: this name reaches `<data>/keys/signing-key.pem`.
    let escape = "../data/keys/signing-key.pem";
    let (forged_key, signed_key) = ("f".repeat(64), "e".repeat(64));
    {
        let meta = SledStore::open(&data.join("meta")).unwrap();
        // Bad signature: a record written by someone without the cluster key.
        let payload = serde_json::to_vec(&record(&forged_key, escape)).unwrap();
        let forged = serde_json::json!({
            "payload": B64.encode(&payload),
            "signature": B64.encode(b"not a signature"),
        });
        meta.put(
            "assets",
            forged_key.as_bytes(),
            forged.to_string().as_bytes(),
        )
        .unwrap();
        // Signed with the cluster key, but naming a path instead of a blob.
        let (key, _) = SigningKey::load_or_generate(&victim).unwrap();
        let sealed = record(&signed_key, escape).seal(&key).unwrap();
        meta.put("assets", signed_key.as_bytes(), &sealed).unwrap();
        meta.flush_blocking().unwrap();
    }

    // A quota of one byte: every trusted asset would be evicted.
    let err = gc(&data, &["--max-bytes", "1"]);
    assert_eq!(std::fs::read(&victim).unwrap(), before, "{err}");
    for key in [&forged_key, &signed_key] {
        assert!(
            err.contains(&format!("quarantined asset record {key}")),
            "{err}"
        );
    }
    assert!(err.contains("signature does not verify"), "{err}");
    assert!(err.contains("is not a blob name"), "{err}");

    let meta: Arc<dyn MetaStore> = Arc::new(SledStore::open(&data.join("meta")).unwrap());
    assert_eq!(
        meta.count("assets").unwrap(),
        0,
        "tampered records left in place"
    );
    assert_eq!(meta.count("assets_quarantine").unwrap(), 2);
}
