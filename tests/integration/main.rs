//! Integration tests, linked into one binary: one module per capability, each against
//! the real binary, server or external tools. `common` and `oci_support` hold shared helpers.

mod common;
mod oci_support;

mod assets_crash;
mod assets_gc;
mod assets_http;
mod assets_integrity;
mod build_admission;
mod build_boot;
mod cli;
mod disk_boot;
mod disk_full;
mod disk_images_http;
mod durability;
mod durability_trace;
mod hostile_schematics;
mod http_api;
mod http_catalog;
mod imager_disk_gpt;
mod imager_formats;
mod imager_formats_bench;
mod imager_initramfs;
mod imager_installer;
mod imager_uki;
mod imager_uki_boot;
mod import;
mod import_hostile;
mod import_registry;
mod iso_boot;
mod listen_limits;
mod listen_tls;
mod oci_registry;
mod oci_sources;
mod pxe_boot;
mod registry_clients;
mod registry_oracle;
mod registry_spec;
mod release_damage;
mod schematic_bounds;
mod schematic_golden;
mod squashfs_writer;
mod testkit_bundle;
mod testkit_qemu;
mod testkit_release;
mod trust_cosign;
