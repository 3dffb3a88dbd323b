//! `netboot.*` keys: per-machine boot assignments and the ProxyDHCP responder.

use serde::{Deserialize, Serialize};

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
}

impl Default for ProxyDhcpConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            interface: String::new(),
            listen_addr: ":67".into(),
            pxe_listen_addr: ":4011".into(),
        }
    }
}
