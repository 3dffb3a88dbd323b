//! The ProxyDHCP responder (issue 17 point 2) against a scripted PXE client built with
//! `dhcproto`: a real `serve` with `netboot.proxyDhcp` enabled on `lo` (SO_BINDTODEVICE, so
//! root) at port 0; the client sends from 127.0.0.1, so answers come back to its source
//! address (RFC 2131 §4.1). BIOS, UEFI x64, UEFI arm64 (file present or not), iPXE and UEFI
//! HTTP Boot clients each get their answer; ordinary DHCP clients get none; REQUESTs on the
//! PXE port get an ACK. Hostile input and startup errors: `dhcp_hostile`; the broadcast and
//! relay paths on a real interface: `dhcp_netns`.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use dhcproto::v4::{
    self, Architecture, Decodable as _, DhcpOption, Encodable as _, MessageType, OptionCode,
    UnknownOption,
};
use image_factory::config::Config;
use tokio::net::UdpSocket;

use crate::common::{TestServer, client};

/// The URL base machines are told to use (not this test's HTTP address: the answers only
/// carry it).
pub(crate) const PXE_BASE: &str = "http://192.0.2.10:8080";
pub(crate) const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];
/// How long a test waits for an answer that must come.
pub(crate) const ANSWER_WAIT: Duration = Duration::from_secs(5);
/// How long a test waits to see that no answer comes.
pub(crate) const SILENCE_WAIT: Duration = Duration::from_millis(400);

/// Whether this process may bind to an interface; otherwise the tests skip (or fail under
/// `IF_REQUIRE_TOOLS=1`).
pub(crate) fn may_bind_device() -> bool {
    testsupport::tools::require(
        rustix::process::geteuid().is_root(),
        "ProxyDHCP tests bind to lo with SO_BINDTODEVICE: run them as root",
    )
}

/// A server with ProxyDHCP on `lo` (both ports 0) whose `tftp.root` holds `files`.
pub(crate) async fn start(
    files: &[(&str, &[u8])],
    tweak: impl FnOnce(&mut Config),
) -> (TestServer, tempfile::TempDir) {
    let root = tempfile::tempdir().expect("tempdir");
    for (name, data) in files {
        let path = root.path().join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
        std::fs::write(path, data).expect("file");
    }
    let dir = root.path().display().to_string();
    let s = TestServer::start_with(move |c| {
        c.tftp.root = dir;
        c.http.external_pxe_url = format!("{PXE_BASE}/");
        let p = &mut c.netboot.proxy_dhcp;
        p.enabled = true;
        p.interface = "lo".into();
        p.listen_addr = ":0".into();
        p.pxe_listen_addr = ":0".into();
        tweak(c);
    })
    .await;
    (s, root)
}

pub(crate) fn dhcp_port(s: &TestServer) -> SocketAddr {
    loopback(s.addrs.proxy_dhcp.expect("proxydhcp bound"))
}

pub(crate) fn pxe_port(s: &TestServer) -> SocketAddr {
    loopback(s.addrs.proxy_dhcp_pxe.expect("proxydhcp pxe port bound"))
}

fn loopback(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(Ipv4Addr::LOCALHOST.into(), a.port())
}

/// A request as PXE firmware sends it: message type, vendor class, architecture, a GUID.
pub(crate) fn request(
    kind: MessageType,
    xid: u32,
    class: Option<&[u8]>,
    arch: Option<u16>,
    extra: Vec<DhcpOption>,
) -> v4::Message {
    let mut m = v4::Message::default();
    m.set_xid(xid).set_chaddr(&MAC);
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(kind));
    if let Some(c) = class {
        o.insert(DhcpOption::ClassIdentifier(c.to_vec()));
    }
    if let Some(a) = arch {
        o.insert(DhcpOption::ClientSystemArchitecture(Architecture::from(a)));
    }
    o.insert(DhcpOption::ClientMachineIdentifier(guid()));
    for e in extra {
        o.insert(e);
    }
    m
}

