//! PE32+ (EFI application) header parsing and section appending, as the UKI assembly needs it
//! (imager spec §7.2). Hand-written over byte slices: only the DOS header, the COFF header, the
//! optional header and the section table are read; section data is copied, never interpreted.
//!
//! The writer is streaming: every size is known up front (payloads come with their length), so
//! the headers are written first and each section's bytes are copied from its reader straight to
//! the output. Signing (Authenticode) is a separate, later step over the produced file.

use crate::io_context::IoContext;

mod assemble;

pub use assemble::{
    AssembleOptions, NewSection, PeLayout, SymbolTable, append_sections, parse_stub, plan,
};

/// `IMAGE_SCN_CNT_INITIALIZED_DATA`: the section holds initialized data.
pub const SCN_CNT_INITIALIZED_DATA: u32 = 0x0000_0040;
/// `IMAGE_SCN_MEM_READ`: the section is readable.
pub const SCN_MEM_READ: u32 = 0x4000_0000;
/// Characteristics of every appended section: initialized data, readable (`0x40000040`).
pub const APPENDED_SECTION_CHARACTERISTICS: u32 = SCN_CNT_INITIALIZED_DATA | SCN_MEM_READ;
/// Optional-header magic of PE32+.
pub const PE32_PLUS_MAGIC: u16 = 0x20B;
/// Where the PE signature goes in an assembled file (`e_lfanew`).
pub const PE_OFFSET: u32 = 0x80;
/// Index of the certificate table (Authenticode signature) in the data directories.
pub const DIR_SECURITY: usize = 4;

pub(crate) const DOS_HEADER_LEN: usize = 64;
pub(crate) const COFF_LEN: usize = 20;
pub(crate) const SECTION_HEADER_LEN: usize = 40;
/// Fixed part of the PE32+ optional header (before the data directories).
pub(crate) const OPT_FIXED_LEN: usize = 112;

/// Why a PE file cannot be parsed or assembled.
#[derive(Debug, thiserror::Error)]
pub enum PeError {
    /// The file ends before a header it declares.
    #[error("PE file is truncated: {0}")]
    Truncated(String),
    /// The file is not a PE image at all.
    #[error("not a PE file: {0}")]
    NotPe(String),
    /// The file is PE32 (or something else), not PE32+.
    #[error("unsupported PE optional header magic {0:#x} (need PE32+ {PE32_PLUS_MAGIC:#x})")]
    NotPe32Plus(u16),
    /// The stub carries a COFF symbol table; its file pointer would dangle after assembly.
    #[error(
        "systemd stub has a COFF symbol table ({count} symbols at file offset {pointer:#x}); strip it (objcopy --strip-all) or assemble with SymbolTable::Drop"
    )]
    SymbolTable {
        /// PointerToSymbolTable.
        pointer: u32,
        /// NumberOfSymbols.
        count: u32,
    },
    /// A required section is missing from the stub.
    #[error("systemd stub has no {0} section (a UKI stub must carry SBAT data)")]
    MissingSection(String),
    /// A header field has an impossible value.
    #[error("invalid PE header: {0}")]
    Invalid(String),
    /// The headers would grow into the first section's virtual address range.
    #[error(
        "PE headers ({size_of_headers:#x} bytes) would overlap the first section at RVA {first_va:#x}"
    )]
    HeaderOverlap {
        /// Computed SizeOfHeaders.
        size_of_headers: u64,
        /// Lowest section virtual address.
        first_va: u64,
    },
    /// A section name does not fit the 8-byte header field.
    #[error("section name {0:?} is longer than 8 bytes")]
    NameTooLong(String),
    /// Sizes or addresses exceed the 32-bit PE fields.
    #[error("PE image too large: {0}")]
    TooLarge(String),
    /// A payload reader delivered a different number of bytes than announced.
    #[error("section {name}: expected {expected} bytes from its source, got {actual}")]
    PayloadLength {
        /// Section name.
        name: String,
        /// Announced length.
        expected: u64,
        /// Bytes actually available (at least this many when longer).
        actual: u64,
    },
    /// Reading a payload or writing the output failed.
    #[error(transparent)]
    Io(#[from] IoContext),
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    b.get(off..off + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Rounds `v` up to a multiple of `align` (a power of two; 0 or 1 leave `v` as is).
pub fn align_up(v: u64, align: u64) -> u64 {
    if align <= 1 {
        v
    } else {
        v.div_ceil(align) * align
    }
}

/// The COFF file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoffHeader {
    /// Target machine (`0x8664` x86-64, `0xAA64` arm64).
    pub machine: u16,
    /// Number of section headers.
    pub number_of_sections: u16,
    /// Link time (seconds since the epoch).
    pub time_date_stamp: u32,
    /// File offset of the COFF symbol table (0 when none).
    pub pointer_to_symbol_table: u32,
    /// Number of COFF symbols.
    pub number_of_symbols: u32,
    /// Size of the optional header that follows.
    pub size_of_optional_header: u16,
    /// Image characteristics flags.
    pub characteristics: u16,
}

impl CoffHeader {
    fn parse(b: &[u8]) -> Option<CoffHeader> {
        Some(CoffHeader {
            machine: u16_at(b, 0)?,
            number_of_sections: u16_at(b, 2)?,
            time_date_stamp: u32_at(b, 4)?,
            pointer_to_symbol_table: u32_at(b, 8)?,
            number_of_symbols: u32_at(b, 12)?,
            size_of_optional_header: u16_at(b, 16)?,
            characteristics: u16_at(b, 18)?,
        })
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.machine.to_le_bytes());
        out.extend_from_slice(&self.number_of_sections.to_le_bytes());
        out.extend_from_slice(&self.time_date_stamp.to_le_bytes());
        out.extend_from_slice(&self.pointer_to_symbol_table.to_le_bytes());
        out.extend_from_slice(&self.number_of_symbols.to_le_bytes());
        out.extend_from_slice(&self.size_of_optional_header.to_le_bytes());
        out.extend_from_slice(&self.characteristics.to_le_bytes());
    }
}

