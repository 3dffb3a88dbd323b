//! What a PXE client is told to boot: the decision from its vendor class (option 60), client
//! architecture (option 93) and iPXE markers (option 77 `iPXE`, option 175), without I/O.

/// RFC 4578 / IANA client architecture types this responder answers.
pub mod arch {
    /// x86 legacy BIOS.
    pub const BIOS: u16 = 0;
    /// x64 UEFI.
    pub const X64_UEFI: u16 = 7;
    /// EFI byte code (x64 UEFI firmware reports it too).
    pub const EFI_BC: u16 = 9;
    /// arm64 UEFI.
    pub const ARM64_UEFI: u16 = 11;
    /// x64 UEFI HTTP Boot.
    pub const X64_UEFI_HTTP: u16 = 16;
    /// arm64 UEFI HTTP Boot.
    pub const ARM64_UEFI_HTTP: u16 = 19;
}

/// The kind of client an answer went to (the `client` label of the offer metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// Legacy BIOS PXE.
    Bios,
    /// x64 UEFI PXE.
    UefiX64,
    /// arm64 UEFI PXE.
    UefiArm64,
    /// iPXE (already chainloaded): gets the HTTP boot script.
    Ipxe,
    /// UEFI HTTP Boot.
    Http,
}

impl ClientKind {
    /// Every kind, for registering metrics at zero.
    pub const ALL: [ClientKind; 5] = [
        ClientKind::Bios,
        ClientKind::UefiX64,
        ClientKind::UefiArm64,
        ClientKind::Ipxe,
        ClientKind::Http,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            ClientKind::Bios => "bios",
            ClientKind::UefiX64 => "uefi-x64",
            ClientKind::UefiArm64 => "uefi-arm64",
            ClientKind::Ipxe => "ipxe",
            ClientKind::Http => "http",
        }
    }
}

/// The vendor class family of option 60.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// `PXEClient...`: PXE firmware or iPXE.
    Pxe,
    /// `HTTPClient...`: UEFI HTTP Boot.
    Http,
}

impl Vendor {
    /// The family of an option 60 value, `None` for anything else.
    pub fn of(class: &[u8]) -> Option<Vendor> {
        if class.starts_with(b"PXEClient") {
            Some(Vendor::Pxe)
        } else if class.starts_with(b"HTTPClient") {
            Some(Vendor::Http)
        } else {
            None
        }
    }

    /// The option 60 value an answer carries.
    pub fn class(self) -> &'static [u8] {
        match self {
            Vendor::Pxe => b"PXEClient",
            Vendor::Http => b"HTTPClient",
        }
    }
}

/// What the decision needs to know about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// Option 60 family, `None` when absent or neither PXE nor HTTP Boot.
    pub vendor: Option<Vendor>,
    /// First architecture of option 93, `None` when absent.
    pub arch: Option<u16>,
    /// User class `iPXE` (option 77) or iPXE's encapsulated options (175) present.
    pub ipxe: bool,
}

/// The boot files on offer and where HTTP URLs point.
#[derive(Debug, Clone)]
pub struct BootFiles {
    /// TFTP file for BIOS.
    pub bios: String,
    /// File for x64 UEFI (TFTP, and over HTTP for HTTP Boot).
    pub uefi: String,
    /// File for arm64 UEFI, offered only while it exists.
    pub arm64: String,
    /// HTTP base URL of the appliance as machines reach it (no trailing `/`).
    pub http_base: String,
}

impl BootFiles {
    /// The iPXE script URL iPXE clients get.
    pub fn script_url(&self) -> String {
        format!("{}/pxe/boot.ipxe", self.http_base)
    }

    /// The HTTP URL of a boot file (served from `tftp.root` by `GET /pxe/ipxe/{file}`).
    pub fn file_url(&self, file: &str) -> String {
        format!("{}/pxe/ipxe/{file}", self.http_base)
    }
}

/// Where the client is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootFile {
    /// A file on the appliance's TFTP server (next-server = the advertised address).
    Tftp(String),
    /// An HTTP URL.
    Url(String),
}

/// An answer to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// What kind of client it goes to.
    pub kind: ClientKind,
    /// What it boots.
    pub boot: BootFile,
    /// The option 60 it carries (the client's family echoed).
    pub vendor: Vendor,
    /// Whether option 43 carries PXE_DISCOVERY_CONTROL = 8 ("boot the file named here, no boot
    /// server discovery"). Sent to BIOS and iPXE; UEFI PXE firmware is left to ask on the PXE
    /// port instead, which every UEFI implementation does (some ignore offers that bypass
    /// discovery).
    pub discovery_control: bool,
    /// A file of `tftp.root` that must exist for the answer to be sent (the arm64 binary).
    pub requires: Option<String>,
}

/// Why a request gets no answer (the `reason` label of the ignored metric).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignore {
    /// Option 60 is neither `PXEClient` nor `HTTPClient`: an ordinary DHCP client.
    NotPxe,
    /// An architecture without a boot file here (e.g. 32-bit UEFI).
    UnsupportedArch(Option<u16>),
}

impl Ignore {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Ignore::NotPxe => "not-pxe",
            Ignore::UnsupportedArch(_) => "unsupported-arch",
        }
    }
}

