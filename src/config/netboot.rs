//! `netboot.*` keys: per-machine boot assignments and the ProxyDHCP responder.

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use super::{ConfigError, ListenAddr};

/// `netboot.*` keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct NetbootConfig {
    /// YAML file of declarative machine assignments, reloaded on SIGHUP (empty = none).
    pub machines_file: String,
    /// ProxyDHCP: answers PXE and iPXE clients beside the site's DHCP server.
    pub proxy_dhcp: ProxyDhcpConfig,
}

/// `netboot.proxyDhcp.*` keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ProxyDhcpConfig {
    /// Whether the ProxyDHCP responder runs (it needs UDP 67 and 4011 on a site segment).
    pub enabled: bool,
    /// Network interface the responder is bound to (required when enabled).
    pub interface: String,
    /// Listen address of the DHCP port (UDP).
    pub listen_addr: String,
    /// Listen address of the PXE boot-server port (UDP).
    pub pxe_listen_addr: String,
    /// IPv4 address advertised as next-server and server identifier (empty = the interface's
    /// first IPv4 address).
    pub server_addr: String,
    /// TFTP file for legacy BIOS PXE clients (architecture 0).
    pub bios_boot_file: String,
    /// TFTP file (and HTTP Boot file) for x64 UEFI clients (architectures 7, 9 and 16).
    pub uefi_boot_file: String,
    /// TFTP file for arm64 UEFI clients (architectures 11 and 19), offered only while it exists
    /// in `tftp.root`.
    pub arm64_boot_file: String,
    /// Answers sent per second on each port at most; requests beyond are dropped (firmware
    /// retries).
    pub max_replies_per_second: u64,
}

impl Default for ProxyDhcpConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            interface: String::new(),
            listen_addr: ":67".into(),
            pxe_listen_addr: ":4011".into(),
            server_addr: String::new(),
            bios_boot_file: "undionly.kpxe".into(),
            uefi_boot_file: "ipxe.efi".into(),
            arm64_boot_file: "ipxe-arm64.efi".into(),
            max_replies_per_second: 200,
        }
    }
}

/// Longest boot file name: the BOOTP `file` field holds 128 bytes with its terminating NUL.
const MAX_BOOT_FILE: usize = 127;

fn invalid(key: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message,
    }
}

impl ProxyDhcpConfig {
    /// The parsed DHCP-port listen address (IPv4).
    pub fn listen(&self) -> Result<ListenAddr, ConfigError> {
        ipv4_listen("netboot.proxyDhcp.listenAddr", &self.listen_addr)
    }

    /// The parsed PXE-port listen address (IPv4).
    pub fn pxe_listen(&self) -> Result<ListenAddr, ConfigError> {
        ipv4_listen("netboot.proxyDhcp.pxeListenAddr", &self.pxe_listen_addr)
    }

    /// The configured advertised address, `None` when it comes from the interface.
    pub fn server_ip(&self) -> Result<Option<Ipv4Addr>, ConfigError> {
        let key = "netboot.proxyDhcp.serverAddr";
        let s = self.server_addr.trim();
        if s.is_empty() {
            return Ok(None);
        }
        let ip: Ipv4Addr = s
            .parse()
            .map_err(|_| invalid(key, format!("{s:?} is not an IPv4 address like 192.0.2.10")))?;
        if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
            return Err(invalid(
                key,
                format!("{s:?} must be a unicast address of this appliance"),
            ));
        }
        Ok(Some(ip))
    }

    /// Checks the keys (addresses and file names always; the interface when enabled).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let dhcp = self.listen()?;
        let pxe = self.pxe_listen()?;
        if dhcp.0.port() != 0 && dhcp.0.port() == pxe.0.port() {
            return Err(invalid(
                "netboot.proxyDhcp.pxeListenAddr",
                format!(
                    "{:?} uses the port of netboot.proxyDhcp.listenAddr ({:?}); PXE clients \
                     expect 67 and 4011",
                    self.pxe_listen_addr, self.listen_addr
                ),
            ));
        }
        self.server_ip()?;
        for (key, value) in [
            ("netboot.proxyDhcp.biosBootFile", &self.bios_boot_file),
            ("netboot.proxyDhcp.uefiBootFile", &self.uefi_boot_file),
            ("netboot.proxyDhcp.arm64BootFile", &self.arm64_boot_file),
        ] {
            check_boot_file(key, value)?;
        }
        if !(1..=100_000).contains(&self.max_replies_per_second) {
            return Err(invalid(
                "netboot.proxyDhcp.maxRepliesPerSecond",
                format!(
                    "{} must be between 1 and 100000",
                    self.max_replies_per_second
                ),
            ));
        }
        let iface = &self.interface;
        if self.enabled && iface.is_empty() {
            return Err(invalid(
                "netboot.proxyDhcp.interface",
                "must be set when netboot.proxyDhcp.enabled is true: the network interface of \
                 the boot segment, e.g. \"eno1\" (IF_NETBOOT_PROXYDHCP_INTERFACE)"
                    .into(),
            ));
        }
        // Linux interface names: at most IFNAMSIZ - 1 bytes, no '/', no whitespace.
        if iface.len() > 15
            || iface == "."
            || iface == ".."
            || iface
                .bytes()
                .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(invalid(
                "netboot.proxyDhcp.interface",
                format!(
                    "{iface:?} is not a network interface name (at most 15 bytes, no '/', ':' or spaces)"
                ),
            ));
        }
        Ok(())
    }
}

