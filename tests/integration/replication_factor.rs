//! Eager replication of models (`replication.factor`) with real `image-factory serve`
//! processes on loopback: a model built on one member is fetched, unasked for by any client,
//! by exactly the members rendezvous hashing designates, and by nobody with the default
//! factor. Which members are designated is computed here from the rule (the BLAKE3 of the
//! cache key, a zero byte and the peer ID's bytes, highest wins), not asked of the program.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::assets::{V, sha256_hex};
use crate::replication::{Node, wait_for_log};
use crate::replication_assets::{
    NO_SCRUB, built, cluster_of, cluster_with_release_all, counter, fetch, import, kit_bundle,
    kit_schematic,
};

/// What a member logs when it stored a model a member asked it to hold.
const PUSHED: &str = "model replicated at the request of a member";

/// The cache key of the first model `node` logged as built.
fn built_key(node: &Node) -> String {
    node.log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "asset built")
        .and_then(|v| v["key"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no `asset built` line:\n{}", node.log()))
}

/// The rendezvous weight of peer `peer` (as `/status` shows it) for cache key `key`.
fn weight(key: &str, peer: &str) -> [u8; 32] {
    let id: libp2p::PeerId = peer.parse().expect("peer ID");
    let mut h = blake3::Hasher::new();
    h.update(key.as_bytes());
    h.update(&[0]);
    h.update(&id.to_bytes());
    *h.finalize().as_bytes()
}

/// The file of blob `bytes` in data directory `data`'s blob store.
fn blob_file(data: &Path, bytes: &[u8]) -> PathBuf {
    let name = blake3::hash(bytes).to_hex().to_string();
    data.join("blobs").join(&name[..2]).join(&name)
}

/// Sums counter `name` over `nodes`.
async fn total(nodes: &[&Node], name: &str) -> f64 {
    let mut sum = 0.0;
    for n in nodes {
        sum += counter(n, name).await;
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_factor_two_a_built_model_reaches_the_members_rendezvous_hashing_designates_only() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(bundle) = kit_bundle(tmp.path()) else {
        return;
    };
    let dirs: Vec<PathBuf> = ["a", "b", "c"].iter().map(|d| tmp.path().join(d)).collect();
    import(&dirs[0], &bundle);
    cluster_of(tmp.path(), &dirs[0], &[&dirs[1], &dirs[2]]);
    let nodes = cluster_with_release_all(
        &dirs,
        &[
            ("IF_REPLICATION_FACTOR", "2"),
            ("IF_TEST_PLACEMENT_SETTLE_MS", "500"),
        ],
    )
    .await;
    let id = kit_schematic(&nodes[0]).await;
    for n in &nodes[1..] {
        assert_eq!(kit_schematic(n).await, id);
    }

    let path = format!("/image/{id}/{V}/initramfs-amd64.xz");
    let (st, on_a) = fetch(&nodes[0], &path).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&on_a));
    assert_eq!(built(&nodes[0]).await, 1.0);
    let key = built_key(&nodes[0]);
    // The two copies belong to the two ranked highest of all three; the builder A asks those
    // that are not itself: one when A ranks among them, both when it does not.
    let mut ranked = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        ranked.push((weight(&key, &n.peer_id().await), i));
    }
    ranked.sort_by_key(|r| std::cmp::Reverse(r.0));
    let designated: Vec<usize> = ranked[..2].iter().map(|(_, i)| *i).collect();
    let chosen: Vec<&Node> = [1, 2]
        .iter()
        .filter(|i| designated.contains(i))
        .map(|i| &nodes[*i])
        .collect();
    let others: Vec<&Node> = [1, 2]
        .iter()
        .filter(|i| !designated.contains(i))
        .map(|i| &nodes[*i])
        .collect();
    assert_eq!(chosen.len(), if designated.contains(&0) { 1 } else { 2 });

    for n in &chosen {
        wait_for_log(n, PUSHED).await;
        let file = blob_file(&n.dir, &on_a);
        let stored = std::fs::read(&file)
            .unwrap_or_else(|e| panic!("{} not stored on a chosen member: {e}", file.display()));
        assert_eq!(sha256_hex(&stored), sha256_hex(&on_a), "other bytes stored");
        assert_eq!(
            counter(n, "image_factory_replication_pushes_received_total").await,
            1.0
        );
        // Nobody asked the chosen member for it, and it built nothing.
        assert_eq!(built(n).await, 0.0, "{}", n.log());
        assert_eq!(counter(n, "image_factory_assets_fetched_total").await, 0.0);
    }
    assert_eq!(
        counter(&nodes[0], "image_factory_replication_pushes_sent_total").await,
        chosen.len() as f64
    );
    // A member not designated was not asked and holds nothing of it.
    for other in &others {
        assert!(!other.log().contains(PUSHED), "{}", other.log());
        assert!(
            !blob_file(&other.dir, &on_a).exists(),
            "a member not designated holds a copy"
        );
        assert_eq!(
            counter(other, "image_factory_replication_pushes_received_total").await,
            0.0
        );
    }
    let all: Vec<&Node> = nodes.iter().collect();
    assert_eq!(
        total(&all, "image_factory_replication_pushes_failed_total").await,
        0.0
    );

    // Asked for it now, a chosen member serves its own copy: no build, no fetch.
    for n in &chosen {
        let (st, served) = fetch(n, &path).await;
        assert_eq!(st, 200);
        assert_eq!(sha256_hex(&served), sha256_hex(&on_a));
        assert_eq!(built(n).await, 0.0);
        assert_eq!(counter(n, "image_factory_assets_fetched_total").await, 0.0);
    }

    // Each collector counts its copy as one the cluster keeps exactly when it was chosen: a
    // member not designated gets the model on demand and holds neither of the two copies.
    for n in &others {
        let (st, _) = fetch(n, &path).await;
        assert_eq!(st, 200);
    }
    for (n, held) in chosen
        .iter()
        .map(|n| (*n, true))
        .chain(others.iter().map(|n| (*n, false)))
    {
        let out = gc_dry_run(n);
        assert!(out.contains(&key), "{out}");
        assert_eq!(
            out.contains("a copy held for the cluster"),
            held,
            "{}: {out}",
            n.dir.display()
        );
    }

    // A designated member leaves: the member not designated before becomes designated, and
    // the remaining designated member, which holds a copy, asks it to hold one. (It fetched
    // the model on demand above, so its copy is collected first.)
    let y = (0..3)
        .find(|i| !designated.contains(i))
        .expect("three nodes");
    let (x, z) = (designated[0], designated[1]);
    let token = nodes[y].dir.join("keys/admin-token").display().to_string();
    crate::replication::cli(&[
        "gc",
        "--max-bytes",
        "1",
        "--server",
        &nodes[y].admin(),
        "--admin-token-file",
        &token,
    ]);
    assert!(
        !blob_file(&nodes[y].dir, &on_a).exists(),
        "the collector left the copy"
    );
    let x_id = nodes[x].peer_id().await;
    crate::replication::cli(&[
        "cluster",
        "remove",
        "--server",
        &nodes[z].admin(),
        "--data-dir",
        &nodes[z].dir.display().to_string(),
        &x_id,
    ]);
    wait_for_log(&nodes[y], PUSHED).await;
    let stored = std::fs::read(blob_file(&nodes[y].dir, &on_a)).expect("the new copy");
    assert_eq!(sha256_hex(&stored), sha256_hex(&on_a));
    assert!(
        nodes[z]
            .log()
            .contains("the members changed: asking the members now designated"),
        "{}",
        nodes[z].log()
    );
}

