//! The TFTP frontend (issue 17 point 1) against real clients — curl, atftp (blksize, tsize,
//! windowsize) and tftp-hpa: byte-identical downloads, rollover past 32 MiB, 50 clients at
//! once, a relay that drops and duplicates datagrams, and the listen address at start.
//! `tftp_protocol` covers what clients never send. Loopback only; every wait is bounded.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use tokio::net::UdpSocket;
use tokio::process::Command;

use crate::common::TestServer;
use crate::common::assets::metric;

/// Deterministic bytes without a short period (a wrong block in the rollover test shows).
pub(crate) fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub(crate) fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A temp directory holding `root/` (served) and `secret` beside it (must never be served).
pub(crate) struct Tree {
    pub(crate) dir: tempfile::TempDir,
}

impl Tree {
    pub(crate) fn new(files: &[(&str, Vec<u8>)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("root/sub")).expect("root");
        std::fs::write(dir.path().join("secret"), b"outside the root").expect("secret");
        for (name, data) in files {
            std::fs::write(dir.path().join("root").join(name), data).expect("file");
        }
        Self { dir }
    }

    pub(crate) fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub(crate) fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

pub(crate) async fn start(
    root: &Path,
    tweak: impl FnOnce(&mut image_factory::config::Config),
) -> TestServer {
    let root = root.display().to_string();
    TestServer::start_with(move |c| {
        c.tftp.root = root;
        tweak(c);
    })
    .await
}

pub(crate) fn tftp_addr(s: &TestServer) -> SocketAddr {
    s.addrs.tftp.expect("tftp listener bound")
}

/// Runs a client command (bounded); returns whether it succeeded and its stderr.
pub(crate) async fn run(cmd: &mut Command) -> (bool, String) {
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.kill_on_drop(true).output())
        .await
        .expect("client finished within 120 s")
        .expect("client runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(crate) fn curl(addr: SocketAddr, name: &str, out: &Path, blksize: Option<u32>) -> Command {
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "110"]);
    if let Some(b) = blksize {
        c.args(["--tftp-blksize", &b.to_string()]);
    }
    c.arg(format!("tftp://{addr}/{name}")).arg("-o").arg(out);
    c
}

pub(crate) fn atftp(addr: SocketAddr, name: &str, out: &Path, opts: &[&str]) -> Command {
    let mut c = Command::new("atftp");
    for o in opts {
        c.args(["--option", o]);
    }
    c.args(["-g", "-r", name, "-l"])
        .arg(out)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string());
    c
}

pub(crate) fn tftp_hpa(addr: SocketAddr, name: &str, out: &Path) -> Command {
    let mut c = Command::new("tftp");
    c.args(["-m", "binary"])
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .args(["-c", "get", name])
        .arg(out);
    c
}

