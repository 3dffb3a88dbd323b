//! Small JSON files of the cluster state: read with a size cap, written atomically.

use std::io::Read as _;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ReplicationError;

/// Reads at most `cap` bytes of `path`; a larger file is an `InvalidData` error.
pub fn read_capped(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {cap} bytes"),
        ));
    }
    Ok(bytes)
}

/// The JSON document at `path` (`None` when the file does not exist).
pub fn read_json<T: DeserializeOwned>(
    path: &Path,
    cap: u64,
) -> Result<Option<T>, ReplicationError> {
    let bytes = match read_capped(path, cap) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ReplicationError::File {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| ReplicationError::FileJson {
            path: path.to_path_buf(),
            source,
        })
}

/// Writes `value` as JSON to `path` (mode 0600, temporary file, fsync, rename).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), ReplicationError> {
    let mut bytes =
        serde_json::to_vec_pretty(value).map_err(|source| ReplicationError::FileJson {
            path: path.to_path_buf(),
            source,
        })?;
    bytes.push(b'\n');
    crate::trust::write_private(path, &bytes).map_err(|source| ReplicationError::File {
        path: path.to_path_buf(),
        source,
    })
}
