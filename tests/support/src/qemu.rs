//! Booting kit artefacts in QEMU (TCG: KVM hangs on this machine class, see the test-kit notes)
//! and collecting the serial console.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";

/// Whether `qemu-system-x86_64` is on `PATH`.
pub fn available() -> bool {
    runs(QEMU)
}

/// Whether `binary --version` runs and succeeds.
fn runs(binary: &str) -> bool {
    Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The arm64 QEMU binary (Debian `qemu-system-arm`).
pub const QEMU_AARCH64: &str = "qemu-system-aarch64";

/// Whether `qemu-system-aarch64` is on `PATH`.
pub fn aarch64_available() -> bool {
    runs(QEMU_AARCH64)
}

/// AAVMF (arm64 UEFI) firmware code (Debian `qemu-efi-aarch64`).
pub const AAVMF_CODE: &str = "/usr/share/AAVMF/AAVMF_CODE.fd";
/// AAVMF variable store template (copy it before use).
pub const AAVMF_VARS: &str = "/usr/share/AAVMF/AAVMF_VARS.fd";

/// OVMF firmware code (Debian `ovmf`).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE.fd";
/// OVMF variable store template (copy it before use).
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS.fd";

/// Debian `ipxe-qemu`'s ROM for virtio-net (legacy BIOS and UEFI images in one file).
pub const IPXE_VIRTIO_ROM: &str = "/usr/lib/ipxe/qemu/efi-virtio.rom";

/// A QEMU run: `-accel tcg -m <mem> -nographic -no-reboot` plus the boot arguments.
#[derive(Debug, Clone)]
pub struct Boot {
    /// `-kernel` (direct kernel boot) or `None`.
    pub kernel: Option<PathBuf>,
    /// `-initrd`.
    pub initrd: Option<PathBuf>,
    /// `-append`.
    pub append: Option<String>,
    /// More arguments (`-bios`, `-drive`, `-cdrom`, …).
    pub args: Vec<String>,
    /// Memory, MiB.
    pub memory_mb: u32,
    /// Kill QEMU after this long.
    pub timeout: Duration,
    /// Command QEMU runs under (e.g. `ip netns exec <ns>`); empty = none.
    pub wrapper: Vec<String>,
}

/// The firmware a network-booted machine starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetFirmware {
    /// SeaBIOS running QEMU's iPXE option ROM (the NIC's ROM is iPXE itself).
    SeabiosIpxe,
    /// OVMF's own UEFI PXE (EDK II PxeBcDxe over its virtio-net driver; no iPXE ROM).
    OvmfPxe,
    /// OVMF's UEFI HTTP Boot (PXE over IPv4 and IPv6 switched off through fw_cfg).
    OvmfHttp,
}

impl Boot {
    /// Direct kernel boot with `console=ttyS0`.
    pub fn direct(kernel: &Path, initrd: &Path, append: &str) -> Boot {
        Boot {
            kernel: Some(kernel.to_path_buf()),
            initrd: Some(initrd.to_path_buf()),
            append: Some(append.to_string()),
            args: Vec::new(),
            memory_mb: 512,
            timeout: Duration::from_secs(120),
            wrapper: Vec::new(),
        }
    }

    /// UEFI boot through OVMF (`q35`, pflash code + a copy of the vars at `vars`) of a directory
    /// exposed read-only as a FAT disk (put the loader at `EFI/BOOT/BOOTX64.EFI`).
    pub fn uefi_esp(esp: &Path, vars: &Path) -> Boot {
        let mut args: Vec<String> = ovmf(vars).into();
        args.extend(esp_drive(esp));
        Boot::firmware(args)
    }

    /// A boot by firmware (no `-kernel`) with `args`: 1 GiB, killed after 300 s.
    fn firmware(args: Vec<String>) -> Boot {
        Boot {
            kernel: None,
            initrd: None,
            append: None,
            args,
            memory_mb: 1024,
            timeout: Duration::from_secs(300),
            wrapper: Vec::new(),
        }
    }

    /// Firmware boot of a raw disk image on virtio-blk: `vars` = `Some(copy of OVMF_VARS)`
    /// boots through OVMF (`q35`, pflash), `None` through QEMU's default SeaBIOS. The image
    /// is opened with `snapshot=on`, so the guest's writes never reach the file.
    pub fn raw_disk(disk: &Path, vars: Option<&Path>) -> Boot {
        Boot::disk(disk, "raw", vars)
    }

