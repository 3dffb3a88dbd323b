//! `image-factory` binary entry point.

use std::process::ExitCode;

/// The process allocator: mimalloc, which cut the server's CPU per schematic POST by about a
/// sixth against glibc malloc (docs/benchmarks-history.md, 2026-12-06).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Both ring and aws-lc-rs end up enabled in the dependency tree; pick one explicitly
    // before anything builds a rustls config (spec/dependencies.md §1.3).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    image_factory::cli::run()
}
