//! The ProxyDHCP responder against what PXE firmware never sends: truncated, oversize and
//! malformed datagrams, a flood beyond the rate limit, and configurations that cannot start.
//! Same setup as `dhcp` (a real `serve` on `lo`, root).

use std::time::Duration;

use dhcproto::v4::{self, Decodable as _, MessageType};
use image_factory::config::Config;

use crate::dhcp::{
    Client, SILENCE_WAIT, boot_file, bytes, counter, dhcp_port, may_bind_device, pxe_port, request,
    start,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_datagrams_do_not_stop_the_responder() {
    if !may_bind_device() {
        return;
    }
    let (s, _root) = start(&[], |_| {}).await;
    let c = Client::new().await;
    let class = b"PXEClient:Arch:00000:UNDI:002001";
    let good = bytes(&request(
        MessageType::Discover,
        0x600d,
        Some(class),
        Some(0),
        vec![],
    ));
    let mut hostile: Vec<(Vec<u8>, &str)> = vec![
        (Vec::new(), "truncated"),
        (good[..100].to_vec(), "truncated"),
        (good[..239].to_vec(), "truncated"),
        (vec![0xff; 4000], "oversize"),
        (
            {
                let mut b = good.clone();
                b.resize(1501, 0);
                b
            },
            "oversize",
        ),
        (
            {
                let mut b = good.clone();
                b[0] = 2;
                b
            },
            "not-request",
        ),
        (
            {
                let mut b = good.clone();
                b[2] = 255;
                b
            },
            "hardware-address",
        ),
        (
            {
                let mut b = good.clone();
                b[236..240].copy_from_slice(b"JUNK");
                b
            },
            "no-cookie",
        ),
    ];
    // Options running past the end, zero-length and odd-length values (including ones
    // dhcproto's eager decoder asserts on), and a message type of the wrong length.
    let head = &good[..240];
    for tail in [
        &[53u8, 1, 1, 60, 200, b'P'][..],
        &[53, 1, 1, 93, 0, 60, 9],
        &[53, 1, 1, 94, 1, 0, 81, 0, 149, 0, 255],
        &[53, 2, 1, 1, 255],
        &[
            60, 9, b'P', b'X', b'E', b'C', b'l', b'i', b'e', b'n', b't', 255,
        ],
    ] {
        let mut b = head.to_vec();
        b.extend_from_slice(tail);
        hostile.push((b, "any"));
    }
    for (data, _) in &hostile {
        c.send_raw(dhcp_port(&s), data).await;
        c.send_raw(pxe_port(&s), data).await;
    }
    let a = c
        .ask(
            dhcp_port(&s),
            &v4::Message::from_bytes(&good).expect("good"),
        )
        .await;
    assert_eq!(boot_file(&a).as_deref(), Some("undionly.kpxe"));
    for (reason, n) in [
        ("truncated", 6),
        ("oversize", 4),
        ("not-request", 2),
        ("hardware-address", 2),
        ("no-cookie", 2),
    ] {
        assert_eq!(
            counter(
                &s,
                "image_factory_dhcp_malformed_total",
                &[("reason", reason)]
            )
            .await,
            n,
            "{reason}"
        );
    }
    s.stop().await;
}

/// A flood beyond `maxRepliesPerSecond` is dropped without per-client state; the responder
/// answers again once the bucket refills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_beyond_the_rate_limit_are_dropped() {
    if !may_bind_device() {
        return;
    }
    let (s, _root) = start(&[], |c| c.netboot.proxy_dhcp.max_replies_per_second = 2).await;
    let c = Client::new().await;
    let class = b"PXEClient:Arch:00000:UNDI:002001";
    for xid in 0..6 {
        c.send(
            dhcp_port(&s),
            &request(MessageType::Discover, xid, Some(class), Some(0), vec![]),
        )
        .await;
    }
    let mut answered = 0;
    while c.recv(SILENCE_WAIT).await.is_some() {
        answered += 1;
    }
    assert!(
        (2..=3).contains(&answered),
        "{answered} of 6 answered at 2 per second"
    );
    assert!(
        counter(
            &s,
            "image_factory_dhcp_ignored_total",
            &[("reason", "rate-limited")]
        )
        .await
            >= 3
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let a = c
        .ask(
            dhcp_port(&s),
            &request(MessageType::Discover, 0x600d, Some(class), Some(0), vec![]),
        )
        .await;
    assert_eq!(boot_file(&a).as_deref(), Some("undionly.kpxe"));
    s.stop().await;
}

/// `serve` with ProxyDHCP that cannot start fails, naming the key and the fix.
async fn serve_error(tweak: impl FnOnce(&mut Config)) -> String {
    crate::common::init();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = Config::default();
    cfg.storage.data_dir = dir.path().display().to_string();
    cfg.http.http_listen_addr = "127.0.0.1:0".into();
    cfg.metrics.addr = String::new();
    cfg.tftp.listen_addr = String::new();
    let p = &mut cfg.netboot.proxy_dhcp;
    p.enabled = true;
    p.interface = "lo".into();
    p.listen_addr = ":0".into();
    p.pxe_listen_addr = ":0".into();
    tweak(&mut cfg);
    match image_factory::frontend::serve(cfg, std::future::pending()).await {
        Ok(_) => panic!("serve started"),
        Err(e) => image_factory::causes::Causes(&e).to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_errors_name_the_fix() {
    if !may_bind_device() {
        return;
    }
    let e = serve_error(|c| c.netboot.proxy_dhcp.interface = "nosuchif0".into()).await;
    assert!(
        e.contains("\"nosuchif0\"")
            && e.contains("netboot.proxyDhcp.interface")
            && e.contains("lo (127.0.0.1)"),
        "{e}"
    );
    let e = serve_error(|c| {
        c.netboot.proxy_dhcp.interface = "nosuchif0".into();
        c.netboot.proxy_dhcp.server_addr = "192.0.2.1".into();
    })
    .await;
    assert!(
        e.contains("netboot.proxyDhcp.listenAddr") && e.contains("netboot.proxyDhcp.enabled"),
        "{e}"
    );
    // A port another socket holds without SO_REUSEADDR (e.g. a DHCP server).
    let held = std::net::UdpSocket::bind("0.0.0.0:0").expect("hold a port");
    let port = held.local_addr().expect("addr").port();
    let e = serve_error(|c| c.netboot.proxy_dhcp.pxe_listen_addr = format!(":{port}")).await;
    assert!(
        e.contains("netboot.proxyDhcp.pxeListenAddr")
            && e.contains("CAP_NET_BIND_SERVICE")
            && e.contains("in use"),
        "{e}"
    );
}