pub(crate) fn have_clients() -> bool {
    use testsupport::tools::have;
    have("curl", "curl") && have("atftp", "atftp") && have("tftp", "tftp-hpa")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_download_byte_identical_files() {
    if !have_clients() {
        return;
    }
    let files = [
        ("small.bin", pattern(100_000, 1)),
        ("exact.bin", pattern(512 * 64, 2)),
        ("wide.bin", pattern(1468 * 16 * 3, 3)),
        ("empty.bin", Vec::new()),
    ];
    let tree = Tree::new(&files);
    let s = start(&tree.root(), |_| {}).await;
    let addr = tftp_addr(&s);
    for (name, data) in &files {
        let want = sha(data);
        let mut clients: Vec<(&str, Command)> = vec![
            ("curl", curl(addr, name, &tree.out("o"), None)),
            ("curl-1468", curl(addr, name, &tree.out("o"), Some(1468))),
            ("atftp", atftp(addr, name, &tree.out("o"), &[])),
            (
                "atftp-options",
                atftp(
                    addr,
                    name,
                    &tree.out("o"),
                    &["blksize 1468", "tsize 0", "windowsize 16"],
                ),
            ),
            ("tftp-hpa", tftp_hpa(addr, name, &tree.out("o"))),
        ];
        for (client, cmd) in &mut clients {
            let _ = std::fs::remove_file(tree.out("o"));
            let (ok, err) = run(cmd).await;
            assert!(ok, "{client} {name}: {err}");
            let got = std::fs::read(tree.out("o")).expect("downloaded");
            assert_eq!(sha(&got), want, "{client} {name}: bytes differ");
        }
    }
    // The /status listeners name the TFTP address.
    let status = s.status().await;
    assert_eq!(status["listeners"]["tftp"], addr.to_string(), "{status}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_ipxe_binaries_and_chain_script() {
    let dir = Path::new("/usr/lib/ipxe");
    if !testsupport::tools::require(
        dir.join("undionly.kpxe").exists(),
        "/usr/lib/ipxe/undionly.kpxe is missing (Debian package ipxe)",
    ) || !have_clients()
    {
        return;
    }
    // The default tftp.root is Debian's ipxe directory.
    let s = TestServer::start().await;
    let addr = tftp_addr(&s);
    let out = tempfile::tempdir().expect("tempdir");
    for name in ["undionly.kpxe", "ipxe.efi", "snponly.efi"] {
        let o = out.path().join(name);
        let (ok, err) = run(&mut curl(addr, name, &o, Some(1468))).await;
        assert!(ok, "{name}: {err}");
        let want = std::fs::read(dir.join(name)).expect("debian file");
        assert_eq!(sha(&std::fs::read(&o).expect("got")), sha(&want), "{name}");
    }
    let o = out.path().join("chain");
    let (ok, err) = run(&mut curl(addr, "pxe/abc123/v1.11.0/metal-amd64", &o, None)).await;
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read_to_string(&o).expect("script"),
        "#!ipxe\n# image-factory: continue over HTTP\nchain --autofree http://localhost:8080/pxe/abc123/v1.11.0/metal-amd64\n"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollover_past_32_mib_at_512_byte_blocks() {
    if !have_clients() {
        return;
    }
    // 65535 blocks of 512 bytes is 32 MiB - 512: this file needs 67 000-odd blocks.
    let data = pattern(33 * 1024 * 1024 + 100, 7);
    let want = sha(&data);
    let tree = Tree::new(&[("big.bin", data)]);
    let s = start(&tree.root(), |_| {}).await;
    let addr = tftp_addr(&s);
    let mut clients: Vec<(&str, Command)> = vec![
        ("curl", curl(addr, "big.bin", &tree.out("o"), None)),
        ("tftp-hpa", tftp_hpa(addr, "big.bin", &tree.out("o"))),
        (
            "atftp-window",
            atftp(addr, "big.bin", &tree.out("o"), &["windowsize 8"]),
        ),
    ];
    for (client, cmd) in &mut clients {
        let _ = std::fs::remove_file(tree.out("o"));
        let (ok, err) = run(cmd).await;
        assert!(ok, "{client}: {err}");
        let got = std::fs::read(tree.out("o")).expect("downloaded");
        assert_eq!(got.len(), 33 * 1024 * 1024 + 100, "{client}");
        assert_eq!(sha(&got), want, "{client}: bytes differ");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_clients() {
    if !have_clients() {
        return;
    }
    let data = pattern(300_000, 17);
    let want = sha(&data);
    let tree = Tree::new(&[("f.bin", data)]);
    let s = start(&tree.root(), |_| {}).await;
    let addr = tftp_addr(&s);
    let mut children = Vec::new();
    for i in 0..50 {
        let out = tree.out(&format!("o{i}"));
        let mut cmd = match i % 3 {
            0 => curl(addr, "f.bin", &out, Some(1468)),
            1 => atftp(addr, "f.bin", &out, &["blksize 1468", "windowsize 8"]),
            _ => tftp_hpa(addr, "f.bin", &out),
        };
        children.push(
            cmd.kill_on_drop(true)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("client"),
        );
    }
    for (i, mut ch) in children.into_iter().enumerate() {
        let st = tokio::time::timeout(Duration::from_secs(120), ch.wait())
            .await
            .expect("client finished")
            .expect("wait");
        assert!(st.success(), "client {i}");
        let got = std::fs::read(tree.out(&format!("o{i}"))).expect("got");
        assert_eq!(sha(&got), want, "client {i}");
    }
    s.stop().await;
}

/// A UDP relay between one client and the server that drops every `drop_nth` and duplicates
/// every `dup_nth` datagram (both directions counted together). Replies reach the client from
/// the relay's own port, and the relay follows the server's transfer port.
async fn lossy_relay(server: SocketAddr, drop_nth: u64, dup_nth: u64) -> SocketAddr {
    let down = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let up = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = down.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut client, mut target) = (None, server);
        let mut n = 0u64;
        let mut b1 = vec![0u8; 70000];
        let mut b2 = vec![0u8; 70000];
        loop {
            let (to_server, len) = tokio::select! {
                r = down.recv_from(&mut b1) => match r { Ok((len, from)) => { client = Some(from); (true, len) } Err(_) => return },
                r = up.recv_from(&mut b2) => match r { Ok((len, from)) => { target = from; (false, len) } Err(_) => return },
            };
            n += 1;
            if n.is_multiple_of(drop_nth) {
                continue;
            }
            let copies = if n.is_multiple_of(dup_nth) { 2 } else { 1 };
            for _ in 0..copies {
                if to_server {
                    let _ = up.send_to(&b1[..len], target).await;
                } else if let Some(c) = client {
                    let _ = down.send_to(&b2[..len], c).await;
                }
            }
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_and_duplicated_datagrams_still_deliver_the_same_bytes() {
    if !have_clients() {
        return;
    }
    // Small enough that each client meets a handful of losses (each costs a timeout).
    let data = pattern(60_000, 19);
    let want = sha(&data);
    let tree = Tree::new(&[("f.bin", data)]);
    let s = start(&tree.root(), |_| {}).await;
    let server = tftp_addr(&s);
    // curl asks for a 5 s timeout (RFC 2349), so each loss costs it 5 s: it meets fewer.
    for (client, drop_nth, dup_nth) in [
        ("curl", 97, 7),
        ("tftp-hpa", 53, 5),
        ("atftp-window", 23, 6),
        ("atftp", 37, 3),
    ] {
        let relay = lossy_relay(server, drop_nth, dup_nth).await;
        let out = tree.out(client);
        let mut cmd = match client {
            "curl" => curl(relay, "f.bin", &out, None),
            "tftp-hpa" => tftp_hpa(relay, "f.bin", &out),
            "atftp-window" => atftp(relay, "f.bin", &out, &["blksize 1468", "windowsize 8"]),
            _ => atftp(relay, "f.bin", &out, &[]),
        };
        let t = Instant::now();
        let (ok, err) = run(&mut cmd).await;
        assert!(ok, "{client}: {err}");
        let got = std::fs::read(&out).expect("got");
        assert_eq!(sha(&got), want, "{client}: bytes differ");
        println!("{client}: {:?}", t.elapsed());
    }
    // The metrics saw the four transfers end (a transfer whose last ACK was lost may end by
    // its timeout, as failed), the bytes of those that finished, and the retransmissions.
    let deadline = Instant::now() + Duration::from_secs(60);
    while ended(&s).await < 4.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ended(&s).await, 4.0);
    let done = metric(
        &s,
        "image_factory_tftp_transfers_total",
        &["result=\"done\""],
    )
    .await;
    assert!(done >= 1.0);
    assert_eq!(
        metric(&s, "image_factory_tftp_sent_bytes_total", &[]).await,
        done * 60_000.0
    );
    assert!(metric(&s, "image_factory_tftp_retransmits_total", &[]).await > 0.0);
    assert_eq!(
        metric(
            &s,
            "image_factory_tftp_requests_total",
            &["result=\"started\""]
        )
        .await,
        4.0
    );
    assert_eq!(
        metric(&s, "image_factory_tftp_active_transfers", &[]).await,
        0.0
    );
    s.stop().await;
}

/// TFTP transfers that ended, finished or failed.
async fn ended(s: &TestServer) -> f64 {
    metric(
        s,
        "image_factory_tftp_transfers_total",
        &["result=\"done\""],
    )
    .await
        + metric(
            s,
            "image_factory_tftp_transfers_total",
            &["result=\"failed\""],
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_address_that_cannot_bind() {
    // An address the operator set must bind: serve fails and names the key.
    let held = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let taken = held.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = image_factory::config::Config::default();
    cfg.storage.data_dir = dir.path().display().to_string();
    cfg.http.http_listen_addr = "127.0.0.1:0".into();
    cfg.metrics.addr = String::new();
    cfg.tftp.listen_addr = taken;
    let err = match image_factory::frontend::serve(cfg, std::future::pending()).await {
        Ok(_) => panic!("serve started with its TFTP address taken"),
        Err(e) => format!("{:?}", e),
    };
    assert!(err.contains("tftp.listenAddr"), "{err}");
}

#[test]
fn default_port_69_unavailable_only_warns() {
    // Hold UDP 69 on loopback (or fail to, when not allowed: then serve cannot bind it
    // either): the default wildcard bind of the same port then fails with EADDRINUSE.
    let _held = std::net::UdpSocket::bind("127.0.0.1:69");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = crate::common::spawn_bin_default_tftp(dir.path())
        .unwrap_or_else(|e| panic!("serve did not start: {e}"));
    let warnings: Vec<String> = server
        .log
        .lock()
        .expect("log")
        .iter()
        .filter(|l| l.contains("TFTP not started"))
        .cloned()
        .collect();
    let _ = server.child.kill();
    let _ = server.child.wait();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("CAP_NET_BIND_SERVICE") && warnings[0].contains("IF_TFTP_LISTENADDR"),
        "{}",
        warnings[0]
    );
}
