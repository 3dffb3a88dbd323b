//! The HTTP listener under hostile connection patterns (issue 14 item 2): clients that never
//! finish a request head, kept-alive connections that go quiet, and more connections than the
//! cap. Loopback only; every loop is bounded.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::common::{TestServer, client};

/// Opens `n` connections that each send part of a request head and then nothing.
async fn stalled_heads(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut socks = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
            .await
            .expect("partial head");
        socks.push(s);
    }
    socks
}

/// Whether the server closed `s` within `within` (EOF or a reset on read).
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    matches!(
        tokio::time::timeout(within, s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// A plain GET of `/healthz` answers 200 (a liveness bound, not a speed check).
async fn healthy(srv: &TestServer) {
    let resp = client()
        .get(srv.url("/healthz"))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("a new client is served");
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_request_heads_do_not_block_new_clients_and_are_closed() {
    let srv = TestServer::start_with(|c| c.http.read_header_timeout_seconds = 3).await;
    let started = Instant::now();
    let mut socks = stalled_heads(srv.addrs.http, 1500).await;
    healthy(&srv).await;
    // Every stalled connection is closed once the head timeout has passed.
    let mut open = 0;
    for s in &mut socks {
        let left = Duration::from_secs(20).saturating_sub(started.elapsed());
        if !closed_within(s, left.max(Duration::from_millis(100))).await {
            open += 1;
        }
    }
    assert_eq!(open, 0, "{open} of 1500 stalled connections stayed open");
    healthy(&srv).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_the_cap_stalled_heads_are_shed_for_new_clients() {
    // A head timeout far beyond the test: only shedding can make room.
    let srv = TestServer::start_with(|c| {
        c.http.max_connections = 64;
        c.http.read_header_timeout_seconds = 300;
    })
    .await;
    let mut socks = stalled_heads(srv.addrs.http, 64).await;
    // Let the server admit them all before the newcomer arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        healthy(&srv).await;
    }
    // The oldest stalled connections made room for the new clients.
    assert!(
        closed_within(&mut socks[0], Duration::from_secs(5)).await,
        "the oldest stalled head was not shed"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let srv = TestServer::start_with(|c| c.http.idle_timeout_seconds = 2).await;
    for path in ["/healthz", "/image/x/v1.11.0/kernel-amd64"] {
        let mut s = TcpStream::connect(srv.addrs.http).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 "));
        // Still open right after the response (kept alive)...
        assert!(
            !closed_within(&mut s, Duration::from_millis(500)).await,
            "{path}: closed at once"
        );
        // ...and closed once it has been idle for the timeout.
        assert!(
            closed_within(&mut s, Duration::from_secs(10)).await,
            "{path}: idle connection stayed open"
        );
    }
    srv.stop().await;
}

/// Sends `GET path` as `version` on a connection with a small receive buffer, never reads for
/// `stall`, then reads what is left; returns the bytes received before the server closed it
/// (or the whole response, if it never gave up).
async fn stalled_reader(
    addr: std::net::SocketAddr,
    path: &str,
    version: &str,
    stall: Duration,
) -> usize {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut s = sock.connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} {version}\r\nHost: stalled\r\n\r\n").as_bytes())
        .await
        .expect("request");
    tokio::time::sleep(stall).await;
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    // Bounded: the server either closed the connection (the read ends early) or sends the
    // whole asset; 60 s covers either on a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => got += n,
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_stops_reading_a_download_is_cut_off_at_the_write_timeout() {
    use crate::common::assets::{V, create_schematic, get};
    use crate::common::kit;
    // Extensions padded with 8 MiB each: an initramfs far larger than socket buffers.
    let Some(k) = kit::imported(8) else { return };
    let data = k.data.display().to_string();
    let srv = TestServer::start_with(move |c| {
        c.storage.data_dir = data;
        c.cache.gc_interval_seconds = 0;
        c.cache.scrub_interval_seconds = 0;
        c.http.write_timeout_seconds = 2;
    })
    .await;
    let id = create_schematic(&srv, kit::SCHEMATIC).await;
    let path = format!("/image/{id}/{V}/initramfs-amd64.xz");
    let whole = get(&srv, &path, &[]).await;
    assert_eq!(whole.status, 200);
    let size = whole.body.len();
    assert!(
        size > 20 << 20,
        "asset too small for the test: {size} bytes"
    );
    // HTTP/1.1 takes the zero-copy path (sendfile), HTTP/1.0 the hyper path: both give up
    // on a client that makes no progress, long before the asset is sent.
    for version in ["HTTP/1.1", "HTTP/1.0"] {
        let got = stalled_reader(srv.addrs.http, &path, version, Duration::from_secs(8)).await;
        assert!(
            got < size / 2,
            "{version}: a client that stopped reading for 8 s still got {got} of {size} bytes"
        );
    }
    // A client that reads is served whole meanwhile.
    let again = get(&srv, &path, &[]).await;
    assert_eq!((again.status, again.body.len()), (200, size));
    srv.stop().await;
}
