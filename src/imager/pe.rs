//! PE32+ (EFI application) header parsing and section appending, as the UKI assembly needs it
//! (imager spec §7.2). Hand-written over byte slices: only the DOS header, the COFF header, the
//! optional header and the section table are read; section data is copied, never interpreted.
//!
//! The writer is streaming: every size is known up front (payloads come with their length), so
//! the headers are written first and each section's bytes are copied from its reader straight to
//! the output. Signing (Authenticode) is a separate, later step over the produced file.

use std::io::{self, Read, Write};

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

const DOS_HEADER_LEN: usize = 64;
const COFF_LEN: usize = 20;
const SECTION_HEADER_LEN: usize = 40;
/// Fixed part of the PE32+ optional header (before the data directories).
const OPT_FIXED_LEN: usize = 112;

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
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Underlying error.
        source: io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> PeError {
    let context = context.into();
    move |source| PeError::Io { context, source }
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

    fn write(&self, out: &mut Vec<u8>) {
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

    fn write(&self, out: &mut Vec<u8>) {
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

/// What to do with a stub that carries a COFF symbol table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SymbolTable {
    /// Refuse the stub (upstream behaviour: "must have no COFF symbol/string table").
    #[default]
    Reject,
    /// Leave the (debug-only, never loaded) table out and zero its pointer and count.
    Drop,
}

/// Knobs of the PE assembly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssembleOptions {
    /// COFF TimeDateStamp (SOURCE_DATE_EPOCH for reproducible builds).
    pub timestamp: u32,
    /// Stubs with a COFF symbol table: reject or drop the table.
    pub symbol_table: SymbolTable,
}

impl Default for AssembleOptions {
    fn default() -> Self {
        AssembleOptions {
            // SOURCE_DATE_EPOCH fits u32 until 2106.
            timestamp: u32::try_from(super::SOURCE_DATE_EPOCH).unwrap_or(u32::MAX),
            symbol_table: SymbolTable::Reject,
        }
    }
}

/// A section to append: its name and a reader yielding exactly `len` bytes.
pub struct NewSection<'r> {
    /// Section name (at most 8 bytes).
    pub name: String,
    /// Exact payload length.
    pub len: u64,
    /// The payload.
    pub data: Box<dyn Read + 'r>,
}

impl<'r> NewSection<'r> {
    /// A section from in-memory bytes.
    pub fn bytes(name: &str, data: impl AsRef<[u8]> + 'r) -> NewSection<'r> {
        let len = data.as_ref().len() as u64;
        NewSection {
            name: name.to_string(),
            len,
            data: Box::new(io::Cursor::new(data)),
        }
    }
}

/// Where everything went in an assembled image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeLayout {
    /// SizeOfHeaders of the output.
    pub size_of_headers: u32,
    /// SizeOfImage of the output.
    pub size_of_image: u32,
    /// Every section header of the output, stub sections first.
    pub sections: Vec<SectionHeader>,
    /// Total file length.
    pub file_size: u64,
}

fn to_u32(v: u64, what: &str) -> Result<u32, PeError> {
    u32::try_from(v).map_err(|_| PeError::TooLarge(format!("{what} = {v:#x} exceeds 32 bits")))
}

/// Validates `stub` as a UKI stub (PE32+, `.sbat` present, symbol-table policy) and returns its headers.
pub fn parse_stub(stub: &[u8], policy: SymbolTable) -> Result<PeHeaders, PeError> {
    let h = PeHeaders::parse(stub)?;
    let (pointer, count) = (h.coff.pointer_to_symbol_table, h.coff.number_of_symbols);
    if (pointer != 0 || count != 0) && policy == SymbolTable::Reject {
        return Err(PeError::SymbolTable { pointer, count });
    }
    for (what, v) in [
        ("SectionAlignment", h.section_alignment()),
        ("FileAlignment", h.file_alignment()),
    ] {
        if v == 0 || !v.is_power_of_two() {
            return Err(PeError::Invalid(format!(
                "{what} {v:#x} is not a power of two"
            )));
        }
    }
    if h.sections.is_empty() {
        return Err(PeError::Invalid("the stub has no sections".into()));
    }
    for s in &h.sections {
        h.raw_data(stub, s)?;
    }
    if h.section(".sbat").is_none() {
        return Err(PeError::MissingSection(".sbat".into()));
    }
    Ok(h)
}

