//! The xattr table: each distinct set of key/value pairs is written once to the key/value
//! metadata stream (keys as a prefix id — 0 `user.`, 1 `trusted.`, 2 `security.` — plus the
//! rest of the name, values inline), an id table maps xattr indexes to those sets, and a small
//! uncompressed header (key/value start, id count, index of the id blocks) ends the image.

use std::collections::HashMap;
use std::io;

use super::metadata::{Codec, MetaWriter};

/// The name-space prefixes squashfs can store, by prefix id.
const PREFIXES: [(&str, u16); 3] = [("user.", 0), ("trusted.", 1), ("security.", 2)];

/// One extended attribute: full name (`security.selinux`) and value.
pub type Xattr = (String, Vec<u8>);

/// One stored pair: prefix id, name without the prefix, value.
type Pair = (u16, Vec<u8>, Vec<u8>);

/// Collects xattr sets and assigns them indexes; identical sets share one index.
#[derive(Debug, Default)]
pub struct XattrTable {
    sets: Vec<Vec<Pair>>,
    known: HashMap<Vec<Pair>, u32>,
}

/// Splits `security.selinux` into (prefix id 2, `selinux`).
fn split_name(name: &str) -> io::Result<(u16, &str)> {
    for (prefix, id) in PREFIXES {
        if let Some(rest) = name.strip_prefix(prefix)
            && !rest.is_empty()
        {
            return Ok((id, rest));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("xattr {name:?}: squashfs stores only user., trusted. and security. names"),
    ))
}

impl XattrTable {
    /// The index of the set `xattrs` (sorted by name), adding it when new.
    pub fn add(&mut self, xattrs: &[Xattr]) -> io::Result<u32> {
        let mut set = Vec::with_capacity(xattrs.len());
        for (name, value) in xattrs {
            let (id, rest) = split_name(name)?;
            if rest.len() > usize::from(u16::MAX) || value.len() > u32::MAX as usize {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("xattr {name:?} is too large"),
                ));
            }
            set.push((id, rest.as_bytes().to_vec(), value.clone()));
        }
        set.sort();
        if let Some(i) = self.known.get(&set) {
            return Ok(*i);
        }
        let i = u32::try_from(self.sets.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many xattr sets"))?;
        self.known.insert(set.clone(), i);
        self.sets.push(set);
        Ok(i)
    }

    /// Whether no inode has xattrs.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// The table bytes to place at absolute offset `at`, and the absolute offset of the xattr id
    /// table header (the superblock's `xattr_id_table_start`).
    pub fn write(&self, codec: Codec, at: u64) -> io::Result<(Vec<u8>, u64)> {
        let mut kv = MetaWriter::new(codec)?;
        let mut ids = Vec::with_capacity(self.sets.len() * 16);
        for set in &self.sets {
            let start = kv.pos();
            let mut size = 0u32;
            for (id, name, value) in set {
                let mut rec = Vec::with_capacity(8 + name.len() + value.len());
                rec.extend_from_slice(&id.to_le_bytes());
                rec.extend_from_slice(&(name.len() as u16).to_le_bytes());
                rec.extend_from_slice(name);
                rec.extend_from_slice(&(value.len() as u32).to_le_bytes());
                rec.extend_from_slice(value);
                size = size.saturating_add(rec.len() as u32);
                kv.write(&rec)?;
            }
            ids.extend_from_slice(&start.packed().to_le_bytes());
            ids.extend_from_slice(&(set.len() as u32).to_le_bytes());
            ids.extend_from_slice(&size.to_le_bytes());
        }
        let (mut out, _) = kv.finish()?;
        let ids_at = at + out.len() as u64;
        let mut idw = MetaWriter::new(codec)?;
        idw.write(&ids)?;
        let (id_bytes, id_blocks) = idw.finish()?;
        out.extend_from_slice(&id_bytes);
        let header_at = at + out.len() as u64;
        out.extend_from_slice(&at.to_le_bytes());
        out.extend_from_slice(&(self.sets.len() as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        for b in id_blocks {
            out.extend_from_slice(&(ids_at + b).to_le_bytes());
        }
        Ok((out, header_at))
    }
}
