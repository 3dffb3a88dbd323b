//! go-yaml's `Marshal` for block documents, byte for byte: the encoder's choice of scalar style,
//! the emitter's downgrades of it and its layout (indent 4, indented sequences, no line folding),
//! plus the plain-scalar resolver both the style choice and the schematic decoder depend on.
//!
//! Two go-yaml generations are reproduced: Talos writes extension manifests and
//! `extensions.yaml` with go-yaml v3; the Image Factory (v1.5.0) emits canonical schematics with
//! go-yaml v4. They share the emitter and differ only in the style the encoder requests for a
//! few strings ([`Flavour`]).

mod emit;
mod resolve;

pub use emit::{Node, document};
pub use resolve::Timestamp;
pub(crate) use resolve::{Resolved, old_bool_value, resolve_plain};

/// The go-yaml generation whose encoder rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// `gopkg.in/yaml.v3` (3.0.1): YAML 1.1 booleans and base-60 floats are double-quoted, `<<`
    /// is plain; any string with a newline asks for a literal block, whose header line a leading
    /// line break ends.
    V3,
    /// go-yaml v4: those words are single-quoted; only text of two or more characters with
    /// something besides whitespace asks for a literal block.
    V4,
}
