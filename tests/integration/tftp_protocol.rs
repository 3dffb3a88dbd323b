//! The TFTP frontend with a raw UDP client, for what real clients never send: malformed and
//! truncated packets, oversize and unknown options, path traversal, writes, duplicate ACKs,
//! partial window ACKs, silence (backoff), and a full transfer table. Loopback only.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::process::Command;

use crate::tftp::{Tree, curl, have_clients, pattern, run, start, tftp_addr, tftp_hpa};

/// A raw TFTP client socket.
struct Raw {
    sock: UdpSocket,
}

/// A datagram as the tests read it.
#[derive(Debug, PartialEq)]
enum Got {
    Data(u16, usize),
    Oack(Vec<(String, String)>),
    Error(u16, String),
    Other(Vec<u8>),
}

fn decode(b: &[u8]) -> Got {
    let op = u16::from_be_bytes([b[0], b[1]]);
    match op {
        3 => Got::Data(u16::from_be_bytes([b[2], b[3]]), b.len() - 4),
        5 => Got::Error(
            u16::from_be_bytes([b[2], b[3]]),
            String::from_utf8_lossy(&b[4..b.len() - 1]).into_owned(),
        ),
        6 => {
            let f: Vec<String> = b[2..b.len() - 1]
                .split(|c| *c == 0)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect();
            Got::Oack(f.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect())
        }
        _ => Got::Other(b.to_vec()),
    }
}

fn rrq(name: &str, opts: &[(&str, &str)]) -> Vec<u8> {
    let mut p = vec![0, 1];
    for f in [name, "octet"]
        .into_iter()
        .chain(opts.iter().flat_map(|(k, v)| [*k, *v]))
    {
        p.extend_from_slice(f.as_bytes());
        p.push(0);
    }
    p
}

fn ack(block: u16) -> Vec<u8> {
    let mut p = vec![0, 4];
    p.extend_from_slice(&block.to_be_bytes());
    p
}

impl Raw {
    async fn new() -> Self {
        Self {
            sock: UdpSocket::bind("127.0.0.1:0").await.expect("bind"),
        }
    }

    async fn send(&self, to: SocketAddr, p: &[u8]) {
        self.sock.send_to(p, to).await.expect("send");
    }

