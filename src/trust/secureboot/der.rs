//! The little DER Secure Boot needs: a writer for the fixed shapes of an Authenticode
//! `SignedData` and a self-signed certificate, and a bounds-checked reader for the fields taken
//! out of certificates and keys (X.690). Hand-written rather than a dependency: the shapes are
//! few and fixed, and every one is checked by independent verifiers (`sbverify`,
//! `osslsigncode`, `openssl`) in the tests.

/// `SEQUENCE` (constructed).
pub const SEQUENCE: u8 = 0x30;
/// `SET` (constructed).
pub const SET: u8 = 0x31;
/// `INTEGER`.
pub const INTEGER: u8 = 0x02;
/// `BIT STRING`.
pub const BIT_STRING: u8 = 0x03;
/// `OCTET STRING`.
pub const OCTET_STRING: u8 = 0x04;
/// `NULL`.
pub const NULL: u8 = 0x05;
/// `OBJECT IDENTIFIER`.
pub const OID: u8 = 0x06;
/// `UTF8String`.
pub const UTF8_STRING: u8 = 0x0C;
/// `UTCTime`.
pub const UTC_TIME: u8 = 0x17;
/// `GeneralizedTime`.
pub const GENERALIZED_TIME: u8 = 0x18;
/// `BOOLEAN`.
pub const BOOLEAN: u8 = 0x01;

/// A context-specific tag `[n]`, constructed or primitive.
pub const fn context(n: u8, constructed: bool) -> u8 {
    0x80 | if constructed { 0x20 } else { 0 } | n
}

/// One TLV: `tag`, the DER length of `content`, `content`.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// A constructed value of `tag` over the concatenation of `parts`.
pub fn cons(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    tlv(tag, &parts.concat())
}

/// `SEQUENCE { parts }`.
pub fn seq(parts: &[&[u8]]) -> Vec<u8> {
    cons(SEQUENCE, parts)
}

/// `SET OF { parts }` with the elements in DER order (sorted by their encodings).
pub fn set_of(parts: &[&[u8]]) -> Vec<u8> {
    let mut sorted = parts.to_vec();
    sorted.sort();
    cons(SET, &sorted)
}

/// An `OBJECT IDENTIFIER` from its arcs (the first two must be ≤ 2 and < 40).
pub fn oid(arcs: &[u64]) -> Vec<u8> {
    let mut body = Vec::new();
    let (first, rest) = match arcs {
        [a, b, rest @ ..] => (a * 40 + b, rest),
        _ => (0, arcs),
    };
    for arc in std::iter::once(first).chain(rest.iter().copied()) {
        let mut chunk = vec![(arc & 0x7F) as u8];
        let mut v = arc >> 7;
        while v > 0 {
            chunk.push(0x80 | (v & 0x7F) as u8);
            v >>= 7;
        }
        chunk.reverse();
        body.extend_from_slice(&chunk);
    }
    tlv(OID, &body)
}

/// A non-negative `INTEGER` from big-endian magnitude bytes (leading zeros trimmed, a zero
/// byte prepended when the top bit is set).
pub fn uint(magnitude: &[u8]) -> Vec<u8> {
    let skip = magnitude.iter().take_while(|&&b| b == 0).count();
    let trimmed = &magnitude[skip..];
    let mut body = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|&b| b & 0x80 != 0) {
        body.push(0);
    }
    body.extend_from_slice(trimmed);
    tlv(INTEGER, &body)
}

/// `OCTET STRING`.
pub fn octets(bytes: &[u8]) -> Vec<u8> {
    tlv(OCTET_STRING, bytes)
}

/// `NULL`.
pub fn null() -> Vec<u8> {
    vec![NULL, 0]
}

/// `BIT STRING` with no unused bits.
pub fn bits(bytes: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(bytes.len() + 1);
    body.push(0);
    body.extend_from_slice(bytes);
    tlv(BIT_STRING, &body)
}

/// An `AlgorithmIdentifier` with `NULL` parameters.
pub fn algorithm(arcs: &[u64]) -> Vec<u8> {
    seq(&[&oid(arcs), &null()])
}

/// A `Time` for `secs` since the epoch: `UTCTime` before 2050, `GeneralizedTime` from then on
/// (RFC 5280 §4.1.2.5).
pub fn time(secs: u64) -> Vec<u8> {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = crate::clock::civil_from_days(days);
    let (hh, mm, ss) = (rem / 3600, rem % 3600 / 60, rem % 60);
    if y < 2050 {
        let text = format!("{:02}{m:02}{d:02}{hh:02}{mm:02}{ss:02}Z", y % 100);
        tlv(UTC_TIME, text.as_bytes())
    } else {
        let text = format!("{y:04}{m:02}{d:02}{hh:02}{mm:02}{ss:02}Z");
        tlv(GENERALIZED_TIME, text.as_bytes())
    }
}

/// Why DER does not read.
#[derive(Debug, thiserror::Error)]
#[error("malformed DER: {0}")]
pub struct DerError(pub String);

/// One element read by [`Reader`].
#[derive(Debug, Clone, Copy)]
pub struct Element<'a> {
    /// The tag byte.
    pub tag: u8,
    /// The content octets.
    pub content: &'a [u8],
    /// The whole encoding (tag, length, content).
    pub raw: &'a [u8],
}

