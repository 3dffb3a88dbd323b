//! UKI assembly (imager spec §7.1, §7.2): synthetic and real (Debian `systemd-boot-efi`) stubs,
//! checked with our own parser and with binutils' `objdump -h` / `objdump -p`.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use image_factory::imager::SOURCE_DATE_EPOCH;
use image_factory::imager::pe::{
    APPENDED_SECTION_CHARACTERISTICS, AssembleOptions, PeError, PeHeaders, SymbolTable, align_up,
};
use image_factory::imager::uki::{
    Payload, UkiLayout, UkiParts, UkiPurpose, assemble_uki, kernel_release, os_release,
    read_kernel_release, section_names, standard_profiles,
};
use sha2::{Digest as _, Sha256};
use testsupport::tools;

const CMDLINE: &str = "talos.platform=metal console=ttyS0 init_on_alloc=1";

/// One synthetic stub section: name, RVA, data, characteristics.
type StubSection<'a> = (&'a str, u32, &'a [u8], u32);

/// Builds a minimal PE32+ EFI application with the given sections (SA 0x1000, FA 0x200),
/// the DOS header at 0x40 style (e_lfanew 0x40) so the rewrite to 0x80 is visible.
fn synth_stub(sections: &[StubSection<'_>], symtab: bool, magic: u16) -> Vec<u8> {
    let (sa, fa) = (0x1000u32, 0x200u32);
    let e_lfanew = 0x40usize;
    let mut f = vec![0u8; e_lfanew];
    f[0..2].copy_from_slice(b"MZ");
    f[0x3C..0x40].copy_from_slice(&(e_lfanew as u32).to_le_bytes());
    f.extend_from_slice(b"PE\0\0");
    let n = sections.len() as u16;
    let mut raw_ptr = 0x400u32;
    let mut table = Vec::new();
    let mut data = Vec::new();
    for (name, va, bytes, ch) in sections {
        let raw = align_up(bytes.len() as u64, u64::from(fa)) as u32;
        let mut nm = [0u8; 8];
        nm[..name.len()].copy_from_slice(name.as_bytes());
        table.extend_from_slice(&nm);
        for v in [bytes.len() as u32, *va, raw, raw_ptr, 0, 0] {
            table.extend_from_slice(&v.to_le_bytes());
        }
        table.extend_from_slice(&[0u8; 4]);
        table.extend_from_slice(&ch.to_le_bytes());
        let mut padded = bytes.to_vec();
        padded.resize(raw as usize, 0);
        data.extend_from_slice(&padded);
        raw_ptr += raw;
    }
    // COFF header.
    f.extend_from_slice(&0x8664u16.to_le_bytes());
    f.extend_from_slice(&n.to_le_bytes());
    f.extend_from_slice(&0x1234_5678u32.to_le_bytes());
    let (sym_ptr, sym_n) = if symtab { (raw_ptr, 2u32) } else { (0, 0) };
    f.extend_from_slice(&sym_ptr.to_le_bytes());
    f.extend_from_slice(&sym_n.to_le_bytes());
    f.extend_from_slice(&240u16.to_le_bytes());
    f.extend_from_slice(&0x0206u16.to_le_bytes());
    // Optional header (PE32+, 16 data directories).
    let mut opt = vec![0u8; 240];
    opt[0..2].copy_from_slice(&magic.to_le_bytes());
    opt[2] = 2;
    opt[3] = 40;
    opt[16..20].copy_from_slice(&sections[0].1.to_le_bytes()); // entry point
    opt[32..36].copy_from_slice(&sa.to_le_bytes());
    opt[36..40].copy_from_slice(&fa.to_le_bytes());
    opt[60..64].copy_from_slice(&0x400u32.to_le_bytes());
    opt[64..68].copy_from_slice(&0xABCDu32.to_le_bytes()); // a stale checksum
    opt[68..70].copy_from_slice(&10u16.to_le_bytes()); // EFI application
    opt[108..112].copy_from_slice(&16u32.to_le_bytes());
    opt[112 + 5 * 8..112 + 5 * 8 + 4].copy_from_slice(&0x2000u32.to_le_bytes()); // .reloc
    opt[112 + 5 * 8 + 4..112 + 6 * 8].copy_from_slice(&12u32.to_le_bytes());
    f.extend_from_slice(&opt);
    f.extend_from_slice(&table);
    f.resize(0x400, 0);
    f.extend_from_slice(&data);
    if symtab {
        f.extend_from_slice(&[0u8; 36]); // two symbols + empty string table
        f.extend_from_slice(&4u32.to_le_bytes());
    }
    f
}

const SBAT: &[u8] =
    b"sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md\n";

fn default_stub() -> Vec<u8> {
    synth_stub(
        &[
            (".text", 0x1000, &[0xC3; 0x300], 0x6000_0020),
            (".reloc", 0x2000, &[0u8; 12], 0x4200_0040),
            (".sbat", 0x3000, SBAT, 0x4000_0040),
        ],
        false,
        0x20B,
    )
}

/// A synthetic bzImage head announcing `release` (the rest is filler).
fn synth_kernel(release: &str, len: usize) -> Vec<u8> {
    let mut k = vec![0x90u8; len.max(0x2000)];
    k[0..2].copy_from_slice(b"MZ");
    k[0x1F1] = 15;
    k[0x202..0x206].copy_from_slice(b"HdrS");
    k[0x20E..0x210].copy_from_slice(&0x1000u16.to_le_bytes());
    let text = format!("{release} (builder@host) #1 SMP\0");
    k[0x1200..0x1200 + text.len()].copy_from_slice(text.as_bytes());
    k
}

/// A reader of `len` deterministic pseudo-random bytes (stands in for a big initramfs).
struct Noise {
    left: u64,
    state: u64,
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.left as usize);
        for b in &mut buf[..n] {
            self.state = self.state.wrapping_mul(6364136223846793005).wrapping_add(1);
            *b = (self.state >> 56) as u8;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn parts<'a>(kernel: &'a [u8], initrd_len: u64, purpose: UkiPurpose) -> UkiParts<'a> {
    UkiParts {
        osrel: os_release("Talos", "v1.11.0"),
        cmdline: CMDLINE.into(),
        uname: kernel_release(kernel),
        kernel: Payload::bytes(kernel),
        initrd: Payload::reader(
            Noise {
                left: initrd_len,
                state: 7,
            },
            initrd_len,
        ),
        profiles: standard_profiles(purpose, CMDLINE, true),
        pcrpkey: None,
        pcrsigs: Vec::new(),
    }
}

