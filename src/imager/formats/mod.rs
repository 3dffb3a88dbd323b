//! Disk format conversion and output compression (imager spec §1.6, §5.9): a finished sparse
//! raw disk image file → `raw`, `qcow2`, `vhd` (fixed), `ova`, optionally compressed with
//! `.xz`, `.gz`, `.zst`, or packed as GCP's `.tar.gz`, streamed into any [`Write`].
//!
//! Nothing holds the disk in memory: holes are found with `SEEK_DATA`/`SEEK_HOLE` and never
//! read, data is copied in 1 MiB pieces, and the per-format metadata that grows with the disk
//! is at most ~1/1000 of its virtual size (qcow2 refcounts, VMDK grain tables). Outputs are
//! reproducible: the same raw bytes and settings give the same output bytes, whatever the
//! file system, thread count or clock. See `docs/imager-formats.md`.
//!
//! How the Builder calls it, once the raw disk is written to `raw` in its scratch directory:
//!
//! ```ignore
//! let req = formats::ConvertRequest::from_profile(&profile)?;
//! let mut w = self.writer()?; // BlobWriter
//! formats::convert(&raw, &req, &levels, &mut w)?;
//! let blob = w.commit()?;
//! ```

mod compress;
pub mod ova;
pub mod qcow2;
pub mod sparse;
pub mod targz;
pub mod vhd;
pub mod vmdk;
mod xz;
mod zstd_frames;

pub use compress::{Codec, CompressionLevels, Compressor, XZ_BLOCK_SIZE};

use std::io::{self, BufWriter, Write};
use std::path::Path;

use super::error::ImagerError;
use super::profile::{DiskFormat, OutFormat, OutputKind, Profile};
use crate::counting::Counting;
use sparse::{HoleWriter, RawImage};

/// Buffer between the format writers (many small records) and the compressor.
const BUFFER: usize = 1 << 20;

/// What to turn the raw disk into (from the profile's `output`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvertRequest<'a> {
    /// Disk format.
    pub disk_format: DiskFormat,
    /// qemu-img `-o` options (`cluster_size=8k`, `subformat=fixed,force_size`, or empty).
    pub disk_format_options: &'a str,
    /// Post-processing (compression or GCP tar).
    pub out_format: OutFormat,
}

impl<'a> ConvertRequest<'a> {
    /// The request of a disk-image profile (kind `image` with image options).
    pub fn from_profile(profile: &'a Profile) -> Result<Self, ImagerError> {
        let opts = match (&profile.output.kind, &profile.output.image_options) {
            (OutputKind::Image, Some(o)) => o,
            _ => {
                return Err(ImagerError::Inconsistent(
                    "disk format conversion needs an image profile with image options".into(),
                ));
            }
        };
        Ok(ConvertRequest {
            disk_format: opts.disk_format,
            disk_format_options: &opts.disk_format_options,
            out_format: profile.output.out_format,
        })
    }
}

/// The result of a conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Converted {
    /// Bytes written to the output.
    pub written: u64,
    /// Virtual size of the source disk.
    pub disk_size: u64,
}

/// Converts the raw disk image at `raw` as `req` asks and streams the result into `out`.
/// Intermediate files (the OVA's VMDK, a non-raw disk inside `.tar.gz`) go into `raw`'s
/// directory and are deleted on return.
pub fn convert(
    raw: &Path,
    req: &ConvertRequest<'_>,
    levels: &CompressionLevels,
    out: &mut dyn Write,
) -> Result<Converted, ImagerError> {
    levels.validate()?;
    check_options(req)?;
    let scratch = raw
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let img = RawImage::open(raw)?;
    let mut counting = Counting::new(out);
    let codec = match req.out_format {
        OutFormat::Raw => Codec::None,
        OutFormat::Xz => Codec::Xz,
        OutFormat::Gz | OutFormat::TarGz => Codec::Gzip,
        OutFormat::Zst => Codec::Zstd,
    };
    let mut compressor = Compressor::new(codec, levels, &mut counting)?;
    {
        let mut buffered = BufWriter::with_capacity(BUFFER, &mut compressor);
        if req.out_format == OutFormat::TarGz {
            if req.disk_format == DiskFormat::Raw {
                targz::write_sparse_tar(&img, targz::MEMBER, &mut buffered)?;
            } else {
                // Upstream tars whatever the disk format produced, renamed to disk.raw.
                let mut hw = HoleWriter::new(tempfile::tempfile_in(scratch)?);
                {
                    let mut bw = BufWriter::with_capacity(BUFFER, &mut hw);
                    write_disk(&img, req, levels, scratch, &mut bw)?;
                    bw.flush()?;
                }
                let converted = RawImage::from_file(hw.finish()?)?;
                targz::write_sparse_tar(&converted, targz::MEMBER, &mut buffered)?;
            }
        } else {
            write_disk(&img, req, levels, scratch, &mut buffered)?;
        }
        buffered.flush()?;
    }
    compressor.finish()?;
    Ok(Converted {
        written: counting.count(),
        disk_size: img.size(),
    })
}

/// Writes the disk in `req.disk_format` (no compression) into `out`.
fn write_disk(
    img: &RawImage,
    req: &ConvertRequest<'_>,
    levels: &CompressionLevels,
    scratch: &Path,
    out: &mut dyn Write,
) -> io::Result<()> {
    match req.disk_format {
        DiskFormat::Raw => {
            let regions = img.fs_data_regions()?;
            img.copy_range(&regions, 0, img.size(), out, &mut Vec::new())
        }
        DiskFormat::Qcow2 => {
            let cluster =
                qcow2::parse_options(req.disk_format_options).map_err(io::Error::other)?;
            qcow2::write_qcow2(img, cluster, out).map(|_| ())
        }
        DiskFormat::Vhd => vhd::write_vhd(img, out),
        DiskFormat::Ova => ova::write_ova(img, levels.vmdk_deflate, scratch, out),
    }
}

/// Rejects disk format options this writer does not implement (before any output).
fn check_options(req: &ConvertRequest<'_>) -> Result<(), ImagerError> {
    let opts = req.disk_format_options;
    match req.disk_format {
        DiskFormat::Qcow2 => qcow2::parse_options(opts).map(|_| ()),
        DiskFormat::Vhd => {
            // Always a fixed VHD with force_size semantics (what azure asks for).
            for o in opts.split(',').map(str::trim).filter(|o| !o.is_empty()) {
                if !matches!(o, "subformat=fixed" | "force_size" | "force_size=on") {
                    return Err(ImagerError::Validation(format!(
                        "unsupported vhd option {o:?}"
                    )));
                }
            }
            Ok(())
        }
        DiskFormat::Raw | DiskFormat::Ova => Ok(()),
    }
}
