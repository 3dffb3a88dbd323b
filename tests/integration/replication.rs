//! Peer replication with real `image-factory serve` processes on loopback, each in its own data
//! directory: members found a cluster, invite and join through the CLI (offline and through the
//! admin API), connect through bootstrap addresses, see each other in `/status` with an RTT and
//! keep their identity across a restart; non-members, another cluster's node, an expired and a
//! removed member are refused right after the handshake. No timing thresholds: every wait polls
//! with a bounded deadline.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::Value;

use crate::common::{BinServer, bin, client, spawn_bin_with};

/// Loopback, any port, QUIC and TCP.
pub(crate) const LISTEN: &str = "/ip4/127.0.0.1/udp/0/quic-v1,/ip4/127.0.0.1/tcp/0";
/// Longest wait for anything to happen between nodes.
pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

/// A running node; killed when dropped (a failing test leaves no process behind).
pub(crate) struct Node {
    pub(crate) srv: BinServer,
    pub(crate) dir: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.srv.child.kill();
        let _ = self.srv.child.wait();
    }
}

impl Node {
    /// `serve` on `dir` with replication on (loopback, port 0) and `bootstrap` peers.
    pub(crate) fn start(dir: &Path, bootstrap: &[String]) -> Node {
        Node::start_with(dir, bootstrap, &[])
    }

    /// [`Node::start`] with more `IF_*` variables.
    pub(crate) fn start_with(dir: &Path, bootstrap: &[String], more: &[(&str, &str)]) -> Node {
        let boot = bootstrap.join(",");
        let mut env = vec![
            ("IF_REPLICATION_ENABLED", "true"),
            ("IF_REPLICATION_LISTENADDRS", LISTEN),
        ];
        env.extend_from_slice(more);
        if !boot.is_empty() {
            env.push(("IF_REPLICATION_BOOTSTRAPPEERS", boot.as_str()));
        }
        let srv = spawn_bin_with(dir, &env, true).unwrap_or_else(|e| panic!("{e}"));
        Node {
            srv,
            dir: dir.to_path_buf(),
        }
    }

    pub(crate) async fn status(&self) -> Value {
        client()
            .get(format!("http://{}/status", self.srv.http))
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("status json")
    }

    pub(crate) async fn peer_id(&self) -> String {
        let st = self.status().await;
        st["replication"]["peerId"]
            .as_str()
            .unwrap_or_else(|| panic!("no peer ID in {st}"))
            .to_string()
    }

    /// Its bound addresses with `/p2p/<peer id>`, as a bootstrap list.
    pub(crate) async fn bootstrap(&self) -> Vec<String> {
        let st = self.status().await;
        let id = st["replication"]["peerId"].as_str().unwrap_or_default();
        let addrs: Vec<String> = st["replication"]["listenAddrs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|a| format!("{a}/p2p/{id}"))
                    .collect()
            })
            .unwrap_or_default();
        assert!(!addrs.is_empty(), "no bound addresses in {st}");
        addrs
    }

    pub(crate) fn admin(&self) -> String {
        format!("unix:{}", self.dir.join("admin.sock").display())
    }

    pub(crate) fn log(&self) -> String {
        self.srv
            .log
            .lock()
            .map(|l| l.join("\n"))
            .unwrap_or_default()
    }

    /// The text of its `/metrics`.
    pub(crate) async fn metrics_text(&self) -> String {
        let addr = self.srv.metrics.expect("metrics listener");
        client()
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// `image_factory_replication_peers_refused_total{reason}`.
    async fn refused_metric(&self, reason: &str) -> u64 {
        let text = self.metrics_text().await;
        let prefix =
            format!("image_factory_replication_peers_refused_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub(crate) fn stop(mut self) {
        let pid = self.srv.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        let exit = self.srv.child.wait().unwrap();
        assert!(exit.success(), "exit status {exit:?}\n{}", self.log());
    }
}

/// The entry for `peer` in a `/status` document.
pub(crate) fn peer<'a>(st: &'a Value, peer: &str) -> Option<&'a Value> {
    st["replication"]["peers"]
        .as_array()?
        .iter()
        .find(|p| p["peerId"] == peer)
}

