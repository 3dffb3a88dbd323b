//! Image Factory appliance: schematics, releases, native image builds and their frontends.

pub mod assets;
pub mod catalog;
pub mod causes;
pub mod cli;
pub mod clock;
pub mod config;
pub mod counting;
pub mod frontend;
pub mod gocompat;
pub mod imager;
pub mod io_context;
pub mod netboot;
pub mod node;
pub mod oci;
pub mod replication;
pub mod schematic;
pub mod sha256;
pub mod store;
pub mod synth;
pub mod trust;
pub mod zeros;
