//! Reading one file's final content out of a layer stack without extracting it.

use std::io::Read;

use super::{FlattenOptions, LayerOpener, for_each_entry, open_layer};
use crate::oci::tarwalk::clean_entry_path;
use crate::oci::verify::io_error_to_oci;
use crate::oci::{Descriptor, OciError};

/// What one layer says about a path.
enum Found {
    Content(Vec<u8>),
    Redirect(String),
    Hardlink(String),
    Hidden,
    Absent,
}

/// Joins a symlink target onto the directory containing `at`, resolving `..` like a chroot.
fn follow(at: &str, target: &[u8], rest: &str) -> String {
    let target = String::from_utf8_lossy(target);
    let base = if target.starts_with('/') {
        String::new()
    } else {
        at.rsplit_once('/').map_or("", |(d, _)| d).to_string()
    };
    let mut parts: Vec<String> = Vec::new();
    for c in format!("{base}/{target}/{rest}").split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c.to_string()),
        }
    }
    parts.join("/")
}

fn scan_layer(
    layer: &Descriptor,
    open: &mut LayerOpener<'_>,
    target: &str,
    limit: u64,
    regular_only: bool,
) -> Result<Found, OciError> {
    let opts = FlattenOptions::default();
    let stream = open_layer(layer, open, &opts, opts.max_total_bytes)?;
    let mut found = Found::Absent;
    let mut hidden_below = false;
    for_each_entry(stream, |item, entry| {
        let Some(p) = item.path.as_deref() else {
            return Ok(());
        };
        let (parent, name) = p.rsplit_once('/').unwrap_or(("", p));
        if let Some(w) = name.strip_prefix(".wh.") {
            let covers =
                |v: &str| v.is_empty() || target == v || target.starts_with(&format!("{v}/"));
            if w == ".wh..opq" && covers(parent) && target != parent {
                hidden_below = true;
            } else if w != ".wh..opq" {
                let victim = if parent.is_empty() {
                    w.to_string()
                } else {
                    format!("{parent}/{w}")
                };
                hidden_below |= covers(&victim);
            }
            return Ok(());
        }
        let kind = item.kind;
        let regular = kind.is_file() || kind == tar::EntryType::Continuous;
        if regular_only && !regular {
            return Ok(());
        }
        if p == target {
            found = if regular || kind == tar::EntryType::Continuous {
                if item.size > limit {
                    return Err(OciError::Limit(format!(
                        "{target} is {} bytes (limit {limit})",
                        item.size
                    )));
                }
                let mut buf = Vec::with_capacity(item.size as usize);
                entry
                    .read_to_end(&mut buf)
                    .map_err(|e| io_error_to_oci(target.to_string(), e))?;
                if buf.len() as u64 != item.size {
                    return Err(OciError::Malformed {
                        what: target.into(),
                        message: "truncated entry".into(),
                    });
                }
                Found::Content(buf)
            } else if kind.is_symlink() {
                Found::Redirect(follow(p, item.link.as_deref().unwrap_or_default(), ""))
            } else if kind.is_hard_link() {
                match clean_entry_path(item.link.as_deref().unwrap_or_default())? {
                    Some(t) => Found::Hardlink(t),
                    None => Found::Hidden,
                }
            } else {
                Found::Hidden
            };
        } else if !regular_only && target.starts_with(&format!("{p}/")) && !kind.is_dir() {
            found = if kind.is_symlink() {
                Found::Redirect(follow(
                    p,
                    item.link.as_deref().unwrap_or_default(),
                    &target[p.len() + 1..],
                ))
            } else {
                Found::Hidden
            };
        }
        Ok(())
    })?;
    Ok(match found {
        Found::Absent if hidden_below => Found::Hidden,
        other => other,
    })
}

/// The final content of the regular file at `path` in the layer stack (top-most layer wins,
/// whiteouts and symlinks honoured), or `None`; files above `limit` bytes are an error.
/// Reads (and so verifies) each layer it needs entirely. Blocking.
pub fn read_file(
    layers: &[Descriptor],
    open: &mut LayerOpener<'_>,
    path: &str,
    limit: u64,
) -> Result<Option<Vec<u8>>, OciError> {
    let mut target = clean_entry_path(path.as_bytes())?
        .ok_or_else(|| OciError::NotFound("the root directory is not a file".into()))?;
    'restart: for _hop in 0..16 {
        for (i, layer) in layers.iter().enumerate().rev() {
            match scan_layer(layer, open, &target, limit, false)? {
                Found::Content(c) => return Ok(Some(c)),
                Found::Hidden => return Ok(None),
                Found::Absent => {}
                Found::Redirect(next) => {
                    target = next;
                    continue 'restart;
                }
                Found::Hardlink(src) => {
                    return match scan_layer(layer, open, &src, limit, true)? {
                        Found::Content(c) => Ok(Some(c)),
                        _ => Err(OciError::Malformed {
                            what: format!("layer {} of {}", i, layers.len()),
                            message: format!("hardlink {target} -> {src}: target not in the layer"),
                        }),
                    };
                }
            }
        }
        return Ok(None);
    }
    Err(OciError::Unsafe(format!("{path}: too many symlinks")))
}
