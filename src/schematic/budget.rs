//! The alias expansion budget: go-yaml's "excessive aliasing" rule, plus caps on the nodes and
//! bytes that expanding aliases may add (go-yaml shares a string among its aliases; a decoded
//! schematic owns its strings, so expansion copies them).

use std::cell::Cell;
use std::rc::Rc;

use super::SchematicError;
use super::tree::{Expansion, YNode, err};

/// The refusal, in go-yaml's words.
pub(super) const EXCESSIVE_ALIASING: &str = "yaml: document contains excessive aliasing";

/// Most nodes that expanding aliases may add to a document: the size at which go-yaml starts
/// tightening its own ratio (~100 MB of allocations at worst by its authors' estimate).
const MAX_ALIAS_NODES: u64 = 400_000;
/// Most bytes of scalar text and tags that expanding aliases may add: four times the request
/// body limit, so a schematic stays a few MiB however it was written.
const MAX_ALIAS_BYTES: u64 = 4 << 20;

/// Counts decoded nodes like go-yaml's decoder and refuses documents that alias too much.
#[derive(Default)]
pub(super) struct AliasBudget {
    /// Nodes decoded (go-yaml's `decodeCount`).
    decoded: u64,
    /// Nodes decoded inside an alias expansion (go-yaml's `aliasCount`).
    aliased: u64,
    /// What the aliases decoded so far expand to, outermost aliases only.
    expanded: Expansion,
    /// Alias expansions being decoded, nested in each other (go-yaml's `aliasDepth`).
    depth: Rc<Cell<usize>>,
}

/// Marks the decoding of an alias's content; dropping it ends the expansion.
pub(super) struct Scope(Option<Rc<Cell<usize>>>);

impl Drop for Scope {
    fn drop(&mut self) {
        if let Some(depth) = &self.0 {
            depth.set(depth.get() - 1);
        }
    }
}

impl AliasBudget {
    /// Accounts for decoding `n`; keep the returned scope while `n`'s content is decoded.
    pub(super) fn enter(&mut self, n: &YNode) -> Result<Scope, SchematicError> {
        self.count()?;
        if !n.alias {
            return Ok(Scope(None));
        }
        if self.depth.get() == 0 {
            // The whole expansion is charged up front, before anything is copied.
            let e = &mut self.expanded;
            e.nodes = e.nodes.saturating_add(n.expansion.nodes);
            e.bytes = e.bytes.saturating_add(n.expansion.bytes);
            if e.nodes > MAX_ALIAS_NODES || e.bytes > MAX_ALIAS_BYTES {
                return Err(err(EXCESSIVE_ALIASING));
            }
        }
        self.depth.set(self.depth.get() + 1);
        let scope = Scope(Some(self.depth.clone()));
        // go-yaml decodes the alias node, then the anchored node inside the expansion.
        self.count()?;
        Ok(scope)
    }

    /// go-yaml's check, made at every decoded node.
    fn count(&mut self) -> Result<(), SchematicError> {
        self.decoded += 1;
        if self.depth.get() > 0 {
            self.aliased += 1;
        }
        if self.aliased > 100
            && self.decoded > 1000
            && self.aliased as f64 / self.decoded as f64 > allowed_alias_ratio(self.decoded)
        {
            return Err(err(EXCESSIVE_ALIASING));
        }
        Ok(())
    }
}

/// go-yaml's `allowedAliasRatio`: the share of decoded nodes that may come from aliases, 99%
/// up to 400,000 nodes, falling linearly to 10% at 4,000,000.
fn allowed_alias_ratio(decoded: u64) -> f64 {
    const LOW: u64 = 400_000;
    const HIGH: u64 = 4_000_000;
    if decoded <= LOW {
        0.99
    } else if decoded >= HIGH {
        0.10
    } else {
        0.99 - 0.89 * ((decoded - LOW) as f64 / (HIGH - LOW) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_follows_go_yaml() {
        assert_eq!(allowed_alias_ratio(1_000), 0.99);
        assert_eq!(allowed_alias_ratio(400_000), 0.99);
        assert!((allowed_alias_ratio(2_200_000) - 0.545).abs() < 1e-9);
        assert_eq!(allowed_alias_ratio(4_000_000), 0.10);
        assert_eq!(allowed_alias_ratio(u64::MAX), 0.10);
    }
}
