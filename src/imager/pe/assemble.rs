//! Assembly: a stub's sections re-placed, new sections appended, headers rewritten (§7.2).

use std::io::{self, Read, Write};

use super::{
    APPENDED_SECTION_CHARACTERISTICS, COFF_LEN, DIR_SECURITY, OPT_FIXED_LEN, PE_OFFSET, PeError,
    PeHeaders, SCN_CNT_INITIALIZED_DATA, SectionHeader, align_up, section_name,
};
use crate::io_context::io_err;

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
            timestamp: u32::try_from(crate::imager::SOURCE_DATE_EPOCH).unwrap_or(u32::MAX),
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
        crate::zeros::write_zeros(out, u64::from(header.size_of_raw_data) - section.len)
            .map_err(io_err(format!("pad section {}", section.name)))?;
    }
    out.flush().map_err(io_err("flush PE output"))?;
    Ok(layout)
}
