//! TFTP packets (RFC 1350) and option negotiation (RFC 2347/2348/2349/7440): parsing what a
//! client sends and encoding what the server answers.

/// Opcodes.
const RRQ: u16 = 1;
const WRQ: u16 = 2;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const OACK: u16 = 6;

/// Longest request the server reads (RFC 2347: a request with options fits in 512 bytes).
pub const MAX_REQUEST: usize = 512;

/// Smallest and largest `blksize` RFC 2348 allows.
pub const BLKSIZE_RANGE: std::ops::RangeInclusive<u64> = 8..=65464;
/// Largest `windowsize` RFC 7440 allows.
pub const MAX_WINDOWSIZE: u64 = 65535;
/// `timeout` range in seconds (RFC 2349).
pub const TIMEOUT_RANGE: std::ops::RangeInclusive<u64> = 1..=255;

/// TFTP error codes (RFC 1350 and 2347).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// Not defined, see the message (used for "busy" and "timed out").
    NotDefined = 0,
    /// File not found.
    NotFound = 1,
    /// Access violation (writes, paths outside the root).
    AccessViolation = 2,
    /// Illegal TFTP operation (malformed or unexpected packets).
    IllegalOperation = 4,
    /// Option negotiation refused.
    BadOption = 8,
}

/// A packet a client sent, as far as the server cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// A read request.
    Read(Request<'a>),
    /// A write request (always refused).
    Write,
    /// An acknowledgement of a block (or of the OACK, block 0).
    Ack(u16),
    /// The client gave up; the text is its message.
    Error(u16, String),
    /// A data packet (the server never asks for one).
    Data,
}

/// A read request: file name, transfer mode and options in the order given.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The file name as sent.
    pub filename: &'a str,
    /// `octet` or `netascii` (lower-cased).
    pub mode: String,
    /// Options (names lower-cased) with their values.
    pub options: Vec<(String, &'a str)>,
}

/// Why a packet could not be parsed (sent back as an `ERROR` where that makes sense).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Shorter than an opcode, or cut off inside a field.
    #[error("truncated packet")]
    Truncated,
    /// An opcode TFTP does not have.
    #[error("unknown opcode {0}")]
    Opcode(u16),
    /// A request field is not NUL-terminated ASCII/UTF-8.
    #[error("request fields must be NUL-terminated text")]
    Field,
    /// A request longer than RFC 2347's 512 bytes.
    #[error("request longer than {MAX_REQUEST} bytes")]
    TooLong,
    /// A transfer mode other than octet and netascii.
    #[error("transfer mode {0:?} is not supported (use octet)")]
    Mode(String),
    /// The same option twice.
    #[error("option {0:?} given twice")]
    DuplicateOption(String),
}

/// Parses one datagram from a client.
pub fn parse(buf: &[u8]) -> Result<Packet<'_>, PacketError> {
    let Some((op, body)) = buf.split_first_chunk::<2>() else {
        return Err(PacketError::Truncated);
    };
    match u16::from_be_bytes(*op) {
        RRQ => {
            if buf.len() > MAX_REQUEST {
                return Err(PacketError::TooLong);
            }
            parse_request(body).map(Packet::Read)
        }
        WRQ => Ok(Packet::Write),
        ACK => match body.first_chunk::<2>() {
            Some(n) => Ok(Packet::Ack(u16::from_be_bytes(*n))),
            None => Err(PacketError::Truncated),
        },
        ERROR => match body.split_first_chunk::<2>() {
            Some((code, msg)) => {
                let msg = msg.split(|b| *b == 0).next().unwrap_or_default();
                Ok(Packet::Error(
                    u16::from_be_bytes(*code),
                    String::from_utf8_lossy(msg).into_owned(),
                ))
            }
            None => Err(PacketError::Truncated),
        },
        DATA => Ok(Packet::Data),
        other => Err(PacketError::Opcode(other)),
    }
}

