//! Kernel command lines (imager spec §1.5): go-procfs' data model, the imager's assembly order,
//! platform and default arguments per target version, and the META environment encoding (§4.6).
//!
//! The resulting string is used verbatim for the `cmdline` asset, GRUB entries, the UKI
//! `.cmdline` section and iPXE scripts.

use std::fmt;
use std::io::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::error::ImagerError;
use super::profile::{Arch, MetaEntry, OutputKind, Profile};
use super::quirks::{Quirk, Quirks};

/// One key of a command line with its values in order (`""` renders as the bare key).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Param {
    key: String,
    values: Vec<String>,
}

/// A kernel command line with go-procfs semantics: keys keep their first position and group
/// all their values there.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cmdline {
    params: Vec<Param>,
}

/// Options of [`Cmdline::append_all`] (go-procfs `AppendAllOption`s).
#[derive(Debug, Clone, Copy, Default)]
pub struct AppendAllOptions<'a> {
    /// `-key` deletes `key`, `-key=value` deletes that value (a bare `-` is a normal arg).
    pub delete_negated: bool,
    /// Keys whose values are replaced instead of appended.
    pub overwrite: &'a [&'a str],
}

/// go-procfs `parse`: trim one trailing newline, split on whitespace, split each token at its
/// first `=`, group repeated keys under their first occurrence.
fn parse(s: &str) -> Vec<Param> {
    let mut out: Vec<Param> = Vec::new();
    for token in s.strip_suffix('\n').unwrap_or(s).split_whitespace() {
        let (key, value) = token.split_once('=').unwrap_or((token, ""));
        insert(&mut out, key, value);
    }
    out
}

fn insert(params: &mut Vec<Param>, key: &str, value: &str) {
    match params.iter_mut().find(|p| p.key == key) {
        Some(p) => p.values.push(value.to_string()),
        None => params.push(Param {
            key: key.to_string(),
            values: vec![value.to_string()],
        }),
    }
}

impl Cmdline {
    /// Parses a command line.
    pub fn parse(s: &str) -> Cmdline {
        Cmdline { params: parse(s) }
    }

    /// The values of a key, if present.
    pub fn get(&self, key: &str) -> Option<&[String]> {
        self.params
            .iter()
            .find(|p| p.key == key)
            .map(|p| p.values.as_slice())
    }

    /// Appends a value to a key (at the key's position), or adds the key at the end.
    pub fn append(&mut self, key: &str, value: &str) {
        insert(&mut self.params, key, value);
    }

    /// Replaces all values of a key in place, or adds the key at the end.
    pub fn set(&mut self, key: &str, values: Vec<String>) {
        let param = Param {
            key: key.to_string(),
            values,
        };
        match self.params.iter_mut().find(|p| p.key == key) {
            Some(p) => *p = param,
            None => self.params.push(param),
        }
    }

    /// Parses `args` (joined by spaces, repeated keys grouped) and [`set`](Self::set)s each key.
    pub fn set_all<S: AsRef<str>>(&mut self, args: &[S]) {
        for p in parse(&join(args)) {
            self.set(&p.key, p.values);
        }
    }

    /// Parses `args` (joined, grouped) and appends each key's values, honouring the options.
    pub fn append_all<S: AsRef<str>>(&mut self, args: &[S], opts: AppendAllOptions<'_>) {
        for p in parse(&join(args)) {
            if opts.delete_negated && p.key.len() > 1 && p.key.starts_with('-') {
                let target = &p.key[1..];
                if p.values.first().is_some_and(|v| v.is_empty()) {
                    self.delete_all(target);
                } else {
                    self.delete(target, &p.values);
                }
                continue;
            }
            if opts.overwrite.contains(&p.key.as_str()) {
                self.set(&p.key, p.values);
                continue;
            }
            for v in &p.values {
                self.append(&p.key, v);
            }
        }
    }

    /// Removes the listed values of a key; the key goes away when no value is left.
    pub fn delete(&mut self, key: &str, values: &[String]) {
        if let Some(i) = self.params.iter().position(|p| p.key == key) {
            self.params[i].values.retain(|v| !values.contains(v));
            if self.params[i].values.is_empty() {
                self.params.remove(i);
            }
        }
    }

    /// Removes a key with all its values.
    pub fn delete_all(&mut self, key: &str) {
        self.params.retain(|p| p.key != key);
    }
}

impl fmt::Display for Cmdline {
    /// Renders `key` or `key=value` per value, single spaces, no trailing space.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for p in &self.params {
            for v in &p.values {
                if !first {
                    f.write_str(" ")?;
                }
                first = false;
                if v.is_empty() {
                    f.write_str(&p.key)?;
                } else {
                    write!(f, "{}={v}", p.key)?;
                }
            }
        }
        Ok(())
    }
}

fn join<S: AsRef<str>>(args: &[S]) -> String {
    args.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(" ")
}

