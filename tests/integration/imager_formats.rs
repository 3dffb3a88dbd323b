//! Disk format conversion and output compression (imager spec §1.6, §5.9) checked with
//! independent tools: `qemu-img` (check, info, compare) for qcow2/VHD/VMDK, GNU `tar` for the
//! OVA and GCP archives, `xz`/`gzip`/`zstd -t` and their decompressors for compressed outputs.
//! A missing tool fails the test (test.sh installs them).

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use image_factory::catalog::Version;
use image_factory::imager::formats::{CompressionLevels, ConvertRequest, Converted, convert};
use image_factory::imager::path::parse_path;
use image_factory::imager::profile::{DiskFormat, OutFormat};
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// Runs a command, asserts success, returns stdout.
fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd} not runnable ({e}); run test.sh to install it"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Deterministic pseudo-random bytes (xorshift), incompressible like squashfs/xz payloads.
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

/// A sparse disk of `size` bytes: a GPT-sized head, written zeros (must become holes), an
/// unaligned data run crossing cluster/grain boundaries, text, and data in the last sector.
fn make_disk(dir: &Path, name: &str, size: u64) -> PathBuf {
    let path = dir.join(name);
    let mut f = fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    let mut put = |off: u64, data: &[u8]| {
        f.seek(SeekFrom::Start(off)).unwrap();
        f.write_all(data).unwrap();
    };
    put(0, &noise(1, 17 * 1024));
    put(MIB, &vec![0u8; 2 * MIB as usize]);
    put(3 * MIB + 777, &noise(2, 5 * MIB as usize + 12345));
    put(
        20 * MIB,
        &b"Talos Linux disk image formats test\n".repeat(20_000),
    );
    put(size - 512, &noise(3, 512));
    drop(f);
    path
}

fn request(disk_format: DiskFormat, opts: &str, out_format: OutFormat) -> ConvertRequest<'_> {
    ConvertRequest {
        disk_format,
        disk_format_options: opts,
        out_format,
    }
}

/// Converts into a file `out` and returns the report.
fn convert_to(raw: &Path, req: &ConvertRequest<'_>, out: &Path) -> Converted {
    let mut f = std::io::BufWriter::new(fs::File::create(out).unwrap());
    let c = convert(raw, req, &CompressionLevels::default(), &mut f).unwrap();
    f.flush().unwrap();
    assert_eq!(c.written, fs::metadata(out).unwrap().len());
    c
}

/// `qemu-img info` with an explicit format (a fixed VHD only has a footer, so qemu's probe
/// would call it raw).
fn qemu_info(path: &Path, fmt: &str) -> Value {
    serde_json::from_str(&run(
        "qemu-img",
        &["info", "--output=json", "-f", fmt, p(path)],
    ))
    .unwrap()
}

fn assert_same_disk(raw: &Path, fmt: &str, image: &Path) {
    let out = run(
        "qemu-img",
        &["compare", "-f", "raw", "-F", fmt, p(raw), p(image)],
    );
    assert!(out.contains("Images are identical"), "{out}");
}

#[test]
fn raw_passthrough_is_byte_identical() {
    let d = tempfile::tempdir().unwrap();
    let raw = make_disk(d.path(), "disk.raw", 64 * MIB);
    let out = d.path().join("out.raw");
    let c = convert_to(&raw, &request(DiskFormat::Raw, "", OutFormat::Raw), &out);
    assert_eq!(c.written, 64 * MIB);
    run("cmp", &[p(&raw), p(&out)]);
}

