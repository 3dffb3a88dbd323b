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
        keyless: false,
        keyless_bundles: false,
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

/// `image-factory import` of `bundle` into the running `node` through its admin API.
pub(crate) fn import_live(node: &Node, kit: &(PathBuf, PathBuf)) {
    import_live_with(node, kit, "all");
}

/// [`import_live`] with only the extensions `extensions` (`all` or names).
pub(crate) fn import_live_with(node: &Node, (bundle, key): &(PathBuf, PathBuf), extensions: &str) {
    kit::bin(&[
        "import",
        &bundle.display().to_string(),
        "--server",
        &node.admin(),
        "--admin-token-file",
        &node.dir.join("keys/admin-token").display().to_string(),
        "--trust-key",
        &key.display().to_string(),
        "--extensions",
        extensions,
    ]);
}

/// The kit release in `tmp` and the data directories `a`, `b`, `c` of a cluster A founded
/// (none running); `None` (with a notice) without the kit inputs.
pub(crate) fn kit_cluster_of_three(tmp: &Path) -> Option<((PathBuf, PathBuf), [PathBuf; 3])> {
    let kit = kit_bundle(tmp)?;
    let dirs = ["a", "b", "c"].map(|d| tmp.join(d));
    cluster_of(tmp, &dirs[0], &[&dirs[1], &dirs[2]]);
    Some((kit, dirs))
}

/// Two running members of the kit cluster of three (see [`kit_cluster_of_three`]), B connected
/// to A; C's data directory is not started.
pub(crate) struct KitPair {
    /// The kit release's bundle and trust key.
    pub kit: (PathBuf, PathBuf),
    /// C's data directory.
    pub c: PathBuf,
    /// The founder.
    pub a: Node,
    /// A member joined to A.
    pub b: Node,
    /// A's bootstrap addresses.
    pub boot: Vec<String>,
}

