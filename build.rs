//! Builds the xorriso pacer (`src/imager/iso/xorriso_pacer.c`), a small preload library the
//! binary embeds (see `src/imager/iso/pacer.rs`). Without a C compiler the library is left
//! empty and ISO builds run xorriso as it is, only slower.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "src/imager/iso/xorriso_pacer.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=CC");
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("xorriso_pacer.so");
    // The target's C compiler (CC, CC_<target>, a cross compiler...), as `cc` finds it.
    let built = match cc::Build::new().cargo_metadata(false).try_get_compiler() {
        Ok(compiler) => {
            let mut cmd: Command = compiler.to_command();
            cmd.args(["-O2", "-shared", "-fPIC", "-Wall", "-Werror", "-o"])
                .arg(&out)
                .arg(src);
            cmd.status().map(|s| s.success()).unwrap_or(false)
        }
        Err(_) => false,
    };
    if !built {
        println!(
            "cargo:warning=cannot build the xorriso pacer (no working C compiler): ISO builds \
             will wait on xorriso's once-a-second status checks"
        );
        if let Err(e) = std::fs::write(&out, b"") {
            panic!("cannot write {}: {e}", out.display());
        }
    }
}
