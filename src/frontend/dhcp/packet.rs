//! DHCP wire format for the ProxyDHCP responder: reading a request (only the fields and
//! options it needs, with `dhcproto`'s lazy reader, which never panics on hostile input once
//! the header is checked) and writing an answer (with `dhcproto`'s encoder), plus where the
//! answer goes (RFC 2131 §4.1).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use dhcproto::v4::{self, DhcpOption, Encodable as _, MessageType};

use super::decide::{Answer, BootFile, Client, Vendor};

/// Largest request read: one 1500-byte Ethernet frame. Longer datagrams are dropped.
pub const MAX_REQUEST: usize = 1500;
/// BOOTP header up to and including the magic cookie.
const HEADER: usize = 240;
/// Answers are padded to the BOOTP minimum; some PXE ROMs drop shorter ones.
const MIN_REPLY: usize = 300;
/// Longest name in the BOOTP `file` field (128 bytes with the terminating NUL); a longer
/// URL goes into option 67 instead.
const FILE_FIELD: usize = 127;
/// DHCP server and client ports.
const SERVER_PORT: u16 = 67;
const CLIENT_PORT: u16 = 68;
/// iPXE's encapsulated options: present only in requests from iPXE.
const IPXE_ENCAPSULATED: u8 = 175;
/// Option 43 sub-option PXE_DISCOVERY_CONTROL = 8: boot the file named in this answer
/// without boot server discovery (PXE 2.1 §2.4.2.1), then END.
const DISCOVERY_CONTROL: [u8; 4] = [6, 1, 8, 255];

/// Why a datagram was dropped before any decision (the `reason` label of the malformed
/// metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Longer than [`MAX_REQUEST`].
    #[error("longer than {MAX_REQUEST} bytes")]
    Oversize,
    /// Shorter than a BOOTP header.
    #[error("shorter than a BOOTP header")]
    Truncated,
    /// Not a BOOTREQUEST.
    #[error("not a BOOTREQUEST")]
    NotRequest,
    /// `hlen` above 16.
    #[error("hardware address longer than 16 bytes")]
    HardwareAddress,
    /// No DHCP magic cookie: plain BOOTP or garbage.
    #[error("no DHCP magic cookie")]
    NoCookie,
    /// No valid option 53.
    #[error("no valid DHCP message type")]
    NoMessageType,
}

impl Malformed {
    /// Every reason, for registering metrics at zero.
    pub const ALL: [Malformed; 6] = [
        Malformed::Oversize,
        Malformed::Truncated,
        Malformed::NotRequest,
        Malformed::HardwareAddress,
        Malformed::NoCookie,
        Malformed::NoMessageType,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Malformed::Oversize => "oversize",
            Malformed::Truncated => "truncated",
            Malformed::NotRequest => "not-request",
            Malformed::HardwareAddress => "hardware-address",
            Malformed::NoCookie => "no-cookie",
            Malformed::NoMessageType => "no-message-type",
        }
    }
}

/// What the responder reads from a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Option 53.
    pub message_type: MessageType,
    /// Transaction ID (echoed).
    pub xid: u32,
    /// Flags (echoed: the broadcast bit).
    pub flags: u16,
    /// Client address, when it has one.
    pub ciaddr: Ipv4Addr,
    /// Relay agent address.
    pub giaddr: Ipv4Addr,
    /// Hardware type (echoed).
    pub htype: u8,
    /// Hardware address (`hlen` bytes, echoed).
    pub chaddr: Vec<u8>,
    /// What the boot decision needs.
    pub client: Client,
    /// Option 97, the client machine GUID (echoed when well-formed: type 0 + 16 bytes).
    pub guid: Option<Vec<u8>>,
}