/// Starts A and B of the kit cluster of three in `tmp` and waits until B is connected to A;
/// `None` (with a notice) without the kit inputs.
pub(crate) async fn kit_pair_running(tmp: &Path) -> Option<KitPair> {
    let (kit, [a, b, c]) = kit_cluster_of_three(tmp)?;
    let node_a = Node::start_with(&a, &[], &[NO_SCRUB]);
    let boot = node_a.bootstrap().await;
    let node_b = Node::start_with(&b, &boot, &[NO_SCRUB]);
    let a_id = node_a.peer_id().await;
    crate::replication::wait_for(&node_b, "B joins A", |st| {
        crate::replication::connected_member(st, &a_id)
    })
    .await;
    Some(KitPair {
        kit,
        c,
        a: node_a,
        b: node_b,
        boot,
    })
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
    crate::replication::invite_offline_env(&a, &inv, &[("IF_HTTP_EXTERNALURL", SITE)]);
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

/// Variables for a node whose own checks must not touch its blobs during a test.
pub(crate) const NO_SCRUB: (&str, &str) = ("IF_CACHE_SCRUBINTERVALSECONDS", "0");

/// A counter of `node`'s `/metrics` (0 when absent).
pub(crate) async fn counter(node: &Node, name: &str) -> f64 {
    let text = node.metrics_text().await;
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split([' ', '{']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A founds a cluster on its data directory and invites `others`, which join; no node runs.
pub(crate) fn cluster_of(tmp: &Path, a: &Path, others: &[&Path]) {
    for d in others {
        let inv = tmp.join(format!(
            "{}.invitation",
            d.file_name().unwrap().to_string_lossy()
        ));
        crate::replication::invite_offline(a, &inv);
        join(d, &inv);
    }
}

/// Whether `node` lists release `V` on `/versions`.
pub(crate) async fn lists_release(node: &Node) -> bool {
    let (st, body) = fetch(node, "/versions").await;
    st == 200 && String::from_utf8_lossy(&body).contains(V)
}

/// POSTs the kit schematic to `node`; returns its ID.
pub(crate) async fn kit_schematic(node: &Node) -> String {
    let resp = client()
        .post(format!("http://{}/schematics", node.srv.http))
        .body(kit::SCHEMATIC)
        .send()
        .await
        .expect("post schematic");
    assert!(resp.status().is_success());
    let v: serde_json::Value = resp.json().await.expect("json");
    v["id"].as_str().unwrap().to_string()
}

/// The `via` and `peer_id` of `node`'s first `release replicated` log line.
pub(crate) fn replicated(node: &Node) -> Option<(String, String)> {
    node.log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "release replicated")
        .map(|v| {
            let field = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            (field("via"), field("peer_id"))
        })
}

/// The `via` of `node`'s first `release replicated` log line.
fn replicated_via(node: &Node) -> Option<String> {
    replicated(node).map(|(via, _)| via)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_imported_on_one_member_is_buildable_on_another_without_importing() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(KitPair {
        kit,
        c,
        a: node_a,
        b: node_b,
        boot,
    }) = kit_pair_running(tmp.path()).await
    else {
        return;
    };

    // Imported on the running A (admin API): announced, and B fetches it at once.
    import_live(&node_a, &kit);
    crate::replication::wait_for_log(&node_b, "release replicated").await;
    assert_eq!(replicated_via(&node_b).as_deref(), Some("announcement"));
    assert!(lists_release(&node_b).await, "B does not list {V}");

    // C, started later, catches up when it connects (anti-entropy).
    let node_c = Node::start_with(&c, &boot, &[NO_SCRUB]);
    crate::replication::wait_for_log(&node_c, "release replicated").await;
    assert_eq!(replicated_via(&node_c).as_deref(), Some("anti-entropy"));
    assert!(lists_release(&node_c).await, "C does not list {V}");
    for n in [&node_b, &node_c] {
        assert_eq!(
            counter(n, "image_factory_replication_releases_received_total").await,
            1.0
        );
        assert_eq!(
            counter(n, "image_factory_replication_verification_failures_total").await,
            0.0
        );
    }
    assert!(counter(&node_a, "image_factory_replication_blob_bytes_sent_total").await > 0.0);

    // C builds from it, and the model is A's byte for byte.
    let id = kit_schematic(&node_c).await;
    assert_eq!(kit_schematic(&node_a).await, id);
    let path = format!("/image/{id}/{V}/initramfs-amd64.xz");
    let (sc, on_c) = fetch(&node_c, &path).await;
    assert_eq!(sc, 200, "{}", String::from_utf8_lossy(&on_c));
    let (sa, on_a) = fetch(&node_a, &path).await;
    assert_eq!(sa, 200);
    assert_eq!(sha256_hex(&on_a), sha256_hex(&on_c));
    let (sk, kernel) = fetch(&node_c, &format!("/image/{id}/{V}/kernel-amd64")).await;
    assert_eq!(sk, 200);
    assert_eq!(&kernel[0x202..0x206], b"HdrS", "not a bzImage");

    // A blob of the release damaged on C: a build finds it, sets it aside and marks the
    // release; when C next compares releases with A it takes the release again, which brings
    // the blob back and clears the mark.
    let name = blake3::hash(&kernel).to_hex().to_string();
    let kernel_file = c.join("blobs").join(&name[..2]).join(&name);
    assert!(
        kernel_file.is_file(),
        "the kernel is not the release's blob"
    );
    crate::common::assets::flip_byte(&kernel_file, 4096);
    let (sd, text) = fetch(&node_c, &format!("/image/{id}/{V}/metal-amd64.iso")).await;
    assert_eq!(sd, 503, "{}", String::from_utf8_lossy(&text));
    let damaged = |st: &serde_json::Value| {
        st["releases"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["version"] == V))
            .is_some_and(|r| !r["damaged"].is_null())
    };
    assert!(damaged(&node_c.status().await));
    assert!(!kernel_file.exists(), "the damaged blob is still in place");
    drop(node_c);
    let node_c = Node::start_with(&c, &boot, &[NO_SCRUB]);
    crate::replication::wait_for(&node_c, "C takes the damaged release again", |st| {
        !damaged(st)
    })
    .await;
    let healed = std::fs::read(&kernel_file).expect("the blob is back");
    assert_eq!(blake3::hash(&healed).to_hex().as_str(), name);
    assert!(lists_release(&node_c).await);
}

/// The largest blob file in `data`'s blob store (not a document) and its name.
pub(crate) fn largest_blob(data: &Path) -> (PathBuf, String) {
    let mut best: Option<(u64, PathBuf)> = None;
    for fan in std::fs::read_dir(data.join("blobs")).unwrap().flatten() {
        let name = fan.file_name().to_string_lossy().into_owned();
        if name.len() != 2 || !fan.path().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(fan.path()).unwrap().flatten() {
            let len = f.metadata().unwrap().len();
            if best.as_ref().is_none_or(|(l, _)| len > *l) {
                best = Some((len, f.path()));
            }
        }
    }
    let (_, path) = best.expect("no blob");
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    (path, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_sending_bytes_that_do_not_verify_is_refused_and_nothing_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(bundle) = kit_bundle(tmp.path()) else {
        return;
    };
    let (a, c) = (tmp.path().join("a"), tmp.path().join("c"));
    import(&a, &bundle);
    cluster_of(tmp.path(), &a, &[&c]);
    // One of A's blobs rots on disk: A serves it as it is (it does not check what it sends).
    let (rotten, name) = largest_blob(&a);
    crate::common::assets::flip_byte(&rotten, 4096);
    let node_a = Node::start_with(&a, &[], &[NO_SCRUB]);
    let node_c = Node::start_with(&c, &node_a.bootstrap().await, &[NO_SCRUB]);

    crate::replication::wait_for_log(&node_c, "a release from a member was not stored").await;
    assert!(
        node_c.log().contains("do not verify"),
        "not refused for its bytes:\n{}",
        node_c.log()
    );
    assert!(
        counter(
            &node_c,
            "image_factory_replication_verification_failures_total"
        )
        .await
            >= 1.0
    );
    assert_eq!(
        counter(&node_c, "image_factory_replication_releases_received_total").await,
        0.0
    );
    assert!(
        !lists_release(&node_c).await,
        "C lists a release it could not verify"
    );
    // Neither under the name it was asked by nor as a leftover temporary file.
    assert!(
        !c.join("blobs").join(&name[..2]).join(&name).exists(),
        "the unverified blob reached C's store"
    );
    let leftovers: Vec<_> = std::fs::read_dir(c.join("blobs/tmp"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// Starts `dirs[0]` then the others bootstrapping from it (no scrub); waits until every node
/// has the release (imported on the first only) and sees every other as a connected member.
async fn cluster_with_release(dirs: &[PathBuf]) -> Vec<Node> {
    let none: Vec<&[(&str, &str)]> = vec![&[]; dirs.len()];
    cluster_with_release_env(dirs, &none).await
}

/// [`cluster_with_release`] with the same more `IF_*` variables for every node.
pub(crate) async fn cluster_with_release_all(dirs: &[PathBuf], more: &[(&str, &str)]) -> Vec<Node> {
    let each: Vec<&[(&str, &str)]> = vec![more; dirs.len()];
    cluster_with_release_env(dirs, &each).await
}

/// [`cluster_with_release`] with more `IF_*` variables for each node (`more[i]` for
/// `dirs[i]`).
pub(crate) async fn cluster_with_release_env(
    dirs: &[PathBuf],
    more: &[&[(&str, &str)]],
) -> Vec<Node> {
    let env = |i: usize| {
        let mut v = vec![NO_SCRUB];
        v.extend_from_slice(more[i]);
        v
    };
    let first = Node::start_with(&dirs[0], &[], &env(0));
    let boot = first.bootstrap().await;
    let mut nodes = vec![first];
    for (i, d) in dirs.iter().enumerate().skip(1) {
        nodes.push(Node::start_with(d, &boot, &env(i)));
    }
    let ids: Vec<String> = {
        let mut v = Vec::new();
        for n in &nodes {
            v.push(n.peer_id().await);
        }
        v
    };
    for (i, n) in nodes.iter().enumerate() {
        for (j, other) in ids.iter().enumerate() {
            if i != j {
                crate::replication::wait_for(n, "members connected", |st| {
                    crate::replication::connected_member(st, other)
                })
                .await;
            }
        }
        if i > 0 {
            crate::replication::wait_for_log(n, "release replicated").await;
        }
    }
    nodes
}

/// Builds (and kinds) counted by `node`.
pub(crate) async fn built(node: &Node) -> f64 {
    counter(node, "image_factory_assets_built_total").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_built_on_one_member_is_served_by_another_without_building() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(bundle) = kit_bundle(tmp.path()) else {
        return;
    };
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    import(&a, &bundle);
    cluster_of(tmp.path(), &a, &[&b]);
    let nodes = cluster_with_release(&[a, b]).await;
    let (node_a, node_b) = (&nodes[0], &nodes[1]);
    let id = kit_schematic(node_a).await;
    assert_eq!(kit_schematic(node_b).await, id);

    let path = format!("/image/{id}/{V}/initramfs-amd64.xz");
    let (sa, on_a) = fetch(node_a, &path).await;
    assert_eq!(sa, 200);
    assert_eq!(built(node_a).await, 1.0);
    let (sb, on_b) = fetch(node_b, &path).await;
    assert_eq!(sb, 200, "{}", String::from_utf8_lossy(&on_b));
    assert_eq!(sha256_hex(&on_a), sha256_hex(&on_b));
    assert_eq!(
        built(node_b).await,
        0.0,
        "B built instead of fetching:\n{}",
        node_b.log()
    );
    assert_eq!(
        counter(node_b, "image_factory_assets_fetched_total").await,
        1.0
    );
    assert_eq!(
        counter(node_b, "image_factory_replication_builds_avoided_total").await,
        1.0
    );
    // Served again from B's own store now.
    let (_, again) = fetch(node_b, &path).await;
    assert_eq!(again, on_b);
    assert_eq!(
        counter(node_b, "image_factory_assets_fetched_total").await,
        1.0
    );
    // A advertised the model over Kademlia, and B, a member's announcement, stored it.
    let stored = "image_factory_replication_provider_records_stored_total";
    let start = std::time::Instant::now();
    while counter(node_b, stored).await < 1.0 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "B stored no provider record:\n{}",
            node_b.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        counter(
            node_b,
            "image_factory_replication_provider_records_refused_total"
        )
        .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_asking_for_the_same_cold_model_at_once_build_it_once() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(bundle) = kit_bundle(tmp.path()) else {
        return;
    };
    // Five members, as the issue asks: four of them must each find the one builder's lease
    // (or its finished model) instead of building.
    let dirs: Vec<PathBuf> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|d| tmp.path().join(d))
        .collect();
    import(&dirs[0], &bundle);
    let others: Vec<&Path> = dirs[1..].iter().map(PathBuf::as_path).collect();
    cluster_of(tmp.path(), &dirs[0], &others);
    let nodes = cluster_with_release(&dirs).await;
    let mut id = String::new();
    for n in &nodes {
        id = kit_schematic(n).await;
    }
    let path = format!("/image/{id}/{V}/initramfs-amd64.xz");
    let answers = futures_util::future::join_all(nodes.iter().map(|n| fetch(n, &path))).await;
    for (i, (st, body)) in answers.iter().enumerate() {
        assert_eq!(*st, 200, "node {i}: {}", String::from_utf8_lossy(body));
        assert_eq!(sha256_hex(body), sha256_hex(&answers[0].1), "node {i}");
    }
    let mut total = 0.0;
    for n in &nodes {
        total += built(n).await;
    }
    let logs: Vec<String> = nodes.iter().map(Node::log).collect();
    assert_eq!(
        total,
        1.0,
        "builds in the cluster:\n{}",
        logs.join("\n----\n")
    );
    let mut avoided = 0.0;
    for n in &nodes {
        avoided += counter(n, "image_factory_replication_builds_avoided_total").await;
    }
    assert_eq!(
        avoided,
        (nodes.len() - 1) as f64,
        "every member but the builder fetched:\n{}",
        logs.join("\n----\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_whose_bytes_do_not_verify_is_refused_and_built_locally() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(bundle) = kit_bundle(tmp.path()) else {
        return;
    };
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    import(&a, &bundle);
    cluster_of(tmp.path(), &a, &[&b]);
    let nodes = cluster_with_release(&[a.clone(), b]).await;
    let (node_a, node_b) = (&nodes[0], &nodes[1]);
    let id = kit_schematic(node_a).await;
    assert_eq!(kit_schematic(node_b).await, id);
    let path = format!("/image/{id}/{V}/initramfs-amd64.xz");
    let (sa, on_a) = fetch(node_a, &path).await;
    assert_eq!(sa, 200);
    // The model rots on A's disk after A served it (A does not hash it again).
    let name = blake3::hash(&on_a).to_hex().to_string();
    crate::common::assets::flip_byte(&a.join("blobs").join(&name[..2]).join(&name), 1000);

    let (sb, on_b) = fetch(node_b, &path).await;
    assert_eq!(sb, 200);
    assert_eq!(sha256_hex(&on_b), sha256_hex(&on_a), "B serves other bytes");
    assert!(
        counter(
            node_b,
            "image_factory_replication_verification_failures_total"
        )
        .await
            >= 1.0,
        "{}",
        node_b.log()
    );
    assert!(node_b.log().contains("do not verify"), "{}", node_b.log());
    assert_eq!(
        built(node_b).await,
        1.0,
        "B did not build after refusing A's bytes"
    );
    assert_eq!(
        counter(node_b, "image_factory_assets_fetched_total").await,
        0.0
    );
}
