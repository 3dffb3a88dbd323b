//! The xorriso pacer: a preload library (`xorriso_pacer.c`, built by `build.rs` and embedded
//! here) that shortens xorriso's two status-poll sleeps from 100 ms to 1 ms.
//!
//! xorriso checks whether its writer thread has finished once per wall-clock second (at .2 s
//! past it) unless the write was done within its first 100 ms sleep, so an ISO write of
//! 0.11 s could take 1.2 s to return. With the pacer xorriso exits within ~12 ms of its writer
//! (`docs/imager-iso.md`, "xorriso's status polls"). The output bytes do not change.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The compiled library; empty when `build.rs` had no C compiler.
const LIBRARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/xorriso_pacer.so"));

/// File name of the library in a build's scratch directory.
const FILE_NAME: &str = "xorriso-pacer.so";

/// Whether this binary carries the pacer.
pub fn available() -> bool {
    !LIBRARY.is_empty()
}

/// Writes the library into `dir` (a directory this process owns: never a shared `/tmp`, as
/// the file is loaded into xorriso) and returns its path; `None` without the library, when
/// it cannot be written, or when the path cannot be named in `LD_PRELOAD` (which splits at
/// spaces and colons), in which case xorriso runs unpaced.
pub fn install(dir: &Path) -> Option<PathBuf> {
    if !available() {
        return None;
    }
    let path = dir.join(FILE_NAME);
    if !preloadable(&path) {
        tracing::warn!(
            path = %path.display(),
            "the xorriso pacer cannot be preloaded from a path with spaces or colons; \
             xorriso runs unpaced"
        );
        return None;
    }
    // Written aside and renamed: a library some process has mapped is never rewritten in place.
    let aside = dir.join(format!("{FILE_NAME}.{}.tmp", std::process::id()));
    match std::fs::write(&aside, LIBRARY).and_then(|()| std::fs::rename(&aside, &path)) {
        Ok(()) => Some(path),
        Err(e) => {
            tracing::warn!(
                path = %path.display(),
                error = %e,
                "cannot write the xorriso pacer; xorriso runs unpaced"
            );
            None
        }
    }
}

/// Whether `path` survives `LD_PRELOAD`'s list syntax (entries separated by spaces or colons).
fn preloadable(path: &Path) -> bool {
    path.to_str()
        .is_some_and(|p| !p.contains([':', ' ', '\t', '\n']))
}

/// `LD_PRELOAD` for a child that loads `library` before whatever the environment preloads.
pub fn preload_value(library: &Path, inherited: Option<OsString>) -> OsString {
    let mut v = OsString::from(library);
    if let Some(prev) = inherited.filter(|p| !p.is_empty()) {
        v.push(":");
        v.push(prev);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `if_pacer_sleep_us` of the library at `path`, loaded with `dlopen`.
    fn paced(path: &Path, us: u32) -> u32 {
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: dlopen/dlsym of the library this crate built; the symbol's C signature is
        // `unsigned int (unsigned int)`, which the transmuted type matches.
        unsafe {
            let h = libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
            assert!(!h.is_null(), "dlopen of the pacer failed");
            let sym = libc::dlsym(h, c"if_pacer_sleep_us".as_ptr());
            assert!(!sym.is_null(), "the pacer exports if_pacer_sleep_us");
            let f: extern "C" fn(u32) -> u32 = std::mem::transmute(sym);
            f(us)
        }
    }

    #[test]
    fn shortens_only_xorriso_s_status_polls() {
        assert!(
            available(),
            "build.rs built the pacer (a C compiler is present)"
        );
        let dir = tempfile::tempdir().unwrap();
        let lib = install(dir.path()).unwrap();
        assert_eq!(paced(&lib, 100_000), 1000);
        assert_eq!(paced(&lib, 100_002), 1000);
        for us in [0, 1, 999, 1000, 10_000, 99_999, 100_001, 200_000, 1_000_000] {
            assert_eq!(paced(&lib, us), us, "{us} µs unchanged");
        }
    }

    #[test]
    fn paths_ld_preload_would_split_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["with space", "with:colon"] {
            let sub = dir.path().join(name);
            std::fs::create_dir(&sub).unwrap();
            assert_eq!(install(&sub), None, "{name}");
            assert!(!sub.join(FILE_NAME).exists(), "{name}");
        }
        assert!(install(dir.path()).is_some());
    }

    #[test]
    fn preload_keeps_the_inherited_libraries_after_ours() {
        let lib = Path::new("/d/xorriso-pacer.so");
        assert_eq!(preload_value(lib, None), "/d/xorriso-pacer.so");
        assert_eq!(preload_value(lib, Some("".into())), "/d/xorriso-pacer.so");
        assert_eq!(
            preload_value(lib, Some("/x/a.so".into())),
            "/d/xorriso-pacer.so:/x/a.so"
        );
    }
}
