//! The BOOT partition of GRUB disk images (imager spec §5.4): XFS made by `mkfs.xfs` (Debian
//! `xfsprogs`) from a prototype file, as a separate image file that the caller copies into
//! the disk. No mounting, no root.
//!
//! Differences from upstream, forced by Debian 12's xfsprogs 6.1 and documented in
//! `docs/imager-disk.md`:
//! * the feature set of the target's config ([`XfsFeatures`]) is passed as options instead of
//!   `-c options=/usr/share/xfsprogs/mkfs/lts_<x>.conf`: 6.1 ships no 6.6+ configs, and its
//!   own `lts_6.1.conf` puts `nrext64` under `[metadata]`, which its mkfs refuses; 6.1 cannot
//!   make `lts_6.18`'s `exchange` and `parent`, and `nrext64` is only set when the release's
//!   GRUB can read it (≥ 2.12);
//! * mkfs 6.1 stamps inodes with the wall clock, so [`normalize_inode_times`] rewrites every
//!   inode's timestamps to `SOURCE_DATE_EPOCH` (and its CRC) for reproducible images.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use uuid::Uuid;

use super::sparse::data_regions;
use crate::imager::SOURCE_DATE_EPOCH;
use crate::imager::error::ImagerError;
use crate::imager::tool::ToolRun;

/// The mkfs tool.
pub const MKFS_XFS: &str = "mkfs.xfs";
/// The first GRUB release whose XFS reader accepts the `nrext64` incompat feature.
const GRUB_READS_NREXT64: (u32, u32) = (2, 12);

/// The features of an xfsprogs mkfs config (`lts_6.1` … `lts_6.18`) that xfsprogs 6.1 can
/// make. Common to all: `bigtime crc finobt inobtcount reflink sparse` on, `metadir` off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XfsFeatures {
    /// Reverse-mapping btree (`lts_6.6` and later; GRUB ignores this read-only-compatible one).
    pub rmapbt: bool,
    /// 64-bit extent counters (`lts_6.6` and later; an incompat feature GRUB < 2.12 refuses).
    pub nrext64: bool,
}

impl XfsFeatures {
    /// The features of `config` (`Quirks::xfs_mkfs_config`) for a BOOT that GRUB
    /// `grub_version` (from the release's `modinfo.sh`, `None` if unknown) must read:
    /// `nrext64` is left off unless that GRUB is known to read it.
    pub fn for_config(config: &str, grub_version: Option<(u32, u32)>) -> XfsFeatures {
        let v66 = config != "lts_6.1";
        XfsFeatures {
            rmapbt: v66,
            nrext64: v66 && grub_version.is_some_and(|v| v >= GRUB_READS_NREXT64),
        }
    }

    /// The `-m` option value.
    fn metadata(self) -> String {
        format!(
            "bigtime=1,crc=1,finobt=1,inobtcount=1,reflink=1,rmapbt={}",
            u8::from(self.rmapbt)
        )
    }

    /// The `-i` option value.
    fn inode(self) -> String {
        format!("sparse=1,nrext64={}", u8::from(self.nrext64))
    }
}