/// Computes the output headers: stub sections re-placed, `new` sections (name, length) appended.
pub fn plan(
    stub: &PeHeaders,
    new: &[(&str, u64)],
    opts: &AssembleOptions,
) -> Result<(Vec<u8>, PeLayout), PeError> {
    let sa = u64::from(stub.section_alignment());
    let fa = u64::from(stub.file_alignment());
    let n = stub.sections.len() + new.len();
    let n16 = u16::try_from(n).map_err(|_| PeError::TooLarge(format!("{n} sections")))?;
    let opt_len = stub.optional.len() as u64;
    // Upstream forgets the 4-byte PE signature here (spec §12.5); we count it.
    let headers_end = u64::from(PE_OFFSET) + 4 + COFF_LEN as u64 + opt_len + 40 * n as u64;
    let size_of_headers = align_up(headers_end, fa);
    let first_va = stub
        .sections
        .iter()
        .map(|s| u64::from(s.virtual_address))
        .min()
        .unwrap_or(u64::MAX);
    if size_of_headers > first_va {
        return Err(PeError::HeaderOverlap {
            size_of_headers,
            first_va,
        });
    }

    let mut sections = Vec::with_capacity(n);
    let mut file_off = size_of_headers;
    let mut mem_end = 0u64;
    for s in &stub.sections {
        let raw = u64::from(s.size_of_raw_data);
        let pointer = if raw == 0 { 0 } else { file_off };
        file_off += raw;
        mem_end = mem_end.max(u64::from(s.virtual_address) + u64::from(s.memory_size()));
        sections.push(SectionHeader {
            pointer_to_raw_data: to_u32(pointer, "PointerToRawData")?,
            pointer_to_relocations: 0,
            pointer_to_linenumbers: 0,
            number_of_relocations: 0,
            number_of_linenumbers: 0,
            ..s.clone()
        });
    }
    let mut va = align_up(mem_end, sa);
    for (name, len) in new {
        let raw = align_up(*len, fa);
        sections.push(SectionHeader {
            name: section_name(name)?,
            virtual_size: to_u32(*len, "VirtualSize")?,
            virtual_address: to_u32(va, "VirtualAddress")?,
            size_of_raw_data: to_u32(raw, "SizeOfRawData")?,
            pointer_to_raw_data: to_u32(if raw == 0 { 0 } else { file_off }, "PointerToRawData")?,
            pointer_to_relocations: 0,
            pointer_to_linenumbers: 0,
            number_of_relocations: 0,
            number_of_linenumbers: 0,
            characteristics: APPENDED_SECTION_CHARACTERISTICS,
        });
        file_off += raw;
        mem_end = va + len;
        va = align_up(mem_end, sa);
    }
    let size_of_image = to_u32(align_up(mem_end, sa), "SizeOfImage")?;
    let (mut init, mut code) = (0u64, 0u64);
    for s in &sections {
        if s.characteristics & SCN_CNT_INITIALIZED_DATA != 0 {
            init += u64::from(s.size_of_raw_data);
        } else {
            code += u64::from(s.size_of_raw_data);
        }
    }

    let mut out = Vec::with_capacity(size_of_headers as usize);
    out.extend_from_slice(&stub.dos);
    out[0x3C..0x40].copy_from_slice(&PE_OFFSET.to_le_bytes());
    out.resize(PE_OFFSET as usize, 0);
    out.extend_from_slice(b"PE\0\0");
    let mut coff = stub.coff;
    coff.number_of_sections = n16;
    coff.time_date_stamp = opts.timestamp;
    coff.pointer_to_symbol_table = 0;
    coff.number_of_symbols = 0;
    coff.write(&mut out);
    let mut opt = stub.optional.clone();
    opt[2] = 0; // MajorLinkerVersion
    opt[3] = 0; // MinorLinkerVersion
    opt[4..8].copy_from_slice(&to_u32(code, "SizeOfCode")?.to_le_bytes());
    opt[8..12].copy_from_slice(&to_u32(init, "SizeOfInitializedData")?.to_le_bytes());
    opt[56..60].copy_from_slice(&size_of_image.to_le_bytes());
    opt[60..64].copy_from_slice(&to_u32(size_of_headers, "SizeOfHeaders")?.to_le_bytes());
    opt[64..68].copy_from_slice(&0u32.to_le_bytes()); // CheckSum: 0 like upstream
    if stub.data_directory(DIR_SECURITY).is_some() {
        // A signed stub's certificate table points past its old sections; the signature cannot
        // survive assembly anyway, so drop it instead of leaving a dangling file offset.
        let at = OPT_FIXED_LEN + DIR_SECURITY * 8;
        opt[at..at + 8].fill(0);
    }
    out.extend_from_slice(&opt);
    for s in &sections {
        s.write(&mut out);
    }
    out.resize(size_of_headers as usize, 0);
    let layout = PeLayout {
        size_of_headers: to_u32(size_of_headers, "SizeOfHeaders")?,
        size_of_image,
        sections,
        file_size: file_off,
    };
    Ok((out, layout))
}

