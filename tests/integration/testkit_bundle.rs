//! `oci::BundleWriter`: the offline bundle as an OCI image layout in a tar — read back by hand,
//! deterministic, deduplicated, verified, and never half-written under its final name.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use image_factory::oci::{
    BundleWriter, Descriptor, Digest, ImageIndex, MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST, OciError,
};

fn entries(path: &Path) -> Vec<(String, tar::Header, Vec<u8>)> {
    let mut a = tar::Archive::new(std::fs::File::open(path).unwrap());
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let h = e.header().clone();
            let mut b = Vec::new();
            e.read_to_end(&mut b).unwrap();
            (name, h, b)
        })
        .collect()
}

fn write(path: &Path) {
    let mut w = BundleWriter::create(path).unwrap();
    let layer = w.add_bytes("application/octet-stream", b"layer").unwrap();
    let big = vec![7u8; 3 << 20];
    let big_d = Descriptor::for_bytes("application/octet-stream", &big);
    assert!(w.add_blob(&big_d, big.as_slice()).unwrap());
    // Written once.
    assert!(!w.add_blob(&big_d, &b"not even read"[..]).unwrap());
    assert!(w.has_blob(&layer.digest));
    let m = w
        .add_bytes(
            MEDIA_OCI_MANIFEST,
            format!(
                r#"{{"schemaVersion":2,"layers":[{{"digest":"{}"}}]}}"#,
                layer.digest
            )
            .as_bytes(),
        )
        .unwrap();
    let sig = w.add_bytes(MEDIA_OCI_MANIFEST, b"{\"sig\":1}").unwrap();
    // Added out of order: index.json is sorted by ref name.
    w.add_root(
        &sig,
        Some(format!(
            "ghcr.io/siderolabs/imager:{}",
            m.digest.signature_tag()
        )),
    );
    w.add_root(&m, Some("ghcr.io/siderolabs/imager:v1.11.0".into()));
    w.add_root(&m, Some("ghcr.io/siderolabs/imager:v1.11.0".into()));
    w.add_root(&m, Some("ghcr.io/siderolabs/imager:latest".into()));
    assert_eq!(w.finish().unwrap(), path);
}

#[test]
fn readable_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bundle.tar");
    write(&path);
    let es = entries(&path);
    let names: Vec<&str> = es.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names[0], "oci-layout");
    assert_eq!(*names.last().unwrap(), "index.json");
    for (_, h, _) in &es {
        assert_eq!(h.mtime().unwrap(), 0);
        assert_eq!(h.uid().unwrap(), 0);
        assert_eq!(h.gid().unwrap(), 0);
    }
    let files: HashMap<&str, &Vec<u8>> = es.iter().map(|(n, _, b)| (n.as_str(), b)).collect();
    assert_eq!(
        files["oci-layout"].as_slice(),
        br#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let blobs: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| n.starts_with("blobs/sha256/") && n.len() > 13)
        .collect();
    assert_eq!(blobs.len(), 4, "each blob once: {names:?}");
    for b in &blobs {
        let d = Digest::from_hex(&b["blobs/sha256/".len()..]).unwrap();
        assert_eq!(Digest::of(files[b]), d, "{b}");
    }
    let idx: ImageIndex = serde_json::from_slice(files["index.json"]).unwrap();
    assert_eq!(idx.schema_version, 2);
    assert_eq!(idx.media_type.as_deref(), Some(MEDIA_OCI_INDEX));
    let refs: Vec<&str> = idx
        .manifests
        .iter()
        .map(|d| d.annotations["org.opencontainers.image.ref.name"].as_str())
        .collect();
    assert_eq!(refs.len(), 3);
    assert!(refs.windows(2).all(|w| w[0] < w[1]), "{refs:?}");
    assert!(refs[0].starts_with("ghcr.io/siderolabs/imager:latest"));
    assert!(refs[1].starts_with("ghcr.io/siderolabs/imager:sha256-"));
    assert!(refs[1].ends_with(".sig"));
    for d in &idx.manifests {
        let b = files[format!("blobs/sha256/{}", d.digest.hex()).as_str()];
        assert_eq!(b.len() as u64, d.size);
    }
    // GNU tar agrees it is a tar (when installed).
    if let Ok(out) = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&path)
        .output()
    {
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("index.json"));
    }
}

#[test]
fn deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.tar"), dir.path().join("b.tar"));
    write(&a);
    write(&b);
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
}

#[test]
fn rejects_bad_content_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bundle.tar");
    let mut w = BundleWriter::create(&path).unwrap();
    let d = Descriptor::for_bytes("x", b"good");
    let err = w.add_blob(&d, &b"evil"[..]).unwrap_err();
    assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");
    drop(w);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // A root whose blob was never added.
    let mut w = BundleWriter::create(&path).unwrap();
    w.add_root(
        &Descriptor::for_bytes(MEDIA_OCI_MANIFEST, b"{}"),
        Some("r".into()),
    );
    assert!(w.finish().is_err());
    assert!(!path.exists());

    // One ref name, two digests.
    let mut w = BundleWriter::create(&path).unwrap();
    let a = w.add_bytes(MEDIA_OCI_MANIFEST, b"{\"a\":1}").unwrap();
    let b = w.add_bytes(MEDIA_OCI_MANIFEST, b"{\"b\":1}").unwrap();
    w.add_root(&a, Some("ghcr.io/x/y:v1".into()));
    w.add_root(&b, Some("ghcr.io/x/y:v1".into()));
    let err = w.finish().unwrap_err();
    assert!(err.to_string().contains("ghcr.io/x/y:v1"), "{err}");
    assert!(!path.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn unfinished_writer_keeps_the_previous_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bundle.tar");
    write(&path);
    let before = std::fs::read(&path).unwrap();
    let mut w = BundleWriter::create(&path).unwrap();
    w.add_bytes("x", b"partial").unwrap();
    drop(w); // like a crash before finish()
    assert_eq!(std::fs::read(&path).unwrap(), before);
}
