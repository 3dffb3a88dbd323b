//! Clusters whose members do not all reach each other, in network namespaces joined by veth
//! pairs, each member a real `image-factory serve` bound to its side's addresses:
//! - a partition: A and A2 on the left, B on the right. With the link down each half keeps
//!   working alone (schematics created on both sides, replicated within the left half); with
//!   the link up again the halves converge.
//! - a line: A — B — C, where A and C have no route to each other. A release imported on A
//!   reaches C through B as soon as B holds it (B announces its copy).
//!
//! Needs root and `ip` (skipped otherwise, unless IF_REQUIRE_TOOLS is set). Nothing touches
//! the host's namespace.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testsupport::netns::NetNs;

use crate::common::spawn_serve;
use crate::replication::Node;
use crate::replication_assets::{cluster_of, import_live, kit_cluster_of_three, replicated};

/// TEST-NET-2 addresses of the two sides, only inside the namespaces.
const LEFT_IP: &str = "198.51.100.1";
const RIGHT_IP: &str = "198.51.100.2";
/// TEST-NET-3 addresses of the line's second link (B's right side, C).
const LINE_B_IP: &str = "203.0.113.1";
const LINE_C_IP: &str = "203.0.113.2";
/// Longest wait for the halves to converge once joined (connections to a vanished side end by
/// ping and idle timeouts; redials back off to 30 s; anti-entropy runs every minute).
const CONVERGE: Duration = Duration::from_secs(180);

/// Whether namespaces can be made here (root, `ip`, `curl`).
fn available() -> bool {
    let ok = |c: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    root && ok("ip") && ok("curl")
}

/// A veth pair from `left` (address `lip`/24) to `right` (`rip`/24), both ends up; `tag`
/// (a letter) keeps the interface names of several pairs apart. Returns the two names.
fn link(left: &NetNs, lip: &str, right: &NetNs, rip: &str, tag: &str) -> (String, String) {
    let id = std::process::id() % 1_000_000;
    let (lif, rif) = (format!("v{tag}l{id}"), format!("v{tag}r{id}"));
    left.ip(&[
        "link",
        "add",
        &lif,
        "type",
        "veth",
        "peer",
        "name",
        &rif,
        "netns",
        right.name(),
    ])
    .expect("veth pair");
    left.ip(&["addr", "add", &format!("{lip}/24"), "dev", &lif])
        .unwrap();
    right
        .ip(&["addr", "add", &format!("{rip}/24"), "dev", &rif])
        .unwrap();
    left.ip(&["link", "set", &lif, "up"]).unwrap();
    right.ip(&["link", "set", &rif, "up"]).unwrap();
    (lif, rif)
}

