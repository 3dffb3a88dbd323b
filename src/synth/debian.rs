//! The Debian inputs of the test kit, unpacked by `tests/kit/fetch-debian.sh` into
//! `<kit>/root/`: the kernel and its modules, the systemd-boot stub and boot loader, static
//! busybox and the GRUB module trees.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::KitError;

/// Environment variable naming the kit directory.
pub const KIT_DIR_ENV: &str = "IF_TESTKIT_DIR";
/// Default kit directory.
pub const DEFAULT_KIT_DIR: &str = "/var/cache/image-factory/testkit";

/// The kit directory: `$IF_TESTKIT_DIR`, else [`DEFAULT_KIT_DIR`] when it exists or this is
/// root, else the user's cache (`$XDG_CACHE_HOME` or `~/.cache`, `image-factory/testkit`), so
/// that `serve --demo` works for a user who cannot write `/var/cache`.
pub fn default_kit_dir() -> PathBuf {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    choose_kit_dir(
        var(KIT_DIR_ENV),
        Path::new(DEFAULT_KIT_DIR).exists() || rustix::process::geteuid().is_root(),
        var("XDG_CACHE_HOME"),
        var("HOME"),
    )
}

/// [`default_kit_dir`]'s choice, given the environment it reads.
fn choose_kit_dir(
    explicit: Option<std::ffi::OsString>,
    system_usable: bool,
    xdg_cache: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> PathBuf {
    if let Some(dir) = explicit {
        return dir.into();
    }
    let user_cache = xdg_cache
        .map(PathBuf::from)
        .or_else(|| home.map(|h| PathBuf::from(h).join(".cache")));
    match user_cache {
        Some(cache) if !system_usable => cache.join("image-factory").join("testkit"),
        _ => PathBuf::from(DEFAULT_KIT_DIR),
    }
}

/// Located Debian inputs.
#[derive(Debug, Clone)]
pub struct KitInputs {
    /// The unpacked package tree (`<kit>/root`).
    pub root: PathBuf,
    /// Kernel release, e.g. `6.1.0-56-amd64`.
    pub kernel_release: String,
    /// `boot/vmlinuz-<kver>` (Debian `linux-image-<kver>`).
    pub vmlinuz: PathBuf,
    /// `lib/modules/<kver>/`.
    pub modules_dir: PathBuf,
    /// `usr/lib/systemd/boot/efi/linuxx64.efi.stub` (Debian `systemd-boot-efi`).
    pub systemd_stub: PathBuf,
    /// `usr/lib/systemd/boot/efi/systemd-bootx64.efi` (Debian `systemd-boot-efi`).
    pub systemd_boot: PathBuf,
    /// `bin/busybox` (Debian `busybox-static`).
    pub busybox: PathBuf,
    /// `usr/lib/grub/i386-pc` (Debian `grub-pc-bin`).
    pub grub_pc: PathBuf,
    /// `usr/lib/grub/x86_64-efi` (Debian `grub-efi-amd64-bin`).
    pub grub_efi: PathBuf,
    modules: BTreeMap<String, PathBuf>,
}

fn missing(path: &Path, package: &str) -> KitError {
    KitError::MissingInput {
        path: path.to_path_buf(),
        package: package.to_string(),
    }
}

fn require(path: PathBuf, package: &str) -> Result<PathBuf, KitError> {
    if path.exists() {
        Ok(path)
    } else {
        Err(missing(&path, package))
    }
}

/// The arm64 Debian inputs, unpacked by `fetch-debian.sh` into `<kit>/arm64/root/` (their own
/// tree: busybox and systemd-boot share file names with the amd64 packages). Only the kernel
/// image is taken from the kernel package, so the arm64 initramfs loads no modules.
#[derive(Debug, Clone)]
pub struct Arm64Inputs {
    /// Kernel release, e.g. `6.1.0-57-arm64`.
    pub kernel_release: String,
    /// `boot/vmlinuz-<kver>`: an (uncompressed) EFI-stub `Image`.
    pub vmlinuz: PathBuf,
    /// `usr/lib/systemd/boot/efi/linuxaa64.efi.stub`.
    pub systemd_stub: PathBuf,
    /// `usr/lib/systemd/boot/efi/systemd-bootaa64.efi`.
    pub systemd_boot: PathBuf,
    /// `bin/busybox` (Debian `busybox-static:arm64`).
    pub busybox: PathBuf,
    /// `usr/lib/grub/arm64-efi` (Debian `grub-efi-arm64-bin:arm64`).
    pub grub_efi: PathBuf,
}

impl Arm64Inputs {
    /// Finds the arm64 inputs under `kit_dir` (`<kit_dir>/arm64/root`).
    pub fn locate(kit_dir: &Path) -> Result<Arm64Inputs, KitError> {
        let root = kit_dir.join("arm64/root");
        let kernel_pkg = "linux-image-arm64:arm64 (linux-image-<version>-arm64)";
        let release_file = root.join(".kernel-release");
        let kernel_release = std::fs::read_to_string(&release_file)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| missing(&release_file, kernel_pkg))?;
        let vmlinuz = require(
            root.join(format!("boot/vmlinuz-{kernel_release}")),
            kernel_pkg,
        )?;
        let efi = root.join("usr/lib/systemd/boot/efi");
        Ok(Arm64Inputs {
            vmlinuz,
            systemd_stub: require(efi.join("linuxaa64.efi.stub"), "systemd-boot-efi:arm64")?,
            systemd_boot: require(efi.join("systemd-bootaa64.efi"), "systemd-boot-efi:arm64")?,
            busybox: require(root.join("bin/busybox"), "busybox-static:arm64")?,
            grub_efi: require(
                root.join("usr/lib/grub/arm64-efi"),
                "grub-efi-arm64-bin:arm64",
            )?,
            kernel_release,
        })
    }
}

