//! Frontends: HTTP (API, downloads, iPXE scripts, the OCI registry), metrics, TFTP and
//! ProxyDHCP.
//! [`serve`] assembles them over one [`crate::node::Node`].

mod counters;
pub mod dhcp;
pub mod http;
pub mod listen;
pub mod registry;
mod serve;
pub mod tftp;

pub use counters::Counters;
pub use serve::{AdminAddr, BoundAddrs, Running, ServeError, serve};
