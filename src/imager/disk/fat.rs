//! The EFI system partition (imager spec §5.4): FAT32 formatted and populated natively with
//! `fatfs`, directly inside the disk file (no separate `EFI.img`, no mtools).
//!
//! Deterministic like upstream's `mkfs.vfat --invariant`: volume ID `0x1234ABCD`, label `EFI`,
//! and every directory entry's times set to [`SOURCE_DATE_EPOCH`] (UTC). The cluster size is
//! `fatfs`'s choice for the partition size (dosfstools may choose another one; both are valid).
//! `fatfs` 0.3.6 leaves directories `fsck.vfat` would repair; [`super::fat_fixup`] fixes them.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::PathBuf;

use fatfs::{Date, DateTime, FatType, FileSystem, FormatVolumeOptions, FsOptions, Time};

use super::layout::PlacedPartition;
use super::sparse::Window;
use crate::imager::SOURCE_DATE_EPOCH;
use crate::imager::error::ImagerError;
use crate::io_context::IoContext;

/// `mkfs.vfat --invariant`'s volume ID.
pub const VOLUME_ID: u32 = 0x1234_ABCD;
/// Volume label (11 bytes, space padded).
pub const VOLUME_LABEL: [u8; 11] = *b"EFI        ";

/// Where the bytes of an ESP file come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file on disk (a blob, a built UKI).
    File(PathBuf),
    /// Bytes in memory (small generated files: `loader.conf`).
    Bytes(Vec<u8>),
}

/// One file of the ESP: a `/`-separated path (directories are created as needed) and its bytes.
#[derive(Debug, Clone)]
pub struct EspFile {
    /// Path inside the FAT volume, e.g. `EFI/boot/BOOTX64.efi`.
    pub path: String,
    /// Content.
    pub source: Source,
    /// Set the FAT read-only attribute (`mattrib +r`).
    pub read_only: bool,
}

impl EspFile {
    /// A file copied from `path`.
    pub fn file(path: &str, source: PathBuf) -> EspFile {
        EspFile {
            path: path.to_string(),
            source: Source::File(source),
            read_only: false,
        }
    }

    /// A file with `bytes` as content.
    pub fn bytes(path: &str, bytes: impl Into<Vec<u8>>) -> EspFile {
        EspFile {
            path: path.to_string(),
            source: Source::Bytes(bytes.into()),
            read_only: false,
        }
    }

    /// The same file, marked read-only in the FAT directory entry.
    pub fn read_only(mut self) -> EspFile {
        self.read_only = true;
        self
    }
}

/// `SOURCE_DATE_EPOCH` as a FAT time for every entry `fatfs` creates or updates.
#[derive(Debug)]
struct EpochTime;

static EPOCH_TIME: EpochTime = EpochTime;

impl fatfs::TimeProvider for EpochTime {
    fn get_current_date(&self) -> Date {
        epoch_date_time(SOURCE_DATE_EPOCH).date
    }

    fn get_current_date_time(&self) -> DateTime {
        epoch_date_time(SOURCE_DATE_EPOCH)
    }
}

/// The UTC calendar date and time of a Unix timestamp (FAT keeps 2-second resolution).
pub fn epoch_date_time(epoch: u64) -> DateTime {
    let (year, month, day) = crate::clock::civil_from_days((epoch / 86_400) as i64);
    let secs = epoch % 86_400;
    DateTime {
        date: Date {
            year: year.clamp(1980, 2107) as u16,
            month: month as u16,
            day: day as u16,
        },
        time: Time {
            hour: (secs / 3600) as u16,
            min: (secs / 60 % 60) as u16,
            sec: (secs % 60) as u16,
            millis: 0,
        },
    }
}

fn fat_err(what: &str, e: io::Error) -> ImagerError {
    IoContext::new(format!("EFI partition: {what}"), e).into()
}

