//! GRUB for disk images (imager spec §5.5): `grub/grub.cfg` on BOOT, the core images made by
//! `grub-mkimage` (Debian `grub-common`) from the release's own module tree, and the BIOS boot
//! code patched and embedded the way `grub-install` does on GPT disks (§5.5.3).

use std::fs::File;
use std::path::Path;
use std::process::Command;

use super::gpt::write_at;
use super::layout::DiskLayout;
use crate::imager::error::ImagerError;
use crate::imager::tool::ToolRun;

/// The image tool.
pub const GRUB_MKIMAGE: &str = "grub-mkimage";
/// GRUB's prefix: BOOT is partition 3 of BIOS disk 0.
pub const PREFIX: &str = "(hd0,gpt3)/grub";
/// Modules of every core image (§5.5.2).
pub const MODULES: &[&str] = &[
    "part_gpt",
    "ext2",
    "fat",
    "xfs",
    "normal",
    "configfile",
    "linux",
    "boot",
    "search",
    "search_fs_uuid",
    "search_fs_file",
    "ls",
    "cat",
    "echo",
    "test",
    "help",
    "reboot",
    "halt",
    "all_video",
];
/// Extra modules of the i386-pc core image.
pub const BIOS_MODULES: &[&str] = &["biosdisk", "part_msdos"];
/// Offset of boot.img's kernel-sector field (u64 LE).
const BOOT_KERNEL_SECTOR: usize = 0x5C;
/// Offset of boot.img's drive-check jump, replaced by two NOPs.
const BOOT_DRIVE_CHECK: usize = 0x66;
/// Offset of the first blocklist entry's start sector in core.img (diskboot.img).
const CORE_BLOCKLIST_START: usize = 0x1F4;
/// Bytes of boot.img written to sector 0 (the partition table area stays untouched).
const MBR_CODE_LEN: usize = 446;

