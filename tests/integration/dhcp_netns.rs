//! ProxyDHCP on a real interface, the way firmware meets it: two network namespaces made
//! here (removed on drop) joined by a veth pair; the server bound to one end at ports 67 and
//! 4011, finding its address from the interface; a client on the other end. A DISCOVER from
//! 0.0.0.0 (the client end has no address yet, as firmware has none) must come back as a
//! broadcast on the interface, and a DISCOVER forwarded by a relay agent (`giaddr`) must go
//! to the relay's port 67. Nothing leaves the namespaces. Needs root and `ip` (iproute2).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use dhcproto::v4::{self, Decodable as _, MessageType};
use testsupport::netns::{self, NetNs};

use crate::dhcp::{
    ANSWER_WAIT, MAC, assert_proxy_answer_from, boot_file, bytes, counter, may_bind_device,
    request, start,
};

/// TEST-NET-2 (RFC 5737): documentation addresses, used only inside the namespaces.
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const RELAY_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

/// Two namespaces and the veth pair between them.
struct Netns {
    server: String,
    client: String,
    server_if: String,
    client_if: String,
    _namespaces: [NetNs; 2],
}

impl Netns {
    fn create() -> Self {
        let server = NetNs::create("ifdhcp-s").expect("server namespace");
        let client = NetNs::create("ifdhcp-c").expect("client namespace");
        let id = std::process::id() % 1_000_000;
        let (server_if, client_if) = (format!("vds{id}"), format!("vdc{id}"));
        server
            .ip(&[
                "link",
                "add",
                &server_if,
                "type",
                "veth",
                "peer",
                "name",
                &client_if,
                "netns",
                client.name(),
            ])
            .expect("veth pair");
        server
            .ip(&["addr", "add", &format!("{SERVER_IP}/24"), "dev", &server_if])
            .expect("server address");
        server
            .ip(&["link", "set", &server_if, "up"])
            .expect("server link");
        client
            .ip(&["link", "set", &client_if, "up"])
            .expect("client link");
        Netns {
            server: server.name().to_string(),
            client: client.name().to_string(),
            server_if,
            client_if,
            _namespaces: [server, client],
        }
    }
}

/// Moves the calling thread into network namespace `name` (sockets it opens live there).
fn enter(name: &str) {
    let f = std::fs::File::open(format!("/run/netns/{name}")).expect("namespace file");
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&f),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .expect("setns");
}

/// A UDP socket on `iface` as a DHCP client or relay opens it.
fn udp(bind: SocketAddr, iface: &str) -> UdpSocket {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
    s.set_reuse_address(true).expect("reuseaddr");
    s.set_broadcast(true).expect("broadcast");
    s.bind_device(Some(iface.as_bytes()))
        .expect("bind to the veth");
    s.bind(&bind.into()).expect("bind");
    let s: UdpSocket = s.into();
    s.set_read_timeout(Some(ANSWER_WAIT)).expect("timeout");
    s
}

fn receive(s: &UdpSocket) -> (v4::Message, SocketAddr) {
    let mut buf = [0u8; 2048];
    let (n, from) = s.recv_from(&mut buf).expect("an answer within the wait");
    (
        v4::Message::from_bytes(&buf[..n]).expect("the answer decodes"),
        from,
    )
}

/// The client side: a broadcast DISCOVER from an unconfigured client, then one through a
/// relay once the client end has an address.
fn client_exchanges(ns: &str, iface: &str) -> Vec<(v4::Message, SocketAddr)> {
    enter(ns);
    let class = Some(&b"PXEClient:Arch:00000:UNDI:002001"[..]);
    let any = |port| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
    let mut got = Vec::new();

    let c = udp(any(68), iface);
    let mut m = request(MessageType::Discover, 0xb0ad, class, Some(0), vec![]);
    m.set_flags(v4::Flags::default().set_broadcast());
    c.send_to(&bytes(&m), SocketAddrV4::new(Ipv4Addr::BROADCAST, 67))
        .expect("send the broadcast DISCOVER");
    // The client end has no address: an answer can only arrive as a broadcast.
    got.push(receive(&c));
    drop(c);

    netns::ip(&[
        "-n",
        ns,
        "addr",
        "add",
        &format!("{RELAY_IP}/24"),
        "dev",
        iface,
    ])
    .expect("relay address");
    // The relay forwards from another port than the one it listens on, so only an answer
    // addressed by `giaddr` (to port 67) reaches it.
    let relay_in = udp(SocketAddr::V4(SocketAddrV4::new(RELAY_IP, 67)), iface);
    let relay_out = udp(SocketAddr::V4(SocketAddrV4::new(RELAY_IP, 0)), iface);
    let mut m = request(MessageType::Discover, 0x4e1a, class, Some(0), vec![]);
    m.set_giaddr(RELAY_IP).set_hops(1);
    relay_out
        .send_to(&bytes(&m), SocketAddrV4::new(SERVER_IP, 67))
        .expect("relay the DISCOVER");
    got.push(receive(&relay_in));
    got
}

#[test]
fn broadcast_and_relayed_discovers_are_answered_on_a_veth() {
    if !may_bind_device() || !testsupport::tools::have("ip", "iproute2") {
        return;
    }
    let ns = Netns::create();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let (server_ns, server_if) = (ns.server.clone(), ns.server_if.clone());
    let server = std::thread::spawn(move || {
        enter(&server_ns);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let (s, _root) = start(&[("undionly.kpxe", b"bios")], |c| {
                let p = &mut c.netboot.proxy_dhcp;
                p.interface = server_if;
                p.listen_addr = ":67".into();
                p.pxe_listen_addr = ":4011".into();
            })
            .await;
            let status = s.status().await;
            let _ = ready_tx.send(());
            let _ = done_rx.await;
            let offers = counter(
                &s,
                "image_factory_dhcp_offers_total",
                &[("client", "bios"), ("reply", "offer")],
            )
            .await;
            s.stop().await;
            (status, offers)
        })
    });
    let started = ready_rx.recv_timeout(Duration::from_secs(120));
    let (client_ns, client_if) = (ns.client.clone(), ns.client_if.clone());
    let answers = match started {
        Ok(()) => std::thread::spawn(move || client_exchanges(&client_ns, &client_if)).join(),
        Err(e) => Err(Box::new(format!("the server did not start: {e}")) as _),
    };
    let _ = done_tx.send(());
    let (status, offers) = server.join().expect("server thread");
    let answers = answers.unwrap_or_else(|p| std::panic::resume_unwind(p));

    // The advertised address was found on the interface.
    assert_eq!(status["proxyDhcp"]["serverAddr"], SERVER_IP.to_string());
    assert_eq!(status["proxyDhcp"]["interface"], ns.server_if.as_str());
    let [(broadcast, from_b), (relayed, from_r)] = answers.as_slice() else {
        panic!("two answers expected: {answers:?}");
    };
    for (a, from, xid) in [(broadcast, from_b, 0xb0ad), (relayed, from_r, 0x4e1a)] {
        assert_eq!(*from, SocketAddr::V4(SocketAddrV4::new(SERVER_IP, 67)));
        assert_eq!(a.xid(), xid);
        assert_eq!(a.chaddr(), &MAC);
        assert_proxy_answer_from(a, MessageType::Offer, b"PXEClient", SERVER_IP);
        assert_eq!(boot_file(a).as_deref(), Some("undionly.kpxe"));
    }
    assert!(broadcast.flags().broadcast(), "flags echoed");
    assert_eq!(relayed.giaddr(), RELAY_IP, "giaddr echoed");
    assert_eq!(offers, 2);
}
