//! The admin bearer token: a random secret in a 0600 file, generated on first start.

use std::path::Path;

use super::{TrustError, write_private};

/// Loads the token at `path`, or generates (32 random bytes, hex) and writes one.
/// Returns the token and whether it was created.
pub fn load_or_generate_token(path: &Path) -> Result<(String, bool), TrustError> {
    let io = |source| TrustError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim().to_string();
            if token.len() < 16 {
                return Err(TrustError::Crypto(format!(
                    "admin token file {} holds fewer than 16 characters",
                    path.display()
                )));
            }
            Ok((token, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(TrustError::crypto)?;
            let token = hex::encode(bytes);
            write_private(path, format!("{token}\n").as_bytes()).map_err(io)?;
            Ok((token, true))
        }
        Err(e) => Err(io(e)),
    }
}

/// Compares two secrets in time independent of where they differ.
pub fn token_matches(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys/admin-token");
        let (t1, created) = load_or_generate_token(&p).unwrap();
        assert!(created);
        assert_eq!(t1.len(), 64);
        let (t2, created) = load_or_generate_token(&p).unwrap();
        assert!(!created);
        assert_eq!(t1, t2);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(token_matches(&t1, &t2));
        assert!(!token_matches(&t1, "nope"));
    }
}
