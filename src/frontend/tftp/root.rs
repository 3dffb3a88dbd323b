//! What a TFTP file name resolves to: a file under the configured root (the iPXE binaries),
//! or a generated iPXE chain script that hands the machine over to HTTP.

use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::packet::ErrorCode;

/// Folder of generated chain scripts: `pxe/<schematic>/<version>/<platform>-<arch>` chains
/// to the HTTP URL of the same path.
const CHAIN_PREFIX: &str = "pxe";

/// The bytes of one transfer.
#[derive(Debug, Clone)]
pub enum Source {
    /// A regular file under the root.
    File(Arc<std::fs::File>),
    /// A generated script.
    Memory(Arc<[u8]>),
}

/// Why a file name was refused (sent to the client as a TFTP error).
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The name leaves the root (`..`) or is not a usable path.
    #[error("access violation: {0}")]
    Outside(String),
    /// Nothing of that name.
    #[error("file not found")]
    NotFound,
    /// The file could not be opened or read.
    #[error("cannot open the file")]
    Io(#[source] std::io::Error),
}

impl ResolveError {
    /// The TFTP error code the client gets.
    pub fn code(&self) -> ErrorCode {
        match self {
            ResolveError::Outside(_) => ErrorCode::AccessViolation,
            ResolveError::NotFound => ErrorCode::NotFound,
            ResolveError::Io(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                ErrorCode::AccessViolation
            }
            ResolveError::Io(_) => ErrorCode::NotDefined,
        }
    }
}

/// The served tree: a directory and the HTTP base URL chain scripts point at.
#[derive(Debug, Clone)]
pub struct Root {
    dir: PathBuf,
    http_base: String,
}

impl Root {
    /// A root serving `dir` whose chain scripts continue at `http_base`.
    pub fn new(dir: PathBuf, http_base: &str) -> Self {
        Self {
            dir,
            http_base: http_base.trim_end_matches('/').to_string(),
        }
    }

    /// The served directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Resolves `name` (blocking: opens a file). A leading `/` and `\` separators are
    /// accepted; `..` anywhere is refused. Symbolic links inside the root are followed
    /// (Debian's `ipxe.efi` is one), since only the operator places them there.
    pub fn resolve(&self, name: &str) -> Result<(Source, u64), ResolveError> {
        let normalized = name.replace('\\', "/");
        let mut parts = Vec::new();
        for seg in normalized.split('/') {
            match seg {
                "" | "." => {}
                ".." => return Err(ResolveError::Outside("the path leaves the root".into())),
                s => parts.push(s),
            }
        }
        if parts.is_empty() {
            return Err(ResolveError::NotFound);
        }
        if parts[0] == CHAIN_PREFIX {
            let script = self
                .chain_script(&parts[1..])
                .ok_or(ResolveError::NotFound)?;
            let len = script.len() as u64;
            return Ok((Source::Memory(script.into_bytes().into()), len));
        }
        let path = parts.iter().fold(self.dir.clone(), |p, s| p.join(s));
        let file = std::fs::File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => {
                ResolveError::NotFound
            }
            _ => ResolveError::Io(e),
        })?;
        let meta = file.metadata().map_err(ResolveError::Io)?;
        if !meta.is_file() {
            return Err(ResolveError::NotFound);
        }
        Ok((Source::File(Arc::new(file)), meta.len()))
    }

    /// Opens `name` as a regular file of the root, never a generated script (blocking): the
    /// iPXE binaries the HTTP frontend and the ProxyDHCP responder refer to.
    pub fn open_file(&self, name: &str) -> Result<(std::fs::File, u64), ResolveError> {
        match self.resolve(name)? {
            (Source::File(f), len) => {
                let f = Arc::try_unwrap(f)
                    .or_else(|shared| shared.try_clone().map_err(ResolveError::Io))?;
                Ok((f, len))
            }
            (Source::Memory(_), _) => Err(ResolveError::NotFound),
        }
    }

    /// The chain script for `pxe/<schematic>/<version>/<platform>-<arch>`: three segments of
    /// `[A-Za-z0-9._-]`, so nothing iPXE would expand gets into the script.
    fn chain_script(&self, rest: &[&str]) -> Option<String> {
        let safe = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        };
        if rest.len() != 3 || !rest.iter().all(|s| safe(s)) {
            return None;
        }
        Some(format!(
            "#!ipxe\n# image-factory: continue over HTTP\nchain --autofree {}/pxe/{}\n",
            self.http_base,
            rest.join("/")
        ))
    }
}

