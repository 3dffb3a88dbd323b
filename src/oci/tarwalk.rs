//! A bounded walk over tar entries shared by the archive indexer and the layer flattener.
//!
//! The `tar` crate reads GNU long names and PAX headers into memory without a bound, so entries
//! are iterated raw and those headers are handled here with size limits. Entry paths are
//! normalized and refused when they would escape the root.

use std::io::Read;

use super::OciError;

/// Largest GNU long name or long link accepted.
const LONG_NAME_LIMIT: u64 = 64 << 10;
/// Largest PAX extended header accepted.
const PAX_LIMIT: u64 = 1 << 20;
/// PAX key of the SELinux label xattr.
const PAX_SELINUX: &str = "SCHILY.xattr.security.selinux";

/// One logical tar entry (after long-name and PAX headers are applied).
#[derive(Debug, Clone)]
pub(crate) struct TarItem {
    /// Normalized relative path; `None` for the root itself (`./`).
    pub path: Option<String>,
    /// Link target bytes (symlinks and hardlinks).
    pub link: Option<Vec<u8>>,
    /// Entry type.
    pub kind: tar::EntryType,
    /// Data size.
    pub size: u64,
    /// Permission bits from the header.
    pub mode: u32,
    /// `security.selinux` xattr from PAX, without a trailing NUL.
    pub selinux: Option<String>,
}

/// Normalizes a tar entry name to a relative `a/b/c` path: strips `./` and empty components,
/// refuses `..`, absolute paths and non-UTF-8 names. `Ok(None)` is the root directory.
pub(crate) fn clean_entry_path(raw: &[u8]) -> Result<Option<String>, OciError> {
    let s = std::str::from_utf8(raw).map_err(|_| OciError::Malformed {
        what: "tar entry name".into(),
        message: format!("not UTF-8: {:?}", String::from_utf8_lossy(raw)),
    })?;
    if s.starts_with('/') {
        return Err(OciError::Unsafe(format!("absolute path {s:?} in archive")));
    }
    let mut parts = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(OciError::Unsafe(format!(
                    "path {s:?} climbs out of the root"
                )));
            }
            c if c.contains('\0') => {
                return Err(OciError::Unsafe(format!("path {s:?} contains NUL")));
            }
            c => parts.push(c),
        }
    }
    Ok(if parts.is_empty() {
        None
    } else {
        Some(parts.join("/"))
    })
}

/// Reads an extension header's data, bounded.
fn read_bounded<R: Read>(entry: &mut tar::Entry<'_, R>, limit: u64) -> Result<Vec<u8>, OciError> {
    if entry.size() > limit {
        return Err(OciError::Limit(format!(
            "tar extension header of {} bytes (limit {limit})",
            entry.size()
        )));
    }
    let mut out = Vec::with_capacity(entry.size() as usize);
    entry
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| super::verify::io_error_to_oci("reading tar header", e))?;
    if out.len() as u64 != entry.size() {
        return Err(OciError::Malformed {
            what: "tar".into(),
            message: "truncated extension header".into(),
        });
    }
    Ok(out)
}

/// Parses PAX records (`LEN key=value\n`).
fn parse_pax(data: &[u8]) -> Result<Vec<(String, Vec<u8>)>, OciError> {
    let bad = |m: &str| OciError::Malformed {
        what: "tar PAX header".into(),
        message: m.to_string(),
    };
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| bad("no length"))?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad length"))?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad("bad record"));
        }
        let record = &rest[sp + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| bad("no '='"))?;
        let key = String::from_utf8_lossy(&record[..eq]).into_owned();
        out.push((key, record[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    Ok(out)
}

/// Walks `entries` (made raw here), calling `f` for every logical entry with the entry positioned
/// at its data. Returns the archive offset just past the last entry's padded data (0 when there
/// were none), for truncation checks.
pub(crate) fn walk<R: Read>(
    entries: tar::Entries<'_, R>,
    mut f: impl FnMut(&TarItem, &mut tar::Entry<'_, R>) -> Result<(), OciError>,
) -> Result<u64, OciError> {
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let mut pax: Option<Vec<(String, Vec<u8>)>> = None;
    let mut end = 0u64;
    for entry in entries.raw(true) {
        let mut entry = entry.map_err(|e| super::verify::io_error_to_oci("reading tar", e))?;
        end = entry
            .raw_file_position()
            .saturating_add(entry.size().div_ceil(512) * 512);
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::GNULongName => {
                let mut name = read_bounded(&mut entry, LONG_NAME_LIMIT)?;
                if name.last() == Some(&0) {
                    name.pop();
                }
                long_name = Some(name);
                continue;
            }
            tar::EntryType::GNULongLink => {
                let mut name = read_bounded(&mut entry, LONG_NAME_LIMIT)?;
                if name.last() == Some(&0) {
                    name.pop();
                }
                long_link = Some(name);
                continue;
            }
            tar::EntryType::XHeader => {
                pax = Some(parse_pax(&read_bounded(&mut entry, PAX_LIMIT)?)?);
                continue;
            }
            tar::EntryType::XGlobalHeader => {
                read_bounded(&mut entry, PAX_LIMIT)?;
                continue;
            }
            _ => {}
        }
        if kind.is_gnu_sparse() {
            return Err(OciError::Unsafe(
                "GNU sparse entries are not supported".into(),
            ));
        }
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644);
        let mut path = long_name
            .take()
            .unwrap_or_else(|| header.path_bytes().into_owned());
        let mut link = long_link
            .take()
            .or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
        let mut selinux = None;
        for (key, value) in pax.take().unwrap_or_default() {
            match key.as_str() {
                "path" => path = value,
                "linkpath" => link = Some(value),
                "size" => {
                    let size: Option<u64> = std::str::from_utf8(&value)
                        .ok()
                        .and_then(|s| s.parse().ok());
                    if size != Some(entry.size()) {
                        return Err(OciError::Unsafe(
                            "PAX size differs from the header size (unsupported)".into(),
                        ));
                    }
                }
                PAX_SELINUX => {
                    let v = value.strip_suffix(b"\0").unwrap_or(&value);
                    selinux = Some(String::from_utf8_lossy(v).into_owned());
                }
                _ => {}
            }
        }
        let item = TarItem {
            path: clean_entry_path(&path)?,
            link,
            kind,
            size: entry.size(),
            mode,
            selinux,
        };
        f(&item, &mut entry)?;
    }
    if long_name.is_some() || long_link.is_some() || pax.is_some() {
        return Err(OciError::Malformed {
            what: "tar".into(),
            message: "extension header without a following entry (truncated archive)".into(),
        });
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            clean_entry_path(b"./a//b/./c").unwrap().as_deref(),
            Some("a/b/c")
        );
        assert_eq!(clean_entry_path(b"./").unwrap(), None);
        assert!(matches!(
            clean_entry_path(b"../x"),
            Err(OciError::Unsafe(_))
        ));
        assert!(matches!(
            clean_entry_path(b"a/../../x"),
            Err(OciError::Unsafe(_))
        ));
        assert!(matches!(
            clean_entry_path(b"/etc/x"),
            Err(OciError::Unsafe(_))
        ));
    }

    #[test]
    fn pax_records() {
        let rec = b"30 SCHILY.xattr.security.x=ab\n12 path=a/b\n";
        let parsed = parse_pax(rec).unwrap();
        assert_eq!(parsed[0].0, "SCHILY.xattr.security.x");
        assert_eq!(parsed[1], ("path".to_string(), b"a/b".to_vec()));
        assert!(parse_pax(b"99 path=x\n").is_err());
    }
}