/// A module name as the kernel compares them (`-` and `_` are the same).
pub fn module_name(name: &str) -> String {
    name.trim_end_matches(".ko").replace('-', "_")
}

impl KitInputs {
    /// Finds every input under `kit_dir` (the directory `fetch-debian.sh` fills).
    pub fn locate(kit_dir: &Path) -> Result<KitInputs, KitError> {
        let root = kit_dir.join("root");
        let kernel_pkg = "linux-image-amd64 (linux-image-<version>-amd64)";
        let kernel_release = match std::fs::read_to_string(root.join(".kernel-release")) {
            Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
            _ => {
                // The newest release that has both a kernel and a module tree.
                let mut found: Vec<String> = std::fs::read_dir(root.join("lib/modules"))
                    .map_err(|_| missing(&root.join("lib/modules"), kernel_pkg))?
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|k| root.join(format!("boot/vmlinuz-{k}")).exists())
                    .collect();
                found.sort();
                found
                    .pop()
                    .ok_or_else(|| missing(&root.join("boot/vmlinuz-<release>"), kernel_pkg))?
            }
        };
        let kpkg = format!("linux-image-{kernel_release}");
        let vmlinuz = require(root.join(format!("boot/vmlinuz-{kernel_release}")), &kpkg)?;
        let modules_dir = require(root.join(format!("lib/modules/{kernel_release}")), &kpkg)?;
        let efi = root.join("usr/lib/systemd/boot/efi");
        let systemd_stub = require(efi.join("linuxx64.efi.stub"), "systemd-boot-efi")?;
        let systemd_boot = require(efi.join("systemd-bootx64.efi"), "systemd-boot-efi")?;
        let busybox = require(root.join("bin/busybox"), "busybox-static")?;
        let grub_pc = require(root.join("usr/lib/grub/i386-pc"), "grub-pc-bin")?;
        let grub_efi = require(root.join("usr/lib/grub/x86_64-efi"), "grub-efi-amd64-bin")?;
        let mut modules = BTreeMap::new();
        index_modules(&modules_dir.join("kernel"), &modules_dir, &mut modules)
            .map_err(|e| KitError::io(format!("read {}", modules_dir.display()), e))?;
        if modules.is_empty() {
            return Err(missing(&modules_dir.join("kernel"), &kpkg));
        }
        Ok(KitInputs {
            root,
            kernel_release,
            vmlinuz,
            modules_dir,
            systemd_stub,
            systemd_boot,
            busybox,
            grub_pc,
            grub_efi,
            modules,
        })
    }

    /// The path of module `name` relative to the module directory (`kernel/…/x.ko`).
    pub fn module_path(&self, name: &str) -> Option<&Path> {
        self.modules.get(&module_name(name)).map(PathBuf::as_path)
    }

    /// `names` and everything they depend on (from each module's `.modinfo` `depends=`), in
    /// load order (dependencies first); names not shipped as modules (built in, or absent) are
    /// skipped. Returns (name, path relative to the module directory, direct dependencies).
    pub fn module_closure(&self, names: &[&str]) -> Result<Vec<ModuleInfo>, KitError> {
        let mut done = BTreeSet::new();
        let mut out = Vec::new();
        for n in names {
            self.visit(&module_name(n), &mut done, &mut out, 0)?;
        }
        Ok(out)
    }

    fn visit(
        &self,
        name: &str,
        done: &mut BTreeSet<String>,
        out: &mut Vec<ModuleInfo>,
        depth: usize,
    ) -> Result<(), KitError> {
        if depth > 64 || !done.insert(name.to_string()) {
            return Ok(());
        }
        let Some(rel) = self.modules.get(name) else {
            return Ok(());
        };
        let bytes = std::fs::read(self.modules_dir.join(rel))
            .map_err(|e| KitError::io(format!("read {}", rel.display()), e))?;
        let depends: Vec<String> = modinfo(&bytes, "depends")
            .map(|d| {
                d.split(',')
                    .filter(|s| !s.is_empty())
                    .map(module_name)
                    .collect()
            })
            .unwrap_or_default();
        for d in &depends {
            self.visit(d, done, out, depth + 1)?;
        }
        out.push(ModuleInfo {
            name: name.to_string(),
            path: rel.to_string_lossy().into_owned(),
            depends,
            bytes,
        });
        Ok(())
    }
}