/// The platform's canonical name and its kernel args for the arch (imager spec §1.5.3);
/// unknown platforms are an error (upstream: 500).
pub fn platform_args(
    platform: &str,
    arch: Arch,
    q: &Quirks,
) -> Result<(&'static str, Vec<&'static str>), ImagerError> {
    const CLOUD: &[&str] = &["console=tty1", "console=ttyS0", "net.ifnames=0"];
    let amd = arch == Arch::Amd64;
    let (name, args): (&'static str, Vec<&'static str>) = match platform {
        "metal" => match arch {
            Arch::Amd64 if q.has(Quirk::SupportsMetalPlatformConsoleTtyS0) => {
                ("metal", vec!["console=ttyS0", "console=tty0"])
            }
            Arch::Amd64 => ("metal", vec!["console=tty0"]),
            Arch::Arm64 => ("metal", vec!["console=ttyAMA0", "console=tty0"]),
        },
        "akamai" => (
            "akamai",
            vec![
                "console=ttyS0",
                "console=tty0",
                "console=tty1",
                "net.ifnames=0",
            ],
        ),
        "alibabacloud" => ("alibabacloud", CLOUD.to_vec()),
        "aws" => {
            let mut a = CLOUD.to_vec();
            if q.has(Quirk::NvmeCoreIoTimeoutAwsOnly) {
                a.push("nvme_core.io_timeout=4294967295");
            }
            ("aws", a)
        }
        "azure" => (
            "azure",
            vec![
                "console=ttyS0,115200n8",
                "earlyprintk=ttyS0,115200",
                "rootdelay=300",
                "net.ifnames=0",
                "talos.dashboard.disabled=1",
                "sysctl.kernel.kexec_load_disabled=1",
            ],
        ),
        "cloudstack" => ("cloudstack", CLOUD.to_vec()),
        "exoscale" => ("exoscale", CLOUD.to_vec()),
        "hcloud" => ("hcloud", CLOUD.to_vec()),
        "nocloud" => ("nocloud", CLOUD.to_vec()),
        "opennebula" => ("opennebula", CLOUD.to_vec()),
        "openstack" => ("openstack", CLOUD.to_vec()),
        "digital-ocean" => (
            "digital-ocean",
            vec![
                "console=ttyS0",
                "console=tty0",
                "console=tty1",
                "net.ifnames=0",
            ],
        ),
        "equinixMetal" | "packet" if amd => ("equinixMetal", vec!["console=ttyS1,115200n8"]),
        "equinixMetal" | "packet" => ("equinixMetal", vec!["console=ttyAMA0,115200"]),
        "gcp" => (
            "gcp",
            vec![
                "console=ttyS0",
                "net.ifnames=0",
                "talos.dashboard.disabled=1",
                "sysctl.kernel.kexec_load_disabled=1",
            ],
        ),
        "oracle" | "scaleway" => {
            let name = if platform == "oracle" {
                "oracle"
            } else {
                "scaleway"
            };
            let mut a = CLOUD.to_vec();
            a.push("talos.dashboard.disabled=1");
            (name, a)
        }
        "upcloud" => ("upcloud", vec!["net.ifnames=0"]),
        "vultr" => ("vultr", vec!["net.ifnames=0"]),
        "vmware" if amd => (
            "vmware",
            vec![
                "talos.config=guestinfo",
                "console=tty0",
                "console=ttyS0",
                "earlyprintk=ttyS0,115200",
                "net.ifnames=0",
            ],
        ),
        "vmware" => (
            "vmware",
            vec![
                "talos.config=guestinfo",
                "console=tty0",
                "console=ttyAMA0",
                "net.ifnames=0",
            ],
        ),
        "container" => ("container", Vec::new()),
        other => return Err(ImagerError::UnknownPlatform(other.to_string())),
    };
    Ok((name, args))
}

/// Talos' default kernel args for the target, in emission order (imager spec §1.5.4).
pub fn default_args(q: &Quirks) -> Vec<&'static str> {
    let mut a = Vec::new();
    if !q.has(Quirk::DropInitOnAllocInArgs) {
        a.push("init_on_alloc=1");
    }
    a.extend(["slab_nomerge", "pti=on", "consoleblank=0"]);
    if !q.has(Quirk::NvmeCoreIoTimeoutAwsOnly) {
        a.push("nvme_core.io_timeout=4294967295");
    }
    a.push("printk.devkmsg=on");
    if q.has(Quirk::SupportsIma) {
        a.extend(["ima_template=ima-ng", "ima_appraise=fix", "ima_hash=sha512"]);
    }
    if q.has(Quirk::SupportsSelinux) {
        a.push("selinux=1");
    }
    if q.has(Quirk::SupportsDisablingModuleSignatureVerification) {
        a.push("module.sig_enforce=1");
    }
    if q.has(Quirk::ProcMemOverrideNever) {
        a.push("proc_mem.force_override=never");
    }
    a
}

