//! The node's libp2p identity: an ed25519 keypair in `<dataDir>/keys/node-key` (libp2p's
//! protobuf key encoding, mode 0600), generated on first use and written atomically (temporary
//! file, fsync, rename) while the data directory's lock is held. Its peer ID names the node in
//! the cluster; a member credential is bound to it.

use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;

use super::ReplicationError;

/// Largest identity file read (an ed25519 key encodes in 68 bytes).
const MAX_KEY_FILE: u64 = 4096;

/// Path of the identity file in `data_dir`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("node-key")
}

/// The identity at `path`, if the file exists.
pub fn load(path: &Path) -> Result<Option<Keypair>, ReplicationError> {
    let io = |source| ReplicationError::Identity {
        path: path.to_path_buf(),
        source,
    };
    let bytes = match crate::replication::files::read_capped(path, MAX_KEY_FILE) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    Keypair::from_protobuf_encoding(&bytes)
        .map(Some)
        .map_err(|source| ReplicationError::IdentityDecode {
            path: path.to_path_buf(),
            source,
        })
}

/// Writes `key` to `path` (mode 0600, atomically).
pub fn store(path: &Path, key: &Keypair) -> Result<(), ReplicationError> {
    let bytes = key
        .to_protobuf_encoding()
        .map_err(|source| ReplicationError::IdentityDecode {
            path: path.to_path_buf(),
            source,
        })?;
    crate::trust::write_private(path, &bytes).map_err(|source| ReplicationError::Identity {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads the identity at `path`, or generates and writes one; `true` when it was created.
pub fn load_or_generate(path: &Path) -> Result<(Keypair, bool), ReplicationError> {
    if let Some(key) = load(path)? {
        return Ok((key, false));
    }
    let key = Keypair::generate_ed25519();
    store(path, &key)?;
    Ok((key, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_mode_0600_same_peer_id_after_reload() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        let (k1, created) = load_or_generate(&p).unwrap();
        assert!(created);
        let (k2, created) = load_or_generate(&p).unwrap();
        assert!(!created);
        assert_eq!(k1.public().to_peer_id(), k2.public().to_peer_id());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temporary file is left beside it.
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("node-key")]);
    }

    #[test]
    fn a_damaged_key_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"not a key").unwrap();
        let e = load_or_generate(&p).unwrap_err().to_string();
        assert!(e.contains("node-key"), "{e}");
        // The damaged file is left for the operator, not replaced by a new identity.
        assert_eq!(std::fs::read(&p).unwrap(), b"not a key");
    }
}
