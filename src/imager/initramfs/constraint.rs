//! Extension compatibility constraints (imager spec §3.2): blang/semver v3 ranges.
//!
//! The grammar is blang's, not the `semver` crate's: comparators `>=`, `>`, `<=`, `<`, `=`, `==`,
//! `!=`, `!` or none (equal) directly followed by a strict `major.minor.patch[-pre][+build]`
//! version; space-separated comparators are ANDed, `||` separates OR groups; a space after an
//! operator is allowed (`>= 1.0.0`); `x` wildcards are expanded the way blang expands them.
//! Before parsing, every `v` immediately followed by a digit is removed (`>= v1.1.0`).

use std::cmp::Ordering;

use crate::catalog::Version;

/// One comparison against a version.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

/// Why a constraint does not parse or does not admit the target (blang's and upstream's
/// texts, which upstream shows to the user).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    /// `||` with nothing on one side.
    #[error("Empty OR range")]
    EmptyOr,
    /// A comparator without a digit.
    #[error("Could not get version from string: {0:?}")]
    NoVersion(String),
    /// A wildcard comparator that does not parse.
    #[error("Could not parse Range {0:?}")]
    Range(String),
    /// An operator blang does not know.
    #[error("Could not parse comparator {op:?} in {part:?}")]
    Comparator {
        /// The operator.
        op: String,
        /// The comparator it is part of.
        part: String,
    },
    /// A comparator whose version is not a strict semantic version.
    #[error("Could not parse Range {part:?}: invalid version {version:?}")]
    Version {
        /// The comparator.
        part: String,
        /// Its version part.
        version: String,
    },
    /// The extension's constraint does not parse.
    #[error("error parsing Talos version constraint {constraint:?}: {source}")]
    Parse {
        /// The constraint as written.
        constraint: String,
        /// Why it does not parse.
        #[source]
        source: Box<ConstraintError>,
    },
    /// The constraint parses but the target is outside it.
    #[error("version constraint {constraint} can't be satisfied with Talos version {target}")]
    Unsatisfied {
        /// The constraint without its `v` prefixes.
        constraint: String,
        /// The target's core version.
        target: Version,
    },
}

/// A parsed range: OR of AND groups of comparators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    groups: Vec<Vec<(Op, Version)>>,
}

impl Range {
    /// Whether `v` satisfies the range.
    pub fn matches(&self, v: &Version) -> bool {
        self.groups.iter().any(|g| {
            g.iter().all(|(op, c)| {
                let o = v.cmp(c);
                match op {
                    Op::Eq => o == Ordering::Equal,
                    Op::Ne => o != Ordering::Equal,
                    Op::Gt => o == Ordering::Greater,
                    Op::Ge => o != Ordering::Less,
                    Op::Lt => o == Ordering::Less,
                    Op::Le => o != Ordering::Greater,
                }
            })
        })
    }
}

/// Removes every `v` immediately followed by an ASCII digit (upstream's `v([0-9])` rewrite).
pub fn strip_v(constraint: &str) -> String {
    let b = constraint.as_bytes();
    let mut out = String::with_capacity(constraint.len());
    for (i, c) in constraint.char_indices() {
        if c == 'v' && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            continue;
        }
        out.push(c);
    }
    out
}

/// blang's `splitAndTrim`: splits on spaces except right after `>`, `<` or `=`, drops empty
/// parts, removes inner spaces. (blang also drops a final one-character part; kept for parity.)
fn split_and_trim(s: &str) -> Vec<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut last = 0usize;
    let mut last_char = 0u8;
    for (i, &c) in b.iter().enumerate() {
        if c == b' ' && !matches!(last_char, b'>' | b'<' | b'=') {
            if i > last + 1 {
                out.push(s[last..i].to_string());
            }
            last = i + 1;
        } else if c != b' ' {
            last_char = c;
        }
    }
    if b.len() > last + 1 {
        out.push(s[last..].to_string());
    }
    out.into_iter()
        .map(|p| p.replace(' ', ""))
        .filter(|p| !p.is_empty())
        .collect()
}