fn build(stub: &[u8], parts: UkiParts<'_>, opts: &AssembleOptions) -> (Vec<u8>, UkiLayout) {
    let mut out = Vec::new();
    let layout = assemble_uki(stub, parts, opts, &mut out).expect("assemble");
    assert_eq!(layout.file_size, out.len() as u64);
    (out, layout)
}

/// `objdump -h` rows: (name, size, vma, file offset).
fn objdump_sections(path: &Path) -> Option<Vec<(String, u64, u64, u64)>> {
    let out = Command::new("objdump").arg("-h").arg(path).output().ok()?;
    assert!(
        out.status.success(),
        "objdump -h: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let hex = |s: &str| u64::from_str_radix(s, 16).expect("objdump hex");
    let rows = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 7 && f[0].parse::<u32>().is_ok())
                .then(|| (f[1].to_string(), hex(f[2]), hex(f[3]), hex(f[5])))
        })
        .collect();
    Some(rows)
}

fn objdump_private(path: &Path) -> Option<String> {
    let out = Command::new("objdump").arg("-p").arg(path).output().ok()?;
    assert!(
        out.status.success(),
        "objdump -p: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn field(dump: &str, name: &str) -> String {
    dump.lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("{name} not in objdump -p output"))
}

/// Checks the assembled UKI with our parser and, when installed, objdump.
fn check_uki(stub: &[u8], uki: &[u8], layout: &UkiLayout, expect_names: &[&str], kernel: &[u8]) {
    let stub_h = PeHeaders::parse(stub).expect("stub parses");
    let h = PeHeaders::parse(uki).expect("UKI parses");
    assert_eq!(h.e_lfanew, 0x80);
    assert!(uki[0x40..0x80].iter().all(|&b| b == 0), "DOS stub zeroed");
    assert_eq!(h.coff.time_date_stamp, SOURCE_DATE_EPOCH as u32);
    assert_eq!(
        (h.coff.pointer_to_symbol_table, h.coff.number_of_symbols),
        (0, 0)
    );
    assert_eq!(h.checksum(), 0);
    assert_eq!(h.sections, layout.sections);
    assert_eq!(h.size_of_headers(), layout.size_of_headers);
    assert_eq!(h.size_of_image(), layout.size_of_image);
    assert_eq!(h.entry_point(), stub_h.entry_point());
    assert_eq!(
        h.data_directory(5),
        stub_h.data_directory(5),
        ".reloc directory kept"
    );
    let ns = stub_h.sections.len();
    let names: Vec<String> = h.sections.iter().map(|s| s.name_str()).collect();
    let stub_names: Vec<String> = stub_h.sections.iter().map(|s| s.name_str()).collect();
    assert_eq!(names[..ns], stub_names[..]);
    assert_eq!(
        names[ns..],
        expect_names
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()[..]
    );

    // Headers: the PE signature counts, and they end before the first section.
    let fa = u64::from(h.file_alignment());
    let sa = u64::from(h.section_alignment());
    let want = align_up(0x80 + 4 + 20 + 240 + 40 * h.sections.len() as u64, fa);
    assert_eq!(u64::from(h.size_of_headers()), want);
    // Stub sections: same bytes, new sequential offsets.
    let mut off = u64::from(h.size_of_headers());
    for (new, old) in h.sections.iter().zip(&stub_h.sections) {
        assert_eq!(new.virtual_address, old.virtual_address);
        assert_eq!(u64::from(new.pointer_to_raw_data), off);
        assert_eq!(
            h.raw_data(uki, new).unwrap(),
            stub_h.raw_data(stub, old).unwrap(),
            "{}",
            old.name_str()
        );
        off += u64::from(new.size_of_raw_data);
    }
    // Appended sections: aligned VAs after the stub, FA-rounded raw data, 0x40000040.
    let stub_end = stub_h
        .sections
        .iter()
        .map(|s| u64::from(s.virtual_address) + u64::from(s.memory_size()))
        .max()
        .unwrap();
    let mut va = align_up(stub_end, sa);
    let (mut init, mut code) = (0u64, 0u64);
    for s in &h.sections[ns..] {
        assert_eq!(u64::from(s.virtual_address), va, "{}", s.name_str());
        assert_eq!(u64::from(s.pointer_to_raw_data), off);
        assert_eq!(
            u64::from(s.size_of_raw_data),
            align_up(u64::from(s.virtual_size), fa)
        );
        assert_eq!(s.characteristics, APPENDED_SECTION_CHARACTERISTICS);
        let raw = h.raw_data(uki, s).unwrap();
        assert!(
            raw[s.virtual_size as usize..].iter().all(|&b| b == 0),
            "zero padding"
        );
        off += u64::from(s.size_of_raw_data);
        va = align_up(va + u64::from(s.virtual_size), sa);
    }
    assert_eq!(off, uki.len() as u64);
    assert_eq!(u64::from(h.size_of_image()), va);
    for s in &h.sections {
        if s.characteristics & 0x40 != 0 {
            init += u64::from(s.size_of_raw_data);
        } else {
            code += u64::from(s.size_of_raw_data);
        }
    }
    assert_eq!(u64::from(h.size_of_initialized_data()), init);
    assert_eq!(u64::from(h.size_of_code()), code);

    // Contents, byte exact.
    let content = |i: usize| h.section_bytes(uki, &h.sections[ns + i]).unwrap();
    let idx = |name: &str| expect_names.iter().position(|n| *n == name).unwrap();
    assert_eq!(
        content(idx(".osrel")),
        os_release("Talos", "v1.11.0").as_bytes()
    );
    assert_eq!(content(idx(".cmdline")), CMDLINE.as_bytes());
    assert_eq!(content(idx(".linux")), kernel);
    if let Some(u) = expect_names.iter().position(|n| *n == ".uname") {
        assert_eq!(
            Some(String::from_utf8(content(u).to_vec()).unwrap()),
            kernel_release(kernel)
        );
    }
    if let Some(p) = expect_names.iter().position(|n| *n == ".profile") {
        assert_eq!(content(p), b"ID=main");
    }
    let sbat = h.section(".sbat").unwrap();
    let stub_sbat = stub_h.section(".sbat").unwrap();
    assert_eq!(
        h.section_bytes(uki, sbat).unwrap(),
        stub_h.section_bytes(stub, stub_sbat).unwrap()
    );

    // An independent reader: binutils.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("uki.efi");
    std::fs::write(&path, uki).unwrap();
    if !tools::have("objdump", "binutils") {
        return;
    }
    let rows = objdump_sections(&path).expect("objdump -h runs");
    assert_eq!(rows.len(), h.sections.len(), "{rows:?}");
    for (i, (row, s)) in rows.iter().zip(&h.sections).enumerate() {
        assert_eq!(row.0, s.name_str());
        assert_eq!(
            row.1,
            u64::from(s.virtual_size.min(s.size_of_raw_data)),
            "{}",
            row.0
        );
        assert_eq!(row.2, u64::from(s.virtual_address), "{}", row.0);
        assert_eq!(row.3, u64::from(s.pointer_to_raw_data), "{}", row.0);
        if i >= ns {
            assert_eq!(row.2 % sa, 0, "{} VMA aligned", row.0);
        }
    }
    let p = objdump_private(&path).unwrap();
    assert_eq!(
        field(&p, "SizeOfHeaders"),
        format!("{:08x}", h.size_of_headers())
    );
    assert_eq!(
        field(&p, "SizeOfImage"),
        format!("{:08x}", h.size_of_image())
    );
    assert_eq!(field(&p, "CheckSum"), "00000000");
    assert_eq!(field(&p, "MajorLinkerVersion"), "0");
    assert!(field(&p, "Subsystem").contains("EFI application"));
}