#[test]
fn qcow2_passes_qemu_img_check_info_compare() {
    let d = tempfile::tempdir().unwrap();
    let raw = make_disk(d.path(), "disk.raw", 64 * MIB + 4096);
    let out = d.path().join("out.qcow2");
    convert_to(
        &raw,
        &request(DiskFormat::Qcow2, "cluster_size=8k", OutFormat::Raw),
        &out,
    );
    let check = run("qemu-img", &["check", "-f", "qcow2", p(&out)]);
    assert!(check.contains("No errors were found"), "{check}");
    let info = qemu_info(&out, "qcow2");
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["cluster-size"], 8192);
    assert_eq!(info["virtual-size"], 64 * MIB + 4096);
    assert_same_disk(&raw, "qcow2", &out);
    // Written zeros are not allocated: 17 KiB + ~5 MiB + 720 KiB of text + 1 sector of data.
    let len = fs::metadata(&out).unwrap().len();
    assert!(len < 7 * MIB, "qcow2 is {len} bytes");
    // Same size class as qemu-img's own conversion.
    let theirs = d.path().join("qemu.qcow2");
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=8k",
            p(&raw),
            p(&theirs),
        ],
    );
    let qlen = fs::metadata(&theirs).unwrap().len();
    assert!(len <= qlen + 64 * 1024, "ours {len}, qemu-img {qlen}");
}

#[test]
fn vhd_is_fixed_with_qemu_force_size_footer() {
    let d = tempfile::tempdir().unwrap();
    let raw = make_disk(d.path(), "disk.raw", 1246 * MIB);
    let path = parse_path(
        "azure-amd64.vhd",
        &Version::parse_strict("v1.10.0").unwrap(),
    )
    .unwrap();
    let req = ConvertRequest::from_profile(&path).unwrap();
    assert_eq!(req.disk_format_options, "subformat=fixed,force_size");
    let out = d.path().join("out.vhd");
    convert_to(&raw, &req, &out);
    assert_eq!(fs::metadata(&out).unwrap().len(), 1246 * MIB + 512);
    let info = qemu_info(&out, "vpc");
    assert_eq!(info["format"], "vpc");
    assert_eq!(info["virtual-size"], 1246 * MIB);
    assert_same_disk(&raw, "vpc", &out);
    // qemu-img's own footer: equal except timestamp (24..28), checksum (64..68), UUID (68..84).
    let theirs = d.path().join("qemu.vhd");
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "vpc",
            "-o",
            "subformat=fixed,force_size",
            p(&raw),
            p(&theirs),
        ],
    );
    let tail = |f: &Path| {
        let b = fs::read(f).unwrap();
        let mut t = b[b.len() - 512..].to_vec();
        t[24..28].fill(0);
        t[64..84].fill(0);
        t
    };
    assert_eq!(tail(&out), tail(&theirs));
}

#[test]
fn ova_has_ovf_mf_vmdk_and_a_valid_stream_optimized_disk() {
    let d = tempfile::tempdir().unwrap();
    let raw = make_disk(d.path(), "disk.raw", 96 * MIB);
    let out = d.path().join("out.ova");
    convert_to(&raw, &request(DiskFormat::Ova, "", OutFormat::Raw), &out);
    let listing = run("tar", &["-tf", p(&out)]);
    assert_eq!(listing, "disk.ovf\ndisk.mf\ndisk.vmdk\n");
    let x = d.path().join("x");
    fs::create_dir(&x).unwrap();
    run("tar", &["-xf", p(&out), "-C", p(&x)]);
    let vmdk = x.join("disk.vmdk");
    let mf = fs::read_to_string(x.join("disk.mf")).unwrap();
    let sha = |f: &str| {
        run("sha256sum", &[p(&x.join(f))])
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        mf,
        format!(
            "SHA256(disk.vmdk)= {}\nSHA256(disk.ovf)= {}\n",
            sha("disk.vmdk"),
            sha("disk.ovf")
        )
    );
    let ovf = fs::read_to_string(x.join("disk.ovf")).unwrap();
    let vlen = fs::metadata(&vmdk).unwrap().len();
    assert!(ovf.contains(&format!("ovf:size=\"{vlen}\"")));
    assert!(ovf.contains("ovf:capacity=\"96\""));
    let info = qemu_info(&vmdk, "vmdk");
    assert_eq!(info["format"], "vmdk");
    assert_eq!(info["virtual-size"], 96 * MIB);
    assert_eq!(
        info["format-specific"]["data"]["create-type"],
        "streamOptimized"
    );
    let check = run("qemu-img", &["check", "-f", "vmdk", p(&vmdk)]);
    assert!(check.contains("No errors were found"), "{check}");
    assert_same_disk(&raw, "vmdk", &vmdk);
}