/// Decides the answer to `client`.
pub fn decide(client: &Client, files: &BootFiles) -> Result<Answer, Ignore> {
    let vendor = client.vendor.ok_or(Ignore::NotPxe)?;
    if client.ipxe {
        return Ok(Answer {
            kind: ClientKind::Ipxe,
            boot: BootFile::Url(files.script_url()),
            vendor,
            discovery_control: vendor == Vendor::Pxe,
            requires: None,
        });
    }
    // PXE clients from before RFC 4578 send no option 93: they are x86 BIOS.
    let arch = match (vendor, client.arch) {
        (Vendor::Pxe, None) => arch::BIOS,
        (Vendor::Http, None) => return Err(Ignore::UnsupportedArch(None)),
        (_, Some(a)) => a,
    };
    let (kind, file, requires) = match arch {
        arch::BIOS if vendor == Vendor::Pxe => (ClientKind::Bios, &files.bios, false),
        arch::X64_UEFI | arch::EFI_BC | arch::X64_UEFI_HTTP => {
            (ClientKind::UefiX64, &files.uefi, false)
        }
        arch::ARM64_UEFI | arch::ARM64_UEFI_HTTP => (ClientKind::UefiArm64, &files.arm64, true),
        other => return Err(Ignore::UnsupportedArch(Some(other))),
    };
    let requires = requires.then(|| file.clone());
    Ok(match vendor {
        Vendor::Pxe => Answer {
            kind,
            boot: BootFile::Tftp(file.clone()),
            vendor,
            discovery_control: kind == ClientKind::Bios,
            requires,
        },
        Vendor::Http => Answer {
            kind: ClientKind::Http,
            boot: BootFile::Url(files.file_url(file)),
            vendor,
            discovery_control: false,
            requires,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> BootFiles {
        BootFiles {
            bios: "undionly.kpxe".into(),
            uefi: "snponly.efi".into(),
            arm64: "ipxe-arm64.efi".into(),
            http_base: "http://192.0.2.1:8080".into(),
        }
    }

    fn pxe(arch: Option<u16>) -> Client {
        Client {
            vendor: Some(Vendor::Pxe),
            arch,
            ipxe: false,
        }
    }

    fn tftp(kind: ClientKind, file: &str, dc: bool, requires: Option<&str>) -> Answer {
        Answer {
            kind,
            boot: BootFile::Tftp(file.into()),
            vendor: Vendor::Pxe,
            discovery_control: dc,
            requires: requires.map(str::to_string),
        }
    }

    #[test]
    fn vendor_classes() {
        assert_eq!(
            Vendor::of(b"PXEClient:Arch:00000:UNDI:002001"),
            Some(Vendor::Pxe)
        );
        assert_eq!(
            Vendor::of(b"HTTPClient:Arch:00016:UNDI:003001"),
            Some(Vendor::Http)
        );
        assert_eq!(Vendor::of(b"PXEClien"), None);
        assert_eq!(Vendor::of(b"MSFT 5.0"), None);
        assert_eq!(Vendor::of(b"pxeclient"), None);
    }

    #[test]
    fn pxe_firmware_by_architecture() {
        let f = files();
        for (arch, want) in [
            (Some(0), tftp(ClientKind::Bios, "undionly.kpxe", true, None)),
            (None, tftp(ClientKind::Bios, "undionly.kpxe", true, None)),
            (
                Some(7),
                tftp(ClientKind::UefiX64, "snponly.efi", false, None),
            ),
            (
                Some(9),
                tftp(ClientKind::UefiX64, "snponly.efi", false, None),
            ),
            (
                Some(11),
                tftp(
                    ClientKind::UefiArm64,
                    "ipxe-arm64.efi",
                    false,
                    Some("ipxe-arm64.efi"),
                ),
            ),
        ] {
            assert_eq!(decide(&pxe(arch), &f), Ok(want), "arch {arch:?}");
        }
        for arch in [6, 10, 2, 0x27] {
            assert_eq!(
                decide(&pxe(Some(arch)), &f),
                Err(Ignore::UnsupportedArch(Some(arch)))
            );
        }
    }

    #[test]
    fn ipxe_gets_the_script_whatever_its_architecture() {
        let f = files();
        for arch in [None, Some(0), Some(7), Some(11), Some(6)] {
            let c = Client {
                ipxe: true,
                ..pxe(arch)
            };
            assert_eq!(
                decide(&c, &f),
                Ok(Answer {
                    kind: ClientKind::Ipxe,
                    boot: BootFile::Url("http://192.0.2.1:8080/pxe/boot.ipxe".into()),
                    vendor: Vendor::Pxe,
                    discovery_control: true,
                    requires: None,
                })
            );
        }
    }

    #[test]
    fn http_boot_gets_urls() {
        let f = files();
        let http = |arch| Client {
            vendor: Some(Vendor::Http),
            arch,
            ipxe: false,
        };
        assert_eq!(
            decide(&http(Some(16)), &f),
            Ok(Answer {
                kind: ClientKind::Http,
                boot: BootFile::Url("http://192.0.2.1:8080/pxe/ipxe/snponly.efi".into()),
                vendor: Vendor::Http,
                discovery_control: false,
                requires: None,
            })
        );
        let arm = decide(&http(Some(19)), &f).unwrap();
        assert_eq!(
            arm.boot,
            BootFile::Url("http://192.0.2.1:8080/pxe/ipxe/ipxe-arm64.efi".into())
        );
        assert_eq!(arm.requires.as_deref(), Some("ipxe-arm64.efi"));
        assert_eq!(decide(&http(None), &f), Err(Ignore::UnsupportedArch(None)));
        assert_eq!(
            decide(&http(Some(15)), &f),
            Err(Ignore::UnsupportedArch(Some(15)))
        );
        // BIOS firmware has no HTTP Boot.
        assert_eq!(
            decide(&http(Some(0)), &f),
            Err(Ignore::UnsupportedArch(Some(0)))
        );
    }

    #[test]
    fn ordinary_clients_are_ignored() {
        let f = files();
        for c in [
            Client {
                vendor: None,
                arch: Some(7),
                ipxe: false,
            },
            Client {
                vendor: None,
                arch: None,
                ipxe: true,
            },
        ] {
            assert_eq!(decide(&c, &f), Err(Ignore::NotPxe));
        }
    }
}