/// `image-factory gc --dry-run --max-bytes 1` through `node`'s admin socket: its stdout.
fn gc_dry_run(node: &Node) -> String {
    let token = node.dir.join("keys/admin-token").display().to_string();
    crate::replication::cli(&[
        "gc",
        "--dry-run",
        "--max-bytes",
        "1",
        "--server",
        &node.admin(),
        "--admin-token-file",
        &token,
    ])
}

/// How long the factor-1 test watches for a copy that must not come (the factor-2 test sees
/// its push arrive well under a second after the build).
const NO_PUSH_WINDOW: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_default_factor_nothing_is_pushed() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(bundle) = kit_bundle(tmp.path()) else {
        return;
    };
    let dirs: Vec<PathBuf> = ["a", "b"].iter().map(|d| tmp.path().join(d)).collect();
    import(&dirs[0], &bundle);
    cluster_of(tmp.path(), &dirs[0], &[&dirs[1]]);
    let nodes = cluster_with_release_all(&dirs, &[]).await;
    let id = kit_schematic(&nodes[0]).await;
    assert_eq!(kit_schematic(&nodes[1]).await, id);
    let path = format!("/image/{id}/{V}/initramfs-amd64.xz");
    let (st, on_a) = fetch(&nodes[0], &path).await;
    assert_eq!(st, 200);
    let file = blob_file(&nodes[1].dir, &on_a);
    let start = Instant::now();
    while start.elapsed() < NO_PUSH_WINDOW {
        assert!(!file.exists(), "B holds a copy nobody asked for");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all: Vec<&Node> = nodes.iter().collect();
    for name in [
        "image_factory_replication_pushes_sent_total",
        "image_factory_replication_pushes_received_total",
        "image_factory_replication_pushes_failed_total",
    ] {
        assert_eq!(total(&all, name).await, 0.0, "{name}");
    }
    // B gets it on demand, as before.
    let (st, on_b) = fetch(&nodes[1], &path).await;
    assert_eq!(st, 200);
    assert_eq!(sha256_hex(&on_b), sha256_hex(&on_a));
    assert_eq!(
        counter(&nodes[1], "image_factory_assets_fetched_total").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_down_when_the_model_was_built_is_asked_when_it_reconnects() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(bundle) = kit_bundle(tmp.path()) else {
        return;
    };
    let dirs: Vec<PathBuf> = ["a", "b"].iter().map(|d| tmp.path().join(d)).collect();
    import(&dirs[0], &bundle);
    cluster_of(tmp.path(), &dirs[0], &[&dirs[1]]);
    // Two members and two copies: B is always the one asked.
    let factor = ("IF_REPLICATION_FACTOR", "2");
    let mut nodes = cluster_with_release_all(&dirs, &[factor]).await;
    let id = kit_schematic(&nodes[0]).await;
    assert_eq!(kit_schematic(&nodes[1]).await, id);
    let boot = nodes[0].bootstrap().await;
    nodes.pop().expect("B").stop();

    let path = format!("/image/{id}/{V}/initramfs-amd64.xz");
    let (st, on_a) = fetch(&nodes[0], &path).await;
    assert_eq!(st, 200);
    wait_for_log(&nodes[0], "it is asked when it connects").await;
    assert!(!blob_file(&dirs[1], &on_a).exists());

    let b = Node::start_with(&dirs[1], &boot, &[NO_SCRUB, factor]);
    wait_for_log(&b, PUSHED).await;
    let stored = std::fs::read(blob_file(&dirs[1], &on_a)).expect("B's copy");
    assert_eq!(sha256_hex(&stored), sha256_hex(&on_a));
    assert_eq!(built(&b).await, 0.0);
    assert_eq!(
        counter(&nodes[0], "image_factory_replication_pushes_sent_total").await,
        1.0
    );
}
