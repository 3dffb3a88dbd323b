//! The native imager: asset paths and profiles, quirks, kernel command lines, META, initramfs
//! with system extensions, UKIs, installer images, raw disk images (`disk`) and ISOs (`iso`).
//!
//! Everything here is deterministic: the same inputs give the same bytes
//! (`SOURCE_DATE_EPOCH` = [`SOURCE_DATE_EPOCH`], sorted inputs, fixed archive metadata).

/// The fixed build timestamp upstream forces (`SOURCE_DATE_EPOCH`), used for every mtime.
pub const SOURCE_DATE_EPOCH: u64 = 1_559_424_892;
pub mod installer;
pub mod pe;
pub mod uki;

pub mod boot;
pub mod builder;
pub mod cancel;
pub mod cmdline;
pub mod disk;
pub mod error;
pub mod formats;
pub mod initramfs;
pub mod iso;
pub mod meta;
pub mod overlay;
pub mod path;
pub mod profile;
pub mod quirks;
pub mod signed_uki;
pub mod tool;
