//! PEM blocks (RFC 7468): finding the first block of a file and writing one.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The first PEM block in `text`: its label and decoded bytes. `None` when there is no
/// well-formed block.
pub fn first_block(text: &str) -> Option<(String, Vec<u8>)> {
    let start = text.find("-----BEGIN ")?;
    let rest = &text[start + "-----BEGIN ".len()..];
    let label_end = rest.find("-----")?;
    let label = &rest[..label_end];
    let body_start = label_end + 5;
    let end_marker = format!("-----END {label}-----");
    let body_end = rest[body_start..].find(&end_marker)? + body_start;
    let body: String = rest[body_start..body_end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let bytes = STANDARD.decode(body).ok()?;
    Some((label.to_string(), bytes))
}

/// A PEM block with `label` over `der`, 64 characters a line.
pub fn encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let der: Vec<u8> = (0..200u8).collect();
        let pem = encode("CERTIFICATE", &der);
        assert!(pem.lines().all(|l| l.len() <= 64));
        let text = format!("junk before\n{pem}after");
        assert_eq!(first_block(&text), Some(("CERTIFICATE".into(), der)));
        assert_eq!(
            first_block("-----BEGIN X-----\n!!\n-----END X-----\n"),
            None
        );
        assert_eq!(first_block("-----BEGIN X-----\nAAAA\n"), None);
    }
}
