//! Schematics: the customisation model, strict parsing, the canonical emitter and content IDs.
//!
//! (Interface stub: the parser and emitter land in this folder; the signatures below are stable.)

use sha2::{Digest, Sha256};

/// Error raised when a schematic document is rejected; the message is the upstream-compatible text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SchematicError(pub String);

/// A parsed schematic (see the module docs for the model).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Schematic {}

impl Schematic {
    /// Parses a schematic document strictly (first YAML document only, unknown keys rejected).
    pub fn parse(input: &[u8]) -> Result<Schematic, SchematicError> {
        if input.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(SchematicError("EOF".into()));
        }
        Ok(Schematic {})
    }

    /// The canonical YAML bytes whose SHA-256 is the schematic ID.
    pub fn canonical(&self) -> String {
        "customization: {}\n".to_string()
    }

    /// The schematic ID: lowercase hex SHA-256 of the canonical YAML.
    pub fn id(&self) -> String {
        id_of(&self.canonical())
    }
}

/// Lowercase hex SHA-256 of canonical schematic bytes.
pub fn id_of(canonical: &str) -> String {
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// Whether `s` is syntactically a schematic ID (64 lowercase hex characters).
pub fn is_valid_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
