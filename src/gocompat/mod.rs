//! Go-compatible text: `strconv.Quote` for error messages that mirror upstream's, and go-yaml's
//! emitter for documents whose bytes must match what upstream writes.
//!
//! Upstream (the Image Factory and Talos) is written in Go; where this appliance must produce the
//! same bytes (schematic IDs, `extensions.yaml`) or the same error texts, the Go behaviour lives
//! here, once.

mod quote;
pub mod yaml;

pub use quote::quote;