impl Source {
    /// Reads up to `buf.len()` bytes at `offset` (blocking for files).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Source::File(f) => {
                let mut done = 0;
                while done < buf.len() {
                    match f.read_at(&mut buf[done..], offset + done as u64) {
                        Ok(0) => break,
                        Ok(n) => done += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(done)
            }
            Source::Memory(m) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(m.len());
                let n = buf.len().min(m.len() - start);
                buf[..n].copy_from_slice(&m[start..start + n]);
                Ok(n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, Root) {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("undionly.kpxe"), b"ipxe").unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        let r = Root::new(d.path().to_path_buf(), "http://f:8080/");
        (d, r)
    }

    fn read_all(s: &Source, len: u64) -> Vec<u8> {
        let mut b = vec![0; len as usize];
        assert_eq!(s.read_at(0, &mut b).unwrap(), len as usize);
        b
    }

    #[test]
    fn files_and_traversal() {
        let (_d, r) = root();
        for name in [
            "undionly.kpxe",
            "/undionly.kpxe",
            "./undionly.kpxe",
            "\\undionly.kpxe",
        ] {
            let (s, len) = r.resolve(name).unwrap();
            assert_eq!(read_all(&s, len), b"ipxe", "{name}");
        }
        for name in ["../etc/passwd", "sub/../../x", "..\\x", "/.."] {
            assert!(
                matches!(r.resolve(name), Err(ResolveError::Outside(_))),
                "{name}"
            );
        }
        assert!(matches!(r.resolve("sub"), Err(ResolveError::NotFound)));
        assert!(matches!(r.resolve("nope"), Err(ResolveError::NotFound)));
        assert!(matches!(r.resolve("/"), Err(ResolveError::NotFound)));
        assert!(matches!(
            r.resolve("undionly.kpxe/x"),
            Err(ResolveError::NotFound)
        ));
    }

    #[test]
    fn open_file_serves_files_only() {
        let (_d, r) = root();
        let (mut f, len) = r.open_file("undionly.kpxe").unwrap();
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut b).unwrap();
        assert_eq!((b.as_slice(), len), (&b"ipxe"[..], 4));
        for name in ["pxe/abc/v1.11.0/metal-amd64", "/pxe/a/b/c", "sub", "nope"] {
            assert!(
                matches!(r.open_file(name), Err(ResolveError::NotFound)),
                "{name}"
            );
        }
        assert!(matches!(
            r.open_file("../secret"),
            Err(ResolveError::Outside(_))
        ));
    }

    #[test]
    fn chain_scripts() {
        let (_d, r) = root();
        let (s, len) = r.resolve("pxe/abc/v1.11.0/metal-amd64").unwrap();
        assert_eq!(
            String::from_utf8(read_all(&s, len)).unwrap(),
            "#!ipxe\n# image-factory: continue over HTTP\nchain --autofree http://f:8080/pxe/abc/v1.11.0/metal-amd64\n"
        );
        for bad in [
            "pxe/abc/v1",
            "pxe/a/b/c/d",
            "pxe/a/b/${x}",
            "pxe/a/b/c||shell",
        ] {
            assert!(
                matches!(r.resolve(bad), Err(ResolveError::NotFound)),
                "{bad}"
            );
        }
    }
}