pub(crate) fn guid() -> Vec<u8> {
    std::iter::once(0).chain(0x10..0x20).collect()
}

pub(crate) fn bytes(m: &v4::Message) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode(&mut v4::Encoder::new(&mut out)).expect("encode");
    out
}

/// The scripted client: one socket on 127.0.0.1.
pub(crate) struct Client {
    sock: UdpSocket,
}

impl Client {
    pub(crate) async fn new() -> Self {
        Self {
            sock: UdpSocket::bind("127.0.0.1:0").await.expect("client socket"),
        }
    }

    pub(crate) async fn send_raw(&self, to: SocketAddr, data: &[u8]) {
        self.sock.send_to(data, to).await.expect("send");
    }

    pub(crate) async fn send(&self, to: SocketAddr, m: &v4::Message) {
        self.send_raw(to, &bytes(m)).await;
    }

    /// The next answer within `wait`, decoded.
    pub(crate) async fn recv(&self, wait: Duration) -> Option<v4::Message> {
        let mut buf = vec![0u8; 2048];
        let (n, from) = tokio::time::timeout(wait, self.sock.recv_from(&mut buf))
            .await
            .ok()?
            .expect("recv");
        assert_eq!(from.ip(), Ipv4Addr::LOCALHOST, "answer from {from}");
        assert!(n >= 300, "answers are padded to the BOOTP minimum, got {n}");
        Some(v4::Message::from_bytes(&buf[..n]).expect("the answer decodes"))
    }

    /// Sends `m` and returns the answer, which must come.
    pub(crate) async fn ask(&self, to: SocketAddr, m: &v4::Message) -> v4::Message {
        self.send(to, m).await;
        let a = self.recv(ANSWER_WAIT).await.expect("an answer");
        assert_eq!(a.xid(), m.xid(), "xid echoed");
        a
    }
}

pub(crate) fn opt(m: &v4::Message, code: OptionCode) -> Option<&DhcpOption> {
    m.opts().get(code)
}

/// A NUL-terminated BOOTP string field as text.
pub(crate) fn field(f: Option<&[u8]>) -> Option<String> {
    f.map(|b| {
        String::from_utf8_lossy(b)
            .trim_end_matches('\0')
            .to_string()
    })
}