/// Formats `part` of `disk` as FAT32 and writes `files` into it (sorted by path, so the
/// directory order does not depend on the caller).
pub fn write_esp(
    disk: &mut File,
    part: &PlacedPartition,
    sector_size: u64,
    files: &[EspFile],
) -> Result<(), ImagerError> {
    write_fat(
        &mut Window::new(disk, part.offset, part.size),
        sector_size,
        None,
        files,
    )
}

/// Writes a standalone FAT32 image file of `size` bytes (512-byte sectors, `cluster` bytes per
/// cluster, `None` = `fatfs`'s choice) holding `files`: the EFI boot image of an ISO
/// (`efiboot.img`, imager spec §6.3). The size must leave at least 65 525 clusters.
///
/// The volume is built in memory (fatfs does sector-sized I/O: ~10^5 small writes and seeks
/// against a file) and written once, only its non-zero 64 KiB blocks (the file stays sparse,
/// the bytes are the same). Not synced: the image is a scratch input of `xorriso`.
pub fn write_fat_image(
    path: &std::path::Path,
    size: u64,
    cluster: Option<u32>,
    files: &[EspFile],
) -> Result<(), ImagerError> {
    let len = usize::try_from(size)
        .map_err(|_| ImagerError::Validation(format!("FAT image of {size} bytes")))?;
    // Zeroed by the allocator (calloc): pages fatfs never touches cost no memory.
    let mut vol = io::Cursor::new(vec![0u8; len]);
    write_fat(&mut vol, 512, cluster, files)?;
    let bytes = vol.into_inner();
    let mut f = File::create(path)?;
    write_sparse(&mut f, &bytes)?;
    f.set_len(size)?;
    Ok(())
}

/// Block size of [`write_sparse`]'s zero detection.
const SPARSE_BLOCK: usize = 64 << 10;

/// Writes `bytes` at the start of the empty file `f`, runs of all-zero [`SPARSE_BLOCK`]s as
/// holes (the caller sets the final length).
fn write_sparse(f: &mut File, bytes: &[u8]) -> io::Result<()> {
    let mut pos = 0usize;
    while pos < bytes.len() {
        let zero = |i: usize| {
            let end = (i + SPARSE_BLOCK).min(bytes.len());
            crate::zeros::is_zero(&bytes[i..end])
        };
        let start = pos;
        let skip = zero(pos);
        while pos < bytes.len() && zero(pos) == skip {
            pos = (pos + SPARSE_BLOCK).min(bytes.len());
        }
        if !skip {
            f.seek(io::SeekFrom::Start(start as u64))?;
            f.write_all(&bytes[start..pos])?;
        }
    }
    Ok(())
}