#[test]
fn synthetic_stub_installer_uki() {
    let stub = default_stub();
    let kernel = synth_kernel("6.18.45-talos", 0x5123);
    let opts = AssembleOptions::default();
    let p = parts(&kernel, 3 << 20, UkiPurpose::Installer);
    let names = section_names(&p);
    assert_eq!(
        names,
        [
            ".osrel", ".cmdline", ".uname", ".linux", ".initrd", ".profile", ".profile", ".cmdline"
        ]
    );
    let (uki, layout) = build(&stub, p, &opts);
    check_uki(&stub, &uki, &layout, &names, &kernel);
    let h = PeHeaders::parse(&uki).unwrap();
    let reset: Vec<&[u8]> = h.sections[h.sections.len() - 2..]
        .iter()
        .map(|s| h.section_bytes(&uki, s).unwrap())
        .collect();
    assert_eq!(
        reset[0],
        b"ID=reset-maintenance\nTITLE=Reset to maintenance mode"
    );
    assert_eq!(
        reset[1],
        format!("{CMDLINE} talos.experimental.wipe=system:EPHEMERAL,STATE").as_bytes()
    );
    assert_eq!(
        h.section(".uname")
            .map(|s| h.section_bytes(&uki, s).unwrap()),
        Some(&b"6.18.45-talos"[..])
    );

    // Determinism: a second build is byte-identical.
    let (again, _) = build(&stub, parts(&kernel, 3 << 20, UkiPurpose::Installer), &opts);
    assert_eq!(Sha256::digest(&uki), Sha256::digest(&again));
}

