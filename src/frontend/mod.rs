//! Frontends: HTTP (API, downloads, iPXE scripts) and metrics now; the OCI registry and TFTP
//! follow. [`serve`] assembles them over one [`crate::node::Node`].

pub mod http;
pub mod listen;
pub mod registry;
mod serve;

pub use serve::{AdminAddr, BoundAddrs, Running, ServeError, serve};