/// One kernel module of the kit.
#[derive(Debug, Clone)]
pub struct ModuleInfo {
    /// Normalized name (`_` for `-`).
    pub name: String,
    /// Path relative to `lib/modules/<kver>/`, e.g. `kernel/drivers/block/loop.ko`.
    pub path: String,
    /// Direct dependencies (normalized names).
    pub depends: Vec<String>,
    /// The `.ko` bytes.
    pub bytes: Vec<u8>,
}

/// Renders `modules.dep` for `modules` (a dependency-closed list in load order): one line per
/// module, `path: dep paths…` with the transitive dependencies, nearest first, as depmod does.
pub fn modules_dep(modules: &[ModuleInfo]) -> String {
    let by_name: BTreeMap<&str, &ModuleInfo> =
        modules.iter().map(|m| (m.name.as_str(), m)).collect();
    let mut lines = Vec::new();
    for m in modules {
        // Transitive closure in reverse load order: what must be loaded last comes first.
        let mut seen = BTreeSet::new();
        let mut order = Vec::new();
        fn walk<'a>(
            m: &'a ModuleInfo,
            by_name: &BTreeMap<&str, &'a ModuleInfo>,
            seen: &mut BTreeSet<&'a str>,
            order: &mut Vec<&'a str>,
        ) {
            for d in &m.depends {
                if let Some(dm) = by_name.get(d.as_str())
                    && seen.insert(dm.name.as_str())
                {
                    walk(dm, by_name, seen, order);
                    order.push(dm.path.as_str());
                }
            }
        }
        walk(m, &by_name, &mut seen, &mut order);
        order.reverse();
        lines.push(if order.is_empty() {
            format!("{}:", m.path)
        } else {
            format!("{}: {}", m.path, order.join(" "))
        });
    }
    lines.sort();
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