#[test]
fn legacy_target_without_profiles_or_uname() {
    let stub = default_stub();
    let kernel = b"arm64 Image, no bzImage header".to_vec();
    let mut p = parts(&kernel, 1000, UkiPurpose::Iso);
    p.profiles = standard_profiles(UkiPurpose::Iso, CMDLINE, false);
    assert_eq!(p.uname, None);
    let names = section_names(&p);
    assert_eq!(names, [".osrel", ".cmdline", ".linux", ".initrd"]);
    let (uki, layout) = build(&stub, p, &AssembleOptions::default());
    check_uki(&stub, &uki, &layout, &names, &kernel);
}

#[test]
fn stub_problems_are_clear_errors() {
    let kernel = synth_kernel("6.1.0", 0x3000);
    let opts = AssembleOptions::default();
    let err = |stub: &[u8], opts: &AssembleOptions| {
        assemble_uki(
            stub,
            parts(&kernel, 10, UkiPurpose::Uki),
            opts,
            &mut Vec::new(),
        )
        .unwrap_err()
    };
    let sections: &[StubSection<'_>] = &[
        (".text", 0x1000, &[0xC3; 16], 0x6000_0020),
        (".sbat", 0x2000, SBAT, 0x4000_0040),
    ];

    let with_syms = synth_stub(sections, true, 0x20B);
    let e = err(&with_syms, &opts);
    assert!(matches!(e, PeError::SymbolTable { count: 2, .. }), "{e}");
    assert!(e.to_string().contains("COFF symbol table"), "{e}");
    let dropped = AssembleOptions {
        symbol_table: SymbolTable::Drop,
        ..opts
    };
    let mut out = Vec::new();
    assemble_uki(
        &with_syms,
        parts(&kernel, 10, UkiPurpose::Uki),
        &dropped,
        &mut out,
    )
    .unwrap();
    assert_eq!(PeHeaders::parse(&out).unwrap().coff.number_of_symbols, 0);

    let no_sbat = synth_stub(&sections[..1], false, 0x20B);
    let e = err(&no_sbat, &opts);
    assert!(
        matches!(e, PeError::MissingSection(_)) && e.to_string().contains(".sbat"),
        "{e}"
    );

    assert!(matches!(
        err(&synth_stub(sections, false, 0x10B), &opts),
        PeError::NotPe32Plus(0x10B)
    ));
    let stub = synth_stub(sections, false, 0x20B);
    assert!(matches!(err(&stub[..0x300], &opts), PeError::Truncated(_)));
    assert!(matches!(
        err(
            b"not a PE at all, just some bytes padding up to sixty-four bytes...",
            &opts
        ),
        PeError::NotPe(_)
    ));

    // First section right after 0x200 bytes of headers: 2 + 5 sections no longer fit.
    let mut tight = synth_stub(sections, false, 0x20B);
    let h = PeHeaders::parse(&tight).unwrap();
    let table = h.e_lfanew as usize + 4 + 20 + 240;
    tight[table + 12..table + 16].copy_from_slice(&0x200u32.to_le_bytes());
    let e = err(&tight, &opts);
    assert!(
        matches!(
            e,
            PeError::HeaderOverlap {
                first_va: 0x200,
                ..
            }
        ),
        "{e}"
    );

    // Payload readers must deliver exactly the announced length.
    for (len, announced) in [(10u64, 11u64), (12, 11)] {
        let mut p = parts(&kernel, 0, UkiPurpose::Uki);
        p.initrd = Payload::reader(
            Noise {
                left: len,
                state: 1,
            },
            announced,
        );
        let e = assemble_uki(&stub, p, &opts, &mut Vec::new()).unwrap_err();
        assert!(
            matches!(e, PeError::PayloadLength { expected: 11, .. }),
            "{e}"
        );
    }
}