impl Request {
    /// The hardware address as `aa:bb:...` (for logs).
    pub fn mac(&self) -> String {
        self.chaddr
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// Reads a request (bounded: [`MAX_REQUEST`] bytes, 16-byte hardware address).
pub fn parse(datagram: &[u8]) -> Result<Request, Malformed> {
    if datagram.len() > MAX_REQUEST {
        return Err(Malformed::Oversize);
    }
    if datagram.len() < HEADER {
        return Err(Malformed::Truncated);
    }
    let msg = v4::borrowed::Message::new(datagram).map_err(|_| Malformed::Truncated)?;
    if msg.opcode() != v4::Opcode::BootRequest {
        return Err(Malformed::NotRequest);
    }
    // Checked before `chaddr()`, which slices by `hlen`.
    if msg.hlen() > 16 {
        return Err(Malformed::HardwareAddress);
    }
    if datagram[236..HEADER] != v4::MAGIC {
        return Err(Malformed::NoCookie);
    }
    let mut message_type = None;
    let mut vendor = None;
    let mut arch = None;
    let mut ipxe = false;
    let mut guid = None;
    for opt in msg.opts() {
        let data = opt.data();
        match u8::from(opt.code()) {
            53 if data.len() == 1 => message_type = Some(MessageType::from(data[0])),
            60 => vendor = Vendor::of(data),
            77 => ipxe |= is_ipxe_user_class(data),
            93 if data.len() >= 2 => arch = Some(u16::from_be_bytes([data[0], data[1]])),
            97 if data.len() == 17 && data[0] == 0 => guid = Some(data.to_vec()),
            IPXE_ENCAPSULATED => ipxe = true,
            _ => {}
        }
    }
    Ok(Request {
        message_type: message_type.ok_or(Malformed::NoMessageType)?,
        xid: msg.xid(),
        flags: msg.flags().into(),
        ciaddr: msg.ciaddr(),
        giaddr: msg.giaddr(),
        htype: msg.htype().into(),
        chaddr: msg.chaddr().to_vec(),
        client: Client { vendor, arch, ipxe },
        guid,
    })
}

/// Option 77 says iPXE: the raw string iPXE sends, or an RFC 3004 list containing it.
fn is_ipxe_user_class(data: &[u8]) -> bool {
    if data == b"iPXE" {
        return true;
    }
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len);
        if len == 0 || len > tail.len() {
            return false;
        }
        if &tail[..len] == b"iPXE" {
            return true;
        }
        rest = &tail[len..];
    }
    false
}

/// Writes the answer to `req`: an OFFER or ACK that leases nothing (`yiaddr` 0, no lease
/// options), naming `server` as server identifier and next server.
pub fn reply(
    req: &Request,
    answer: &Answer,
    server: Ipv4Addr,
    kind: MessageType,
) -> Result<Vec<u8>, v4::EncodeError> {
    let mut m = v4::Message::default();
    m.set_opcode(v4::Opcode::BootReply)
        .set_htype(req.htype.into())
        .set_chaddr(&req.chaddr)
        .set_xid(req.xid)
        .set_flags(req.flags.into())
        .set_giaddr(req.giaddr)
        .set_siaddr(server)
        .set_yiaddr(Ipv4Addr::UNSPECIFIED);
    if kind == MessageType::Ack {
        m.set_ciaddr(req.ciaddr);
    } else {
        m.set_ciaddr(Ipv4Addr::UNSPECIFIED);
    }
    let opts = m.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ServerIdentifier(server));
    opts.insert(DhcpOption::ClassIdentifier(answer.vendor.class().to_vec()));
    if let Some(guid) = &req.guid {
        opts.insert(DhcpOption::ClientMachineIdentifier(guid.clone()));
    }
    if answer.discovery_control {
        opts.insert(DhcpOption::VendorExtensions(DISCOVERY_CONTROL.to_vec()));
    }
    let file = match &answer.boot {
        BootFile::Tftp(name) => {
            m.set_sname_str(server.to_string());
            name
        }
        BootFile::Url(url) => url,
    };
    if file.len() <= FILE_FIELD {
        m.set_fname_str(file);
    } else {
        m.opts_mut()
            .insert(DhcpOption::BootfileName(file.as_bytes().to_vec()));
    }
    let mut out = Vec::with_capacity(MIN_REPLY);
    m.encode(&mut v4::Encoder::new(&mut out))?;
    if out.len() < MIN_REPLY {
        out.resize(MIN_REPLY, 0);
    }
    Ok(out)
}