    /// Firmware boot of a disk image in QEMU `format` (`raw`, `qcow2`, …) as a virtio disk
    /// (`snapshot=on`: the file is never modified); `vars` as for [`Boot::raw_disk`].
    pub fn disk(disk: &Path, format: &str, vars: Option<&Path>) -> Boot {
        let mut args = Vec::new();
        if let Some(vars) = vars {
            args.extend(ovmf(vars));
        }
        args.extend(disk_drive(disk, format));
        Boot::firmware(args)
    }

    /// Firmware boot of an ISO from QEMU's IDE CD-ROM (`-cdrom`): `vars` = `Some(copy of
    /// OVMF_VARS)` boots through OVMF (`q35`, pflash), `None` through SeaBIOS.
    pub fn cdrom(iso: &Path, vars: Option<&Path>) -> Boot {
        let mut boot = Boot::raw_disk(iso, vars);
        // replace the virtio disk (the last two arguments) with the CD-ROM
        boot.args.truncate(boot.args.len() - 2);
        boot.args.push("-cdrom".into());
        boot.args.push(iso.display().to_string());
        boot
    }

    /// Network boot on SeaBIOS through iPXE: user-mode networking whose DHCP hands out
    /// `bootfile` (an `http://10.0.2.2:PORT/...` URL reaches the host's loopback).
    pub fn pxe(bootfile: &str) -> Boot {
        Boot {
            kernel: None,
            initrd: None,
            append: None,
            args: vec![
                "-netdev".into(),
                format!("user,id=n0,bootfile={bootfile}"),
                "-device".into(),
                // The ROM's PCI ID is the modern virtio-net one (1af4:1041): SeaBIOS only runs
                // it for a device without the legacy (transitional 1af4:1000) interface.
                format!(
                    "virtio-net-pci,netdev=n0,disable-legacy=on,bootindex=1,romfile={IPXE_VIRTIO_ROM}"
                ),
            ],
            memory_mb: 512,
            timeout: Duration::from_secs(240),
            wrapper: Vec::new(),
        }
    }

    /// Network boot on a tap device `tap` (run QEMU inside the tap's namespace through
    /// [`Boot::wrapper`]) with MAC `mac`, by `firmware`; `vars` is a copy of [`OVMF_VARS`] for
    /// the OVMF variants (ignored for SeaBIOS).
    pub fn netboot(tap: &str, mac: &str, firmware: NetFirmware, vars: &Path) -> Boot {
        let netdev = format!("tap,id=n0,ifname={tap},script=no,downscript=no");
        let mut args = Vec::new();
        let nic = match firmware {
            NetFirmware::SeabiosIpxe => format!(
                "virtio-net-pci,netdev=n0,mac={mac},disable-legacy=on,bootindex=1,romfile={IPXE_VIRTIO_ROM}"
            ),
            NetFirmware::OvmfPxe | NetFirmware::OvmfHttp => {
                args.extend(ovmf(vars));
                if firmware == NetFirmware::OvmfHttp {
                    for knob in ["IPv4PXESupport", "IPv6PXESupport"] {
                        args.push("-fw_cfg".into());
                        args.push(format!("name=opt/org.tianocore/{knob},string=n"));
                    }
                }
                // An empty romfile keeps iPXE's ROM out, so the firmware's own PXE/HTTP stack
                // (not iPXE) does the first stage.
                format!("virtio-net-pci,netdev=n0,mac={mac},bootindex=1,romfile=")
            }
        };
        args.extend(["-netdev".to_string(), netdev, "-device".into(), nic]);
        Boot::firmware(args)
    }

    /// arm64 direct kernel boot (run with [`Boot::run_aarch64`]); put `console=ttyAMA0` in
    /// `append` to see the kernel on the serial port.
    pub fn aarch64_direct(kernel: &Path, initrd: &Path, append: &str) -> Boot {
        Boot::direct(kernel, initrd, append)
    }

    /// arm64 UEFI boot through AAVMF (pflash code + the vars copy `vars`) of a directory
    /// exposed read-only as a FAT disk (loader at `EFI/BOOT/BOOTAA64.EFI`).
    pub fn aavmf_esp(esp: &Path, vars: &Path) -> Boot {
        let mut args: Vec<String> = aavmf(vars).into();
        args.extend(esp_drive(esp));
        Boot::firmware(args)
    }

    /// arm64 UEFI boot through AAVMF of a raw disk image on virtio-blk (`snapshot=on`).
    pub fn aavmf_disk(disk: &Path, vars: &Path) -> Boot {
        let mut args: Vec<String> = aavmf(vars).into();
        args.extend(disk_drive(disk, "raw"));
        Boot::firmware(args)
    }