/// The kit's Debian inputs: `$IF_TESTKIT_DIR/root` or the default cache, or an installed package.
fn debian_file(rel: &str) -> Option<PathBuf> {
    let kit = std::env::var("IF_TESTKIT_DIR")
        .unwrap_or_else(|_| "/var/cache/image-factory/testkit".into());
    [
        Path::new("/").join(rel),
        Path::new(&kit).join("root").join(rel),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

fn debian_kernel() -> Option<(PathBuf, String)> {
    let kit = std::env::var("IF_TESTKIT_DIR")
        .unwrap_or_else(|_| "/var/cache/image-factory/testkit".into());
    let boot = Path::new(&kit).join("root/boot");
    std::fs::read_dir(boot).ok()?.flatten().find_map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let release = name.strip_prefix("vmlinuz-")?.to_string();
        Some((e.path(), release))
    })
}

#[test]
fn real_debian_stub_and_kernel() {
    let stub_path = debian_file("usr/lib/systemd/boot/efi/linuxx64.efi.stub");
    if !tools::require(
        stub_path.is_some(),
        "no Debian systemd-boot-efi stub (Debian package systemd-boot-efi, or tests/kit/fetch-debian.sh)",
    ) {
        return;
    }
    let Some(stub_path) = stub_path else { return };
    let stub = std::fs::read(&stub_path).unwrap();
    let h = PeHeaders::parse(&stub).unwrap();
    let mut opts = AssembleOptions::default();
    if h.coff.number_of_symbols != 0 {
        // Debian's stub keeps a COFF symbol table: upstream's rule refuses it.
        let e = assemble_uki(
            &stub,
            parts(b"k", 1, UkiPurpose::Uki),
            &opts,
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(matches!(e, PeError::SymbolTable { .. }), "{e}");
        opts.symbol_table = SymbolTable::Drop;
    }
    let (kernel, release) = match debian_kernel() {
        Some((path, release)) => {
            let got = read_kernel_release(std::fs::File::open(&path).unwrap()).unwrap();
            assert_eq!(
                got.as_deref(),
                Some(release.as_str()),
                ".uname from {}",
                path.display()
            );
            (std::fs::read(&path).unwrap(), release)
        }
        None => {
            // Without the kit's kernel, a synthetic bzImage (a failure under IF_REQUIRE_TOOLS=1).
            tools::require(
                false,
                "no kit kernel (tests/kit/fetch-debian.sh): real-kernel checks",
            );
            (
                synth_kernel("6.1.0-synthetic", 0x8000),
                "6.1.0-synthetic".into(),
            )
        }
    };
    let p = parts(&kernel, 5 << 20, UkiPurpose::Iso);
    let names = section_names(&p);
    let (uki, layout) = build(&stub, p, &opts);
    check_uki(&stub, &uki, &layout, &names, &kernel);
    let out = PeHeaders::parse(&uki).unwrap();
    let uname = out.section(".uname").unwrap();
    assert_eq!(out.section_bytes(&uki, uname).unwrap(), release.as_bytes());
    let (again, _) = build(&stub, parts(&kernel, 5 << 20, UkiPurpose::Iso), &opts);
    assert!(uki == again, "two builds differ");
}