    async fn recv(&self, within: Duration) -> Option<(Got, SocketAddr)> {
        let mut buf = vec![0u8; 70000];
        match tokio::time::timeout(within, self.sock.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) => Some((decode(&buf[..n]), from)),
            _ => None,
        }
    }

    /// Sends `p` to the listener and returns the answer (which must come).
    async fn ask(&self, to: SocketAddr, p: &[u8]) -> (Got, SocketAddr) {
        self.send(to, p).await;
        self.recv(Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("no answer to {p:?}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_packets_get_errors_and_the_server_keeps_serving() {
    let tree = Tree::new(&[("f.bin", pattern(3000, 5))]);
    let s = start(&tree.root(), |_| {}).await;
    let addr = tftp_addr(&s);
    let c = Raw::new().await;
    let is_err = |g: &Got, code: u16| matches!(g, Got::Error(c, _) if *c == code);

    for (what, p, code) in [
        ("one byte", vec![0u8], 4),
        ("truncated request", b"\0\x01f.bin".to_vec(), 4),
        ("no mode", b"\0\x01f.bin\0".to_vec(), 4),
        ("unknown opcode", vec![0, 9, 0, 0], 4),
        ("mail mode", b"\0\x01f.bin\0mail\0".to_vec(), 4),
        ("ack on the listen port", ack(1), 4),
        (
            "option without value",
            rrq("f.bin", &[("tsize", "0")])[..20].to_vec(),
            4,
        ),
        (
            "oversize request",
            rrq(&"a".repeat(300), &[("x", &"y".repeat(300))]),
            4,
        ),
        ("blksize below 8", rrq("f.bin", &[("blksize", "4")]), 8),
        ("windowsize 0", rrq("f.bin", &[("windowsize", "0")]), 8),
        ("write request", b"\0\x02up.bin\0octet\0".to_vec(), 2),
        ("traversal", rrq("../secret", &[]), 2),
        ("traversal below a folder", rrq("sub/../../secret", &[]), 2),
        ("traversal with backslashes", rrq("..\\secret", &[]), 2),
        ("rooted traversal", rrq("/../secret", &[]), 2),
        ("absolute path is root-relative", rrq("/etc/passwd", &[]), 1),
        ("missing file", rrq("nope.bin", &[]), 1),
        ("a directory", rrq("sub", &[]), 1),
    ] {
        let (got, _) = c.ask(addr, &p).await;
        assert!(is_err(&got, code), "{what}: {got:?}");
    }
    assert!(!tree.root().join("up.bin").exists());

    // Unknown options are left out: no OACK, block 1 straight away.
    let (got, _) = c.ask(addr, &rrq("f.bin", &[("frobnicate", "1")])).await;
    assert_eq!(got, Got::Data(1, 512));
    // Oversize options are clamped in the OACK.
    let (got, _) = c
        .ask(
            addr,
            &rrq(
                "f.bin",
                &[("blksize", "65464"), ("windowsize", "1000"), ("tsize", "0")],
            ),
        )
        .await;
    assert_eq!(
        got,
        Got::Oack(vec![
            ("blksize".into(), "1468".into()),
            ("windowsize".into(), "64".into()),
            ("tsize".into(), "3000".into()),
        ])
    );

    // Real clients: a write and a traversal are refused, and downloads still work.
    if have_clients() {
        let (ok, _) = run(Command::new("curl")
            .args(["-sS", "-T"])
            .arg(tree.dir.path().join("secret"))
            .arg(format!("tftp://{addr}/up.bin")))
        .await;
        assert!(!ok, "curl upload must fail");
        let (ok, _) = run(&mut tftp_hpa(addr, "../secret", &tree.out("o"))).await;
        let leaked = std::fs::read(tree.out("o")).unwrap_or_default();
        assert!(!ok || leaked.is_empty(), "traversal served {leaked:?}");
        assert!(!tree.root().join("up.bin").exists());
        let (ok, err) = run(&mut curl(addr, "f.bin", &tree.out("o2"), None)).await;
        assert!(ok, "{err}");
        assert_eq!(
            std::fs::read(tree.out("o2")).expect("got"),
            pattern(3000, 5)
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_acks_never_double_the_data() {
    let tree = Tree::new(&[("f.bin", pattern(512 * 3 + 1, 9))]);
    let s = start(&tree.root(), |_| {}).await;
    let c = Raw::new().await;
    let (got, tid) = c.ask(tftp_addr(&s), &rrq("f.bin", &[])).await;
    assert_eq!(got, Got::Data(1, 512));
    // ACK 1 three times: block 2 must come once (no Sorcerer's Apprentice).
    for _ in 0..3 {
        c.send(tid, &ack(1)).await;
    }
    let mut seen = Vec::new();
    while let Some((g, _)) = c.recv(Duration::from_millis(600)).await {
        seen.push(g);
    }
    assert_eq!(seen, vec![Got::Data(2, 512)], "one block 2 for three ACKs");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_restarts_at_a_partial_ack_and_silence_backs_off() {
    let tree = Tree::new(&[("f.bin", pattern(512 * 10, 11))]);
    let s = start(&tree.root(), |_| {}).await;
    let c = Raw::new().await;
    let (got, tid) = c
        .ask(tftp_addr(&s), &rrq("f.bin", &[("windowsize", "4")]))
        .await;
    assert!(matches!(got, Got::Oack(_)), "{got:?}");
    c.send(tid, &ack(0)).await;
    let mut blocks = Vec::new();
    for _ in 0..4 {
        if let Some((Got::Data(b, _), _)) = c.recv(Duration::from_secs(2)).await {
            blocks.push(b);
        }
    }
    assert_eq!(blocks, vec![1, 2, 3, 4]);
    // RFC 7440 4.5: an ACK inside the window restarts it after the acknowledged block.
    c.send(tid, &ack(2)).await;
    let mut next = Vec::new();
    for _ in 0..4 {
        if let Some((Got::Data(b, _), _)) = c.recv(Duration::from_secs(2)).await {
            next.push(b);
        }
    }
    assert_eq!(next, vec![3, 4, 5, 6]);
    // Silence: the window comes again after about 1 s, then after about 2 s.
    let mut starts = Vec::new();
    let t0 = Instant::now();
    while starts.len() < 2 {
        match c.recv(Duration::from_secs(5)).await {
            Some((Got::Data(3, _), _)) => starts.push(t0.elapsed()),
            Some(_) => {}
            None => panic!("no retransmission"),
        }
    }
    let (first, second) = (starts[0], starts[1] - starts[0]);
    assert!(first >= Duration::from_millis(800), "{starts:?}");
    assert!(
        second >= first + Duration::from_millis(600),
        "backoff: {starts:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_transfer_table_answers_busy_and_shutdown_tells_clients() {
    let tree = Tree::new(&[("f.bin", pattern(5000, 13))]);
    let s = start(&tree.root(), |c| c.tftp.max_transfers = 2).await;
    let addr = tftp_addr(&s);
    let (a, b, third) = (Raw::new().await, Raw::new().await, Raw::new().await);
    // Two transfers that never ACK hold both slots.
    for c in [&a, &b] {
        let (got, _) = c.ask(addr, &rrq("f.bin", &[])).await;
        assert_eq!(got, Got::Data(1, 512));
    }
    let (got, _) = third.ask(addr, &rrq("f.bin", &[])).await;
    match got {
        Got::Error(0, msg) => assert!(
            msg.contains("busy") && msg.contains("tftp.maxTransfers"),
            "{msg}"
        ),
        other => panic!("expected a busy error, got {other:?}"),
    }
    s.stop().await;
    // Each held transfer hears that the server stopped (after any retransmissions).
    for c in [&a, &b] {
        let mut told = false;
        while let Some((g, _)) = c.recv(Duration::from_secs(3)).await {
            if let Got::Error(_, msg) = g {
                assert!(msg.contains("shutting down"), "{msg}");
                told = true;
                break;
            }
        }
        assert!(told, "no shutdown notice");
    }
    // The listener is gone.
    third.send(addr, &rrq("f.bin", &[])).await;
    assert!(third.recv(Duration::from_millis(500)).await.is_none());
}