fn parse_request(body: &[u8]) -> Result<Request<'_>, PacketError> {
    // Every field ends in NUL: a request not ending in one was cut off.
    let Some(fields) = body.strip_suffix(&[0]) else {
        return Err(PacketError::Truncated);
    };
    let mut it = fields.split(|b| *b == 0).map(|f| {
        std::str::from_utf8(f)
            .ok()
            .filter(|s| !s.chars().any(char::is_control))
            .ok_or(PacketError::Field)
    });
    let filename = it.next().ok_or(PacketError::Truncated)??;
    let mode = it
        .next()
        .ok_or(PacketError::Truncated)??
        .to_ascii_lowercase();
    if mode != "octet" && mode != "netascii" {
        return Err(PacketError::Mode(mode));
    }
    let mut options: Vec<(String, &str)> = Vec::new();
    while let Some(name) = it.next() {
        let name = name?.to_ascii_lowercase();
        let value = it.next().ok_or(PacketError::Truncated)??;
        if options.iter().any(|(n, _)| *n == name) {
            return Err(PacketError::DuplicateOption(name));
        }
        options.push((name, value));
    }
    if filename.is_empty() {
        return Err(PacketError::Field);
    }
    Ok(Request {
        filename,
        mode,
        options,
    })
}

/// What the server may grant.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest `blksize` granted (a larger request is clamped).
    pub max_blksize: u16,
    /// Largest `windowsize` granted (a larger request is clamped).
    pub max_windowsize: u16,
}

/// Negotiated transfer parameters and the options to acknowledge (in request order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Bytes per DATA block.
    pub blksize: u16,
    /// Blocks sent before waiting for an ACK.
    pub windowsize: u16,
    /// Retransmission timeout the client asked for (seconds), if any.
    pub timeout: Option<u8>,
    /// Options for the OACK; empty = no OACK, the transfer starts with block 1.
    pub oack: Vec<(String, String)>,
}

/// Negotiates the request's options against `limits`; `size` is the file's length for
/// `tsize`. Unknown or unparsable options are left out of the OACK (RFC 2347); a `blksize`
/// below 8 or a `windowsize` of 0 is refused.
pub fn negotiate(
    options: &[(String, &str)],
    size: u64,
    limits: Limits,
) -> Result<Negotiated, String> {
    let mut n = Negotiated {
        blksize: 512,
        windowsize: 1,
        timeout: None,
        oack: Vec::new(),
    };
    for (name, value) in options {
        let Ok(v) = value.trim().parse::<u64>() else {
            continue;
        };
        match name.as_str() {
            "blksize" => {
                if v < *BLKSIZE_RANGE.start() {
                    return Err(format!("blksize {v} is below 8"));
                }
                let granted = v.min(u64::from(limits.max_blksize));
                n.blksize = u16::try_from(granted).unwrap_or(limits.max_blksize);
                n.oack.push((name.clone(), n.blksize.to_string()));
            }
            "windowsize" => {
                if v == 0 {
                    return Err("windowsize 0 is not allowed".into());
                }
                let granted = v.min(u64::from(limits.max_windowsize)).min(MAX_WINDOWSIZE);
                n.windowsize = u16::try_from(granted).unwrap_or(limits.max_windowsize);
                n.oack.push((name.clone(), n.windowsize.to_string()));
            }
            "timeout" if TIMEOUT_RANGE.contains(&v) => {
                n.timeout = u8::try_from(v).ok();
                n.oack.push((name.clone(), v.to_string()));
            }
            // curl refuses an OACK with `tsize 0`; leaving the option out is allowed.
            "tsize" if size > 0 => n.oack.push((name.clone(), size.to_string())),
            _ => {}
        }
    }
    Ok(n)
}

/// Encodes an `OACK`.
pub fn oack(options: &[(String, String)]) -> Vec<u8> {
    let mut p = OACK.to_be_bytes().to_vec();
    for (k, v) in options {
        p.extend_from_slice(k.as_bytes());
        p.push(0);
        p.extend_from_slice(v.as_bytes());
        p.push(0);
    }
    p
}

/// Encodes an `ERROR` (the message is cut to fit one small datagram).
pub fn error(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut p = ERROR.to_be_bytes().to_vec();
    p.extend_from_slice(&(code as u16).to_be_bytes());
    let msg: String = message.chars().filter(|c| *c != '\0').take(400).collect();
    p.extend_from_slice(msg.as_bytes());
    p.push(0);
    p
}