/// One section header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionHeader {
    /// Raw 8-byte name, NUL padded.
    pub name: [u8; 8],
    /// Size in memory (for appended sections: the payload length).
    pub virtual_size: u32,
    /// RVA of the section.
    pub virtual_address: u32,
    /// Size of the raw data in the file (a multiple of FileAlignment).
    pub size_of_raw_data: u32,
    /// File offset of the raw data.
    pub pointer_to_raw_data: u32,
    /// File offset of relocations (0 in images).
    pub pointer_to_relocations: u32,
    /// File offset of line numbers (0 in images).
    pub pointer_to_linenumbers: u32,
    /// Number of relocations.
    pub number_of_relocations: u16,
    /// Number of line numbers.
    pub number_of_linenumbers: u16,
    /// Section flags.
    pub characteristics: u32,
}

impl SectionHeader {
    fn parse(b: &[u8]) -> Option<SectionHeader> {
        let mut name = [0u8; 8];
        name.copy_from_slice(b.get(0..8)?);
        Some(SectionHeader {
            name,
            virtual_size: u32_at(b, 8)?,
            virtual_address: u32_at(b, 12)?,
            size_of_raw_data: u32_at(b, 16)?,
            pointer_to_raw_data: u32_at(b, 20)?,
            pointer_to_relocations: u32_at(b, 24)?,
            pointer_to_linenumbers: u32_at(b, 28)?,
            number_of_relocations: u16_at(b, 32)?,
            number_of_linenumbers: u16_at(b, 34)?,
            characteristics: u32_at(b, 36)?,
        })
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.name);
        for v in [
            self.virtual_size,
            self.virtual_address,
            self.size_of_raw_data,
            self.pointer_to_raw_data,
            self.pointer_to_relocations,
            self.pointer_to_linenumbers,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.number_of_relocations.to_le_bytes());
        out.extend_from_slice(&self.number_of_linenumbers.to_le_bytes());
        out.extend_from_slice(&self.characteristics.to_le_bytes());
    }

    /// The name as text (up to the first NUL).
    pub fn name_str(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(8);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }

    /// Bytes the section occupies in memory (VirtualSize, or the raw size when that is 0).
    pub fn memory_size(&self) -> u32 {
        if self.virtual_size == 0 {
            self.size_of_raw_data
        } else {
            self.virtual_size
        }
    }
}

/// Encodes a section name into the 8-byte header field.
pub fn section_name(name: &str) -> Result<[u8; 8], PeError> {
    let bytes = name.as_bytes();
    if bytes.len() > 8 || bytes.contains(&0) {
        return Err(PeError::NameTooLong(name.to_string()));
    }
    let mut out = [0u8; 8];
    out[..bytes.len()].copy_from_slice(bytes);
    Ok(out)
}

/// The parsed headers of a PE32+ image.
#[derive(Debug, Clone)]
pub struct PeHeaders {
    /// The 64-byte DOS header.
    pub dos: [u8; DOS_HEADER_LEN],
    /// Offset of the `PE\0\0` signature.
    pub e_lfanew: u32,
    /// The COFF header.
    pub coff: CoffHeader,
    /// The optional header, raw (`size_of_optional_header` bytes).
    pub optional: Vec<u8>,
    /// The section table, in file order.
    pub sections: Vec<SectionHeader>,
}

