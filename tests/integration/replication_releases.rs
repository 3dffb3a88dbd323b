//! A release imported again on any member replaces its record on every member: the records of
//! one version carry a revision, and members settle on the highest (real `image-factory serve`
//! processes on loopback, the synthetic kit release).

use serde_json::Value;

use crate::common::assets::V;
use crate::replication::{Node, wait_for};
use crate::replication_assets::{
    NO_SCRUB, counter, fetch, import_live_with, kit_pair_running, kit_schematic,
};

/// The kit release as `node`'s `/status` lists it.
fn listed(st: &Value) -> Option<&Value> {
    st["releases"]
        .as_array()?
        .iter()
        .find(|r| r["version"] == V)
}

/// Whether `st` lists the kit release as whole (every extension imported) at `revision`.
fn whole_at(st: &Value, revision: &Value) -> bool {
    listed(st).is_some_and(|r| r["partial"] == false && r["revision"] == *revision)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_imported_again_on_any_member_replaces_its_record_on_every_member() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(site) = kit_pair_running(tmp.path()).await else {
        return;
    };
    let (node_a, node_b, kit) = (&site.a, &site.b, &site.kit);

    // A imports one extension of the kit; B takes that record.
    import_live_with(node_a, kit, "fw-test");
    let first = wait_for(node_b, "B holds the partial release", |st| {
        listed(st).is_some_and(|r| r["partial"] == true)
    })
    .await;
    let r1 = listed(&first).unwrap()["revision"].clone();
    assert_eq!(r1["number"], 1, "{first:#}");
    assert_eq!(listed(&node_a.status().await).unwrap()["revision"], r1);

    // B, which did not import it first, imports it again whole: A takes B's record and the
    // blobs it adds.
    import_live_with(node_b, kit, "all");
    let st_b = node_b.status().await;
    let r2 = listed(&st_b).unwrap()["revision"].clone();
    assert_eq!(r2["number"], 2, "{st_b:#}");
    assert_eq!(listed(&st_b).unwrap()["partial"], false);
    wait_for(node_a, "A takes B's newer record", |st| whole_at(st, &r2)).await;

    // A builds with the extensions only the second import brought.
    let id = kit_schematic(node_a).await;
    let (sc, body) = fetch(node_a, &format!("/image/{id}/{V}/initramfs-amd64.xz")).await;
    assert_eq!(sc, 200, "{}", String::from_utf8_lossy(&body));

    // C, started later, takes the newest record, not the first.
    let node_c = Node::start_with(&site.c, &site.boot, &[NO_SCRUB]);
    wait_for(&node_c, "C holds the newest record", |st| whole_at(st, &r2)).await;

    for n in [node_a, node_b, &node_c] {
        assert!(whole_at(&n.status().await, &r2));
        assert_eq!(
            counter(n, "image_factory_replication_verification_failures_total").await,
            0.0
        );
    }
}