/// The boot file: the `file` field, or option 67.
pub(crate) fn boot_file(m: &v4::Message) -> Option<String> {
    field(m.fname()).or_else(|| match opt(m, OptionCode::BootfileName) {
        Some(DhcpOption::BootfileName(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    })
}

/// What every answer must carry: a reply echoing the client, leasing nothing, naming us.
pub(crate) fn assert_proxy_answer(a: &v4::Message, kind: MessageType, class: &[u8]) {
    assert_proxy_answer_from(a, kind, class, Ipv4Addr::LOCALHOST);
}

/// [`assert_proxy_answer`] from a server advertising `server`.
pub(crate) fn assert_proxy_answer_from(
    a: &v4::Message,
    kind: MessageType,
    class: &[u8],
    server: Ipv4Addr,
) {
    assert_eq!(a.opcode(), v4::Opcode::BootReply);
    assert_eq!(a.opts().msg_type(), Some(kind));
    assert_eq!(a.chaddr(), &MAC, "chaddr echoed");
    assert_eq!(a.yiaddr(), Ipv4Addr::UNSPECIFIED, "no address leased");
    assert_eq!(a.siaddr(), server, "next-server");
    assert_eq!(
        opt(a, OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(server))
    );
    assert_eq!(
        opt(a, OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(class.to_vec()))
    );
    assert_eq!(
        opt(a, OptionCode::ClientMachineIdentifier),
        Some(&DhcpOption::ClientMachineIdentifier(guid())),
        "GUID echoed"
    );
    for lease in [
        OptionCode::AddressLeaseTime,
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
    ] {
        assert!(opt(a, lease).is_none(), "{lease:?} in a ProxyDHCP answer");
    }
}

const DISCOVERY_CONTROL: [u8; 4] = [6, 1, 8, 255];

/// The value of a counter series of `name` whose labels include every one of `labels`.
pub(crate) async fn counter(s: &TestServer, name: &str, labels: &[(&str, &str)]) -> u64 {
    let text = crate::common::assets::metrics_text(s).await;
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no series {name} {labels:?} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pxe_firmware_gets_its_boot_file_by_architecture() {
    if !may_bind_device() {
        return;
    }
    let (s, root) = start(
        &[("undionly.kpxe", b"bios"), ("snponly.efi", b"uefi")],
        |c| c.netboot.proxy_dhcp.uefi_boot_file = "snponly.efi".into(),
    )
    .await;
    let c = Client::new().await;
    let to = dhcp_port(&s);
    let pxe = |arch: u16| format!("PXEClient:Arch:{arch:05}:UNDI:002001").into_bytes();

    // BIOS: TFTP file, next-server in siaddr and sname, option 43 "boot this file".
    let a = c
        .ask(
            to,
            &request(
                MessageType::Discover,
                0xb105,
                Some(&pxe(0)),
                Some(0),
                vec![],
            ),
        )
        .await;
    assert_proxy_answer(&a, MessageType::Offer, b"PXEClient");
    assert_eq!(boot_file(&a).as_deref(), Some("undionly.kpxe"));
    assert_eq!(field(a.sname()).as_deref(), Some("127.0.0.1"));
    assert_eq!(
        opt(&a, OptionCode::VendorExtensions),
        Some(&DhcpOption::VendorExtensions(DISCOVERY_CONTROL.to_vec()))
    );

    // x64 UEFI (7 and 9): the configured UEFI binary; no option 43, so the firmware asks on
    // the PXE port as every UEFI implementation does.
    for (xid, arch) in [(0xe7, 7), (0xe9, 9)] {
        let a = c
            .ask(
                to,
                &request(
                    MessageType::Discover,
                    xid,
                    Some(&pxe(arch)),
                    Some(arch),
                    vec![],
                ),
            )
            .await;
        assert_proxy_answer(&a, MessageType::Offer, b"PXEClient");
        assert_eq!(boot_file(&a).as_deref(), Some("snponly.efi"), "arch {arch}");
        assert_eq!(field(a.sname()).as_deref(), Some("127.0.0.1"));
        assert!(opt(&a, OptionCode::VendorExtensions).is_none());
    }

    // arm64 UEFI: no answer while the binary is absent from tftp.root...
    let arm = request(
        MessageType::Discover,
        0xa64,
        Some(&pxe(11)),
        Some(11),
        vec![],
    );
    c.send(to, &arm).await;
    assert!(
        c.recv(SILENCE_WAIT).await.is_none(),
        "arm64 answered without its boot file"
    );
    assert_eq!(
        counter(
            &s,
            "image_factory_dhcp_ignored_total",
            &[("reason", "missing-file")]
        )
        .await,
        1
    );
    // ... and its file once the operator puts it there (no restart).
    std::fs::write(root.path().join("ipxe-arm64.efi"), b"arm").expect("arm64 file");
    let a = c.ask(to, &arm).await;
    assert_proxy_answer(&a, MessageType::Offer, b"PXEClient");
    assert_eq!(boot_file(&a).as_deref(), Some("ipxe-arm64.efi"));

    for (client, n) in [("bios", 1), ("uefi-x64", 2), ("uefi-arm64", 1)] {
        assert_eq!(
            counter(
                &s,
                "image_factory_dhcp_offers_total",
                &[("client", client), ("reply", "offer")]
            )
            .await,
            n,
            "{client}"
        );
    }
    let status = s.status().await;
    assert_eq!(status["proxyDhcp"]["running"], true, "{status}");
    assert_eq!(status["proxyDhcp"]["interface"], "lo", "{status}");
    assert_eq!(status["proxyDhcp"]["serverAddr"], "127.0.0.1", "{status}");
    assert_eq!(
        status["listeners"]["proxyDhcp"],
        s.addrs.proxy_dhcp.expect("bound").to_string()
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipxe_clients_get_the_boot_script_url() {
    if !may_bind_device() {
        return;
    }
    let (s, _root) = start(&[], |_| {}).await;
    let c = Client::new().await;
    let class = b"PXEClient:Arch:00000:UNDI:002001";
    let ipxe_175 = DhcpOption::Unknown(UnknownOption::new(
        OptionCode::from(175),
        vec![177, 5, 1, 0x10, 0xec, 0x80, 0x86],
    ));
    for (xid, extra) in [
        (1, vec![DhcpOption::UserClass(b"iPXE".to_vec())]),
        (2, vec![ipxe_175]),
    ] {
        let a = c
            .ask(
                dhcp_port(&s),
                &request(MessageType::Discover, xid, Some(class), Some(7), extra),
            )
            .await;
        assert_proxy_answer(&a, MessageType::Offer, b"PXEClient");
        assert_eq!(
            boot_file(&a).as_deref(),
            Some(format!("{PXE_BASE}/pxe/boot.ipxe").as_str())
        );
        assert_eq!(
            opt(&a, OptionCode::VendorExtensions),
            Some(&DhcpOption::VendorExtensions(DISCOVERY_CONTROL.to_vec()))
        );
    }
    assert_eq!(
        counter(
            &s,
            "image_factory_dhcp_offers_total",
            &[("client", "ipxe"), ("reply", "offer")]
        )
        .await,
        2
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uefi_http_boot_gets_a_url_the_http_frontend_serves() {
    if !may_bind_device() {
        return;
    }
    let efi = b"MZ-not-really-an-efi-binary".repeat(1000);
    let (s, _root) = start(&[("ipxe.efi", &efi), ("arm64-efi/snp.efi", b"arm")], |c| {
        c.netboot.proxy_dhcp.arm64_boot_file = "arm64-efi/snp.efi".into()
    })
    .await;
    let c = Client::new().await;
    let a = c
        .ask(
            dhcp_port(&s),
            &request(
                MessageType::Discover,
                0x4774,
                Some(b"HTTPClient:Arch:00016:UNDI:003001"),
                Some(16),
                vec![],
            ),
        )
        .await;
    assert_proxy_answer(&a, MessageType::Offer, b"HTTPClient");
    let url = boot_file(&a).expect("a boot URL");
    assert_eq!(url, format!("{PXE_BASE}/pxe/ipxe/ipxe.efi"));
    assert!(opt(&a, OptionCode::VendorExtensions).is_none());
    let a = c
        .ask(
            dhcp_port(&s),
            &request(
                MessageType::Discover,
                0x4775,
                Some(b"HTTPClient:Arch:00019:UNDI:003001"),
                Some(19),
                vec![],
            ),
        )
        .await;
    let arm_url = boot_file(&a).expect("a boot URL");
    assert_eq!(arm_url, format!("{PXE_BASE}/pxe/ipxe/arm64-efi/snp.efi"));

    // The URL's path is served by this appliance's HTTP frontend, from tftp.root.
    let path = url.strip_prefix(PXE_BASE).expect("base");
    let resp = client().get(s.url(path)).send().await.expect("GET");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/efi");
    assert_eq!(resp.bytes().await.expect("body").as_ref(), efi.as_slice());
    let head = client().head(s.url(path)).send().await.expect("HEAD");
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], efi.len().to_string());
    let arm = client()
        .get(s.url(arm_url.strip_prefix(PXE_BASE).expect("base")))
        .send()
        .await
        .expect("GET");
    assert_eq!(arm.status(), 200);
    assert_eq!(arm.bytes().await.expect("body").as_ref(), b"arm");
    for missing in [
        "/pxe/ipxe/nope.efi",
        "/pxe/ipxe/..%2F..%2Fetc%2Fpasswd",
        "/pxe/ipxe/arm64-efi",
        "/pxe/ipxe/pxe/a/v1.0.0/metal-amd64",
    ] {
        let r = client().get(s.url(missing)).send().await.expect("GET");
        assert_eq!(r.status(), 404, "{missing}");
    }
    assert_eq!(
        counter(
            &s,
            "image_factory_dhcp_offers_total",
            &[("client", "http"), ("reply", "offer")]
        )
        .await,
        2
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pxe_port_acks_requests_and_each_port_answers_only_its_messages() {
    if !may_bind_device() {
        return;
    }
    let (s, _root) = start(&[], |_| {}).await;
    let c = Client::new().await;
    let class = b"PXEClient:Arch:00007:UNDI:003016";
    // What UEFI firmware sends to port 4011 after the OFFER without option 43: a REQUEST from
    // the address the site's DHCP server gave it.
    let mut req = request(MessageType::Request, 0x4011, Some(class), Some(7), vec![]);
    req.set_ciaddr(Ipv4Addr::LOCALHOST);
    let a = c.ask(pxe_port(&s), &req).await;
    assert_proxy_answer(&a, MessageType::Ack, b"PXEClient");
    assert_eq!(a.ciaddr(), Ipv4Addr::LOCALHOST, "ciaddr echoed in the ACK");
    assert_eq!(boot_file(&a).as_deref(), Some("ipxe.efi"));
    // iPXE's ProxyDHCPREQUEST gets the script URL there too.
    let ipxe = request(
        MessageType::Request,
        0x4012,
        Some(class),
        Some(7),
        vec![DhcpOption::UserClass(b"iPXE".to_vec())],
    );
    let a = c.ask(pxe_port(&s), &ipxe).await;
    assert_eq!(
        boot_file(&a).as_deref(),
        Some(format!("{PXE_BASE}/pxe/boot.ipxe").as_str())
    );

    // A DISCOVER on the PXE port and a REQUEST on the DHCP port (meant for the site's DHCP
    // server) get nothing: the next answer is the one to the good DISCOVER after them.
    c.send(
        pxe_port(&s),
        &request(MessageType::Discover, 0xbad1, Some(class), Some(7), vec![]),
    )
    .await;
    c.send(
        dhcp_port(&s),
        &request(MessageType::Request, 0xbad2, Some(class), Some(7), vec![]),
    )
    .await;
    tokio::time::sleep(SILENCE_WAIT).await;
    let good = request(MessageType::Discover, 0x600d, Some(class), Some(7), vec![]);
    let a = c.ask(dhcp_port(&s), &good).await;
    assert_eq!(a.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(
        counter(
            &s,
            "image_factory_dhcp_ignored_total",
            &[("reason", "message-type")]
        )
        .await,
        2
    );
    assert_eq!(
        counter(
            &s,
            "image_factory_dhcp_offers_total",
            &[("client", "uefi-x64"), ("reply", "ack")]
        )
        .await,
        1
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_dhcp_clients_get_no_answer() {
    if !may_bind_device() {
        return;
    }
    let (s, _root) = start(&[], |_| {}).await;
    let c = Client::new().await;
    let to = dhcp_port(&s);
    for (xid, class) in [
        (0x01, None),
        (0x02, Some(&b"MSFT 5.0"[..])),
        (0x03, Some(&b"android-dhcp-14"[..])),
        (0x04, Some(&b"pxeclient"[..])),
    ] {
        c.send(
            to,
            &request(MessageType::Discover, xid, class, Some(7), vec![]),
        )
        .await;
    }
    assert!(
        c.recv(SILENCE_WAIT).await.is_none(),
        "an ordinary DHCP client was answered"
    );
    // Unsupported architectures (32-bit UEFI; HTTP Boot without one) are not answered either.
    c.send(
        to,
        &request(
            MessageType::Discover,
            0x05,
            Some(b"PXEClient:Arch:00006:UNDI:003016"),
            Some(6),
            vec![],
        ),
    )
    .await;
    c.send(
        to,
        &request(
            MessageType::Discover,
            0x06,
            Some(b"HTTPClient"),
            None,
            vec![],
        ),
    )
    .await;
    let good = request(
        MessageType::Discover,
        0x600d,
        Some(b"PXEClient:Arch:00000:UNDI:002001"),
        Some(0),
        vec![],
    );
    // The first answer to arrive is the good request's: nothing was sent for the others.
    let a = c.ask(to, &good).await;
    assert_eq!(boot_file(&a).as_deref(), Some("undionly.kpxe"));
    assert_eq!(
        counter(
            &s,
            "image_factory_dhcp_ignored_total",
            &[("reason", "not-pxe")]
        )
        .await,
        4
    );
    assert_eq!(
        counter(
            &s,
            "image_factory_dhcp_ignored_total",
            &[("reason", "unsupported-arch")]
        )
        .await,
        2
    );
    s.stop().await;
}

/// Sets assignment `name` through the admin API (JSON body `spec`); it must be accepted.
async fn assign(s: &TestServer, name: &str, spec: serde_json::Value) {
    let token = std::fs::read_to_string(s.dir.path().join("keys/admin-token")).expect("token");
    let (admin, url) = s.admin(&format!("/admin/machines/{name}"));
    let resp = admin
        .put(url)
        .bearer_auth(token.trim())
        .json(&spec)
        .send()
        .await
        .expect("PUT assignment");
    assert!(
        resp.status().is_success(),
        "{}",
        resp.text().await.unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assignment_sends_http_boot_to_its_uki() {
    if !may_bind_device() {
        return;
    }
    let (s, _root) = start(&[("ipxe.efi", b"MZ")], |_| {}).await;
    let id = crate::common::assets::create_schematic(
        &s,
        "customization:\n  extraKernelArgs:\n    - if.test=uki\n",
    )
    .await;
    let mac = MAC.map(|b| format!("{b:02x}")).join(":");
    let http_boot = request(
        MessageType::Discover,
        0x0b1e,
        Some(b"HTTPClient:Arch:00016:UNDI:003001"),
        Some(16),
        vec![],
    );
    let c = Client::new().await;
    let spec = |uki: bool| {
        let mut v = serde_json::json!({
            "selector": {"mac": mac},
            "schematic": id,
            "version": "v1.11.0",
        });
        if uki {
            v["httpBoot"] = "uki".into();
        }
        v
    };

    // Assigned with httpBoot: uki, the firmware is sent to the UKI, not to iPXE.
    assign(&s, "uki-node", spec(true)).await;
    let a = c.ask(dhcp_port(&s), &http_boot).await;
    assert_proxy_answer(&a, MessageType::Offer, b"HTTPClient");
    assert_eq!(
        boot_file(&a).expect("a boot URL"),
        format!("{PXE_BASE}/image/{id}/v1.11.0/metal-amd64-uki.efi")
    );
    // PXE firmware of the same machine still loads iPXE over TFTP.
    let pxe = c
        .ask(
            dhcp_port(&s),
            &request(
                MessageType::Discover,
                0x0b1f,
                Some(b"PXEClient:Arch:00007:UNDI:003001"),
                Some(7),
                vec![],
            ),
        )
        .await;
    assert_eq!(boot_file(&pxe).as_deref(), Some("ipxe.efi"));

    // Without it (the default), HTTP Boot gets iPXE.
    assign(&s, "uki-node", spec(false)).await;
    let a = c.ask(dhcp_port(&s), &http_boot).await;
    assert_eq!(
        boot_file(&a).expect("a boot URL"),
        format!("{PXE_BASE}/pxe/ipxe/ipxe.efi")
    );
    s.stop().await;
}
