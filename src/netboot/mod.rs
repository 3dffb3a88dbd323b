//! Network boot: the iPXE scripts that hand a machine from its firmware (or the TFTP stage) to
//! the boot assets served over HTTP. Shared by every frontend that answers a netboot client.

use crate::assets::PxeBoot;

/// The iPXE script booting `boot` from `base_url` (the appliance's external PXE URL), or
/// `None` if the boot names neither kernel + initramfs nor a single UKI.
pub fn ipxe_script(boot: &PxeBoot, base_url: &str) -> Option<String> {
    let base = base_url.trim_end_matches('/');
    let url = |file: &str| {
        format!(
            "{base}/image/{}/{}/{file}",
            boot.schematic_id, boot.version_tag
        )
    };
    let cmdline = &boot.cmdline;
    let mut script = String::from("#!ipxe\n\nimgfree\n");
    match boot.files.as_slice() {
        [kernel, initramfs] => {
            script.push_str(&format!("kernel {} {cmdline}\n", url(kernel)));
            script.push_str(&format!("initrd {}\n", url(initramfs)));
        }
        [uki] => script.push_str(&format!("kernel {} {cmdline}\n", url(uki))),
        _ => return None,
    }
    script.push_str("boot\n");
    Some(script)
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
}
