use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::catalog::{Arch, ExtensionEntry, ImageRecord, Release, Signatures};

#[test]
fn a_manifest_without_media_type_is_typed_by_its_shape() {
    let media = |v: serde_json::Value| media_type_of(&serde_json::to_vec(&v).unwrap());
    // Declared wins.
    let docker = "application/vnd.docker.distribution.manifest.list.v2+json";
    assert_eq!(
        media(json!({"schemaVersion": 2, "mediaType": docker, "manifests": []})).as_deref(),
        Some(docker)
    );
    // Undeclared: `manifests` makes an index (as distribution decides), even an empty one.
    assert_eq!(
        media(json!({"schemaVersion": 2, "manifests": []})).as_deref(),
        Some(MEDIA_OCI_INDEX)
    );
    let config = json!({"mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": Digest::of(b"c"), "size": 1});
    assert_eq!(
        media(json!({"schemaVersion": 2, "config": config, "layers": []})).as_deref(),
        Some(MEDIA_OCI_MANIFEST)
    );
    assert_eq!(
        media(json!({"schemaVersion": 2, "manifests": null, "layers": []})).as_deref(),
        Some(MEDIA_OCI_MANIFEST)
    );
    assert_eq!(media_type_of(b"not json"), None);
}

/// An image manifest with config `c` and one layer `l`, without a media type.
fn manifest(c: &[u8], l: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": Digest::of(c), "size": c.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": Digest::of(l), "size": l.len()}],
    }))
    .unwrap()
}

/// An index (without a media type) over `m` as linux/amd64.
fn index_of(m: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": MEDIA_OCI_MANIFEST, "digest": Digest::of(m),
            "size": m.len(), "platform": {"architecture": "amd64", "os": "linux"}}],
    }))
    .unwrap()
}

fn record(reference: &str, top: &[u8], manifest: &[u8]) -> ImageRecord {
    ImageRecord {
        reference: reference.into(),
        digest: Digest::of(top),
        manifest: Digest::of(manifest),
        size: 0,
    }
}

fn release(version: &str, images: Vec<ImageRecord>) -> Arc<Release> {
    Arc::new(Release {
        version: version.into(),
        imported_at: String::new(),
        source: String::new(),
        signatures: Signatures::Skipped,
        partial: false,
        arches: BTreeMap::new(),
        extensions: Vec::new(),
        overlays: Vec::new(),
        catalogs: images,
        talosctl: None,
        revision: None,
    })
}

#[test]
fn the_index_holds_tags_manifests_and_blobs_by_repository() {
    let m1 = manifest(b"c1", b"l1");
    let i1 = index_of(&m1);
    let m2 = manifest(b"c2", b"l2");
    let i2 = index_of(&m2);
    let single = manifest(b"c3", b"l3");
    let damaged = manifest(b"c4", b"l4");
    let mut blobs: HashMap<String, Vec<u8>> = HashMap::new();
    for b in [&m1, &i1, &m2, &i2, &single] {
        blobs.insert(Digest::of(b).hex().to_string(), b.clone());
    }
    // Stored under its digest, but other bytes.
    blobs.insert(Digest::of(&damaged).hex().to_string(), b"{}".to_vec());
    let releases = vec![
        release(
            "v1.10.0",
            vec![
                record("ghcr.io/siderolabs/imager:v1", &i1, &m1),
                record("mirror.local:5000/ns/siderolabs/sbc:v0", &single, &single),
                record("ghcr.io/siderolabs/broken:v0", &damaged, &damaged),
            ],
        ),
        // The newer release's image wins the shared tag.
        release(
            "v1.11.0",
            vec![record(
                &format!("ghcr.io/siderolabs/imager:v1@{}", Digest::of(&i2)),
                &i2,
                &m2,
            )],
        ),
    ];
    let read = |d: &Digest| Ok(blobs.get(d.hex()).cloned());
    let index = SourceIndex::build(&releases, &read);
    assert!(!index.complete, "the damaged image was not noticed");
    assert!(matches!(
        index.repo("siderolabs/broken"),
        Err(RegistryError::NameUnknown(_))
    ));
    let imager = index.repo("siderolabs/imager").unwrap();
    assert_eq!(imager.tags.get("v1"), Some(&Digest::of(&i2)));
    let held = |r: &Repository, b: &[u8]| r.manifests.get(Digest::of(b).hex()).cloned();
    // An index without `mediaType` is an index.
    assert_eq!(
        held(imager, &i1),
        Some(Held {
            media_type: MEDIA_OCI_INDEX.into(),
            size: i1.len() as u64,
            top: true
        })
    );
    assert_eq!(
        held(imager, &m2).map(|h| (h.media_type, h.top)),
        Some((MEDIA_OCI_MANIFEST.into(), false))
    );
    assert_eq!(
        imager
            .blobs
            .get(Digest::of(b"l1").hex())
            .map(String::as_str),
        Some("v1.10.0")
    );
    assert_eq!(
        imager
            .blobs
            .get(Digest::of(b"c2").hex())
            .map(String::as_str),
        Some("v1.11.0")
    );
    assert!(!imager.blobs.contains_key(Digest::of(b"l3").hex()));
    // A mirror's namespace is looked past, as signature identities are.
    for name in ["ns/siderolabs/sbc", "siderolabs/sbc"] {
        let sbc = index.repo(name).unwrap();
        assert_eq!(held(sbc, &single).map(|h| h.top), Some(true));
        assert!(sbc.blobs.contains_key(Digest::of(b"l3").hex()));
    }
    assert!(index.repo("other/sbc").is_err());
}

#[test]
fn extensions_imported_by_digest_are_tagged_as_their_catalog_lists_them() {
    let m = manifest(b"c", b"l");
    let i = index_of(&m);
    let blobs: HashMap<String, Vec<u8>> = [&m, &i]
        .into_iter()
        .map(|b| (Digest::of(b).hex().to_string(), b.clone()))
        .collect();
    let mut r = (*release("v1.11.0", Vec::new())).clone();
    r.extensions.push(ExtensionEntry {
        name: "siderolabs/ext".into(),
        reference: format!("ghcr.io/siderolabs/ext:1.0-v1.11.0@{}", Digest::of(&i)),
        digest: Digest::of(&i),
        author: String::new(),
        description: String::new(),
        images: BTreeMap::from([(
            Arch::Amd64,
            record(
                &format!("mirror.local/siderolabs/ext@{}", Digest::of(&i)),
                &i,
                &m,
            ),
        )]),
    });
    let read = |d: &Digest| Ok(blobs.get(d.hex()).cloned());
    let index = SourceIndex::build(&[Arc::new(r)], &read);
    assert!(index.complete);
    let ext = index.repo("siderolabs/ext").unwrap();
    assert_eq!(ext.tags.get("1.0-v1.11.0"), Some(&Digest::of(&i)));
    assert_eq!(tag_in("siderolabs/sbc:v0.1.0"), Some("v0.1.0"));
    assert_eq!(tag_in("host:5000/siderolabs/sbc"), None);
    assert_eq!(tag_in("host:5000/siderolabs/sbc@sha256:00"), None);
}