/// Reads consecutive DER elements from a byte slice (single-byte tags, definite lengths).
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next element, whatever its tag.
    pub fn any(&mut self) -> Result<Element<'a>, DerError> {
        let b = self.rest;
        let err = |what: &str| DerError(what.to_string());
        let tag = *b.first().ok_or_else(|| err("unexpected end"))?;
        if tag & 0x1F == 0x1F {
            return Err(err("multi-byte tags are not supported"));
        }
        let first = *b.get(1).ok_or_else(|| err("missing length"))?;
        let (len, head) = if first < 0x80 {
            (usize::from(first), 2)
        } else {
            let n = usize::from(first & 0x7F);
            if n == 0 || n > 4 {
                return Err(err("unsupported length form"));
            }
            let bytes = b.get(2..2 + n).ok_or_else(|| err("truncated length"))?;
            let len = bytes
                .iter()
                .fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
            (len, 2 + n)
        };
        let end = head
            .checked_add(len)
            .filter(|&e| e <= b.len())
            .ok_or_else(|| err("element is longer than its container"))?;
        self.rest = &b[end..];
        Ok(Element {
            tag,
            content: &b[head..end],
            raw: &b[..end],
        })
    }

    /// The next element, which must have `tag`.
    pub fn expect(&mut self, tag: u8) -> Result<Element<'a>, DerError> {
        let e = self.any()?;
        if e.tag != tag {
            return Err(DerError(format!(
                "expected tag {tag:#04x}, found {:#04x}",
                e.tag
            )));
        }
        Ok(e)
    }

    /// The next element if it has `tag`.
    pub fn optional(&mut self, tag: u8) -> Result<Option<Element<'a>>, DerError> {
        if self.rest.first() == Some(&tag) {
            self.any().map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Parses a `UTCTime` or `GeneralizedTime` (`YYMMDDHHMMSSZ` / `YYYYMMDDHHMMSSZ`) into seconds
/// since the epoch.
pub fn parse_time(e: &Element<'_>) -> Result<i64, DerError> {
    let text = std::str::from_utf8(e.content).map_err(|_| DerError("time is not ASCII".into()))?;
    let digits = text
        .strip_suffix('Z')
        .ok_or_else(|| DerError(format!("time {text:?} is not in UTC")))?;
    let (year, rest) = match e.tag {
        UTC_TIME if digits.len() == 12 => {
            let yy: i64 = num(&digits[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &digits[2..])
        }
        GENERALIZED_TIME if digits.len() == 14 => (num(&digits[..4])?, &digits[4..]),
        _ => return Err(DerError(format!("unsupported time {text:?}"))),
    };
    let [mo, d, h, mi, s] = [0, 2, 4, 6, 8].map(|i| num(&rest[i..i + 2]));
    let (mo, d, h, mi, s) = (mo?, d?, h?, mi?, s?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return Err(DerError(format!("invalid time {text:?}")));
    }
    Ok(days_from_civil(year, mo, d) * 86_400 + h * 3600 + mi * 60 + s)
}

fn num(s: &str) -> Result<i64, DerError> {
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DerError(format!("{s:?} is not a number")));
    }
    s.parse()
        .map_err(|_| DerError(format!("{s:?} is not a number")))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_known_values() {
        // sha256WithRSAEncryption and sha256, as every X.509 tool writes them.
        assert_eq!(
            hex::encode(oid(&[1, 2, 840, 113_549, 1, 1, 11])),
            "06092a864886f70d01010b"
        );
        assert_eq!(
            hex::encode(oid(&[2, 16, 840, 1, 101, 3, 4, 2, 1])),
            "0609608648016503040201"
        );
        assert_eq!(hex::encode(uint(&[0x80])), "02020080");
        assert_eq!(hex::encode(uint(&[0, 0, 5])), "020105");
        assert_eq!(hex::encode(uint(&[])), "020100");
        assert_eq!(tlv(OCTET_STRING, &[0u8; 200])[..3], [0x04, 0x81, 200]);
        assert_eq!(
            tlv(OCTET_STRING, &[0u8; 300])[..4],
            [0x04, 0x82, 0x01, 0x2C]
        );
        assert_eq!(time(0), tlv(UTC_TIME, b"700101000000Z"));
        // 2050-01-01 switches to GeneralizedTime.
        assert_eq!(
            time(2_524_608_000),
            tlv(GENERALIZED_TIME, b"20500101000000Z")
        );
    }

    #[test]
    fn reads_back_and_refuses_truncation() {
        let v = seq(&[&uint(&[7]), &octets(b"abc")]);
        let mut r = Reader::new(&v);
        let s = r.expect(SEQUENCE).unwrap();
        assert!(r.is_empty());
        let mut inner = Reader::new(s.content);
        assert_eq!(inner.expect(INTEGER).unwrap().content, [7]);
        assert!(inner.optional(INTEGER).unwrap().is_none());
        assert_eq!(inner.expect(OCTET_STRING).unwrap().content, b"abc");
        assert!(Reader::new(&v[..v.len() - 1]).any().is_err());
        assert!(Reader::new(&[0x30, 0x85, 1, 1, 1, 1, 1]).any().is_err());
        for secs in [
            0u64,
            951_782_400,
            1_767_225_599,
            2_524_608_000,
            4_102_444_800,
        ] {
            let t = time(secs);
            let e = Reader::new(&t).any().unwrap();
            assert_eq!(parse_time(&e).unwrap(), secs as i64, "{secs}");
        }
    }
}