/// Writes a `DATA` header for `block` into the first four bytes of `buf`.
pub fn data_header(buf: &mut [u8], block: u16) {
    if let Some(h) = buf.first_chunk_mut::<4>() {
        h[..2].copy_from_slice(&DATA.to_be_bytes());
        h[2..].copy_from_slice(&block.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_blksize: 1468,
        max_windowsize: 64,
    };

    fn rrq(fields: &[&str]) -> Vec<u8> {
        let mut p = vec![0, 1];
        for f in fields {
            p.extend_from_slice(f.as_bytes());
            p.push(0);
        }
        p
    }

    #[test]
    fn read_request_with_options() {
        let p = rrq(&["undionly.kpxe", "OCTET", "BlkSize", "1468", "tsize", "0"]);
        let Packet::Read(r) = parse(&p).unwrap() else {
            panic!("not a read request")
        };
        assert_eq!(r.filename, "undionly.kpxe");
        assert_eq!(r.mode, "octet");
        assert_eq!(
            r.options,
            vec![("blksize".to_string(), "1468"), ("tsize".to_string(), "0")]
        );
    }

    #[test]
    fn malformed_requests() {
        assert_eq!(parse(&[0]), Err(PacketError::Truncated));
        assert_eq!(parse(&[0, 1, b'a']), Err(PacketError::Truncated));
        assert_eq!(parse(&rrq(&["a"])), Err(PacketError::Truncated));
        assert_eq!(parse(&[0, 4, 1]), Err(PacketError::Truncated));
        assert_eq!(parse(&[0, 9, 0, 0]), Err(PacketError::Opcode(9)));
        assert!(matches!(
            parse(&rrq(&["a", "mail"])),
            Err(PacketError::Mode(_))
        ));
        assert_eq!(
            parse(&rrq(&["a", "octet", "blksize"])),
            Err(PacketError::Truncated)
        );
        assert_eq!(
            parse(&rrq(&["a", "octet", "tsize", "0", "TSIZE", "0"])),
            Err(PacketError::DuplicateOption("tsize".into()))
        );
        let long = "x".repeat(600);
        assert_eq!(parse(&rrq(&[&long, "octet"])), Err(PacketError::TooLong));
        assert_eq!(parse(&rrq(&["", "octet"])), Err(PacketError::Field));
        assert_eq!(parse(&[0, 1, 0xff, 0, b'o', 0]), Err(PacketError::Field));
        assert_eq!(parse(&[0, 2, 0]), Ok(Packet::Write));
    }

    #[test]
    fn negotiation_clamps_and_ignores() {
        let opts = |o: &[(&str, &'static str)]| -> Vec<(String, &'static str)> {
            o.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        let n = negotiate(
            &opts(&[
                ("blksize", "65464"),
                ("windowsize", "1000"),
                ("tsize", "0"),
                ("timeout", "300"),
                ("frobnicate", "1"),
                ("utimeout", "x"),
            ]),
            4242,
            LIMITS,
        )
        .unwrap();
        assert_eq!((n.blksize, n.windowsize, n.timeout), (1468, 64, None));
        assert_eq!(
            n.oack,
            vec![
                ("blksize".to_string(), "1468".to_string()),
                ("windowsize".to_string(), "64".to_string()),
                ("tsize".to_string(), "4242".to_string()),
            ]
        );
        assert!(negotiate(&opts(&[("blksize", "7")]), 0, LIMITS).is_err());
        assert!(negotiate(&opts(&[("windowsize", "0")]), 0, LIMITS).is_err());
        let empty = negotiate(&opts(&[("tsize", "0")]), 0, LIMITS).unwrap();
        assert!(empty.oack.is_empty());
        let plain = negotiate(&[], 1, LIMITS).unwrap();
        assert_eq!((plain.blksize, plain.windowsize), (512, 1));
        assert!(plain.oack.is_empty());
    }

    #[test]
    fn encodings() {
        assert_eq!(
            oack(&[("tsize".into(), "5".into())]),
            b"\0\x06tsize\x005\0".to_vec()
        );
        assert_eq!(
            error(ErrorCode::AccessViolation, "no\0pe"),
            b"\0\x05\0\x02nope\0".to_vec()
        );
        let mut b = [0u8; 6];
        data_header(&mut b, 0x0102);
        assert_eq!(&b[..4], &[0, 3, 1, 2]);
    }
}