#[test]
fn gcp_tar_gz_holds_sparse_disk_raw() {
    let d = tempfile::tempdir().unwrap();
    let raw = make_disk(d.path(), "disk.raw", 64 * MIB);
    let profile = parse_path(
        "gcp-amd64.raw.tar.gz",
        &Version::parse_strict("v1.10.0").unwrap(),
    )
    .unwrap();
    let req = ConvertRequest::from_profile(&profile).unwrap();
    assert_eq!(req.out_format, OutFormat::TarGz);
    let out = d.path().join("out.tar.gz");
    convert_to(&raw, &req, &out);
    run("gzip", &["-t", p(&out)]);
    let listing = run("tar", &["-tvzf", p(&out)]);
    let fields: Vec<&str> = listing.split_whitespace().collect();
    assert_eq!(listing.lines().count(), 1, "{listing}");
    assert_eq!(fields[0], "-rw-r--r--");
    assert_eq!(fields[1], "0/0");
    assert_eq!(fields[2], (64 * MIB).to_string());
    assert_eq!(fields[5], "disk.raw");
    let x = d.path().join("x");
    fs::create_dir(&x).unwrap();
    run("tar", &["-xzf", p(&out), "-C", p(&x)]);
    run("cmp", &[p(&raw), p(&x.join("disk.raw"))]);
    // Stored sparse: the archive is about the size of the data, not of the disk.
    assert!(fs::metadata(&out).unwrap().len() < 8 * MIB);
}

#[test]
fn compressed_outputs_pass_the_tools_and_decompress_to_the_source() {
    let d = tempfile::tempdir().unwrap();
    let raw = make_disk(d.path(), "disk.raw", 48 * MIB);
    for (fmt, tool) in [
        (OutFormat::Xz, "xz"),
        (OutFormat::Gz, "gzip"),
        (OutFormat::Zst, "zstd"),
    ] {
        let out = d.path().join(format!("out.raw{}", fmt.suffix()));
        convert_to(&raw, &request(DiskFormat::Raw, "", fmt), &out);
        run(tool, &["-t", p(&out)]);
        let back = d.path().join(format!("back-{tool}.raw"));
        let data = Command::new(tool).args(["-dc", p(&out)]).output().unwrap();
        assert!(data.status.success(), "{tool} -dc failed");
        fs::write(&back, &data.stdout).unwrap();
        run("cmp", &[p(&raw), p(&back)]);
    }
    // A compressed qcow2 (exoscale/oracle: .qcow2.zst) decompresses to a valid image.
    let out = d.path().join("out.qcow2.zst");
    convert_to(
        &raw,
        &request(DiskFormat::Qcow2, "cluster_size=8k", OutFormat::Zst),
        &out,
    );
    let q = d.path().join("back.qcow2");
    run("zstd", &["-q", "-d", p(&out), "-o", p(&q)]);
    assert_same_disk(&raw, "qcow2", &q);
}

#[test]
fn every_output_is_deterministic() {
    let d = tempfile::tempdir().unwrap();
    let raw = make_disk(d.path(), "disk.raw", 40 * MIB);
    let cases = [
        request(DiskFormat::Qcow2, "cluster_size=8k", OutFormat::Zst),
        request(DiskFormat::Vhd, "subformat=fixed,force_size", OutFormat::Xz),
        request(DiskFormat::Ova, "", OutFormat::Raw),
        request(DiskFormat::Raw, "", OutFormat::TarGz),
        request(DiskFormat::Raw, "", OutFormat::Gz),
        request(DiskFormat::Qcow2, "cluster_size=8k", OutFormat::TarGz),
    ];
    for req in cases {
        let one = d.path().join("one");
        let two = d.path().join("two");
        convert_to(&raw, &req, &one);
        convert_to(&raw, &req, &two);
        assert!(
            fs::read(&one).unwrap() == fs::read(&two).unwrap(),
            "{req:?} differs"
        );
    }
}

