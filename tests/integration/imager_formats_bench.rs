//! Measures disk-format conversion and compression levels on a realistic disk image; the
//! numbers in `docs/imager-formats.md` come from here. Ignored by default (minutes of CPU):
//!
//! ```text
//! cargo test --release --test integration imager_formats_bench:: -- --ignored --nocapture
//! ```
//!
//! The disk (`IF_BENCH_DISK_MIB`, default 4096 MiB like a Talos 1.15 amd64 dual-boot metal
//! image) holds what a Talos image holds: a compressed kernel and an xz initramfs twice (in
//! the EFI partition's UKI and on BOOT for GRUB), zero-filled filesystem metadata, a GPT and
//! META, and holes everywhere else. The kernel and the xz payload come from the test kit's
//! Debian kernel package (`tests/kit/fetch-debian.sh`); without it, pseudo-random bytes of
//! the same sizes stand in.

use std::fs;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use image_factory::imager::formats::{CompressionLevels, ConvertRequest, convert};
use image_factory::imager::profile::{DiskFormat, OutFormat};

const MIB: u64 = 1 << 20;
const KIT: &str = "/var/cache/image-factory/testkit";

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The member `name` of an `ar` archive (a `.deb`).
fn ar_member(deb: &[u8], name: &str) -> Option<Vec<u8>> {
    let mut pos = 8;
    while pos + 60 <= deb.len() {
        let h = &deb[pos..pos + 60];
        let member = std::str::from_utf8(&h[..16])
            .ok()?
            .trim_end()
            .trim_end_matches('/');
        let size: usize = std::str::from_utf8(&h[48..58]).ok()?.trim().parse().ok()?;
        let start = pos + 60;
        if member == name {
            return deb.get(start..start + size).map(<[u8]>::to_vec);
        }
        pos = start + size + size % 2;
    }
    None
}

/// (kernel, xz initramfs stand-in, where they came from).
fn payload() -> (Vec<u8>, Vec<u8>, &'static str) {
    let kit = Path::new(KIT);
    let kernel = fs::read_dir(kit.join("root/boot")).ok().and_then(|d| {
        d.flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"))
            .and_then(|e| fs::read(e.path()).ok())
    });
    let initramfs = fs::read_dir(kit.join("debs")).ok().and_then(|d| {
        d.flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with("linux-image-"))
            .and_then(|e| fs::read(e.path()).ok())
            .and_then(|deb| ar_member(&deb, "data.tar.xz"))
    });
    match (kernel, initramfs) {
        (Some(k), Some(i)) => (k, i, "test kit: Debian vmlinuz + linux-image data.tar.xz"),
        _ => (
            noise(1, 8 * MIB as usize),
            noise(2, 70 * MIB as usize),
            "pseudo-random stand-ins (test kit not fetched)",
        ),
    }
}

/// The disk file, a description, and the bytes of non-zero data in it.
fn make_disk(dir: &Path, size: u64) -> io::Result<(PathBuf, String, u64)> {
    let (kernel, initramfs, source) = payload();
    let path = dir.join("disk.raw");
    let mut f = fs::File::create(&path)?;
    f.set_len(size)?;
    let mut put = |off: u64, b: &[u8]| -> io::Result<()> {
        f.seek(SeekFrom::Start(off))?;
        f.write_all(b)
    };
    put(0, &noise(3, 17 * 1024))?; // MBR + GPT
    put(MIB, &vec![0u8; 2 * MIB as usize])?; // FAT tables
    put(3 * MIB, &kernel)?; // EFI: UKI
    put(3 * MIB + kernel.len() as u64 + 4096, &initramfs)?;
    put(101 * MIB, &vec![0u8; 8 * MIB as usize])?; // XFS metadata
    put(109 * MIB, &kernel)?; // BOOT (GRUB)
    put(110 * MIB + kernel.len() as u64, &initramfs)?;
    put(size / 4, &noise(4, MIB as usize))?; // META
    put(size - 17 * 1024, &noise(5, 17 * 1024))?; // backup GPT
    let data = 2 * (kernel.len() + initramfs.len()) as u64 + MIB + 34 * 1024;
    Ok((
        path,
        format!("{source}; {:.1} MiB of data", data as f64 / MIB as f64),
        data,
    ))
}