impl PeHeaders {
    /// Parses the headers from `bytes` (the whole file, or at least its first SizeOfHeaders bytes).
    pub fn parse(bytes: &[u8]) -> Result<PeHeaders, PeError> {
        let dos_slice = bytes
            .get(..DOS_HEADER_LEN)
            .ok_or_else(|| PeError::Truncated("no complete DOS header".into()))?;
        if &dos_slice[..2] != b"MZ" {
            return Err(PeError::NotPe("no MZ signature".into()));
        }
        let mut dos = [0u8; DOS_HEADER_LEN];
        dos.copy_from_slice(dos_slice);
        let e_lfanew = u32_at(bytes, 0x3C).unwrap_or(0);
        let pe = e_lfanew as usize;
        match bytes.get(pe..pe + 4) {
            Some(b"PE\0\0") => {}
            Some(_) => return Err(PeError::NotPe(format!("no PE signature at {pe:#x}"))),
            None => {
                return Err(PeError::Truncated(format!(
                    "e_lfanew {pe:#x} is past the end"
                )));
            }
        }
        let coff = bytes
            .get(pe + 4..pe + 4 + COFF_LEN)
            .and_then(CoffHeader::parse)
            .ok_or_else(|| PeError::Truncated("COFF header".into()))?;
        let opt_start = pe + 4 + COFF_LEN;
        let opt_len = usize::from(coff.size_of_optional_header);
        let optional = bytes
            .get(opt_start..opt_start + opt_len)
            .ok_or_else(|| PeError::Truncated("optional header".into()))?
            .to_vec();
        let magic = u16_at(&optional, 0).unwrap_or(0);
        if magic != PE32_PLUS_MAGIC {
            return Err(PeError::NotPe32Plus(magic));
        }
        if opt_len < OPT_FIXED_LEN {
            return Err(PeError::Invalid(format!(
                "optional header is {opt_len} bytes, PE32+ needs at least {OPT_FIXED_LEN}"
            )));
        }
        let headers = PeHeaders {
            dos,
            e_lfanew,
            coff,
            optional,
            sections: Vec::new(),
        };
        let dirs = headers.number_of_rva_and_sizes() as usize;
        if OPT_FIXED_LEN + dirs * 8 > opt_len {
            return Err(PeError::Invalid(format!(
                "{dirs} data directories do not fit a {opt_len}-byte optional header"
            )));
        }
        let table = opt_start + opt_len;
        let count = usize::from(coff.number_of_sections);
        let mut sections = Vec::with_capacity(count);
        for i in 0..count {
            let at = table + i * SECTION_HEADER_LEN;
            let header = bytes
                .get(at..at + SECTION_HEADER_LEN)
                .and_then(SectionHeader::parse)
                .ok_or_else(|| PeError::Truncated(format!("section header {i}")))?;
            sections.push(header);
        }
        Ok(PeHeaders {
            sections,
            ..headers
        })
    }

    fn opt_u32(&self, off: usize) -> u32 {
        u32_at(&self.optional, off).unwrap_or(0)
    }

    /// SizeOfCode.
    pub fn size_of_code(&self) -> u32 {
        self.opt_u32(4)
    }
    /// SizeOfInitializedData.
    pub fn size_of_initialized_data(&self) -> u32 {
        self.opt_u32(8)
    }
    /// AddressOfEntryPoint.
    pub fn entry_point(&self) -> u32 {
        self.opt_u32(16)
    }
    /// SectionAlignment.
    pub fn section_alignment(&self) -> u32 {
        self.opt_u32(32)
    }
    /// FileAlignment.
    pub fn file_alignment(&self) -> u32 {
        self.opt_u32(36)
    }
    /// SizeOfImage.
    pub fn size_of_image(&self) -> u32 {
        self.opt_u32(56)
    }
    /// SizeOfHeaders.
    pub fn size_of_headers(&self) -> u32 {
        self.opt_u32(60)
    }
    /// CheckSum.
    pub fn checksum(&self) -> u32 {
        self.opt_u32(64)
    }
    /// Subsystem (10 = EFI application).
    pub fn subsystem(&self) -> u16 {
        u16_at(&self.optional, 68).unwrap_or(0)
    }
    /// NumberOfRvaAndSizes.
    pub fn number_of_rva_and_sizes(&self) -> u32 {
        self.opt_u32(108)
    }
    /// Data directory `index` as (RVA or file offset, size), if present.
    pub fn data_directory(&self, index: usize) -> Option<(u32, u32)> {
        if index >= self.number_of_rva_and_sizes() as usize {
            return None;
        }
        let at = OPT_FIXED_LEN + index * 8;
        Some((u32_at(&self.optional, at)?, u32_at(&self.optional, at + 4)?))
    }

    /// The first section called `name`.
    pub fn section(&self, name: &str) -> Option<&SectionHeader> {
        self.sections.iter().find(|s| s.name_str() == name)
    }

    /// The raw data of `section` within `file` (SizeOfRawData bytes).
    pub fn raw_data<'f>(
        &self,
        file: &'f [u8],
        section: &SectionHeader,
    ) -> Result<&'f [u8], PeError> {
        let start = section.pointer_to_raw_data as usize;
        let end = start + section.size_of_raw_data as usize;
        file.get(start..end).ok_or_else(|| {
            PeError::Truncated(format!(
                "section {} raw data [{start:#x}, {end:#x}) is past the end of the file ({:#x})",
                section.name_str(),
                file.len()
            ))
        })
    }

    /// The in-memory content of `section` (the first VirtualSize bytes of its raw data).
    pub fn section_bytes<'f>(
        &self,
        file: &'f [u8],
        section: &SectionHeader,
    ) -> Result<&'f [u8], PeError> {
        let raw = self.raw_data(file, section)?;
        Ok(&raw[..raw.len().min(section.virtual_size as usize)])
    }
}