#[test]
fn written_zeros_and_holes_give_the_same_output() {
    // Content-defined maps: a disk whose zeros are written is converted like a sparse one.
    let d = tempfile::tempdir().unwrap();
    let sparse = make_disk(d.path(), "sparse.raw", 24 * MIB);
    let dense = d.path().join("dense.raw");
    fs::write(&dense, fs::read(&sparse).unwrap()).unwrap();
    for req in [
        request(DiskFormat::Qcow2, "cluster_size=8k", OutFormat::Raw),
        request(DiskFormat::Ova, "", OutFormat::Raw),
        request(DiskFormat::Raw, "", OutFormat::TarGz),
    ] {
        let a = d.path().join("a");
        let b = d.path().join("b");
        convert_to(&sparse, &req, &a);
        convert_to(&dense, &req, &b);
        assert!(
            fs::read(&a).unwrap() == fs::read(&b).unwrap(),
            "{req:?} differs"
        );
    }
}

#[test]
fn sparse_8gib_disk_converts_to_small_outputs() {
    let d = tempfile::tempdir().unwrap();
    let size = 8192 * MIB;
    let raw = make_disk(d.path(), "disk.raw", size);
    // The source really is sparse: a few MiB allocated.
    let allocated = run("du", &["-k", p(&raw)]);
    let kib: u64 = allocated
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(kib < 16 * 1024, "source allocates {kib} KiB");

    let q = d.path().join("big.qcow2");
    convert_to(
        &raw,
        &request(DiskFormat::Qcow2, "cluster_size=8k", OutFormat::Raw),
        &q,
    );
    let len = fs::metadata(&q).unwrap().len();
    assert!(len < 8 * MIB, "qcow2 is {len} bytes");
    assert_eq!(qemu_info(&q, "qcow2")["virtual-size"], size);
    assert!(run("qemu-img", &["check", p(&q)]).contains("No errors were found"));
    assert_same_disk(&raw, "qcow2", &q);

    let ova = d.path().join("big.ova");
    convert_to(&raw, &request(DiskFormat::Ova, "", OutFormat::Raw), &ova);
    assert!(fs::metadata(&ova).unwrap().len() < 8 * MIB);

    let gcp = d.path().join("big.tar.gz");
    convert_to(&raw, &request(DiskFormat::Raw, "", OutFormat::TarGz), &gcp);
    assert!(fs::metadata(&gcp).unwrap().len() < 8 * MIB);
    let listing = run("tar", &["-tvzf", p(&gcp)]);
    assert!(listing.contains(&format!(" {size} ")), "{listing}");
    assert!(listing.trim_end().ends_with("disk.raw"));

    // A compressed raw still passes every byte through the compressor, but holes are never
    // read: zstd output stays tiny.
    let zst = d.path().join("big.raw.zst");
    convert_to(&raw, &request(DiskFormat::Raw, "", OutFormat::Zst), &zst);
    assert!(fs::metadata(&zst).unwrap().len() < 8 * MIB);
    let listed = run("zstd", &["-l", "-v", p(&zst)]);
    assert!(listed.contains("Check: XXH64"), "{listed}");
}

#[test]
fn unsupported_options_are_rejected_before_output() {
    let d = tempfile::tempdir().unwrap();
    let raw = make_disk(d.path(), "disk.raw", 24 * MIB);
    let mut sink = Vec::new();
    let levels = CompressionLevels::default();
    let bad = request(DiskFormat::Qcow2, "compat=0.10", OutFormat::Raw);
    assert!(convert(&raw, &bad, &levels, &mut sink).is_err());
    let bad = request(DiskFormat::Vhd, "subformat=dynamic", OutFormat::Raw);
    assert!(convert(&raw, &bad, &levels, &mut sink).is_err());
    assert!(sink.is_empty());
}
