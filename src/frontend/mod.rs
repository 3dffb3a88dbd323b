//! Frontends: HTTP now; the OCI registry and TFTP follow in later issues.

pub mod http;
