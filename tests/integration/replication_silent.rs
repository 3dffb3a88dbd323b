//! Silent members, with real `image-factory serve` processes on loopback: a member stopped with
//! SIGSTOP keeps its sockets, so its TCP connections stay open and the transport notices
//! nothing. Its peers must still tell the truth in `/status` and `image-factory peers` within
//! the silence bound (three ping intervals), must not fetch a model from it, and must not wait
//! on its build lease beyond the lease bound; once it resumes (SIGCONT) it answers again and
//! nothing breaks. Timing is asserted only loosely (the machine is noisy): every wait polls
//! with a generous deadline.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::assets::{V, sha256_hex};
use crate::common::client;
use crate::replication::{Node, peer, peers_table, wait_for, wait_for_log};
use crate::replication_assets::{
    built, cluster_of, cluster_with_release_env, counter, fetch, import, kit_bundle, kit_schematic,
};

/// TCP only: the transport that never notices a stopped peer (QUIC closes the connection
/// after its own idle timeout, which would hide what is tested here).
const TCP_ONLY: (&str, &str) = ("IF_REPLICATION_LISTENADDRS", "/ip4/127.0.0.1/tcp/0");

/// Sends `signal` (`STOP`, `CONT`) to `node`'s process.
fn signal(node: &Node, signal: &str) {
    let pid = node.srv.child.id().to_string();
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .expect("kill");
    assert!(ok.success(), "kill -{signal} {pid}");
}

/// Whether `st` shows `other` connected but not responding.
fn silent(st: &Value, other: &str) -> bool {
    peer(st, other).is_some_and(|p| {
        p["connected"] == true && p["responding"] == false && p["lastAnswer"].is_string()
    })
}

