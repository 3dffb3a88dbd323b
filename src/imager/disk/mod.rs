//! Disk images (imager spec §5): the pure-Rust foundation — a GPT writer that reproduces
//! upstream byte for byte ([`gpt`]), the deterministic disk and partition GUIDs ([`guid`]), the
//! partition layouts per bootloader ([`layout`]) and the META partition content ([`meta`]).
//!
//! A disk image is built as: [`layout::create_sparse_disk`] → [`layout::write_layout`] (plans
//! the partitions and writes only the GPT regions) → the caller writes each filesystem image at
//! [`layout::PlacedPartition::offset`] → [`meta::write_profile_meta`]. See `docs/imager-disk.md`.
//!
//! [`image::write_disk_image`] does all of it for a profile: the FAT32 ESP natively ([`fat`]),
//! BOOT with `mkfs.xfs` ([`xfs`]), GRUB core images with `grub-mkimage` ([`grub`]); the
//! external tools are listed in [`tools`].

pub mod fat;
mod fat_fixup;
pub mod gpt;
pub mod grub;
pub mod guid;
pub mod image;
pub mod layout;
pub mod meta;
pub mod sparse;
pub mod tools;
pub mod xfs;

pub use gpt::{Geometry, Gpt, Partition};
pub use image::{OverlayInstall, write_disk_image};
pub use layout::{
    Content, DiskLayout, LayoutRequest, PartitionSpec, PlacedPartition, create_sparse_disk,
    image_cache_partition_size, write_layout,
};
pub use meta::{meta_region, write_meta, write_profile_meta};
