//! Tests of the document store.

use super::*;
use crate::store::blobs::tests::store;

fn any(_: &str, _: &[u8]) -> bool {
    true
}

#[tokio::test]
async fn documents_round_trip_and_keep_only_a_reference_in_the_index() {
    let (_d, blobs) = store();
    let docs = DocStore::releases(blobs.clone());
    let (created, r1) = docs.put("v1.11.0", b"{\"a\":1}".to_vec()).await.unwrap();
    assert!(created);
    let (_, body) = docs.get("v1.11.0").unwrap().unwrap();
    assert_eq!(body, b"{\"a\":1}");
    let raw = blobs
        .meta()
        .get("release_docs", b"v1.11.0")
        .unwrap()
        .unwrap();
    assert!(raw.len() < 200, "{}", String::from_utf8_lossy(&raw));
    // A replacement gets a higher generation and removes the superseded file.
    let (created, r2) = docs.put("v1.11.0", b"{\"a\":2}".to_vec()).await.unwrap();
    assert!(!created);
    assert!(r2.generation > r1.generation);
    assert!(!docs.path(&r1.blake3).unwrap().exists());
    assert_eq!(docs.get("v1.11.0").unwrap().unwrap().1, b"{\"a\":2}");
    assert!(docs.get("v1.12.0").unwrap().is_none());
    assert!(docs.put("../x", Vec::new()).await.is_err());
}

#[tokio::test]
async fn a_lost_reference_is_found_and_restored_from_its_document() {
    let (_d, blobs) = store();
    let docs = DocStore::releases(blobs.clone());
    docs.put("v1.10.0", b"old".to_vec()).await.unwrap();
    let (_, keep) = docs.put("v1.11.0", b"one".to_vec()).await.unwrap();
    let (_, newer) = docs.put("v1.11.0", b"two".to_vec()).await.unwrap();
    // An older generation left behind (its removal was lost), and both references lost.
    let old = docs.write("v1.11.0", keep.generation, b"one").unwrap();
    blobs.meta().remove("release_docs", b"v1.11.0").unwrap();
    blobs.meta().remove("release_docs", b"v1.10.0").unwrap();
    let found = docs.check(false, false, &any).unwrap();
    assert_eq!(found.restored, ["v1.10.0", "v1.11.0"]);
    assert_eq!(found.superseded, 1);
    assert!(!found.repaired);
    assert!(
        docs.get("v1.11.0").unwrap().is_none(),
        "a check alone changes nothing"
    );
    let fixed = docs.check(true, false, &any).unwrap();
    assert!(fixed.repaired);
    assert_eq!(docs.get_ref("v1.11.0").unwrap(), Some(newer));
    assert_eq!(docs.get("v1.10.0").unwrap().unwrap().1, b"old");
    assert!(!docs.path(&old.blake3).unwrap().exists());
    assert!(docs.check(true, false, &any).unwrap().is_clean());
}

/// A schematic body too large to be kept inline.
fn large() -> Vec<u8> {
    format!(
        "customization: {{}} # {}\n",
        "x".repeat(crate::store::SMALL_VALUE)
    )
    .into_bytes()
}

#[tokio::test]
async fn missing_and_damaged_documents_are_reported() {
    let (_d, blobs) = store();
    let docs = DocStore::new(DocKind::Schematic, blobs.clone()).unwrap();
    let id = "a".repeat(64);
    let (_, r) = docs.put(&id, large()).await.unwrap();
    assert!(r.inline.is_none());
    let path = docs.path(&r.blake3).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let err = docs.get(&id).unwrap_err();
    assert!(format!("{err}").contains("damaged"), "{err}");
    // A deep check finds the damage behind an index entry.
    let deep = docs.check(false, true, &any).unwrap();
    assert_eq!((deep.missing.len(), deep.damaged.len()), (1, 1));
    blobs
        .meta()
        .remove("schematic_docs", id.as_bytes())
        .unwrap();
    let check = docs.check(true, false, &any).unwrap();
    assert_eq!(check.damaged, std::slice::from_ref(&path));
    assert!(check.restored.is_empty());
    std::fs::remove_file(&path).unwrap();
    let (_, r) = docs.put(&id, large()).await.unwrap();
    std::fs::remove_file(docs.path(&r.blake3).unwrap()).unwrap();
    assert_eq!(docs.check(true, false, &any).unwrap().missing, [id]);
}