fn ipv4_listen(key: &str, s: &str) -> Result<ListenAddr, ConfigError> {
    let addr = ListenAddr::parse_key(key, s)?;
    if !matches!(addr.0.ip(), IpAddr::V4(_)) {
        return Err(invalid(
            key,
            format!("{s:?} must be an IPv4 address (DHCPv4), e.g. \":67\""),
        ));
    }
    Ok(addr)
}

/// A boot file name relative to `tftp.root`: `[A-Za-z0-9._+-]` segments separated by `/`,
/// no `..`, short enough for the BOOTP `file` field.
fn check_boot_file(key: &str, s: &str) -> Result<(), ConfigError> {
    let segments_ok = s.split('/').all(|seg| {
        !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
    });
    if s.is_empty() || s.len() > MAX_BOOT_FILE || !segments_ok {
        return Err(invalid(
            key,
            format!(
                "{s:?} must be a file name under tftp.root like \"ipxe.efi\" (letters, digits, \
                 '.', '_', '-', '+', '/' between names, at most {MAX_BOOT_FILE} bytes)"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(f: impl FnOnce(&mut ProxyDhcpConfig)) -> String {
        let mut c = ProxyDhcpConfig::default();
        f(&mut c);
        c.validate().unwrap_err().to_string()
    }

    #[test]
    fn enabled_needs_an_interface() {
        let e = err(|c| c.enabled = true);
        assert!(
            e.starts_with("invalid config: netboot.proxyDhcp.interface: must be set"),
            "{e}"
        );
        let mut c = ProxyDhcpConfig {
            enabled: true,
            interface: "eno1".into(),
            ..ProxyDhcpConfig::default()
        };
        c.validate().unwrap();
        c.interface = "lo".into();
        c.validate().unwrap();
    }

    #[test]
    fn bad_values_name_their_key() {
        for (f, key) in [
            (
                Box::new(|c: &mut ProxyDhcpConfig| c.interface = "a/b".into())
                    as Box<dyn FnOnce(&mut ProxyDhcpConfig)>,
                "interface",
            ),
            (Box::new(|c| c.interface = "x".repeat(16)), "interface"),
            (Box::new(|c| c.listen_addr = "67".into()), "listenAddr"),
            (Box::new(|c| c.listen_addr = "[::]:67".into()), "listenAddr"),
            (
                Box::new(|c| c.pxe_listen_addr = ":67".into()),
                "pxeListenAddr",
            ),
            (Box::new(|c| c.server_addr = "fe80::1".into()), "serverAddr"),
            (Box::new(|c| c.server_addr = "0.0.0.0".into()), "serverAddr"),
            (
                Box::new(|c| c.server_addr = "255.255.255.255".into()),
                "serverAddr",
            ),
            (
                Box::new(|c| c.bios_boot_file = String::new()),
                "biosBootFile",
            ),
            (
                Box::new(|c| c.uefi_boot_file = "../etc/passwd".into()),
                "uefiBootFile",
            ),
            (
                Box::new(|c| c.uefi_boot_file = "a b".into()),
                "uefiBootFile",
            ),
            (
                Box::new(|c| c.arm64_boot_file = "x".repeat(128)),
                "arm64BootFile",
            ),
            (
                Box::new(|c| c.max_replies_per_second = 0),
                "maxRepliesPerSecond",
            ),
        ] {
            let e = err(f);
            assert!(e.contains(&format!("netboot.proxyDhcp.{key}")), "{e}");
        }
    }

    #[test]
    fn good_values() {
        let c = ProxyDhcpConfig {
            server_addr: "192.0.2.10".into(),
            uefi_boot_file: "snponly.efi".into(),
            arm64_boot_file: "arm64-efi/snp.efi".into(),
            listen_addr: "0.0.0.0:0".into(),
            pxe_listen_addr: ":0".into(),
            ..ProxyDhcpConfig::default()
        };
        c.validate().unwrap();
        assert_eq!(c.server_ip().unwrap(), Some(Ipv4Addr::new(192, 0, 2, 10)));
    }
}