/// SecureBoot args: `lockdown=confidentiality` for targets < 1.14, none after.
pub fn secureboot_args(q: &Quirks) -> Vec<&'static str> {
    if q.has(Quirk::ForcesLockdownConfidentiality) {
        vec!["lockdown=confidentiality"]
    } else {
        Vec::new()
    }
}

/// The environment variable carrying META values for non-disk outputs.
pub const META_ENV_VAR: &str = "INSTALLER_META_BASE64";

/// Encodes META values for `talos.environment=INSTALLER_META_BASE64=…` (imager spec §4.6):
/// `0x<key>=<value>` joined by `;`, gzipped (level 9, Go header: mtime 0, no name, OS 255) when
/// the target supports it and the text exceeds 256 bytes, then standard base64 with padding.
pub fn encode_meta(values: &[MetaEntry], q: &Quirks) -> Result<String, ImagerError> {
    let raw = values
        .iter()
        .map(|m| format!("0x{:x}={}", m.key, m.value))
        .collect::<Vec<_>>()
        .join(";");
    if q.has(Quirk::SupportsCompressedEncodedMeta) && raw.len() > 256 {
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .operating_system(255)
            .write(Vec::new(), flate2::Compression::best());
        gz.write_all(raw.as_bytes())?;
        return Ok(BASE64.encode(gz.finish()?));
    }
    Ok(BASE64.encode(raw.as_bytes()))
}

/// Decodes an `INSTALLER_META_BASE64` payload the way Talos does (base64, gunzip when it starts
/// with the gzip magic and has at least 10 bytes, `;`-separated `key=value` with Go's base
/// prefix detection for keys).
pub fn decode_meta(payload: &str) -> Result<Vec<MetaEntry>, ImagerError> {
    let bad = |m: String| ImagerError::Validation(format!("invalid META payload: {m}"));
    fn undecodable<E: std::error::Error + Send + Sync + 'static>(source: E) -> ImagerError {
        ImagerError::MetaPayload {
            source: Box::new(source),
        }
    }
    let mut bytes = BASE64.decode(payload).map_err(undecodable)?;
    if bytes.len() >= 10 && bytes[0] == 0x1f && bytes[1] == 0x8b {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut out)
            .map_err(undecodable)?;
        bytes = out;
    }
    let text = String::from_utf8(bytes).map_err(undecodable)?;
    let mut out = Vec::new();
    for item in text.split(';') {
        let Some((k, v)) = item.split_once('=') else {
            return Err(bad(format!("missing '=' in {item:?}")));
        };
        let key = parse_go_uint8(k).ok_or_else(|| bad(format!("invalid key {k:?}")))?;
        out.push(MetaEntry {
            key,
            value: v.to_string(),
        });
    }
    Ok(out)
}

/// `strconv.ParseUint(s, 0, 8)`: `0x`/`0o`/`0b`/leading-`0` prefixes, `_` separators.
fn parse_go_uint8(s: &str) -> Option<u8> {
    let lower = s.to_ascii_lowercase();
    let (digits, radix) = if let Some(r) = lower.strip_prefix("0x") {
        (r, 16)
    } else if let Some(r) = lower.strip_prefix("0o") {
        (r, 8)
    } else if let Some(r) = lower.strip_prefix("0b") {
        (r, 2)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (&lower[1..], 8)
    } else {
        (lower.as_str(), 10)
    };
    let digits: String = digits.chars().filter(|&c| c != '_').collect();
    if digits.is_empty() {
        return None;
    }
    u8::from_str_radix(&digits, radix).ok()
}

/// Builds a profile's kernel command line in the imager's order (imager spec §1.5.2).
/// `overlay_kernel_args` are the overlay installer's `kernelArgs` (empty without an overlay).
pub fn kernel_cmdline(
    profile: &Profile,
    overlay_kernel_args: &[String],
) -> Result<String, ImagerError> {
    let q = profile.quirks();
    let (platform, args) = platform_args(&profile.platform, profile.arch, &q)?;
    let mut c = Cmdline::default();
    c.append("talos.platform", platform);
    c.set_all(&args);
    if profile.output.kind == OutputKind::Iso && q.has(Quirk::SupportsHaltIfInstalled) {
        c.append("talos.halt_if_installed", "1");
    }
    if !overlay_kernel_args.is_empty() {
        c.set_all(overlay_kernel_args);
    }
    c.append_all(&default_args(&q), AppendAllOptions::default());
    if profile.secureboot {
        c.append_all(&secureboot_args(&q), AppendAllOptions::default());
    }
    let meta = &profile.customization.meta_contents;
    if !meta.is_empty() && profile.output.kind != OutputKind::Image {
        let payload = encode_meta(meta, &q)?;
        c.append("talos.environment", &format!("{META_ENV_VAR}={payload}"));
    }
    c.append_all(
        &profile.customization.extra_kernel_args,
        AppendAllOptions {
            delete_negated: true,
            overwrite: &["console", "talos.platform"],
        },
    );
    Ok(c.to_string())
}

#[cfg(test)]
mod tests;