/// The `grub_version` (major, minor) a GRUB module directory's `modinfo.sh` declares.
pub fn grub_version(modinfo_sh: &str) -> Option<(u32, u32)> {
    let line = modinfo_sh
        .lines()
        .find_map(|l| l.trim().strip_prefix("grub_version="))?;
    let v = line.trim().trim_matches(|c| c == '"' || c == '\'');
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// One file of the filesystem.
#[derive(Debug, Clone)]
pub struct XfsFile {
    /// `/`-separated path, e.g. `A/vmlinuz`.
    pub path: String,
    /// Where its bytes are.
    pub source: PathBuf,
    /// Permission bits.
    pub mode: u32,
}

#[derive(Default)]
struct Dir {
    mode: Option<u32>,
    dirs: BTreeMap<String, Dir>,
    files: BTreeMap<String, (PathBuf, u32)>,
}

fn check_name(name: &str) -> Result<(), ImagerError> {
    if name.is_empty() || name.contains(char::is_whitespace) || name == "$" {
        return Err(ImagerError::Inconsistent(format!(
            "XFS protofile cannot hold the name {name:?}"
        )));
    }
    Ok(())
}

/// The mkfs.xfs prototype file for `files` (every owner 0:0, directories 0755 unless
/// `dir_modes` says otherwise), entries sorted by name.
pub fn protofile(files: &[XfsFile], dir_modes: &[(&str, u32)]) -> Result<String, ImagerError> {
    let mut root = Dir::default();
    for f in files {
        let parts: Vec<&str> = f.path.split('/').filter(|p| !p.is_empty()).collect();
        let Some((name, dirs)) = parts.split_last() else {
            return Err(ImagerError::Inconsistent(format!(
                "empty path {:?}",
                f.path
            )));
        };
        let mut d = &mut root;
        for p in dirs {
            check_name(p)?;
            d = d.dirs.entry((*p).to_string()).or_default();
        }
        check_name(name)?;
        let src = f
            .source
            .to_str()
            .filter(|s| !s.contains(char::is_whitespace));
        let src = src.ok_or_else(|| {
            ImagerError::Inconsistent(format!("source path {} unusable", f.source.display()))
        })?;
        d.files
            .insert((*name).to_string(), (PathBuf::from(src), f.mode));
    }
    for (path, mode) in dir_modes {
        let mut d = &mut root;
        for p in path.split('/').filter(|p| !p.is_empty()) {
            d = d.dirs.entry(p.to_string()).or_default();
        }
        d.mode = Some(*mode);
    }
    let mut out = String::from("/\n0 0\n");
    fn emit(out: &mut String, d: &Dir) {
        out.push_str(&format!("d--{:03o} 0 0\n", d.mode.unwrap_or(0o755)));
        for (name, sub) in &d.dirs {
            out.push_str(&format!("{name} "));
            emit(out, sub);
        }
        for (name, (src, mode)) in &d.files {
            out.push_str(&format!("{name} ---{mode:03o} 0 0 {}\n", src.display()));
        }
        out.push_str("$\n");
    }
    emit(&mut out, &root);
    Ok(out)
}

/// Creates `image` (exactly `size` bytes) as an XFS filesystem with `features`, labelled
/// `label` with UUID `uuid`, populated from `proto` (a file written by the caller), then
/// normalizes its inode timestamps.
#[allow(clippy::too_many_arguments)]
pub fn mkfs_xfs(
    image: &Path,
    size: u64,
    sector_size: u64,
    features: XfsFeatures,
    label: &str,
    uuid: Uuid,
    proto: &Path,
    run: &ToolRun,
) -> Result<(), ImagerError> {
    {
        let f = File::create(image)?;
        f.set_len(size)?;
    }
    let mut cmd = Command::new(run.find(MKFS_XFS));
    cmd.args(["-q", "-f", "-n", "ftype=1", "-m", &features.metadata()])
        .args(["-i", &features.inode(), "-L", label])
        .arg("-m")
        .arg(format!("uuid={uuid}"));
    if sector_size != 512 {
        cmd.arg("-s").arg(format!("size={sector_size}"));
    }
    cmd.arg("-p").arg(proto).arg(image);
    run.run(MKFS_XFS, cmd)?;
    let mut f = File::options().read(true).write(true).open(image)?;
    normalize_inode_times(&mut f, SOURCE_DATE_EPOCH)?;
    if f.metadata()?.len() != size {
        return Err(ImagerError::Inconsistent(format!(
            "{MKFS_XFS} changed the image size"
        )));
    }
    Ok(())
}

/// CRC-32C (Castagnoli), as XFS uses for metadata checksums.
pub fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    let mut crc = !0u32;
    for b in data {
        crc = table[((crc ^ u32::from(*b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// Offset of `di_crc` (little-endian CRC-32C of the whole inode with this field zeroed).
const DI_CRC: usize = 100;
/// `XFS_DIFLAG2_BIGTIME`: timestamps are nanoseconds since 1901-12-13T20:45:52Z.
const DIFLAG2_BIGTIME: u64 = 1 << 3;

fn be_u64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_be_bytes(a)
}

/// Whether `inode` is a v3 inode with a valid checksum.
fn is_v3_inode(inode: &[u8]) -> bool {
    if inode.len() < 176 || &inode[..2] != b"IN" || inode[4] != 3 {
        return false;
    }
    let stored = u32::from_le_bytes([
        inode[DI_CRC],
        inode[DI_CRC + 1],
        inode[DI_CRC + 2],
        inode[DI_CRC + 3],
    ]);
    let mut copy = inode.to_vec();
    copy[DI_CRC..DI_CRC + 4].fill(0);
    crc32c(&copy) == stored
}

/// Sets atime, mtime, ctime and crtime of a v3 inode to `epoch` and updates its CRC.
fn stamp_inode(inode: &mut [u8], epoch: u64) {
    let bigtime = be_u64(inode, 120) & DIFLAG2_BIGTIME != 0;
    let stamp: [u8; 8] = if bigtime {
        ((epoch + (1 << 31)) * 1_000_000_000).to_be_bytes()
    } else {
        let mut s = [0u8; 8];
        s[..4].copy_from_slice(&(epoch as u32).to_be_bytes());
        s
    };
    for at in [32, 40, 48, 144] {
        inode[at..at + 8].copy_from_slice(&stamp);
    }
    inode[DI_CRC..DI_CRC + 4].fill(0);
    let crc = crc32c(inode);
    inode[DI_CRC..DI_CRC + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Rewrites the timestamps of every inode of a v5 (CRC) XFS image to `epoch`. Inodes are found
/// by scanning the written regions at inode-size steps for a v3 inode whose CRC verifies.
/// Returns how many inodes were stamped.
pub fn normalize_inode_times(f: &mut File, epoch: u64) -> Result<usize, ImagerError> {
    let mut sb = [0u8; 512];
    f.seek(SeekFrom::Start(0))?;
    f.read_exact(&mut sb)?;
    if &sb[..4] != b"XFSB" || u16::from_be_bytes([sb[100], sb[101]]) & 0xF != 5 {
        return Err(ImagerError::Inconsistent("not a v5 XFS filesystem".into()));
    }
    let inode_size = usize::from(u16::from_be_bytes([sb[104], sb[105]]));
    if !(256..=2048).contains(&inode_size) || !inode_size.is_power_of_two() {
        return Err(ImagerError::Inconsistent(format!(
            "XFS inode size {inode_size}"
        )));
    }
    let mut count = 0;
    let chunk = 1usize << 20;
    let mut buf = vec![0u8; chunk];
    for (start, end) in data_regions(f)? {
        let mut pos = start - start % inode_size as u64;
        while pos < end {
            let n = ((end - pos) as usize).min(chunk);
            let n = n - n % inode_size;
            if n == 0 {
                break;
            }
            f.seek(SeekFrom::Start(pos))?;
            f.read_exact(&mut buf[..n])?;
            let mut dirty = false;
            for inode in buf[..n].chunks_exact_mut(inode_size) {
                if is_v3_inode(inode) {
                    stamp_inode(inode, epoch);
                    dirty = true;
                    count += 1;
                }
            }
            if dirty {
                f.seek(SeekFrom::Start(pos))?;
                f.write_all(&buf[..n])?;
            }
            pos += n as u64;
        }
    }
    f.flush()?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_follow_the_config_and_what_grub_reads() {
        let f = |config, grub| {
            let x = XfsFeatures::for_config(config, grub);
            (x.metadata(), x.inode())
        };
        let m = |rmapbt| format!("bigtime=1,crc=1,finobt=1,inobtcount=1,reflink=1,rmapbt={rmapbt}");
        assert_eq!(
            f("lts_6.1", Some((2, 12))),
            (m(0), "sparse=1,nrext64=0".into())
        );
        for config in ["lts_6.6", "lts_6.12", "lts_6.18"] {
            assert_eq!(
                f(config, Some((2, 12))),
                (m(1), "sparse=1,nrext64=1".into())
            );
            assert_eq!(f(config, Some((3, 0))), (m(1), "sparse=1,nrext64=1".into()));
            assert_eq!(f(config, Some((2, 6))), (m(1), "sparse=1,nrext64=0".into()));
            assert_eq!(f(config, None), (m(1), "sparse=1,nrext64=0".into()));
        }
    }

    #[test]
    fn each_feature_set_is_made_and_checks_clean() {
        let tool = |name: &str| {
            super::super::tools::find(name)
                .unwrap_or_else(|| panic!("{name} not found: install Debian package xfsprogs"))
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kernel");
        std::fs::write(&file, b"not a kernel").unwrap();
        let proto = dir.path().join("proto");
        let files = [XfsFile {
            path: "A/vmlinuz".into(),
            source: file,
            mode: 0o644,
        }];
        std::fs::write(&proto, protofile(&files, &[]).unwrap()).unwrap();
        let image = dir.path().join("BOOT.img");
        for (config, grub, on, off) in [
            (
                "lts_6.1",
                Some((2, 12)),
                &["REFLINK", "BIGTIME"][..],
                &["RMAPBT", "NREXT64"][..],
            ),
            ("lts_6.12", Some((2, 6)), &["RMAPBT"][..], &["NREXT64"][..]),
            (
                "lts_6.12",
                Some((2, 12)),
                &["RMAPBT", "NREXT64"][..],
                &[][..],
            ),
        ] {
            let features = XfsFeatures::for_config(config, grub);
            mkfs_xfs(
                &image,
                300 << 20,
                512,
                features,
                "BOOT",
                Uuid::nil(),
                &proto,
                &ToolRun::default(),
            )
            .unwrap();
            let out = Command::new(tool("xfs_db"))
                .args(["-r", "-c", "version"])
                .arg(&image)
                .output()
                .unwrap();
            let version = String::from_utf8_lossy(&out.stdout);
            for f in on {
                assert!(
                    version.contains(f),
                    "{config} {grub:?}: {f} missing: {version}"
                );
            }
            for f in off {
                assert!(
                    !version.contains(f),
                    "{config} {grub:?}: {f} set: {version}"
                );
            }
            let repair = Command::new(tool("xfs_repair"))
                .args(["-n", "-f"])
                .arg(&image)
                .output()
                .unwrap();
            assert!(
                repair.status.success(),
                "{config}: {}",
                String::from_utf8_lossy(&repair.stderr)
            );
        }
    }

    #[test]
    fn grub_version_from_modinfo() {
        let sh = "#!/bin/bash\ngrub_target_cc='gcc-12'\ngrub_version=\"2.06\"\ngrub_package_version=\"2.06-13+deb12u2\"\n";
        assert_eq!(grub_version(sh), Some((2, 6)));
        assert_eq!(grub_version("grub_version=\"2.12\"\n"), Some((2, 12)));
        assert_eq!(grub_version("grub_version='2.12~rc1'"), Some((2, 12)));
        assert_eq!(grub_version("grub_package_version=\"2.12\""), None);
        assert_eq!(grub_version(""), None);
    }

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn protofile_format() {
        let files = vec![
            XfsFile {
                path: "grub/grub.cfg".into(),
                source: "/s/grub.cfg".into(),
                mode: 0o600,
            },
            XfsFile {
                path: "A/vmlinuz".into(),
                source: "/s/k".into(),
                mode: 0o644,
            },
        ];
        let p = protofile(&files, &[("grub", 0o700)]).unwrap();
        assert_eq!(
            p,
            "/\n0 0\nd--755 0 0\nA d--755 0 0\nvmlinuz ---644 0 0 /s/k\n$\n\
             grub d--700 0 0\ngrub.cfg ---600 0 0 /s/grub.cfg\n$\n$\n"
        );
        let bad = XfsFile {
            path: "a b".into(),
            source: "/s".into(),
            mode: 0o644,
        };
        assert!(protofile(&[bad], &[]).is_err());
    }

    #[test]
    fn stamping_keeps_a_valid_crc() {
        let mut inode = vec![0u8; 512];
        inode[..2].copy_from_slice(b"IN");
        inode[4] = 3;
        inode[120..128].copy_from_slice(&DIFLAG2_BIGTIME.to_be_bytes());
        let crc = crc32c(&inode);
        inode[DI_CRC..DI_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        assert!(is_v3_inode(&inode));
        stamp_inode(&mut inode, SOURCE_DATE_EPOCH);
        assert!(is_v3_inode(&inode));
        assert_eq!(
            be_u64(&inode, 40),
            (SOURCE_DATE_EPOCH + (1 << 31)) * 1_000_000_000
        );
    }
}