/// Whether `st` shows `other` as a connected member with a measured RTT.
pub(crate) fn connected_member(st: &Value, other: &str) -> bool {
    peer(st, other).is_some_and(|p| {
        p["state"] == "member" && p["connected"] == true && p["rttMs"].as_f64().is_some()
    })
}

/// Whether `st` shows `other` refused with a reason containing `why`.
fn refused(st: &Value, other: &str, why: &str) -> bool {
    peer(st, other).is_some_and(|p| {
        p["state"] == "refused"
            && p["connected"] == false
            && p["reason"].as_str().is_some_and(|r| r.contains(why))
    })
}

/// Polls `node`'s `/status` until `ok` holds; panics with the last status and log after
/// [`DEADLINE`].
pub(crate) async fn wait_for(node: &Node, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let st = node.status().await;
        if ok(&st) {
            return st;
        }
        if start.elapsed() > DEADLINE {
            panic!(
                "{what}: not seen within {DEADLINE:?}; last status:\n{st:#}\nlog:\n{}",
                node.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls until `node`'s log has a line containing `needle`.
pub(crate) async fn wait_for_log(node: &Node, needle: &str) {
    let start = Instant::now();
    while !node.log().contains(needle) {
        assert!(
            start.elapsed() < DEADLINE,
            "no log line with {needle:?} within {DEADLINE:?}:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs the CLI; returns stdout, panics with stderr on failure.
pub(crate) fn cli(args: &[&str]) -> String {
    cli_env(args, &[])
}

/// [`cli`] with more environment variables.
pub(crate) fn cli_env(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(bin())
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .output()
        .expect("run the CLI");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?} failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `image-factory peers` through `node`'s admin API: the table.
pub(crate) fn peers_table(node: &Node) -> String {
    cli(&[
        "peers",
        "--server",
        &node.admin(),
        "--data-dir",
        &node.dir.display().to_string(),
    ])
}

/// `cluster invite` on a stopped node's `dir`; returns the new member's peer ID.
pub(crate) fn invite_offline(dir: &Path, out: &Path) -> String {
    cli(&[
        "cluster",
        "invite",
        "--data-dir",
        &dir.display().to_string(),
        "--days",
        "3",
        "--out",
        &out.display().to_string(),
    ])
}

/// `cluster invite` on a stopped node's `dir` (default validity) with more environment
/// variables.
pub(crate) fn invite_offline_env(dir: &Path, out: &Path, env: &[(&str, &str)]) -> String {
    cli_env(
        &[
            "cluster",
            "invite",
            "--data-dir",
            &dir.display().to_string(),
            "--out",
            &out.display().to_string(),
        ],
        env,
    )
}

/// `cluster invite` through `node`'s admin API.
pub(crate) fn invite_through(node: &Node, out: &Path) -> String {
    cli(&[
        "cluster",
        "invite",
        "--server",
        &node.admin(),
        "--data-dir",
        &node.dir.display().to_string(),
        "--out",
        &out.display().to_string(),
    ])
}

/// `cluster join` of `dir` with the invitation `file`; returns its peer ID.
pub(crate) fn join(dir: &Path, file: &Path) -> String {
    cli(&[
        "cluster",
        "join",
        "--data-dir",
        &dir.display().to_string(),
        &file.display().to_string(),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_connect_through_bootstrap_peers_show_rtt_and_keep_their_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    let inv_b = tmp.path().join("b.invitation");
    let inv_c = tmp.path().join("c.invitation");

    // A founds the cluster offline; its invitation names no address (A is not running).
    let b_invited = invite_offline(&a, &inv_b);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&inv_b).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "an invitation holds the cluster key");
    let node_a = Node::start(&a, &[]);
    let a_id = node_a.peer_id().await;
    assert_eq!(join(&b, &inv_b), b_invited);
    // B finds A through replication.bootstrapPeers.
    let node_b = Node::start(&b, &node_a.bootstrap().await);
    // C's invitation is written by the running A, so it carries A's bound addresses: C needs
    // no configuration, and learns of B from A.
    let c_invited = invite_through(&node_a, &inv_c);
    assert_eq!(join(&c, &inv_c), c_invited);
    // Joining twice is refused (and changes nothing).
    let out = Command::new(bin())
        .args(["cluster", "join", "--data-dir"])
        .arg(&c)
        .arg(&inv_c)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already a member"), "{stderr}");
    let node_c = Node::start(&c, &[]);
    let ids = [a_id.clone(), b_invited.clone(), c_invited.clone()];
    for (node, me) in [(&node_a, 0), (&node_b, 1), (&node_c, 2)] {
        assert_eq!(node.peer_id().await, ids[me]);
        for (other, id) in ids.iter().enumerate().filter(|(o, _)| *o != me) {
            wait_for(
                node,
                &format!("node {me} sees node {other} as a member"),
                |st| connected_member(st, id),
            )
            .await;
        }
        let st = node.status().await;
        assert_eq!(st["replication"]["cluster"]["member"], true);
        assert_eq!(
            st["replication"]["cluster"]["id"],
            node_a.status().await["replication"]["cluster"]["id"]
        );
    }
    // `image-factory peers` on A lists B and C as connected members.
    let table = peers_table(&node_a);
    assert!(table.contains(&format!("this node  {a_id}")), "{table}");
    for id in [&b_invited, &c_invited] {
        let line = table
            .lines()
            .find(|l| l.starts_with(id.as_str()))
            .unwrap_or_else(|| panic!("{id} missing:\n{table}"));
        assert!(
            line.contains(" member ") && line.contains(" yes "),
            "{line}"
        );
    }

    // B restarts on new ports with no bootstrap configured: same identity, and it finds the
    // members again from the addresses it remembered.
    node_b.stop();
    let node_b = Node::start(&b, &[]);
    assert_eq!(node_b.peer_id().await, b_invited, "the identity persists");
    wait_for(&node_b, "B reconnects to A", |st| {
        connected_member(st, &a_id)
    })
    .await;
    wait_for(&node_a, "A sees B again", |st| {
        connected_member(st, &b_invited)
    })
    .await;
    drop(node_c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_members_another_cluster_and_expired_members_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, x, y, e) = (
        tmp.path().join("a"),
        tmp.path().join("x"),
        tmp.path().join("y"),
        tmp.path().join("e"),
    );
    let inv_e = tmp.path().join("e.invitation");
    let e_id = invite_offline(&a, &inv_e);
    join(&e, &inv_e);
    // E's credential has expired: re-issue it, signed by the cluster key, with a past expiry.
    let key_pem = std::fs::read_to_string(a.join("keys/signing-key.pem")).unwrap();
    let key = image_factory::trust::SigningKey::from_pem(&key_pem, Path::new("a")).unwrap();
    let now = image_factory::clock::now_secs();
    let expired = image_factory::replication::membership::issue_credential(
        &key,
        &e_id.parse().unwrap(),
        now - 7200,
        Some(now - 3600),
    )
    .unwrap();
    std::fs::write(
        e.join("cluster/credential.json"),
        serde_json::to_vec(&expired).unwrap(),
    )
    .unwrap();
    // Y founded a cluster of its own.
    invite_offline(&y, &tmp.path().join("y.invitation"));

    let node_a = Node::start(&a, &[]);
    let boot = node_a.bootstrap().await;
    // X never joined anything.
    let node_x = Node::start(&x, &boot);
    let node_y = Node::start(&y, &boot);
    let node_e = Node::start(&e, &boot);
    let (x_id, y_id) = (node_x.peer_id().await, node_y.peer_id().await);
    let y_cluster = node_y.status().await["replication"]["cluster"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let st = wait_for(&node_a, "A refuses X, Y and E", |st| {
        refused(st, &x_id, "no credential")
            && refused(st, &y_id, &y_cluster)
            && refused(st, &e_id, "membership expired")
    })
    .await;
    for id in [&x_id, &y_id, &e_id] {
        assert!(!connected_member(&st, id), "{st:#}");
    }
    for (reason, n) in [("not_member", 1), ("other_cluster", 1), ("expired", 1)] {
        assert!(node_a.refused_metric(reason).await >= n, "{reason}");
    }
    assert!(node_a.log().contains("peer refused"));
    // The refused nodes are told, and say so.
    for n in [&node_x, &node_y, &node_e] {
        wait_for_log(n, "a peer refused this node").await;
        let st = n.status().await;
        assert!(!connected_member(&st, &node_a.peer_id().await), "{st:#}");
    }
    // A keeps no address of theirs (identify told it some): once their refusals end, A does
    // not dial them again and again; they may still dial A.
    let st = node_a.status().await;
    for id in [&x_id, &y_id, &e_id] {
        let addrs = peer(&st, id).map(|p| p["addrs"].clone());
        assert_eq!(addrs, Some(serde_json::json!([])), "{st:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_welcome_adds_nothing_to_a_members_table() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, x) = (tmp.path().join("a"), tmp.path().join("x"));
    // A founds a cluster; X never joins one, sends no hello, and answers every hello with a
    // welcome naming a member that does not exist. So its welcome reaches A before A can judge
    // it: A refuses it only as silent.
    invite_offline(&a, &tmp.path().join("unused.invitation"));
    let node_a = Node::start(&a, &[]);
    let node_x = Node::start_with(
        &x,
        &node_a.bootstrap().await,
        &[(image_factory::replication::WELCOME_STRANGERS_ENV, "1")],
    );
    let x_id = node_x.peer_id().await;
    wait_for_log(&node_x, "a hello welcomed blindly").await;
    let log_x = node_x.log();
    let made_up = log_x
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|l| l["made_up"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no made-up member in X's log:\n{log_x}"));
    // Taken in, the made-up member would be in A's table at once (and dialled for ever); held
    // for the verdict, it goes with the refusal.
    for _ in 0..20 {
        let st = node_a.status().await;
        assert!(peer(&st, &made_up).is_none(), "{st:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let st = wait_for(&node_a, "A refuses X as silent", |st| {
        refused(st, &x_id, "no credential in time")
    })
    .await;
    assert!(peer(&st, &made_up).is_none(), "{st:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_hello_is_sent_again_before_the_member_is_refused_as_silent() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let inv_b = tmp.path().join("b.invitation");
    let b_id = invite_offline(&a, &inv_b);
    join(&b, &inv_b);
    let node_a = Node::start(&a, &[]);
    let a_id = node_a.peer_id().await;
    // B loses the first hello it receives (A's): neither judged nor answered. A must send it
    // again; without that, B would refuse A as silent 10 s after connecting.
    let node_b = Node::start_with(
        &b,
        &node_a.bootstrap().await,
        &[("IF_TEST_IGNORE_HELLOS", "1")],
    );
    wait_for(&node_b, "B accepts A", |st| connected_member(st, &a_id)).await;
    wait_for(&node_a, "A accepts B", |st| connected_member(st, &b_id)).await;
    let log_b = node_b.log();
    assert!(
        log_b.contains("a hello ignored"),
        "the fault did not act:\n{log_b}"
    );
    for (node, log) in [("A", node_a.log()), ("B", log_b)] {
        assert!(
            !log.contains("peer refused"),
            "{node} refused a member:\n{log}"
        );
    }
    for reason in ["silent", "not_member"] {
        assert_eq!(node_b.refused_metric(reason).await, 0, "{reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_is_refused_by_every_member_and_offline_removal_replicates() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = ["a", "b", "r", "s"]
        .iter()
        .map(|n| tmp.path().join(n))
        .collect();
    let (a, b, r, s) = (&dirs[0], &dirs[1], &dirs[2], &dirs[3]);
    // A founds the cluster and starts; B, R, S join with invitations A writes while running.
    invite_offline(a, &tmp.path().join("unused.invitation"));
    let node_a = Node::start(a, &[]);
    let a_id = node_a.peer_id().await;
    let mut ids = Vec::new();
    for d in [b, r, s] {
        let inv = d.with_extension("invitation");
        ids.push(invite_through(&node_a, &inv));
        join(d, &inv);
    }
    let (b_id, r_id, s_id) = (ids[0].clone(), ids[1].clone(), ids[2].clone());
    let node_b = Node::start(b, &[]);
    let node_r = Node::start(r, &[]);
    let node_s = Node::start(s, &[]);
    for id in &ids {
        wait_for(&node_a, "A sees every member", |st| {
            connected_member(st, id)
        })
        .await;
    }
    for id in [&a_id, &r_id, &s_id] {
        wait_for(&node_b, "B sees every member", |st| {
            connected_member(st, id)
        })
        .await;
    }

    // R is removed through A's admin API: A and B (by gossip) refuse it; R learns it.
    cli(&[
        "cluster",
        "remove",
        "--server",
        &node_a.admin(),
        "--data-dir",
        &a.display().to_string(),
        &r_id,
    ]);
    wait_for(&node_a, "A refuses R", |st| refused(st, &r_id, "removed")).await;
    wait_for(&node_b, "B refuses R", |st| refused(st, &r_id, "removed")).await;
    wait_for_log(&node_r, "this node has been removed from the cluster").await;
    assert!(node_b.refused_metric("revoked").await >= 1);

    // S is removed offline on B's data directory: B learns it at once when it starts again,
    // and A when B connects (the revocation travels in the hello).
    node_b.stop();
    cli(&[
        "cluster",
        "remove",
        "--data-dir",
        &b.display().to_string(),
        &s_id,
    ]);
    assert!(
        connected_member(&node_a.status().await, &s_id),
        "A cannot know of the offline removal before B is back"
    );
    let node_b = Node::start(b, &[]);
    wait_for(&node_b, "B is back with A", |st| {
        connected_member(st, &a_id)
    })
    .await;
    wait_for(&node_a, "A refuses S", |st| refused(st, &s_id, "removed")).await;
    wait_for(&node_b, "B refuses S", |st| refused(st, &s_id, "removed")).await;
    let st = node_a.status().await;
    assert_eq!(st["replication"]["cluster"]["revocations"], 2, "{st:#}");
    assert!(connected_member(&st, &b_id), "{st:#}");
    drop(node_s);
    drop(node_r);
}

/// Local ports of the sockets this process holds (TCP and UDP, IPv4 and IPv6).
fn own_socket_ports() -> Vec<u16> {
    let mut inodes = std::collections::HashSet::new();
    for fd in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            let t = target.to_string_lossy().into_owned();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                inodes.insert(inode.to_string());
            }
        }
    }
    let mut ports = Vec::new();
    for table in ["tcp", "tcp6", "udp", "udp6"] {
        let text = std::fs::read_to_string(format!("/proc/self/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 9 && inodes.contains(cols[9]) {
                let port = cols[1].rsplit(':').next().unwrap_or("0");
                ports.push(u16::from_str_radix(port, 16).unwrap_or(0));
            }
        }
    }
    ports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_is_off_by_default_and_binds_no_peer_port() {
    let srv = crate::common::TestServer::start().await;
    let st = srv.status().await;
    assert_eq!(st["replication"]["enabled"], false, "{st:#}");
    assert!(st["replication"].get("peerId").is_none(), "{st:#}");
    assert!(srv.addrs.http.port() != 0);
    let ports = own_socket_ports();
    assert!(
        ports.contains(&srv.addrs.http.port()),
        "the socket table is read: {ports:?}"
    );
    assert!(
        !ports.contains(&image_factory::config::DEFAULT_REPLICATION_PORT),
        "{ports:?}"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_address_that_cannot_be_bound_stops_serve_with_a_clear_error() {
    crate::common::init();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = image_factory::config::Config::default();
    cfg.storage.data_dir = dir.path().display().to_string();
    cfg.http.http_listen_addr = "127.0.0.1:0".into();
    cfg.metrics.addr = String::new();
    cfg.tftp.listen_addr = String::new();
    cfg.replication.enabled = true;
    cfg.replication.listen_addrs = vec![format!("/ip4/127.0.0.1/tcp/{port}")];
    let err = match image_factory::frontend::serve(cfg, std::future::pending()).await {
        Ok(_) => panic!("serve started on a taken replication port"),
        Err(e) => format!("{:#}", image_factory::causes::Causes(&e)),
    };
    assert!(
        err.contains(&format!(
            "cannot listen on /ip4/127.0.0.1/tcp/{port} (replication.listenAddrs)"
        )),
        "{err}"
    );
    assert!(
        err.to_lowercase().contains("address"),
        "the cause is kept: {err}"
    );
}

/// POSTs `yaml` to `node`; returns (ID, canonical YAML).
/// Creates `n` schematics on `node`, 8 at a time (`extraKernelArgs: [TAG=i]`); their IDs and
/// canonical YAML, in order.
async fn create_many(node: &Node, n: usize, tag: &str) -> Vec<(String, String)> {
    futures_util::stream::iter(0..n)
        .map(|i| async move {
            create_schematic(
                node,
                &format!("customization: {{extraKernelArgs: [{tag}={i}]}}"),
            )
            .await
        })
        .buffered(8)
        .collect()
        .await
}

pub(crate) async fn create_schematic(node: &Node, yaml: &str) -> (String, String) {
    let resp = client()
        .post(format!("http://{}/schematics", node.srv.http))
        .body(yaml.to_string())
        .send()
        .await
        .expect("post schematic");
    assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
    let v: Value = resp.json().await.expect("json");
    (
        v["id"].as_str().unwrap().to_string(),
        v["schematic"].as_str().unwrap().to_string(),
    )
}

/// Polls until `node` serves schematic `id` as `canonical`.
pub(crate) async fn wait_for_schematic(node: &Node, who: &str, id: &str, canonical: &str) {
    let start = Instant::now();
    loop {
        let resp = client()
            .get(format!("http://{}/schematics/{id}", node.srv.http))
            .send()
            .await
            .expect("get schematic");
        if resp.status() == reqwest::StatusCode::OK {
            assert_eq!(
                resp.text().await.unwrap(),
                canonical,
                "{who} serves other bytes"
            );
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{who} does not serve {id} within {DEADLINE:?}:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Directories `a`, `b` and `c` under `tmp`: A founds a cluster and runs, and B and C join it
/// with invitations A writes while running (neither started yet).
fn founder_and_two_joined(tmp: &Path) -> (Node, [PathBuf; 3]) {
    let dirs = ["a", "b", "c"].map(|n| tmp.join(n));
    invite_offline(&dirs[0], &tmp.join("unused.invitation"));
    let node_a = Node::start(&dirs[0], &[]);
    for d in &dirs[1..] {
        let inv = d.with_extension("invitation");
        invite_through(&node_a, &inv);
        join(d, &inv);
    }
    (node_a, dirs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schematics_replicate_to_every_member_and_a_node_started_later_catches_up() {
    let tmp = tempfile::tempdir().unwrap();
    let (node_a, [_, b, c]) = founder_and_two_joined(tmp.path());
    let a_id = node_a.peer_id().await;
    let node_b = Node::start(&b, &[]);
    wait_for(&node_b, "B joins A", |st| connected_member(st, &a_id)).await;

    // Created on A while C is down: B gets it by announcement, C when it starts.
    let (s1, y1) =
        create_schematic(&node_a, "customization: {extraKernelArgs: [replicated=1]}").await;
    let (s2, y2) =
        create_schematic(&node_b, "customization: {extraKernelArgs: [replicated=2]}").await;
    wait_for_schematic(&node_b, "B", &s1, &y1).await;
    wait_for_schematic(&node_a, "A", &s2, &y2).await;
    let node_c = Node::start(&c, &[]);
    wait_for_schematic(&node_c, "C (started later)", &s1, &y1).await;
    wait_for_schematic(&node_c, "C (started later)", &s2, &y2).await;

    // Created on A while C runs: announced, fetched and served by C.
    wait_for(&node_c, "C joins A", |st| connected_member(st, &a_id)).await;
    let (s3, y3) =
        create_schematic(&node_a, "customization: {extraKernelArgs: [replicated=3]}").await;
    wait_for_schematic(&node_c, "C", &s3, &y3).await;
    wait_for_schematic(&node_b, "B", &s3, &y3).await;
    // C had s1 and s2 from comparing ID sets when it connected, s3 from the announcement.
    let via = |node: &Node, id: &str| {
        node.log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["message"] == "schematic replicated" && v["schematic"] == id)
            .map(|v| v["via"].as_str().unwrap_or_default().to_string())
    };
    let replicated: Vec<String> = node_c
        .log()
        .lines()
        .filter(|l| l.contains("schematic replicated"))
        .map(str::to_string)
        .collect();
    assert_eq!(
        via(&node_c, &s1).as_deref(),
        Some("anti-entropy"),
        "{replicated:#?}"
    );
    assert_eq!(
        via(&node_c, &s3).as_deref(),
        Some("announcement"),
        "{replicated:#?}"
    );
    for n in [&node_a, &node_b, &node_c] {
        assert_eq!(n.status().await["schematics"], 3);
    }
    let metrics = client()
        .get(format!("http://{}/metrics", node_c.srv.metrics.unwrap()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("image_factory_replication_schematics_received_total 3"),
        "{metrics}"
    );
    assert!(metrics.contains("image_factory_replication_schematics_rejected_total 0"));
    assert!(
        metrics.contains("image_factory_schematic_cache_size 3"),
        "the gauge counts replicated schematics too: {metrics}"
    );
}

/// A node that missed many schematics catches up in one pass, not 256 a minute (its page walk
/// pauses while its fetches are full instead of dropping the rest), and a schematic whose
/// canonical form does not read back to itself replicates like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_a_thousand_schematics_catches_up_at_once() {
    const MANY: usize = 1000;
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    invite_offline(&a, &tmp.path().join("unused.invitation"));
    let node_a = Node::start(&a, &[]);
    let a_id = node_a.peer_id().await;
    let inv = b.with_extension("invitation");
    invite_through(&node_a, &inv);
    join(&b, &inv);
    // Created while B is down: only comparing ID sets brings them (fetched in batches of 32,
    // at most 256 at once).
    let created = create_many(&node_a, MANY, "many").await;
    // A literal block starting with a line break then a space: go-yaml writes no indentation
    // indicator, so the canonical text reads back as another schematic.
    let (quirky, quirky_yaml) =
        create_schematic(&node_a, "customization: {extraKernelArgs: [\"\\n a\"]}").await;
    let node_b = Node::start(&b, &[]);
    wait_for(&node_b, "B joins A", |st| connected_member(st, &a_id)).await;
    wait_for(&node_b, "B holds every schematic", |st| {
        st["schematics"] == MANY + 1
    })
    .await;
    wait_for_schematic(&node_b, "B", &quirky, &quirky_yaml).await;
    let (last, last_yaml) = &created[MANY - 1];
    wait_for_schematic(&node_b, "B", last, last_yaml).await;
}

/// A burst of new schematics on a member that answers slowly: the fetches it is too busy for
/// (each announcement asks for one schematic, 8 at once per member) are asked again in
/// batches a second later, so they all still come by announcement, not a minute later by
/// comparing ID sets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schematics_a_busy_member_could_not_send_at_once_still_come_by_announcement() {
    // Each answer held 2 s: 60 announcements over the few seconds the POSTs take keep more
    // than 8 requests waiting at once, however fast this machine is.
    const BURST: usize = 60;
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    invite_offline(&a, &tmp.path().join("unused.invitation"));
    let node_a = Node::start_with(&a, &[], &[("IF_TEST_ANSWER_DELAY_MS", "2000")]);
    let a_id = node_a.peer_id().await;
    let inv = b.with_extension("invitation");
    invite_through(&node_a, &inv);
    join(&b, &inv);
    let node_b = Node::start(&b, &[]);
    wait_for(&node_b, "B joins A", |st| connected_member(st, &a_id)).await;
    let created = create_many(&node_a, BURST, "burst").await;
    wait_for(&node_b, "B holds the burst", |st| st["schematics"] == BURST).await;
    let vias: Vec<String> = node_b
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "schematic replicated")
        .map(|v| v["via"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(vias.len(), BURST, "{vias:?}");
    assert!(vias.iter().all(|v| v == "announcement"), "{vias:?}");
    let busy = crate::replication_assets::counter(
        &node_a,
        "image_factory_replication_requests_busy_total",
    )
    .await;
    assert!(busy > 0.0, "A was never busy, so nothing was asked again");
    let (id, yaml) = &created[BURST - 1];
    wait_for_schematic(&node_b, "B", id, yaml).await;
}

/// A member that stays down while another member restarts, twice, is still remembered: it is
/// saved with the members (`cluster/peers.json`) although it never connected in the second
/// run, so the restarted node still ranks it where copies go, as the members that did not
/// restart do, and dials it when it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_down_across_restarts_is_still_remembered() {
    let tmp = tempfile::tempdir().unwrap();
    let (node_a, [a, b, c]) = founder_and_two_joined(tmp.path());
    let node_b = Node::start(&b, &[]);
    let node_c = Node::start(&c, &[]);
    let (b_id, c_id) = (node_b.peer_id().await, node_c.peer_id().await);
    for id in [&b_id, &c_id] {
        wait_for(&node_a, "A sees B and C", |st| connected_member(st, id)).await;
    }
    node_c.stop();
    node_a.stop();
    let saved = || std::fs::read_to_string(a.join("cluster/peers.json")).expect("peers.json");
    assert!(saved().contains(&c_id), "C was not saved: {}", saved());
    // A runs again while C stays down: C is only remembered there, never met.
    let node_a = Node::start(&a, &[]);
    wait_for(&node_a, "A sees B again", |st| connected_member(st, &b_id)).await;
    node_a.stop();
    assert!(saved().contains(&c_id), "C was forgotten: {}", saved());
    let node_a = Node::start(&a, &[]);
    let st = node_a.status().await;
    assert!(peer(&st, &c_id).is_some(), "A forgot C: {st:#}");
}

/// Secure Boot keys are cluster-wide: an invitation written by a member that signs with them
/// carries them, and `cluster join` installs them where `secureBoot.file.*` default to, so the
/// new member serves the same signing certificate without naming any file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_secure_boot_keys_reach_a_new_member() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let inv = tmp.path().join("b.invitation");
    let sb = a.join("keys/secureboot");
    cli(&[
        "keys",
        "secureboot",
        "generate",
        "--out",
        &sb.display().to_string(),
    ]);
    // `secureBoot.file.*` default to <dataDir>/keys/secureboot, so enabling is enough.
    let enable = [("IF_SECUREBOOT_ENABLED", "true")];
    invite_offline_env(&a, &inv, &enable);
    let out = Command::new(bin())
        .args(["cluster", "join", "--data-dir"])
        .arg(&b)
        .arg(&inv)
        .env_remove("RUST_LOG")
        .output()
        .expect("join");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("the cluster's Secure Boot keys are installed in"),
        "{said}"
    );
    for name in [
        "uki-signing-key.pem",
        "uki-signing-cert.pem",
        "pcr-signing-key.pem",
    ] {
        assert_eq!(
            std::fs::read(b.join("keys/secureboot").join(name)).unwrap(),
            std::fs::read(sb.join(name)).unwrap(),
            "{name}"
        );
    }
    let node_b = Node::start_with(&b, &[], &enable);
    let cert = client()
        .get(format!(
            "http://{}/secureboot/signing-cert.pem",
            node_b.srv.http
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(cert.status().as_u16(), 200);
    assert_eq!(
        cert.bytes().await.unwrap().as_ref(),
        std::fs::read(sb.join("uki-signing-cert.pem")).unwrap()
    );
}