/// Quotes a command line for a GRUB `linux` line: `\ { } & $ | ; < > "` get a backslash.
pub fn quote(cmdline: &str) -> String {
    let mut out = String::with_capacity(cmdline.len());
    for c in cmdline.chars() {
        if matches!(
            c,
            '\\' | '{' | '}' | '&' | '$' | '|' | ';' | '<' | '>' | '"'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `grub/grub.cfg` of a fresh disk image (§5.5.1): entry `A`, plus the reset entry when the
/// target supports it.
pub fn grub_cfg(version: &str, cmdline: &str, reset_entry: bool) -> String {
    let name = format!("A - Talos {version}");
    let q = quote(cmdline);
    let mut s = format!(
        "set default=\"{name}\"\n\nset timeout=3\n\ninsmod all_video\n\n\
         terminal_input console\nterminal_output console\n\n\
         menuentry \"{name}\" {{\n  set gfxmode=auto\n  set gfxpayload=text\n  \
         linux /A/vmlinuz {q}\n  initrd /A/initramfs.xz\n}}\n"
    );
    if reset_entry {
        s.push_str(&format!(
            "menuentry \"Reset Talos installation and return to maintenance mode\" {{\n  \
             set gfxmode=auto\n  set gfxpayload=text\n  \
             linux /A/vmlinuz {q} talos.experimental.wipe=system:EPHEMERAL,STATE\n  \
             initrd /A/initramfs.xz\n}}\n"
        ));
    }
    s
}

/// Runs `grub-mkimage -d <modules> --format <format> --output <out> --prefix PREFIX …`.
pub fn mkimage(
    modules_dir: &Path,
    format: &str,
    out: &Path,
    extra: &[&str],
    xz: bool,
    run: &ToolRun,
) -> Result<(), ImagerError> {
    let modules: Vec<&str> = MODULES.iter().chain(extra).copied().collect();
    mkimage_with(&MkImage {
        modules_dir,
        format,
        prefix: PREFIX,
        modules: &modules,
        config: None,
        xz,
        out,
        run,
    })
}

/// One `grub-mkimage` run.
#[derive(Debug, Clone, Copy)]
pub struct MkImage<'a> {
    /// The platform's module directory (`…/i386-pc`).
    pub modules_dir: &'a Path,
    /// `--format` (`i386-pc`, `i386-pc-eltorito`, `x86_64-efi`, …).
    pub format: &'a str,
    /// `--prefix`.
    pub prefix: &'a str,
    /// Modules built into the image.
    pub modules: &'a [&'a str],
    /// `--config`: an early configuration file built into the image.
    pub config: Option<&'a Path>,
    /// `--compression xz`.
    pub xz: bool,
    /// `--output`.
    pub out: &'a Path,
    /// How the tool runs.
    pub run: &'a ToolRun,
}

/// Runs `grub-mkimage` as described by `m`.
pub fn mkimage_with(m: &MkImage<'_>) -> Result<(), ImagerError> {
    let mut cmd = Command::new(m.run.find(GRUB_MKIMAGE));
    cmd.arg("-d")
        .arg(m.modules_dir)
        .args(["--format", m.format, "--prefix", m.prefix])
        .arg("--output")
        .arg(m.out);
    if let Some(config) = m.config {
        cmd.arg("--config").arg(config);
    }
    if m.xz {
        cmd.args(["--compression", "xz"]);
    }
    cmd.args(m.modules);
    m.run
        .run(&format!("{GRUB_MKIMAGE} --format {}", m.format), cmd)?;
    Ok(())
}

/// Patches `boot.img` for a core image at LBA `bios_lba` (§5.5.3 step 1).
pub fn patch_boot_img(boot: &mut [u8], bios_lba: u64) -> Result<(), ImagerError> {
    if boot.len() != 512 || boot[510..] != [0x55, 0xAA] {
        return Err(ImagerError::Inconsistent(
            "GRUB boot.img is not a 512-byte boot sector".into(),
        ));
    }
    boot[BOOT_KERNEL_SECTOR..BOOT_KERNEL_SECTOR + 8].copy_from_slice(&bios_lba.to_le_bytes());
    boot[BOOT_DRIVE_CHECK..BOOT_DRIVE_CHECK + 2].copy_from_slice(&[0x90, 0x90]);
    Ok(())
}

/// Patches `core.img`'s first blocklist entry to start at `bios_lba + 1` (§5.5.3 step 2).
pub fn patch_core_img(core: &mut [u8], bios_lba: u64) -> Result<(), ImagerError> {
    if core.len() < 512 {
        return Err(ImagerError::Inconsistent(
            "GRUB core.img is too short".into(),
        ));
    }
    core[CORE_BLOCKLIST_START..CORE_BLOCKLIST_START + 8]
        .copy_from_slice(&(bios_lba + 1).to_le_bytes());
    Ok(())
}

/// Embeds GRUB's BIOS boot code: the patched `core.img` at the start of the BIOS partition
/// and the first 446 bytes of the patched `boot.img` at sector 0 (§5.5.3 steps 3–4).
pub fn embed_bios_boot(
    disk: &mut File,
    layout: &DiskLayout,
    boot_img: &[u8],
    core_img: &[u8],
) -> Result<(), ImagerError> {
    let bios = layout
        .partition("BIOS")
        .ok_or_else(|| ImagerError::Inconsistent("the layout has no BIOS partition".into()))?;
    if core_img.len() as u64 > bios.size {
        return Err(ImagerError::Inconsistent(format!(
            "GRUB core.img is {} bytes, the BIOS partition {}",
            core_img.len(),
            bios.size
        )));
    }
    let mut boot = boot_img.to_vec();
    patch_boot_img(&mut boot, bios.first_lba)?;
    let mut core = core_img.to_vec();
    patch_core_img(&mut core, bios.first_lba)?;
    write_at(disk, bios.offset, &core)?;
    write_at(disk, 0, &boot[..MBR_CODE_LEN])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(
            quote(r#"a=b c={x}&$|;<>"\"#),
            r#"a=b c=\{x\}\&\$\|\;\<\>\"\\"#
        );
    }

    #[test]
    fn cfg_format() {
        let cfg = grub_cfg("v1.11.0", "talos.platform=metal a=$x", true);
        assert!(cfg.starts_with("set default=\"A - Talos v1.11.0\"\n\nset timeout=3\n\n"));
        assert!(cfg.contains("  linux /A/vmlinuz talos.platform=metal a=\\$x\n"));
        assert!(cfg.contains(
            "linux /A/vmlinuz talos.platform=metal a=\\$x talos.experimental.wipe=system:EPHEMERAL,STATE\n"
        ));
        assert_eq!(cfg.matches("menuentry").count(), 2);
        assert_eq!(
            grub_cfg("v1.11.0", "x", false).matches("menuentry").count(),
            1
        );
    }

    #[test]
    fn boot_code_patches() {
        let mut boot = vec![0u8; 512];
        boot[510] = 0x55;
        boot[511] = 0xAA;
        boot[0x66] = 0xEB;
        patch_boot_img(&mut boot, 4_304_896).unwrap();
        assert_eq!(&boot[0x5C..0x64], &4_304_896u64.to_le_bytes());
        assert_eq!(&boot[0x66..0x68], &[0x90, 0x90]);
        let mut core = vec![0u8; 1024];
        patch_core_img(&mut core, 4_304_896).unwrap();
        assert_eq!(&core[0x1F4..0x1FC], &4_304_897u64.to_le_bytes());
        assert!(patch_boot_img(&mut [0u8; 512], 1).is_err());
    }
}