/// Splits the parts at `||` into AND groups.
fn split_or(parts: Vec<String>) -> Result<Vec<Vec<String>>, ConstraintError> {
    let mut groups = Vec::new();
    let mut cur = Vec::new();
    for p in parts {
        if p == "||" {
            if cur.is_empty() {
                return Err(ConstraintError::EmptyOr);
            }
            groups.push(std::mem::take(&mut cur));
        } else {
            cur.push(p);
        }
    }
    if cur.is_empty() {
        return Err(ConstraintError::EmptyOr);
    }
    groups.push(cur);
    Ok(groups)
}

/// `(operator, version)` of one comparator: the operator is everything before the first digit.
fn split_comparator(part: &str) -> Result<(&str, &str), ConstraintError> {
    let i = part
        .find(|c: char| c.is_ascii_digit())
        .ok_or_else(|| ConstraintError::NoVersion(part.to_string()))?;
    Ok((part[..i].trim(), &part[i..]))
}

fn bad_comparator(op: &str, part: &str) -> ConstraintError {
    ConstraintError::Comparator {
        op: op.to_string(),
        part: part.to_string(),
    }
}

fn parse_op(op: &str) -> Option<Op> {
    Some(match op {
        "" | "=" | "==" => Op::Eq,
        "!" | "!=" => Op::Ne,
        ">" => Op::Gt,
        ">=" => Op::Ge,
        "<" => Op::Lt,
        "<=" => Op::Le,
        _ => return None,
    })
}

/// Expands one wildcard comparator (`>1.2.x`, `1.x`, …) into plain comparators, like blang.
fn expand_wildcard(part: &str) -> Result<Vec<String>, ConstraintError> {
    let unparsable = || ConstraintError::Range(part.to_string());
    let (op, v) = split_comparator(part)?;
    let comps: Vec<&str> = v.split('.').collect();
    if comps.len() > 3 || comps.iter().any(|c| c.is_empty()) {
        return Err(unparsable());
    }
    // Position of the first wildcard (0 = major).
    let pos = comps
        .iter()
        .position(|c| *c == "x")
        .ok_or_else(unparsable)?;
    let mut nums = [0u64; 3];
    for (i, c) in comps.iter().enumerate().take(pos) {
        nums[i] = c.parse().map_err(|_| unparsable())?;
    }
    let flat = format!("{}.{}.{}", nums[0], nums[1], nums[2]);
    let incremented = || match pos {
        0 => None,
        1 => Some(format!("{}.0.0", nums[0] + 1)),
        _ => Some(format!("{}.{}.0", nums[0], nums[1] + 1)),
    };
    let mut out = Vec::new();
    let (result_op, increment) = match op {
        ">" => (">=", true),
        ">=" => (">=", false),
        "<" => ("<", false),
        "<=" => ("<", true),
        "" | "=" | "==" => {
            out.push(format!(">={flat}"));
            ("<", true)
        }
        "!=" | "!" => {
            out.push(format!("<{flat}"));
            (">=", true)
        }
        _ => return Err(bad_comparator(op, part)),
    };
    if increment {
        match incremented() {
            Some(v) => out.push(format!("{result_op}{v}")),
            // `x` as the major: any version (blang would produce an unparsable bound).
            None if result_op == "<" => {}
            None => out.push(format!("{result_op}{flat}")),
        }
    } else {
        out.push(format!("{result_op}{flat}"));
    }
    Ok(out)
}

/// Parses a constraint (after [`strip_v`]) the way `semver.ParseRange` does.
pub fn parse_range(s: &str) -> Result<Range, ConstraintError> {
    let groups = split_or(split_and_trim(s))?;
    let mut out = Vec::new();
    for g in groups {
        let mut and = Vec::new();
        for part in g {
            let expanded = if part.contains('x') && !part.contains('-') && !part.contains('+') {
                expand_wildcard(&part)?
            } else {
                vec![part]
            };
            for p in expanded {
                let (op, v) = split_comparator(&p)?;
                let op = parse_op(op).ok_or_else(|| bad_comparator(op, &p))?;
                let version = Version::parse_strict(v)
                    .filter(|_| !v.starts_with('v'))
                    .ok_or_else(|| ConstraintError::Version {
                        part: p.clone(),
                        version: v.to_string(),
                    })?;
                and.push((op, version));
            }
        }
        out.push(and);
    }
    Ok(Range { groups: out })
}

