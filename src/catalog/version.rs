//! Talos versions: strict and tolerant semver parsing, ordering, and the offered-version rules.

use std::cmp::Ordering;
use std::fmt;

/// A semantic version (build metadata is ignored).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version {
    /// Major.
    pub major: u64,
    /// Minor.
    pub minor: u64,
    /// Patch.
    pub patch: u64,
    /// Pre-release identifiers (e.g. `["alpha", "1"]`).
    pub pre: Vec<String>,
}

impl Version {
    /// Strict semver (`1.7.0`, `1.8.0-alpha.1`); a leading `v` is accepted.
    pub fn parse_strict(s: &str) -> Option<Version> {
        let s = s.strip_prefix('v').unwrap_or(s);
        let (core, pre) = match s.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (s, None),
        };
        let core = core.split('+').next().unwrap_or(core);
        let pre = pre.map(|p| p.split('+').next().unwrap_or(p));
        let nums: Vec<&str> = core.split('.').collect();
        if nums.len() != 3 {
            return None;
        }
        let num = |t: &str| -> Option<u64> {
            if t.is_empty()
                || (t.len() > 1 && t.starts_with('0'))
                || !t.bytes().all(|b| b.is_ascii_digit())
            {
                None
            } else {
                t.parse().ok()
            }
        };
        let pre: Vec<String> = match pre {
            None => Vec::new(),
            Some(p) => {
                let ids: Vec<String> = p.split('.').map(str::to_string).collect();
                let ok = ids.iter().all(|i| {
                    !i.is_empty()
                        && i.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !(i.len() > 1
                            && i.starts_with('0')
                            && i.bytes().all(|b| b.is_ascii_digit()))
                });
                if !ok {
                    return None;
                }
                ids
            }
        };
        Some(Version {
            major: num(nums[0])?,
            minor: num(nums[1])?,
            patch: num(nums[2])?,
            pre,
        })
    }

    /// Tolerant parse used for registry tags: optional `v`, missing minor/patch padded with 0.
    pub fn parse_tolerant(s: &str) -> Option<Version> {
        let t = s.strip_prefix('v').unwrap_or(s);
        let (core, rest) = match t.find(['-', '+']) {
            Some(i) => (&t[..i], &t[i..]),
            None => (t, ""),
        };
        let mut parts: Vec<&str> = core.split('.').collect();
        if parts.is_empty() || parts.len() > 3 {
            return None;
        }
        while parts.len() < 3 {
            parts.push("0");
        }
        Version::parse_strict(&format!("{}{rest}", parts.join(".")))
    }

    /// The version without pre-release: `major.minor.patch`.
    pub fn core(&self) -> Version {
        Version {
            major: self.major,
            minor: self.minor,
            patch: self.patch,
            pre: Vec::new(),
        }
    }

    /// Whether this is a pre-release.
    pub fn is_prerelease(&self) -> bool {
        !self.pre.is_empty()
    }

    /// `>=` on major.minor (handy for quirk checks like "target >= 1.10").
    pub fn at_least(&self, major: u64, minor: u64) -> bool {
        (self.major, self.minor) >= (major, minor)
    }

    /// The tag form with a leading `v`.
    pub fn tag(&self) -> String {
        format!("v{self}")
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if !self.pre.is_empty() {
            write!(f, "-{}", self.pre.join("."))?;
        }
        Ok(())
    }
}

fn cmp_pre(a: &[String], b: &[String]) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        _ => {}
    }
    for (x, y) in a.iter().zip(b) {
        let o = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(m), Ok(n)) => m.cmp(&n),
            (Ok(_), Err(_)) => Ordering::Less,
            (Err(_), Ok(_)) => Ordering::Greater,
            (Err(_), Err(_)) => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| cmp_pre(&self.pre, &other.pre))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Filters and sorts versions the way the factory builds its offered list (api spec §7.1):
/// at least `min`, not broken, and pre-releases only for the newest minor line with exactly
/// `alpha|beta|rc` plus a number.
pub fn offered(all: &[Version], min: &Version, broken: &[Version]) -> Vec<Version> {
    let Some(max) = all.iter().max().cloned() else {
        return Vec::new();
    };
    let mut out: Vec<Version> = all
        .iter()
        .filter(|v| *v >= min && !broken.contains(v))
        .filter(|v| {
            !v.is_prerelease()
                || (v.major == max.major
                    && v.minor == max.minor
                    && v.pre.len() == 2
                    && matches!(v.pre[0].as_str(), "alpha" | "beta" | "rc")
                    && v.pre[1].bytes().all(|b| b.is_ascii_digit()))
        })
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse_tolerant(s).unwrap()
    }

    #[test]
    fn parsing() {
        assert_eq!(
            Version::parse_strict("v1.8.0-alpha.1").unwrap().to_string(),
            "1.8.0-alpha.1"
        );
        assert!(Version::parse_strict("1.8").is_none());
        assert!(Version::parse_strict("01.8.0").is_none());
        assert!(Version::parse_strict("1.8.0-").is_none());
        assert_eq!(v("v1.8").to_string(), "1.8.0");
        assert!(Version::parse_tolerant("latest").is_none());
        assert!(Version::parse_tolerant("sha256-abc.sig").is_none());
    }

    #[test]
    fn ordering() {
        let mut vs = [
            v("1.10.0"),
            v("1.9.2"),
            v("1.10.0-rc.1"),
            v("1.10.0-alpha.2"),
            v("1.10.0-beta.0"),
        ];
        vs.sort();
        let s: Vec<String> = vs.iter().map(|x| x.to_string()).collect();
        assert_eq!(
            s,
            [
                "1.9.2",
                "1.10.0-alpha.2",
                "1.10.0-beta.0",
                "1.10.0-rc.1",
                "1.10.0"
            ]
        );
    }

    #[test]
    fn offered_rules() {
        let all = vec![
            v("1.1.0"),
            v("1.2.0"),
            v("1.10.3"),
            v("1.11.0"),
            v("1.12.0-alpha.1"),
            v("1.12.0-alpha"),
            v("1.11.0-rc.1"),
            v("1.12.0-dev.1"),
            v("1.12.0-beta.1.2"),
        ];
        // max is 1.12.0-alpha.1 (prereleases sort below 1.12.0 but above 1.11.0)
        let got = offered(&all, &v("1.2.0"), &[v("1.10.3")]);
        let s: Vec<String> = got.iter().map(|x| x.tag()).collect();
        assert_eq!(s, ["v1.2.0", "v1.11.0", "v1.12.0-alpha.1"]);
    }
}
