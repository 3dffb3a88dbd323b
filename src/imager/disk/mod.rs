//! Disk images (imager spec §5): the pure-Rust foundation — a GPT writer that reproduces
//! upstream byte for byte ([`gpt`]), the deterministic disk and partition GUIDs ([`guid`]), the
//! partition layouts per bootloader ([`layout`]) and the META partition content ([`meta`]).
//!
//! A disk image is built as: [`layout::create_sparse_disk`] → [`layout::write_layout`] (plans
//! the partitions and writes only the GPT regions) → the caller writes each filesystem image at
//! [`layout::PlacedPartition::offset`] → [`meta::write_profile_meta`]. See `docs/imager-disk.md`.

pub mod gpt;
pub mod guid;
pub mod layout;
pub mod meta;

pub use gpt::{Geometry, Gpt, Partition};
pub use layout::{
    Content, DiskLayout, LayoutRequest, PartitionSpec, PlacedPartition, create_sparse_disk,
    image_cache_partition_size, write_layout,
};
pub use meta::{meta_region, write_meta, write_profile_meta};