/// `serve` on `dir` inside `ns`, replication bound to `ips`, bootstrapping from `boot`.
fn start(ns: &NetNs, dir: &Path, ips: &[&str], boot: &[String]) -> Node {
    let listen = ips
        .iter()
        .map(|ip| format!("/ip4/{ip}/udp/0/quic-v1,/ip4/{ip}/tcp/0"))
        .collect::<Vec<_>>()
        .join(",");
    let boot = boot.join(",");
    let mut env = vec![
        ("IF_REPLICATION_ENABLED", "true"),
        ("IF_REPLICATION_LISTENADDRS", listen.as_str()),
        ("IF_CACHE_SCRUBINTERVALSECONDS", "0"),
    ];
    if !boot.is_empty() {
        env.push(("IF_REPLICATION_BOOTSTRAPPEERS", boot.as_str()));
    }
    let wrapper = ns.wrapper();
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let srv = spawn_serve(
        dir,
        &wrapper,
        "127.0.0.1:0",
        Some("127.0.0.1:0"),
        &env,
        false,
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    Node {
        srv,
        dir: dir.to_path_buf(),
    }
}

/// An HTTP request to `node` (inside `ns`) through curl: status and body.
fn http(ns: &NetNs, node: &Node, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut cmd = ns.command("curl");
    cmd.args(["-s", "-m", "10", "-X", method, "-w", "\n%{http_code}"])
        .arg(format!("http://{}{path}", node.srv.http))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if body.is_some() {
        cmd.args(["--data-binary", "@-"]).stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("curl");
    if let Some(b) = body
        && let Some(mut stdin) = child.stdin.take()
    {
        stdin.write_all(b.as_bytes()).expect("curl stdin");
    }
    let out = child.wait_with_output().expect("curl output");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn status(ns: &NetNs, node: &Node) -> Value {
    let (code, body) = http(ns, node, "GET", "/status", None);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("status json")
}

/// Its bound addresses with `/p2p/<peer id>`, and its peer ID.
fn bootstrap(ns: &NetNs, node: &Node) -> (Vec<String>, String) {
    let st = status(ns, node);
    let id = st["replication"]["peerId"].as_str().unwrap().to_string();
    let addrs = st["replication"]["listenAddrs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .map(|a| format!("{a}/p2p/{id}"))
        .collect();
    (addrs, id)
}

/// POSTs a schematic with `arg` as its one kernel argument; returns its ID.
fn create(ns: &NetNs, node: &Node, arg: &str) -> String {
    let yaml = format!("customization:\n  extraKernelArgs:\n    - {arg}\n");
    let (code, body) = http(ns, node, "POST", "/schematics", Some(&yaml));
    assert!((200..300).contains(&code), "{code}: {body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    v["id"].as_str().unwrap().to_string()
}

fn serves(ns: &NetNs, node: &Node, id: &str) -> bool {
    http(ns, node, "GET", &format!("/schematics/{id}"), None).0 == 200
}

/// Polls `ok` until it holds; panics with `what` and the logs after `limit`.
fn wait(what: &str, limit: Duration, nodes: &[&Node], mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        if start.elapsed() > limit {
            let logs: Vec<String> = nodes.iter().map(|n| n.log()).collect();
            panic!("{what}: not within {limit:?}\n{}", logs.join("\n----\n"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn connected(ns: &NetNs, node: &Node, other: &str) -> bool {
    crate::replication::connected_member(&status(ns, node), other)
}

/// Whether the test can run; panics when it cannot but IF_REQUIRE_TOOLS says it must.
fn can_run() -> bool {
    if available() {
        return true;
    }
    assert!(
        std::env::var_os("IF_REQUIRE_TOOLS").is_none(),
        "IF_REQUIRE_TOOLS is set but network namespaces cannot be made (root, ip, curl)"
    );
    eprintln!("skipped: needs root, ip and curl");
    false
}

#[test]
fn two_halves_keep_working_alone_and_converge_when_joined() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (a, a2, b) = (
        tmp.path().join("a"),
        tmp.path().join("a2"),
        tmp.path().join("b"),
    );
    cluster_of(tmp.path(), &a, &[&a2, &b]);
    let left = NetNs::create("ifpart-l").expect("left namespace");
    let right = NetNs::create("ifpart-r").expect("right namespace");
    let (lif, rif) = link(&left, LEFT_IP, &right, RIGHT_IP, "p");

    let node_a = start(&left, &a, &[LEFT_IP], &[]);
    let (boot, a_id) = bootstrap(&left, &node_a);
    let node_a2 = start(&left, &a2, &[LEFT_IP], &boot);
    let node_b = start(&right, &b, &[RIGHT_IP], &boot);
    let (_, a2_id) = bootstrap(&left, &node_a2);
    let (_, b_id) = bootstrap(&right, &node_b);
    let all = [&node_a, &node_a2, &node_b];
    wait("all connected", Duration::from_secs(60), &all, || {
        connected(&left, &node_a, &a2_id)
            && connected(&left, &node_a, &b_id)
            && connected(&right, &node_b, &a_id)
            && connected(&right, &node_b, &a2_id)
    });
    // Connected: a schematic created on B reaches the left half.
    let before = create(&right, &node_b, "before-the-partition");
    wait("replicated before", Duration::from_secs(60), &all, || {
        serves(&left, &node_a, &before) && serves(&left, &node_a2, &before)
    });

    // The link goes down (packets dropped both ways, as a failed switch would): each half
    // works alone. (Connections are not declared dead within a partition this short — ping
    // failures do not close them — so this is the gossip-lost case that anti-entropy and TCP
    // retransmission heal.)
    left.ip(&["link", "set", &lif, "down"]).unwrap();
    let on_left = create(&left, &node_a, "made-on-the-left");
    let on_right = create(&right, &node_b, "made-on-the-right");
    assert!(serves(&left, &node_a, &on_left));
    assert!(serves(&right, &node_b, &on_right));
    wait(
        "the left half replicates within itself",
        Duration::from_secs(60),
        &all,
        || serves(&left, &node_a2, &on_left),
    );
    // Held apart a while: nothing crosses.
    std::thread::sleep(Duration::from_secs(15));
    assert!(
        !serves(&right, &node_b, &on_left),
        "B got a schematic across the partition"
    );
    assert!(!serves(&left, &node_a, &on_right));
    assert!(!serves(&left, &node_a2, &on_right));

    // Joined again: both halves converge.
    left.ip(&["link", "set", &lif, "up"]).unwrap();
    right.ip(&["link", "set", &rif, "up"]).unwrap();
    wait("the halves converge", CONVERGE, &all, || {
        serves(&right, &node_b, &on_left)
            && serves(&left, &node_a, &on_right)
            && serves(&left, &node_a2, &on_right)
    });
    drop((node_a, node_a2, node_b));
}

#[test]
fn a_release_crosses_a_line_of_members_through_the_one_between() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some((kit, [a, b, c])) = kit_cluster_of_three(tmp.path()) else {
        return;
    };
    // A — B — C: B has an address on each link; A and C have no route to each other.
    let left = NetNs::create("ifline-a").expect("namespace A");
    let mid = NetNs::create("ifline-b").expect("namespace B");
    let right = NetNs::create("ifline-c").expect("namespace C");
    link(&left, LEFT_IP, &mid, RIGHT_IP, "a");
    link(&mid, LINE_B_IP, &right, LINE_C_IP, "c");
    let node_a = start(&left, &a, &[LEFT_IP], &[]);
    let (boot_a, a_id) = bootstrap(&left, &node_a);
    let node_b = start(&mid, &b, &[RIGHT_IP, LINE_B_IP], &boot_a);
    let (boot_b, b_id) = bootstrap(&mid, &node_b);
    // C knows B by its address on C's link only.
    let boot_c: Vec<String> = boot_b
        .into_iter()
        .filter(|addr| addr.contains(LINE_B_IP))
        .collect();
    let node_c = start(&right, &c, &[LINE_C_IP], &boot_c);
    let (_, c_id) = bootstrap(&right, &node_c);
    let all = [&node_a, &node_b, &node_c];
    wait("the line connected", Duration::from_secs(60), &all, || {
        connected(&mid, &node_b, &a_id) && connected(&mid, &node_b, &c_id)
    });
    wait("C sees B", Duration::from_secs(60), &all, || {
        connected(&right, &node_c, &b_id)
    });

    // Imported on the running A: B fetches it on A's announcement; C, which cannot reach A,
    // hears it through B before B holds it, and fetches it from B on B's announcement of its
    // copy (without it, C would wait for the periodic round, a minute).
    import_live(&node_a, &kit);
    wait("C holds the release", Duration::from_secs(90), &all, || {
        replicated(&node_c).is_some()
    });
    assert_eq!(
        replicated(&node_b),
        Some(("announcement".to_string(), a_id.clone()))
    );
    assert_eq!(
        replicated(&node_c),
        Some(("announcement".to_string(), b_id.clone())),
        "C did not fetch it on B's announcement:\n{}",
        node_c.log()
    );
    let st = status(&right, &node_c);
    assert!(!connected(&right, &node_c, &a_id), "C reached A: {st:#}");
    drop((node_a, node_b, node_c));
}
