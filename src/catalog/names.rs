//! Names that reach the filesystem, parsed before any path is built from them: the
//! architectures a release carries ([`Arch`]) and the relative paths a release record names
//! ([`RelPath`], e.g. a GRUB module `i386-pc/boot.img`).

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::CatalogError;

/// An architecture of a Talos release (Talos publishes releases for exactly these two).
///
/// It orders, hashes and borrows as its name, so maps keyed by it are looked up with `"amd64"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// x86-64.
    Amd64,
    /// AArch64.
    Arm64,
}

impl Arch {
    /// Every architecture, in name order.
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    /// The Go/OCI name (`amd64`, `arm64`).
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
}

impl FromStr for Arch {
    type Err = CatalogError;

    /// Exactly `amd64` or `arm64`.
    fn from_str(s: &str) -> Result<Arch, CatalogError> {
        Arch::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| CatalogError::InvalidArch(s.to_string()))
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Borrow<str> for Arch {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

// Hash and order follow the name, as `Borrow<str>` requires.
impl Hash for Arch {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl Ord for Arch {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for Arch {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A relative path named by an image or a release record, checked: `/`-separated components,
/// none of them empty, `.` or `..`, and no NUL byte, so that joining it to a directory never
/// leaves that directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelPath<'a>(&'a str);

impl<'a> RelPath<'a> {
    /// Checks `path`.
    pub fn parse(path: &'a str) -> Result<RelPath<'a>, CatalogError> {
        let refuse = |reason: &'static str| {
            Err(CatalogError::UnsafePath {
                path: path.to_string(),
                reason,
            })
        };
        if path.is_empty() {
            return refuse("empty");
        }
        if path.starts_with('/') {
            return refuse("absolute");
        }
        if path.contains('\0') {
            return refuse("contains NUL");
        }
        for c in path.split('/') {
            match c {
                "" => return refuse("empty component"),
                "." | ".." => return refuse("dot component"),
                _ => {}
            }
        }
        Ok(RelPath(path))
    }

    /// The path as given.
    pub fn as_str(&self) -> &'a str {
        self.0
    }

    /// `base` joined with this path (always below `base`).
    pub fn under(&self, base: &Path) -> PathBuf {
        base.join(self.0)
    }
}

impl fmt::Display for RelPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn arches_parse_strictly_and_key_maps_by_name() {
        assert_eq!("amd64".parse::<Arch>().unwrap(), Arch::Amd64);
        assert_eq!("arm64".parse::<Arch>().unwrap(), Arch::Arm64);
        for bad in ["", "x86_64", "AMD64", "../../keys", "amd64/..", "amd64\0"] {
            let e = bad.parse::<Arch>().unwrap_err();
            assert!(matches!(e, CatalogError::InvalidArch(_)), "{bad:?}: {e}");
        }
        // Order agrees with the names (what `Borrow<str>` lookups rely on).
        let mut names: Vec<&str> = Arch::ALL.iter().map(|a| a.as_str()).collect();
        names.sort();
        assert_eq!(names, Arch::ALL.map(Arch::as_str));
        let mut m = BTreeMap::new();
        m.insert(Arch::Arm64, 2);
        m.insert(Arch::Amd64, 1);
        assert_eq!(m["amd64"], 1);
        assert_eq!(m.get("arm64"), Some(&2));
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"amd64":1,"arm64":2}"#
        );
        let back: BTreeMap<Arch, i32> = serde_json::from_str(r#"{"arm64":2}"#).unwrap();
        assert_eq!(back[&Arch::Arm64], 2);
        assert!(serde_json::from_str::<BTreeMap<Arch, i32>>(r#"{"../keys":1}"#).is_err());
    }

    #[test]
    fn relative_paths_never_leave_their_base() {
        for ok in ["boot.img", "i386-pc/boot.img", "a/b/c..d/.hidden"] {
            let p = RelPath::parse(ok).unwrap();
            assert!(p.under(Path::new("/base")).starts_with("/base"), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "..",
            "../x",
            "../../keys/x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "a\0b",
        ] {
            let e = RelPath::parse(bad).unwrap_err();
            assert!(matches!(e, CatalogError::UnsafePath { .. }), "{bad:?}: {e}");
        }
    }
}