fn index_modules(
    dir: &Path,
    base: &Path,
    out: &mut BTreeMap<String, PathBuf>,
) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            index_modules(&p, base, out)?;
        } else if let Some(name) = p.file_name().and_then(|n| n.to_str())
            && name.ends_with(".ko")
        {
            let rel = p.strip_prefix(base).unwrap_or(&p).to_path_buf();
            out.insert(module_name(name), rel);
        }
    }
    Ok(())
}

/// The value of `key=` in a module's `.modinfo` ELF section (64-bit little-endian ELF), or, if
/// the ELF cannot be walked, the first `\0key=` string anywhere in the file.
pub fn modinfo(ko: &[u8], key: &str) -> Option<String> {
    let section = modinfo_section(ko).unwrap_or(ko);
    let prefix = format!("{key}=");
    section
        .split(|b| *b == 0)
        .find(|s| s.starts_with(prefix.as_bytes()))
        .map(|s| String::from_utf8_lossy(&s[prefix.len()..]).into_owned())
}

fn modinfo_section(ko: &[u8]) -> Option<&[u8]> {
    let u16_at = |o: usize| ko.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        ko.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    let u64_at = |o: usize| {
        ko.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    if ko.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let shoff = u64_at(0x28)? as usize;
    let shentsize = u16_at(0x3a)? as usize;
    let shnum = u16_at(0x3c)? as usize;
    let shstrndx = u16_at(0x3e)? as usize;
    let sh = |i: usize| shoff.checked_add(i.checked_mul(shentsize)?);
    let strtab_off = u64_at(sh(shstrndx)? + 0x18)? as usize;
    for i in 0..shnum {
        let h = sh(i)?;
        let name_off = strtab_off.checked_add(u32_at(h)? as usize)?;
        let name = ko.get(name_off..)?.split(|b| *b == 0).next()?;
        if name == b".modinfo" {
            let off = u64_at(h + 0x18)? as usize;
            let size = u64_at(h + 0x20)? as usize;
            return ko.get(off..off.checked_add(size)?);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, deps: &[&str]) -> ModuleInfo {
        ModuleInfo {
            name: name.into(),
            path: format!("kernel/{name}.ko"),
            depends: deps.iter().map(|d| d.to_string()).collect(),
            bytes: Vec::new(),
        }
    }

    #[test]
    fn kit_dir_falls_back_to_the_users_cache_only_when_var_cache_is_unusable() {
        let os = |s: &str| Some(std::ffi::OsString::from(s));
        let system = PathBuf::from(DEFAULT_KIT_DIR);
        assert_eq!(
            choose_kit_dir(os("/k"), false, os("/x"), os("/h")),
            PathBuf::from("/k")
        );
        assert_eq!(choose_kit_dir(None, true, os("/x"), os("/h")), system);
        assert_eq!(
            choose_kit_dir(None, false, os("/x"), os("/h")),
            PathBuf::from("/x/image-factory/testkit")
        );
        assert_eq!(
            choose_kit_dir(None, false, None, os("/h")),
            PathBuf::from("/h/.cache/image-factory/testkit")
        );
        assert_eq!(choose_kit_dir(None, false, None, None), system);
    }

    #[test]
    fn dep_lines() {
        let mods = [
            m("scsi_common", &[]),
            m("scsi_mod", &["scsi_common"]),
            m("libata", &["scsi_mod", "scsi_common"]),
        ];
        assert_eq!(
            modules_dep(&mods),
            "kernel/libata.ko: kernel/scsi_mod.ko kernel/scsi_common.ko\nkernel/scsi_common.ko:\nkernel/scsi_mod.ko: kernel/scsi_common.ko\n"
        );
    }
}