/// Checks an extension's `compatibility.talos.version` against the target: `Ok(())` when empty
/// or satisfied, otherwise the upstream-style message.
pub fn check(constraint: &str, target: &Version) -> Result<(), ConstraintError> {
    if constraint.is_empty() {
        return Ok(());
    }
    let cleaned = strip_v(constraint);
    let range = parse_range(&cleaned).map_err(|e| ConstraintError::Parse {
        constraint: constraint.to_string(),
        source: Box::new(e),
    })?;
    let core = target.core();
    if range.matches(&core) {
        Ok(())
    } else {
        Err(ConstraintError::Unsatisfied {
            constraint: cleaned,
            target: core,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse_strict(s).unwrap()
    }

    fn ok(c: &str, t: &str) -> bool {
        check(c, &v(t)).is_ok()
    }

    #[test]
    fn strips_v_before_digits_only() {
        assert_eq!(strip_v(">= v1.1.0"), ">= 1.1.0");
        assert_eq!(strip_v(">=v1.8.0 <v2.0.0"), ">=1.8.0 <2.0.0");
        assert_eq!(strip_v("vx"), "vx");
    }

    #[test]
    fn split_like_blang() {
        assert_eq!(split_and_trim(">= 1.0.0"), [">=1.0.0"]);
        assert_eq!(
            split_and_trim(">= 1.0.0  < 2.0.0 || =3.0.0"),
            [">=1.0.0", "<2.0.0", "||", "=3.0.0"]
        );
    }

    #[test]
    fn comparators() {
        assert!(ok(">= v1.1.0", "1.11.0"));
        assert!(ok(">= 1.0.0", "1.8.0"));
        assert!(!ok(">= v1.12.0", "1.11.3"));
        assert!(ok(">1.10.0", "1.10.1"));
        assert!(!ok(">1.10.0", "1.10.0"));
        assert!(ok("<=1.10.0", "1.10.0"));
        assert!(!ok("<1.10.0", "1.10.0"));
        assert!(ok("=1.10.0", "1.10.0"));
        assert!(ok("1.10.0", "1.10.0"));
        assert!(ok("==1.10.0", "1.10.0"));
        assert!(!ok("!=1.10.0", "1.10.0"));
        assert!(ok("!1.10.0", "1.9.0"));
    }

    #[test]
    fn and_or() {
        assert!(ok(">= v1.8.0 < v1.9.0", "1.8.4"));
        assert!(!ok(">= v1.8.0 < v1.9.0", "1.9.0"));
        assert!(ok("<1.5.0 || >=1.10.0", "1.11.0"));
        assert!(ok("<1.5.0 || >=1.10.0", "1.4.2"));
        assert!(!ok("<1.5.0 || >=1.10.0", "1.7.0"));
        assert!(ok(">=1.0.0 <1.5.0 || >=1.8.0 <2.0.0", "1.8.0"));
    }

    #[test]
    fn prereleases_and_core_target() {
        // The target is compared by its core version: 1.10.0-alpha.1 counts as 1.10.0.
        assert!(ok(">= 1.10.0", "1.10.0-alpha.1"));
        assert!(ok(">= 1.10.0-alpha.0", "1.10.0"));
        assert!(!ok("< 1.10.0-alpha.0", "1.10.0"));
    }

    #[test]
    fn wildcards() {
        assert!(ok("1.10.x", "1.10.7"));
        assert!(!ok("1.10.x", "1.11.0"));
        assert!(ok(">1.9.x", "1.10.0"));
        assert!(!ok(">1.9.x", "1.9.9"));
        assert!(ok("<=1.9.x", "1.9.9"));
        assert!(ok(">=1.x", "1.0.0"));
        assert!(!ok("<1.x", "1.2.0"));
    }

    #[test]
    fn errors_name_the_constraint() {
        let e = check(">= banana", &v("1.10.0")).unwrap_err().to_string();
        assert!(e.contains(">= banana"), "{e}");
        assert_eq!(
            e,
            r#"error parsing Talos version constraint ">= banana": Could not get version from string: ">=banana""#
        );
        assert!(check("|| >=1.0.0", &v("1.10.0")).is_err());
        assert!(check(">=1.0", &v("1.10.0")).is_err());
        assert!(check("~>1.0.0", &v("1.10.0")).is_err());
        let e = check(">= v1.12.0", &v("1.11.0")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "version constraint >= 1.12.0 can't be satisfied with Talos version 1.11.0"
        );
    }
}