/// Whether `st` shows `other` as a connected member that answers.
fn responding(st: &Value, other: &str) -> bool {
    peer(st, other).is_some_and(|p| {
        p["state"] == "member" && p["connected"] == true && p["responding"] == true
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_member_is_shown_silent_is_no_source_and_answers_again_when_resumed() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(bundle) = kit_bundle(tmp.path()) else {
        return;
    };
    let dirs: Vec<PathBuf> = ["a", "b"].iter().map(|d| tmp.path().join(d)).collect();
    import(&dirs[0], &bundle);
    cluster_of(tmp.path(), &dirs[0], &[&dirs[1]]);
    let nodes = cluster_with_release_env(&dirs, &[&[TCP_ONLY], &[TCP_ONLY]]).await;
    let (node_a, node_b) = (&nodes[0], &nodes[1]);
    let b_id = node_b.peer_id().await;
    let id = kit_schematic(node_a).await;
    assert_eq!(kit_schematic(node_b).await, id);

    // B builds the model: A learns that B holds it (B's announcement and provider record).
    let path = format!("/image/{id}/{V}/initramfs-amd64.xz");
    let (sb, on_b) = fetch(node_b, &path).await;
    assert_eq!(sb, 200, "{}", String::from_utf8_lossy(&on_b));
    assert_eq!(built(node_b).await, 1.0);
    assert!(responding(&node_a.status().await, &b_id));

    // B stops: its socket stays open, A's /status says it is silent all the same.
    signal(node_b, "STOP");
    let stopped = Instant::now();
    let st = wait_for(node_a, "B shown silent", |st| silent(st, &b_id)).await;
    let took = stopped.elapsed();
    assert_eq!(peer(&st, &b_id).unwrap()["state"], "member", "{st:#}");
    wait_for_log(node_a, "member silent").await;
    let table = peers_table(node_a);
    let line = table
        .lines()
        .find(|l| l.starts_with(b_id.as_str()))
        .unwrap_or_else(|| panic!("B missing:\n{table}"));
    assert!(
        line.contains(" SILENT ") && line.contains("no answer since "),
        "{line}"
    );
    assert_eq!(
        counter(node_a, "image_factory_replication_members_silent").await,
        1.0
    );
    assert_eq!(
        counter(node_a, "image_factory_replication_members_connected").await,
        0.0
    );

    // A needs the model: B is no source while silent, so A builds it without asking B.
    let (sa, on_a) = fetch(node_a, &path).await;
    assert_eq!(sa, 200, "{}", String::from_utf8_lossy(&on_a));
    assert_eq!(sha256_hex(&on_a), sha256_hex(&on_b));
    assert_eq!(built(node_a).await, 1.0, "{}", node_a.log());
    assert!(
        !node_a
            .log()
            .contains("a model was not fetched from a member"),
        "A tried the silent B as a source:\n{}",
        node_a.log()
    );
    assert_eq!(
        counter(node_a, "image_factory_replication_lease_waits_total").await,
        0.0
    );

    // B resumes: it answers pings again and both see each other responding.
    signal(node_b, "CONT");
    wait_for(node_a, "B responding again", |st| responding(st, &b_id)).await;
    wait_for_log(node_a, "member answers again").await;
    let a_id = node_a.peer_id().await;
    wait_for(node_b, "A responding for B", |st| responding(st, &a_id)).await;
    assert_eq!(
        counter(node_a, "image_factory_replication_members_silent").await,
        0.0
    );
    let table = peers_table(node_a);
    assert!(!table.contains("SILENT"), "{table}");
    eprintln!("B shown silent {took:?} after SIGSTOP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_builder_stopped_while_holding_its_lease_is_waited_for_only_to_the_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(bundle) = kit_bundle(tmp.path()) else {
        return;
    };
    let dirs: Vec<PathBuf> = ["a", "b"].iter().map(|d| tmp.path().join(d)).collect();
    import(&dirs[0], &bundle);
    cluster_of(tmp.path(), &dirs[0], &[&dirs[1]]);
    // A holds each lease it takes for a while before building: long enough to stop it there.
    let hold = ("IF_TEST_BUILD_DELAY_MS", "5000");
    let nodes = cluster_with_release_env(&dirs, &[&[TCP_ONLY, hold], &[TCP_ONLY]]).await;
    let (node_a, node_b) = (&nodes[0], &nodes[1]);
    let id = kit_schematic(node_a).await;
    assert_eq!(kit_schematic(node_b).await, id);
    let path = format!("/image/{id}/{V}/initramfs-amd64.xz");

    // A is asked first: it takes the lease (announced to B), then stops before building.
    let url = format!("http://{}{path}", node_a.srv.http);
    let on_a = tokio::spawn(async move {
        let resp = client()
            .get(url)
            .timeout(Duration::from_secs(300))
            .send()
            .await
            .expect("get on A");
        let st = resp.status().as_u16();
        (st, resp.bytes().await.expect("body").to_vec())
    });
    wait_for_log(node_a, "building it here under a lease").await;
    signal(node_a, "STOP");
    let stopped = Instant::now();

    // B is asked: it waits on A's lease, A's silence ends the wait, and B builds.
    // Loosely: the silence bound (15 s) or the lease bound (20 s), a provider lookup and a
    // build, far from the 30 min a renewed lease may be waited on.
    let (sb, on_b) = tokio::time::timeout(Duration::from_secs(120), fetch(node_b, &path))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "B still waits on the stopped A's lease after 120 s:\n{}",
                node_b.log()
            )
        });
    let waited = stopped.elapsed();
    assert_eq!(sb, 200, "{}", String::from_utf8_lossy(&on_b));
    let log_b = node_b.log();
    assert_eq!(
        counter(node_b, "image_factory_replication_lease_waits_total").await,
        1.0,
        "B did not wait on A's lease:\n{log_b}"
    );
    assert_eq!(built(node_b).await, 1.0, "{log_b}");
    assert_eq!(
        counter(node_b, "image_factory_replication_builds_avoided_total").await,
        0.0
    );
    // What ended the wait: B saw A silent (logged by its next upkeep tick).
    wait_for_log(node_b, "member silent").await;

    // A resumes and finishes its own build: the same bytes, nothing broken on either side.
    signal(node_a, "CONT");
    let (sa, body_a) = tokio::time::timeout(Duration::from_secs(300), on_a)
        .await
        .expect("A answers once resumed")
        .expect("request on A");
    assert_eq!(sa, 200, "{}", String::from_utf8_lossy(&body_a));
    assert_eq!(sha256_hex(&body_a), sha256_hex(&on_b), "A and B differ");
    for n in [node_a, node_b] {
        let (st, again) = fetch(n, &path).await;
        assert_eq!(st, 200);
        assert_eq!(sha256_hex(&again), sha256_hex(&on_b));
        assert_eq!(
            counter(n, "image_factory_replication_verification_failures_total").await,
            0.0
        );
    }
    let b_id = node_b.peer_id().await;
    wait_for(node_a, "B responding for A", |st| responding(st, &b_id)).await;
    eprintln!("B answered {waited:?} after A stopped holding the lease");
}
