//! Bulk transfer between members, with real `image-factory serve` processes on loopback: a
//! release with one large extension layer is imported on A and replicated to B; C then fetches
//! it from both at once (striped), verifying every 1 MiB chunk against the blob's tree as it
//! arrives. A source killed (SIGKILL) mid-transfer costs nothing: its chunks come from the
//! other; a member whose chunks do not verify is dropped at that chunk, counted, and the blob
//! completes from the good one; a member that trickles is dropped as too slow.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image_factory::synth::{self, SynthOptions};
use serde_json::Value;

use crate::common::assets::V;
use crate::common::kit;
use crate::replication::{DEADLINE, Node, wait_for, wait_for_log};
use crate::replication_assets::{
    NO_SCRUB, cluster_of, counter, import, largest_blob, lists_release,
};

/// Size of the large extension layer (incompressible), MiB.
const BIG_MB: u64 = 64;

/// The synthetic kit release with one extension padded to [`BIG_MB`]; `None` without the kit.
fn big_bundle(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    kit::kit_inputs()?;
    let mut opts = SynthOptions::new(&dir.join("kit"));
    opts.versions = vec![V.into()];
    opts.arches = vec!["amd64".into()];
    opts.extensions = 1;
    opts.extension_size_mb = BIG_MB;
    synth::synth_release(&opts).expect("synth release");
    Some((dir.join("kit/bundle.tar"), dir.join("kit/signing-key.pub")))
}