/// A sink that counts bytes.
struct Count(u64);
impl Write for Count {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Upstream's tools on the same file, same conditions (output to a file in the scratch
/// dir, as upstream does; a tool that is not installed is skipped).
fn cli_baselines(raw: &Path, data_mib: f64) {
    let out = raw.with_extension("cli");
    let r = raw.to_str().unwrap_or_default();
    let o = out.to_str().unwrap_or_default();
    let cmds: [(&str, &str, Vec<&str>); 8] = [
        (
            "raw.zst",
            "zstd -T2 -18 (upstream -T0)",
            vec!["zstd", "-q", "-f", "-T2", "-18", r, "-o", o],
        ),
        (
            "raw.zst",
            "zstd -T2 -3 --long=27",
            vec!["zstd", "-q", "-f", "-T2", "-3", "--long=27", r, "-o", o],
        ),
        (
            "raw.xz",
            "xz -T2 -0 (upstream -T0)",
            vec!["sh", "-c", "xz -T2 -0 -c \"$0\" > \"$1\"", r, o],
        ),
        (
            "raw.gz",
            "gzip -6 (upstream: pigz -6)",
            vec!["sh", "-c", "gzip -6 -n -c \"$0\" > \"$1\"", r, o],
        ),
        (
            "raw.tar.gz",
            "tar --sparse, gzip -6",
            vec![
                "sh",
                "-c",
                "tar -C \"$(dirname \"$0\")\" --sparse -cf - disk.raw | gzip -6 -n > \"$1\"",
                r,
                o,
            ],
        ),
        (
            "qcow2",
            "qemu-img convert",
            vec![
                "qemu-img",
                "convert",
                "-f",
                "raw",
                "-O",
                "qcow2",
                "-o",
                "cluster_size=8k",
                r,
                o,
            ],
        ),
        (
            "vhd",
            "qemu-img convert",
            vec![
                "qemu-img",
                "convert",
                "-f",
                "raw",
                "-O",
                "vpc",
                "-o",
                "subformat=fixed,force_size",
                r,
                o,
            ],
        ),
        (
            "vmdk",
            "qemu-img streamOptimized",
            vec![
                "qemu-img",
                "convert",
                "-f",
                "raw",
                "-O",
                "vmdk",
                "-o",
                "subformat=streamOptimized",
                r,
                o,
            ],
        ),
    ];
    for (name, label, argv) in cmds {
        let t = Instant::now();
        let ok = std::process::Command::new(argv[0])
            .args(&argv[1..])
            .status()
            .is_ok_and(|s| s.success());
        let secs = t.elapsed().as_secs_f64();
        if !ok {
            println!("| {name} | CLI {label}: not available | | | |");
            continue;
        }
        let size = fs::metadata(&out).map_or(0, |m| m.len()) as f64 / MIB as f64;
        println!(
            "| {name} | CLI {label} | {size:.1} | {:.2} | {secs:.1} |",
            size / data_mib
        );
        let _ = fs::remove_file(&out);
    }
}

#[test]
#[ignore = "benchmark: run with --release --ignored --nocapture"]
fn measure_formats_and_levels() {
    let mib: u64 = std::env::var("IF_BENCH_DISK_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    let dir = tempfile::tempdir().unwrap();
    let (raw, what, data) = make_disk(dir.path(), mib * MIB).unwrap();
    let data_mib = data as f64 / MIB as f64;
    println!("disk: {mib} MiB, {what}\n");
    println!("| output | levels | size (MiB) | vs raw data | seconds |");
    println!("| --- | --- | ---: | ---: | ---: |");
    let up = CompressionLevels::upstream();
    let def = CompressionLevels::default();
    let z = |zstd, wl| CompressionLevels {
        zstd,
        zstd_window_log: wl,
        ..def
    };
    let x = |xz| CompressionLevels { xz, ..def };
    let g = |gzip| CompressionLevels { gzip, ..def };
    let v = |vmdk_deflate| CompressionLevels {
        vmdk_deflate,
        ..def
    };
    let cases: Vec<(&str, DiskFormat, &str, OutFormat, String, CompressionLevels)> = vec![
        ("raw", DiskFormat::Raw, "", OutFormat::Raw, "-".into(), def),
        (
            "raw.zst",
            DiskFormat::Raw,
            "",
            OutFormat::Zst,
            "zstd 18 (upstream)".into(),
            up,
        ),
        (
            "raw.zst",
            DiskFormat::Raw,
            "",
            OutFormat::Zst,
            "zstd 1 (default)".into(),
            z(1, 0),
        ),
        (
            "raw.zst",
            DiskFormat::Raw,
            "",
            OutFormat::Zst,
            "zstd 3".into(),
            z(3, 0),
        ),
        (
            "raw.zst",
            DiskFormat::Raw,
            "",
            OutFormat::Zst,
            "zstd 1 long=27".into(),
            z(1, 27),
        ),
        (
            "raw.zst",
            DiskFormat::Raw,
            "",
            OutFormat::Zst,
            "zstd 3 long=27".into(),
            z(3, 27),
        ),
        (
            "raw.zst",
            DiskFormat::Raw,
            "",
            OutFormat::Zst,
            "zstd 9 long=27".into(),
            z(9, 27),
        ),
        (
            "raw.zst",
            DiskFormat::Raw,
            "",
            OutFormat::Zst,
            "zstd 18 long=27".into(),
            z(18, 27),
        ),
        (
            "raw.xz",
            DiskFormat::Raw,
            "",
            OutFormat::Xz,
            "xz 0 (upstream, default)".into(),
            x(0),
        ),
        (
            "raw.xz",
            DiskFormat::Raw,
            "",
            OutFormat::Xz,
            "xz 1".into(),
            x(1),
        ),
        (
            "raw.xz",
            DiskFormat::Raw,
            "",
            OutFormat::Xz,
            "xz 6".into(),
            x(6),
        ),
        (
            "raw.gz",
            DiskFormat::Raw,
            "",
            OutFormat::Gz,
            "gzip 6 (upstream, default)".into(),
            g(6),
        ),
        (
            "raw.gz",
            DiskFormat::Raw,
            "",
            OutFormat::Gz,
            "gzip 1".into(),
            g(1),
        ),
        (
            "raw.gz",
            DiskFormat::Raw,
            "",
            OutFormat::Gz,
            "gzip 9".into(),
            g(9),
        ),
        (
            "raw.tar.gz",
            DiskFormat::Raw,
            "",
            OutFormat::TarGz,
            "gzip 6 (upstream, default)".into(),
            g(6),
        ),
        (
            "raw.tar.gz",
            DiskFormat::Raw,
            "",
            OutFormat::TarGz,
            "gzip 1".into(),
            g(1),
        ),
        (
            "qcow2",
            DiskFormat::Qcow2,
            "cluster_size=8k",
            OutFormat::Raw,
            "-".into(),
            def,
        ),
        (
            "qcow2.zst",
            DiskFormat::Qcow2,
            "cluster_size=8k",
            OutFormat::Zst,
            "zstd 18 (upstream)".into(),
            up,
        ),
        (
            "qcow2.zst",
            DiskFormat::Qcow2,
            "cluster_size=8k",
            OutFormat::Zst,
            "default".into(),
            def,
        ),
        (
            "vhd.zst",
            DiskFormat::Vhd,
            "subformat=fixed,force_size",
            OutFormat::Zst,
            "zstd 18 (upstream)".into(),
            up,
        ),
        (
            "vhd.zst",
            DiskFormat::Vhd,
            "subformat=fixed,force_size",
            OutFormat::Zst,
            "default".into(),
            def,
        ),
        (
            "ova",
            DiskFormat::Ova,
            "",
            OutFormat::Raw,
            "deflate 6".into(),
            v(6),
        ),
        (
            "ova",
            DiskFormat::Ova,
            "",
            OutFormat::Raw,
            "deflate 1 (default)".into(),
            v(1),
        ),
    ];
    let only = std::env::var("IF_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only.split(',').any(|o| o == "cli") {
        cli_baselines(&raw, data_mib);
    }
    for (name, disk_format, opts, out_format, label, levels) in cases {
        if !only.is_empty() && !only.split(',').any(|o| o == name) {
            continue;
        }
        let req = ConvertRequest {
            disk_format,
            disk_format_options: opts,
            out_format,
        };
        let mut sink = Count(0);
        let t = Instant::now();
        convert(&raw, &req, &levels, &mut sink).unwrap();
        let secs = t.elapsed().as_secs_f64();
        let size = sink.0 as f64 / MIB as f64;
        println!(
            "| {name} | {label} | {size:.1} | {:.2} | {secs:.1} |",
            size / data_mib
        );
    }
}
