//! `image-factory` binary entry point.

use std::process::ExitCode;

/// The process allocator: mimalloc, which cut the server's CPU per schematic POST by about a
/// sixth against glibc malloc (docs/benchmarks-history.md, 2026-12-06).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its index in `mi_option_e`, mimalloc.h, v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long, in ms, mimalloc keeps freed memory before returning it to the system: mimalloc
/// v2's default. v3's 1000 ms kept a replication receiver 15-20 MiB above what it used
/// (docs/benchmarks.md, "Replication"). `MIMALLOC_PURGE_DELAY` still overrides it.
const PURGE_DELAY_MS: std::ffi::c_long = 10;

/// Shortens mimalloc's purge delay unless the environment set one.
fn tune_allocator() {
    // SAFETY: mimalloc reads its options from the environment at process load; this only
    // replaces a value the environment did not set. It runs first in `main`, before any
    // other thread exists (the call is documented as not thread-safe).
    unsafe { libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
}

fn main() -> ExitCode {
    tune_allocator();
    // Both ring and aws-lc-rs end up enabled in the dependency tree; pick one explicitly
    // before anything builds a rustls config (spec/dependencies.md §1.3).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    image_factory::cli::run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_tuned() {
        // SAFETY: reads an option; the test harness allocates from several threads, but
        // mimalloc's option reads are plain loads of an initialised table.
        let before = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // Only the purge delay defaults to 1000 in mimalloc v3, so this pins the index.
            assert_eq!(before, 1000, "mimalloc option 15 is not the purge delay");
            tune_allocator();
            let after = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
            assert_eq!(after, PURGE_DELAY_MS);
        }
    }
}