/// `name{peer="<peer>"}` of `node`'s `/metrics` (0 when absent).
async fn per_peer(node: &Node, name: &str, peer: &str) -> f64 {
    let text = node.metrics_text().await;
    let prefix = format!("{name}{{peer=\"{peer}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

const RECEIVED: &str = "image_factory_replication_peer_bytes_received_total";

/// A and B running, both holding the release (imported on A, replicated to B), C joined but
/// not started; returns the nodes, C's directory, and the large blob's name. B has no transfer
/// memory to share (`replication.transferMemoryMiB: 0`): it fetches one chunk at a time, and
/// must still get the whole release.
async fn two_holders(tmp: &Path) -> Option<(Node, Node, PathBuf, String)> {
    let bundle = big_bundle(tmp)?;
    let (a, b, c) = (tmp.join("a"), tmp.join("b"), tmp.join("c"));
    import(&a, &bundle);
    cluster_of(tmp, &a, &[&b, &c]);
    let (_, name) = largest_blob(&a);
    let node_a = Node::start_with(&a, &[], &[NO_SCRUB]);
    let no_memory = ("IF_REPLICATION_TRANSFERMEMORYMIB", "0");
    let node_b = Node::start_with(&b, &node_a.bootstrap().await, &[NO_SCRUB, no_memory]);
    wait_for_log(&node_b, "release replicated").await;
    assert!(
        b.join("blobs").join(&name[..2]).join(&name).exists(),
        "B does not hold the large blob"
    );
    Some((node_a, node_b, c, name))
}

/// C's log lines about members dropped from a transfer that name `peer`.
fn dropped(node: &Node, peer: &str) -> Vec<String> {
    node.log()
        .lines()
        .filter(|l| l.contains("a member was dropped from a transfer") && l.contains(peer))
        .map(str::to_string)
        .collect()
}

/// The largest temporary file of `dir`'s blob store: how far a blob being fetched got.
fn partial_len(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("blobs/tmp"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Whether the blob `name` in `dir`'s store is whole: its bytes hash to its name.
fn holds_verified(dir: &Path, name: &str) -> bool {
    std::fs::read(dir.join("blobs").join(&name[..2]).join(name))
        .is_ok_and(|b| blake3::hash(&b).to_hex().as_str() == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_killed_mid_transfer_costs_nothing_and_the_blob_comes_striped_from_both() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((mut node_a, node_b, c, name)) = two_holders(tmp.path()).await else {
        return;
    };
    let (a_id, b_id) = (node_a.peer_id().await, node_b.peer_id().await);
    let mut boot = node_a.bootstrap().await;
    boot.extend(node_b.bootstrap().await);
    let node_c = Node::start_with(&c, &boot, &[NO_SCRUB]);

    // Striped: while the large blob is being written, both members send C its bytes; A dies
    // in the middle of it.
    let start = Instant::now();
    let mut base: Option<(f64, f64, u64)> = None;
    let (_, from_b) = loop {
        let (fa, fb) = (
            per_peer(&node_c, RECEIVED, &a_id).await,
            per_peer(&node_c, RECEIVED, &b_id).await,
        );
        let partial = partial_len(&c);
        match base {
            None if partial >= 8 << 20 => {
                base = Some((fa, fb, partial));
                continue;
            }
            // Both members sent chunks of it while it grew by 8 MiB or more. A member starved
            // of CPU (the suite runs beside QEMU boots) may send none for a while: only once
            // the blob has grown by 40 MiB (of 64) without both is it not striped.
            Some((a0, b0, p0)) if partial >= p0 + (8 << 20) && fa > a0 && fb > b0 => {
                break (fa, fb);
            }
            Some((a0, b0, p0)) if partial >= p0 + (40 << 20) => {
                panic!(
                    "not striped: A {a0} -> {fa}, B {b0} -> {fb} bytes while the large blob grew"
                )
            }
            _ => {}
        }
        assert!(
            start.elapsed() < DEADLINE,
            "C did not get 16 MiB into the large blob (A {fa}, B {fb}):\n{}",
            node_c.log()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    node_a.srv.child.kill().expect("kill -9 A");
    node_a.srv.child.wait().expect("reap A");
    assert!(
        !c.join("blobs").join(&name[..2]).join(&name).exists(),
        "the large blob was complete before A was killed"
    );
    assert!(
        !node_c.log().contains("release replicated"),
        "C finished before A was killed"
    );

    wait_for_log(&node_c, "release replicated").await;
    assert!(lists_release(&node_c).await, "C does not list {V}");
    assert!(
        holds_verified(&c, &name),
        "C's copy of the large blob is not whole"
    );
    assert!(
        !dropped(&node_c, &a_id).is_empty(),
        "A was not dropped from the transfer:\n{}",
        node_c.log()
    );
    // The rest came from B, resumed where A stopped (nothing fetched twice beyond in-flight).
    let after_b = per_peer(&node_c, RECEIVED, &b_id).await;
    assert!(after_b > from_b, "B sent nothing after A died");
    assert_eq!(
        counter(&node_c, "image_factory_replication_chunks_rejected_total").await,
        0.0
    );
    drop(node_a);

    // `peers` on C: what B holds (as B announced it) and the bytes C received from B.
    let st = wait_for(&node_c, "B's holdings", |st| {
        crate::replication::peer(st, &b_id).is_some_and(|p| {
            p["holds"]["releases"] == 1 && p["holds"]["bytes"].as_u64() > Some(BIG_MB << 20)
        })
    })
    .await;
    let b = crate::replication::peer(&st, &b_id).unwrap();
    assert_eq!(b["bytesReceived"].as_f64(), Some(after_b), "{b}");
    let models = b["holds"]["models"].as_u64().unwrap();
    let schematics = b["holds"]["schematics"].as_u64().unwrap();
    let table = crate::replication::peers_table(&node_c);
    let line = table
        .lines()
        .find(|l| l.starts_with(&b_id))
        .unwrap_or_else(|| panic!("no line for B:\n{table}"));
    assert!(
        line.contains(&format!("{schematics}/1/{models}/")),
        "B's holdings not shown:\n{table}"
    );
    assert!(line.contains("MiB/0B"), "bytes from B not shown:\n{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_sending_a_corrupted_chunk_is_dropped_at_that_chunk_and_the_blob_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((node_a, node_b, c, name)) = two_holders(tmp.path()).await else {
        return;
    };
    let (a_id, b_id) = (node_a.peer_id().await, node_b.peer_id().await);
    // B's copy rots on disk after B verified it (B keeps serving the tree it verified, and
    // reads the chunks as they are): one byte in every MiB.
    let rotten = node_b.dir.join("blobs").join(&name[..2]).join(&name);
    for mib in 0..BIG_MB {
        crate::common::assets::flip_byte(&rotten, (mib << 20) + 333);
    }
    let mut boot = node_a.bootstrap().await;
    boot.extend(node_b.bootstrap().await);
    let node_c = Node::start_with(&c, &boot, &[NO_SCRUB]);
    wait_for(&node_c, "C sees A and B", |st| {
        crate::replication::connected_member(st, &a_id)
            && crate::replication::connected_member(st, &b_id)
    })
    .await;

    wait_for_log(&node_c, "release replicated").await;
    assert!(lists_release(&node_c).await, "C does not list {V}");
    assert!(holds_verified(&c, &name), "C's copy is not whole");
    let lines = dropped(&node_c, &b_id);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("does not match the blob's tree")),
        "B was not dropped at a chunk:\n{}",
        node_c.log()
    );
    assert!(dropped(&node_c, &a_id).is_empty(), "A was dropped");
    assert!(
        counter(&node_c, "image_factory_replication_chunks_rejected_total").await >= 1.0,
        "no rejected chunk counted"
    );
    assert!(
        counter(
            &node_c,
            "image_factory_replication_verification_failures_total"
        )
        .await
            >= 1.0
    );
    assert!(per_peer(&node_c, RECEIVED, &a_id).await >= (BIG_MB << 20) as f64 / 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_trickles_is_dropped_and_the_blob_comes_from_the_other() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((node_a, node_b, c, name)) = two_holders(tmp.path()).await else {
        return;
    };
    // B comes back as a source that trickles: each chunk of the large blob leaves 20 s late,
    // within the 30 s a chunk may take (so B never fails), over the 10 s the chunk written
    // next may be held up while another member could send it. Kept, B alone would hold the
    // transfer to a few chunks a minute (far past the wait below).
    let b = node_b.dir.clone();
    node_b.stop();
    let slow = (image_factory::replication::BLOB_ANSWER_DELAY_ENV, "20000");
    let node_b = Node::start_with(&b, &node_a.bootstrap().await, &[NO_SCRUB, slow]);
    let (a_id, b_id) = (node_a.peer_id().await, node_b.peer_id().await);
    let mut boot = node_a.bootstrap().await;
    boot.extend(node_b.bootstrap().await);
    let node_c = Node::start_with(&c, &boot, &[NO_SCRUB]);

    wait_for_log(&node_c, "release replicated").await;
    assert!(holds_verified(&c, &name), "C's copy is not whole");
    let lines = dropped(&node_c, &b_id);
    assert!(
        lines.iter().any(|l| l.contains("too slow")),
        "B was not dropped as too slow:\n{}",
        node_c.log()
    );
    assert!(dropped(&node_c, &a_id).is_empty(), "A was dropped");
    assert_eq!(
        counter(&node_c, "image_factory_replication_chunks_rejected_total").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_still_fetching_a_blob_relays_it_and_the_source_takes_over_when_it_dies() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(bundle) = big_bundle(tmp.path()) else {
        return;
    };
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    import(&a, &bundle);
    cluster_of(tmp.path(), &a, &[&b, &c]);
    let (path, name) = largest_blob(&a);
    let size = std::fs::metadata(&path).unwrap().len();
    // A is a slow source (each chunk of a large blob leaves 300 ms late): B is still fetching
    // it when C starts on it, with room for a loaded machine (B needs about 19 s from 2 MiB).
    let slow = (image_factory::replication::BLOB_ANSWER_DELAY_ENV, "300");
    let node_a = Node::start_with(&a, &[], &[NO_SCRUB, slow]);
    let node_b = Node::start_with(&b, &node_a.bootstrap().await, &[NO_SCRUB]);
    let start = Instant::now();
    while partial_len(&b) < 2 << 20 {
        assert!(
            start.elapsed() < DEADLINE,
            "B did not get 2 MiB into the large blob:\n{}",
            node_b.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // B's status shows the transfer: the blob, what for, and how far it got.
    let shown = |st: &Value| {
        st["replication"]["transfers"]
            .as_array()
            .and_then(|l| l.iter().find(|t| t["blob"] == name.as_str()))
            .cloned()
    };
    let start = Instant::now();
    let t = loop {
        let st = node_b.status().await;
        if let Some(t) = shown(&st).filter(|t| t["received"].as_u64() >= Some(1 << 20)) {
            break t;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "B's status shows no progress of the large blob: {st}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(t["size"].as_u64(), Some(size), "{t}");
    assert!(t["received"].as_u64() < Some(size), "{t}");
    assert_eq!(t["purpose"], format!("release {V}"), "{t}");
    let (a_id, b_id) = (node_a.peer_id().await, node_b.peer_id().await);
    let mut boot = node_a.bootstrap().await;
    boot.extend(node_b.bootstrap().await);
    let node_c = Node::start_with(&c, &boot, &[NO_SCRUB]);

    // C takes the large blob from B, which sends what it holds as it arrives; A (holding it
    // whole) waits in reserve.
    let relay_line = |node: &Node| {
        node.log().lines().any(|l| {
            l.contains("a blob is fetched from a member still fetching it")
                && l.contains(&b_id)
                && l.contains(&name)
        })
    };
    let start = Instant::now();
    loop {
        let from_b = per_peer(&node_c, RECEIVED, &b_id).await;
        if relay_line(&node_c) && partial_len(&c) >= 16 << 20 && from_b >= (16 << 20) as f64 {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "C did not take 16 MiB of the large blob from B (from B: {from_b}):\n{}",
            node_c.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Everything B sent of the large blob, B was still fetching itself.
    let mut node_b = node_b;
    assert!(
        !b.join("blobs").join(&name[..2]).join(&name).exists(),
        "B held the large blob whole: nothing was relayed"
    );
    node_b.srv.child.kill().expect("kill -9 B");
    node_b.srv.child.wait().expect("reap B");

    // B dies mid-relay: A, in reserve, sends the rest; every chunk verifies.
    wait_for_log(&node_c, "release replicated").await;
    assert!(lists_release(&node_c).await, "C does not list {V}");
    assert!(holds_verified(&c, &name), "C's copy is not whole");
    let st = node_c.status().await;
    assert_eq!(
        shown(&st),
        None,
        "C still shows the large blob's transfer: {st}"
    );
    assert!(
        !dropped(&node_c, &b_id).is_empty(),
        "B was not dropped from the transfer:\n{}",
        node_c.log()
    );
    let fetched = node_c
        .log()
        .lines()
        .find(|l| l.contains("blob fetched from members") && l.contains(&name))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        fetched.contains(&format!("{a_id}=")) && fetched.contains(&format!("{b_id}=")),
        "the large blob did not come from B and then A: {fetched}"
    );
    assert_eq!(
        counter(&node_c, "image_factory_replication_chunks_rejected_total").await,
        0.0
    );
    drop(node_a);
}