    /// arm64 UEFI boot through AAVMF of an ISO as a CD-ROM (`virt` has no IDE: a SCSI CD-ROM
    /// on virtio-scsi, which AAVMF boots from its El Torito EFI entry).
    pub fn aavmf_cdrom(iso: &Path, vars: &Path) -> Boot {
        let mut args: Vec<String> = aavmf(vars).into();
        args.extend([
            "-device".to_string(),
            "virtio-scsi-pci,id=scsi0".into(),
            "-drive".into(),
            format!(
                "if=none,id=cd0,media=cdrom,readonly=on,format=raw,file={}",
                iso.display()
            ),
            "-device".into(),
            "scsi-cd,drive=cd0,bus=scsi0.0".into(),
        ]);
        Boot::firmware(args)
    }

    /// Runs `qemu-system-aarch64 -M virt -cpu max` (TCG) like [`Boot::run`].
    pub fn run_aarch64(&self) -> std::io::Result<BootOutput> {
        self.run_program(QEMU_AARCH64, &["-M", "virt", "-cpu", "max"])
    }

    /// Runs QEMU until it exits or the timeout; returns the serial console output. A timeout is
    /// not an error here (the caller looks for the marker and reports the console).
    pub fn run(&self) -> std::io::Result<BootOutput> {
        self.run_program(QEMU, &[])
    }

    fn run_program(&self, qemu: &str, machine: &[&str]) -> std::io::Result<BootOutput> {
        let dir = tempfile::tempdir().map_err(context("temp dir"))?;
        let log = dir.path().join("console.log");
        let out = std::fs::File::create(&log).map_err(context("console log"))?;
        let mut cmd = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(qemu);
                c
            }
            None => Command::new(qemu),
        };
        cmd.args(machine)
            .args(["-accel", "tcg", "-nographic", "-no-reboot", "-m"])
            .arg(self.memory_mb.to_string());
        if let Some(k) = &self.kernel {
            cmd.arg("-kernel").arg(k);
        }
        if let Some(i) = &self.initrd {
            cmd.arg("-initrd").arg(i);
        }
        if let Some(a) = &self.append {
            cmd.arg("-append").arg(a);
        }
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(context("console log"))?)
            .stderr(out);
        let start = Instant::now();
        let mut child = cmd.spawn().map_err(context(format!("start {qemu}")))?;
        let mut timed_out = false;
        let status = loop {
            if let Some(s) = child.try_wait().map_err(context("wait qemu"))? {
                break Some(s);
            }
            if start.elapsed() > self.timeout {
                let _ = child.kill();
                let _ = child.wait();
                timed_out = true;
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let console =
            String::from_utf8_lossy(&std::fs::read(&log).map_err(context("read console log"))?)
                .into_owned();
        Ok(BootOutput {
            console,
            exit_ok: status.is_some_and(|s| s.success()),
            timed_out,
            elapsed: start.elapsed(),
        })
    }
}

/// A directory exposed read-only as a FAT disk on virtio-blk.
fn esp_drive(esp: &Path) -> [String; 2] {
    [
        "-drive".into(),
        format!(
            "if=virtio,format=raw,readonly=on,file=fat:{}",
            esp.display()
        ),
    ]
}

/// A disk image in QEMU `format` on virtio-blk, `snapshot=on` (the file is never modified).
fn disk_drive(disk: &Path, format: &str) -> [String; 2] {
    [
        "-drive".into(),
        format!(
            "if=virtio,format={format},snapshot=on,file={}",
            disk.display()
        ),
    ]
}

/// QEMU arguments for a `q35` machine booting OVMF (pflash code + the vars copy `vars`).
fn ovmf(vars: &Path) -> [String; 6] {
    [
        "-machine".into(),
        "q35".into(),
        "-drive".into(),
        format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"),
        "-drive".into(),
        format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
    ]
}

/// QEMU arguments for AAVMF on `virt` (pflash code + the vars copy `vars`).
fn aavmf(vars: &Path) -> [String; 4] {
    [
        "-drive".into(),
        format!("if=pflash,format=raw,unit=0,readonly=on,file={AAVMF_CODE}"),
        "-drive".into(),
        format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
    ]
}

/// Adds what was being done to an I/O error's text.
fn context(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> std::io::Error {
    move |e| std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// What a QEMU run produced.
#[derive(Debug, Clone)]
pub struct BootOutput {
    /// Serial console (and QEMU's own messages).
    pub console: String,
    /// QEMU exited with status 0 (the guest powered off).
    pub exit_ok: bool,
    /// The run was killed at the timeout.
    pub timed_out: bool,
    /// Wall time.
    pub elapsed: Duration,
}