/// Formats the volume `vol` (a partition window, or an image in memory) as FAT
/// (volume ID, label, fixed times) and writes `files` into it.
fn write_fat<V: Read + Write + Seek>(
    vol: &mut V,
    sector_size: u64,
    cluster: Option<u32>,
    files: &[EspFile],
) -> Result<(), ImagerError> {
    let bytes_per_sector = u16::try_from(sector_size)
        .map_err(|_| ImagerError::Validation(format!("sector size {sector_size} for FAT")))?;
    let opts = FormatVolumeOptions::new()
        .fat_type(FatType::Fat32)
        .bytes_per_sector(bytes_per_sector)
        .volume_id(VOLUME_ID)
        .volume_label(VOLUME_LABEL);
    let opts = match cluster {
        Some(c) => opts.bytes_per_cluster(c),
        None => opts,
    };
    fatfs::format_volume(&mut *vol, opts).map_err(|e| fat_err("format", e))?;
    let fs = FileSystem::new(
        &mut *vol,
        FsOptions::new()
            .update_accessed_date(false)
            .time_provider(&EPOCH_TIME),
    )
    .map_err(|e| fat_err("mount", e))?;
    let mut sorted: Vec<&EspFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let root = fs.root_dir();
    for f in sorted {
        let parts: Vec<&str> = f.path.split('/').filter(|p| !p.is_empty()).collect();
        let Some((name, dirs)) = parts.split_last() else {
            return Err(ImagerError::Inconsistent(format!(
                "empty ESP path {:?}",
                f.path
            )));
        };
        let mut dir = root.clone();
        for d in dirs {
            dir = match dir.open_dir(d) {
                Ok(existing) => existing,
                Err(_) => dir.create_dir(d).map_err(|e| fat_err(d, e))?,
            };
        }
        let mut out = dir.create_file(name).map_err(|e| fat_err(&f.path, e))?;
        out.truncate().map_err(|e| fat_err(&f.path, e))?;
        match &f.source {
            Source::File(p) => {
                let mut src = File::open(p).map_err(|e| fat_err(&p.display().to_string(), e))?;
                io::copy(&mut src, &mut out).map_err(|e| fat_err(&f.path, e))?;
            }
            Source::Bytes(b) => out.write_all(b).map_err(|e| fat_err(&f.path, e))?,
        }
        out.flush().map_err(|e| fat_err(&f.path, e))?;
    }
    drop(root);
    fs.unmount().map_err(|e| fat_err("unmount", e))?;
    super::fat_fixup::fix_volume(vol).map_err(|e| fat_err("fixup", e))?;
    // fatfs cannot set attributes: the read-only bit is set in the directory entry afterwards
    for f in files.iter().filter(|f| f.read_only) {
        super::fat_fixup::set_read_only(vol, &f.path).map_err(|e| fat_err(&f.path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_is_utc_calendar_time() {
        // 1559424892 = 2019-06-01 21:34:52 UTC
        let t = epoch_date_time(1_559_424_892);
        assert_eq!((t.date.year, t.date.month, t.date.day), (2019, 6, 1));
        assert_eq!((t.time.hour, t.time.min, t.time.sec), (21, 34, 52));
        let t = epoch_date_time(951_782_400); // 2000-02-29
        assert_eq!((t.date.year, t.date.month, t.date.day), (2000, 2, 29));
    }
}

#[cfg(test)]
mod fsck_tests {
    use super::*;
    use crate::imager::disk::guid::{EFI_SYSTEM_PARTITION, guid_from_label};
    use crate::imager::disk::layout::Content;

    /// A 120 MiB ESP written at 1 MiB of a sparse file passes `fsck.vfat -n` (dosfstools).
    #[test]
    fn esp_passes_fsck_vfat() {
        if !testsupport::tools::have("fsck.vfat", "dosfstools") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        let mut disk = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        disk.set_len(122 << 20).unwrap();
        let part = PlacedPartition {
            number: 1,
            label: "EFI",
            first_lba: 2048,
            last_lba: 2048 + (120 << 11) - 1,
            offset: 1 << 20,
            size: 120 << 20,
            type_guid: EFI_SYSTEM_PARTITION,
            part_guid: guid_from_label("EFI"),
            attributes: 0,
            content: Content::Vfat,
        };
        let files = vec![
            EspFile::bytes("EFI/boot/BOOTX64.efi", vec![1u8; 70_000]),
            EspFile::bytes("EFI/Linux/Talos-v1.11.0.efi", vec![2u8; 3 << 20]),
            EspFile::bytes("loader/loader.conf", "timeout 10\n"),
        ];
        write_esp(&mut disk, &part, 512, &files).unwrap();
        let esp = dir.path().join("esp");
        let mut img = File::create(&esp).unwrap();
        disk.seek(io::SeekFrom::Start(part.offset)).unwrap();
        io::copy(&mut (&mut disk).take(part.size), &mut img).unwrap();
        let out = std::process::Command::new("fsck.vfat")
            .arg("-n")
            .arg(&esp)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(
            !text.contains("Deleting") && !text.contains("uninitialized"),
            "{text}"
        );
    }
}