const ZEROS: [u8; 4096] = [0u8; 4096];

fn write_zeros(out: &mut impl Write, mut n: u64) -> io::Result<()> {
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        out.write_all(&ZEROS[..k])?;
        n -= k as u64;
    }
    Ok(())
}

/// Copies exactly `len` bytes of `section` to `out`; fails when the reader is shorter or longer.
fn copy_exact(section: &mut NewSection<'_>, out: &mut impl Write) -> Result<(), PeError> {
    let name = section.name.clone();
    let mut limited = (&mut section.data).take(section.len);
    let copied = io::copy(&mut limited, out).map_err(io_err(format!("copy section {name}")))?;
    if copied != section.len {
        return Err(PeError::PayloadLength {
            name,
            expected: section.len,
            actual: copied,
        });
    }
    let mut probe = [0u8; 1];
    let extra = section
        .data
        .read(&mut probe)
        .map_err(io_err(format!("read section {name}")))?;
    if extra != 0 {
        return Err(PeError::PayloadLength {
            name,
            expected: section.len,
            actual: section.len + 1,
        });
    }
    Ok(())
}

/// Writes `stub` with `sections` appended (imager spec §7.2) to `out`, streaming the payloads.
pub fn append_sections(
    stub: &[u8],
    sections: Vec<NewSection<'_>>,
    opts: &AssembleOptions,
    out: &mut impl Write,
) -> Result<PeLayout, PeError> {
    let headers = parse_stub(stub, opts.symbol_table)?;
    let names: Vec<(&str, u64)> = sections.iter().map(|s| (s.name.as_str(), s.len)).collect();
    let (header_bytes, layout) = plan(&headers, &names, opts)?;
    out.write_all(&header_bytes)
        .map_err(io_err("write PE headers"))?;
    for s in &headers.sections {
        out.write_all(headers.raw_data(stub, s)?)
            .map_err(io_err(format!("write section {}", s.name_str())))?;
    }
    let appended = &layout.sections[headers.sections.len()..];
    for (mut section, header) in sections.into_iter().zip(appended) {
        copy_exact(&mut section, out)?;
        write_zeros(out, u64::from(header.size_of_raw_data) - section.len)
            .map_err(io_err(format!("pad section {}", section.name)))?;
    }
    out.flush().map_err(io_err("flush PE output"))?;
    Ok(layout)
}