/// The documents in a store's copy log.
fn copies(docs: &DocStore) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if let Some((log, _)) = &docs.copies {
        log.scan(|r| out.push(r.document.to_vec())).unwrap();
    }
    out
}

#[tokio::test]
async fn small_schematics_are_acknowledged_inline_and_copied_to_the_copy_log_after() {
    let (_d, blobs) = store();
    let docs = DocStore::new(DocKind::Schematic, blobs.clone()).unwrap();
    let id = "b".repeat(64);
    let (created, r) = docs
        .put(&id, b"customization: {}\n".to_vec())
        .await
        .unwrap();
    assert!(created);
    assert_eq!(r.inline.as_deref(), Some("customization: {}\n"));
    assert!(
        !docs.path(&r.blake3).unwrap().exists(),
        "no file of its own"
    );
    docs.flush().await.unwrap();
    let document = format!("image-factory-document/1 schematic {id} 0\ncustomization: {{}}\n");
    assert_eq!(copies(&docs), [document.as_bytes()]);
    // A stop before the copy was appended: the check appends it, and that is no loss.
    let log = docs.dir().join("copies/0000000000000000.log");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(10)
        .unwrap();
    let docs = DocStore::new(DocKind::Schematic, blobs.clone()).unwrap();
    assert!(copies(&docs).is_empty());
    assert_eq!(docs.get(&id).unwrap().unwrap().1, b"customization: {}\n");
    let check = docs.check(true, false, &any).unwrap();
    assert_eq!((check.rewritten, check.missing.len()), (1, 0));
    assert!(check.is_clean());
    assert_eq!(copies(&docs).len(), 1);
    // The copy is what the index is rebuilt from, inline again.
    blobs
        .meta()
        .remove("schematic_docs", id.as_bytes())
        .unwrap();
    assert_eq!(
        docs.check(true, true, &any).unwrap().restored,
        std::slice::from_ref(&id)
    );
    assert_eq!(docs.get_ref(&id).unwrap(), Some(r.clone()));
    // A damaged inline entry (its body no longer the one of its key) is restored from the
    // copy by a deep check.
    blobs
        .meta()
        .put(
            "schematic_docs",
            id.as_bytes(),
            b"\x01customization: {tampered: true}\n",
        )
        .unwrap();
    let original = |_: &str, body: &[u8]| body == b"customization: {}\n";
    let deep = docs.check(true, true, &original).unwrap();
    assert_eq!(deep.restored, std::slice::from_ref(&id));
    assert_eq!(docs.get_ref(&id).unwrap(), Some(r));
}

#[test]
fn legacy_records_move_into_documents() {
    let (_d, blobs) = store();
    let meta = Arc::clone(blobs.meta());
    let ids: Vec<String> = (0..3).map(|i| format!("{i:x}").repeat(64)).collect();
    for id in &ids {
        let body = format!("customization: {{}} # {id}\n");
        meta.put("schematics", id.as_bytes(), body.as_bytes())
            .unwrap();
    }
    meta.put("releases", b"v1.11.0", b"{\"version\":\"v1.11.0\"}")
        .unwrap();
    let docs = DocStore::new(DocKind::Schematic, blobs.clone()).unwrap();
    // One of them was moved already (a migration cut short after indexing it).
    docs.put_blocking(&ids[0], b"moved before").unwrap();
    assert_eq!(docs.migrate_legacy("schematics").unwrap(), 3);
    assert_eq!(meta.count("schematics").unwrap(), 0);
    assert_eq!(docs.get(&ids[0]).unwrap().unwrap().1, b"moved before");
    for id in &ids[1..] {
        let body = format!("customization: {{}} # {id}\n");
        assert_eq!(docs.get(id).unwrap().unwrap().1, body.as_bytes());
    }
    assert_eq!(docs.count().unwrap(), 3);
    assert_eq!(docs.migrate_legacy("schematics").unwrap(), 0);
    let releases = DocStore::releases(blobs);
    assert_eq!(releases.migrate_legacy("releases").unwrap(), 1);
    assert!(releases.get_ref("v1.11.0").unwrap().unwrap().generation > 0);
    assert!(releases.check(false, true, &any).unwrap().is_clean());
}