/// Where the answer to `req`, received from `src`, goes (RFC 2131 §4.1): to the relay agent
/// (`giaddr`, port 67); to the client's address (`ciaddr`, or the request's non-zero source,
/// at the port it sent from); otherwise broadcast to port 68 on the bound interface.
pub fn destination(req: &Request, src: SocketAddr) -> SocketAddr {
    let unicast = |ip: Ipv4Addr, port: u16| SocketAddr::V4(SocketAddrV4::new(ip, port));
    if !req.giaddr.is_unspecified() {
        return unicast(req.giaddr, SERVER_PORT);
    }
    let src_port = match src.port() {
        0 => CLIENT_PORT,
        p => p,
    };
    if !req.ciaddr.is_unspecified() {
        return unicast(req.ciaddr, src_port);
    }
    match src {
        SocketAddr::V4(v4) if !v4.ip().is_unspecified() && !v4.ip().is_broadcast() => {
            unicast(*v4.ip(), src_port)
        }
        _ => unicast(Ipv4Addr::BROADCAST, CLIENT_PORT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::dhcp::decide::ClientKind;
    use dhcproto::v4::{Decodable as _, OptionCode};

    fn request(opts: Vec<DhcpOption>) -> Vec<u8> {
        let mut m = v4::Message::default();
        m.set_xid(0x1234_5678)
            .set_chaddr(&[0x52, 0x54, 0, 0x12, 0x34, 0x56])
            .set_flags(v4::Flags::default().set_broadcast());
        for o in opts {
            m.opts_mut().insert(o);
        }
        let mut out = Vec::new();
        m.encode(&mut v4::Encoder::new(&mut out)).unwrap();
        out
    }

    fn discover(extra: Vec<DhcpOption>) -> Vec<u8> {
        let mut opts = vec![DhcpOption::MessageType(MessageType::Discover)];
        opts.extend(extra);
        request(opts)
    }

    #[test]
    fn reads_the_pxe_fields() {
        let guid: Vec<u8> = std::iter::once(0).chain(1..=16).collect();
        let r = parse(&discover(vec![
            DhcpOption::ClassIdentifier(b"PXEClient:Arch:00007:UNDI:003016".to_vec()),
            DhcpOption::ClientSystemArchitecture(v4::Architecture::X64),
            DhcpOption::ClientMachineIdentifier(guid.clone()),
        ]))
        .unwrap();
        assert_eq!(r.message_type, MessageType::Discover);
        assert_eq!(r.xid, 0x1234_5678);
        assert_eq!(r.mac(), "52:54:00:12:34:56");
        assert_eq!(
            r.client,
            Client {
                vendor: Some(Vendor::Pxe),
                arch: Some(7),
                ipxe: false
            }
        );
        assert_eq!(r.guid, Some(guid));
    }

    #[test]
    fn recognises_ipxe() {
        for opt in [
            DhcpOption::UserClass(b"iPXE".to_vec()),
            DhcpOption::UserClass(b"\x03abc\x04iPXE".to_vec()),
            DhcpOption::Unknown(v4::UnknownOption::new(
                OptionCode::from(IPXE_ENCAPSULATED),
                vec![177, 5, 1, 0x10, 0xec, 0x80, 0x86],
            )),
        ] {
            let r = parse(&discover(vec![opt.clone()])).unwrap();
            assert!(r.client.ipxe, "{opt:?}");
        }
        for data in [&b"gPXE"[..], b"\x05iPXE", b"\x00"] {
            let r = parse(&discover(vec![DhcpOption::UserClass(data.to_vec())])).unwrap();
            assert!(!r.client.ipxe, "{data:?}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_request() {
        let good = discover(vec![]);
        assert_eq!(parse(&good[..239]), Err(Malformed::Truncated));
        assert_eq!(parse(&[]), Err(Malformed::Truncated));
        let mut big = good.clone();
        big.resize(MAX_REQUEST + 1, 0);
        assert_eq!(parse(&big), Err(Malformed::Oversize));
        let mut reply = good.clone();
        reply[0] = 2;
        assert_eq!(parse(&reply), Err(Malformed::NotRequest));
        for hlen in [17u8, 255] {
            let mut h = good.clone();
            h[2] = hlen;
            assert_eq!(parse(&h), Err(Malformed::HardwareAddress));
        }
        let mut cookie = good.clone();
        cookie[236] = 0;
        assert_eq!(parse(&cookie), Err(Malformed::NoCookie));
        assert_eq!(parse(&request(vec![])), Err(Malformed::NoMessageType));
        // A header and cookie with an option running past the end.
        let mut cut = good[..HEADER].to_vec();
        cut.extend_from_slice(&[53, 1]);
        assert_eq!(parse(&cut), Err(Malformed::NoMessageType));
    }

    #[test]
    fn hostile_options_never_panic() {
        // Every option code with lengths 0..=3 and a length running past the end: the lazy
        // reader must neither panic nor read out of bounds (dhcproto's eager decoder has
        // debug assertions on some of these).
        let base = discover(vec![]);
        let head = &base[..HEADER];
        for code in 1..=254u8 {
            for len in 0..=3u8 {
                let mut p = head.to_vec();
                p.extend_from_slice(&[53, 1, 1, code, len]);
                p.extend(std::iter::repeat_n(0xff, usize::from(len)));
                let _ = parse(&p);
                let mut q = head.to_vec();
                q.extend_from_slice(&[53, 1, 1, code, 200, 1, 2]);
                let _ = parse(&q);
            }
        }
    }

    fn answer(boot: BootFile, vendor: Vendor, dc: bool) -> Answer {
        Answer {
            kind: ClientKind::Bios,
            boot,
            vendor,
            discovery_control: dc,
            requires: None,
        }
    }

    #[test]
    fn offers_lease_nothing_and_echo_the_client() {
        let guid: Vec<u8> = std::iter::once(0).chain(1..=16).collect();
        let req = parse(&discover(vec![
            DhcpOption::ClassIdentifier(b"PXEClient:Arch:00000:UNDI:002001".to_vec()),
            DhcpOption::ClientMachineIdentifier(guid.clone()),
        ]))
        .unwrap();
        let server = Ipv4Addr::new(192, 0, 2, 1);
        let bytes = reply(
            &req,
            &answer(BootFile::Tftp("undionly.kpxe".into()), Vendor::Pxe, true),
            server,
            MessageType::Offer,
        )
        .unwrap();
        assert!(bytes.len() >= MIN_REPLY);
        let m = v4::Message::from_bytes(&bytes).unwrap();
        assert_eq!(m.opcode(), v4::Opcode::BootReply);
        assert_eq!(m.xid(), 0x1234_5678);
        assert_eq!(m.chaddr(), &[0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert!(m.flags().broadcast());
        assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(m.siaddr(), server);
        assert_eq!(m.fname_str().unwrap().unwrap(), "undionly.kpxe\0");
        assert_eq!(m.sname_str().unwrap().unwrap(), "192.0.2.1\0");
        let o = m.opts();
        assert_eq!(o.msg_type(), Some(MessageType::Offer));
        assert_eq!(
            o.get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(server))
        );
        assert_eq!(
            o.get(OptionCode::ClassIdentifier),
            Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
        );
        assert_eq!(
            o.get(OptionCode::ClientMachineIdentifier),
            Some(&DhcpOption::ClientMachineIdentifier(guid))
        );
        assert_eq!(
            o.get(OptionCode::VendorExtensions),
            Some(&DhcpOption::VendorExtensions(vec![6, 1, 8, 255]))
        );
        for lease in [
            OptionCode::AddressLeaseTime,
            OptionCode::SubnetMask,
            OptionCode::Router,
        ] {
            assert!(o.get(lease).is_none(), "{lease:?}");
        }
    }

    #[test]
    fn long_urls_go_to_option_67() {
        let req = parse(&discover(vec![])).unwrap();
        let url = format!("http://{}/pxe/boot.ipxe", "h".repeat(120));
        let bytes = reply(
            &req,
            &answer(BootFile::Url(url.clone()), Vendor::Http, false),
            Ipv4Addr::LOCALHOST,
            MessageType::Ack,
        )
        .unwrap();
        let m = v4::Message::from_bytes(&bytes).unwrap();
        assert_eq!(m.fname(), None);
        assert_eq!(
            m.opts().get(OptionCode::BootfileName),
            Some(&DhcpOption::BootfileName(url.into_bytes()))
        );
        assert!(m.opts().get(OptionCode::VendorExtensions).is_none());
        assert_eq!(m.sname(), None);
    }

    #[test]
    fn answers_go_where_rfc_2131_says() {
        let mut req = parse(&discover(vec![])).unwrap();
        let any: SocketAddr = "0.0.0.0:68".parse().unwrap();
        let from_client: SocketAddr = "10.0.0.5:4011".parse().unwrap();
        assert_eq!(
            destination(&req, any),
            "255.255.255.255:68".parse().unwrap()
        );
        assert_eq!(destination(&req, from_client), from_client);
        req.ciaddr = Ipv4Addr::new(10, 0, 0, 7);
        assert_eq!(
            destination(&req, from_client),
            "10.0.0.7:4011".parse().unwrap()
        );
        assert_eq!(destination(&req, any), "10.0.0.7:68".parse().unwrap());
        req.giaddr = Ipv4Addr::new(10, 0, 9, 1);
        assert_eq!(
            destination(&req, from_client),
            "10.0.9.1:67".parse().unwrap()
        );
    }
}
