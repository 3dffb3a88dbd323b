//! Listen addresses in the Go style: `:PORT`, `HOST:PORT`, `[::1]:PORT` (port 0 = any free port).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use super::ConfigError;

/// Why a listen address is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ListenAddrError {
    /// Nothing was given.
    #[error("empty")]
    Empty,
    /// Not one of the accepted forms.
    #[error("expected HOST:PORT or :PORT")]
    Form,
    /// The port is not a number from 0 to 65535.
    #[error("invalid port {0:?}")]
    Port(String),
    /// The host name could not be resolved.
    #[error("cannot resolve host {host:?}")]
    Resolve {
        /// The host.
        host: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
    /// The host name resolves to nothing.
    #[error("host {0:?} resolves to no address")]
    NoAddress(String),
}

/// A resolved socket address to bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr(pub SocketAddr);

impl ListenAddr {
    /// Parses `s` as a listen address; errors name `key` and quote the value.
    pub fn parse_key(key: &str, s: &str) -> Result<Self, ConfigError> {
        Self::parse(s).map_err(|why| ConfigError::Invalid {
            key: key.to_string(),
            message: format!(
                "{s:?} is not a valid listen address ({})",
                crate::causes::Causes(&why).texts().join(": ")
            ),
        })
    }

    /// Parses a listen address; `:PORT` binds every IPv4 interface.
    pub fn parse(s: &str) -> Result<Self, ListenAddrError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ListenAddrError::Empty);
        }
        if let Some(port) = s.strip_prefix(':') {
            let port = parse_port(port)?;
            return Ok(Self(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                port,
            )));
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Self(addr));
        }
        let (host, port) = s.rsplit_once(':').ok_or(ListenAddrError::Form)?;
        let port = parse_port(port)?;
        if host.is_empty() || host.contains(':') {
            return Err(ListenAddrError::Form);
        }
        let mut addrs =
            (host, port)
                .to_socket_addrs()
                .map_err(|source| ListenAddrError::Resolve {
                    host: host.to_string(),
                    source,
                })?;
        // Prefer IPv4 so that `localhost:PORT` binds 127.0.0.1 on hosts without IPv6.
        let all: Vec<SocketAddr> = addrs.by_ref().collect();
        all.iter()
            .find(|a| a.is_ipv4())
            .or_else(|| all.first())
            .copied()
            .map(Self)
            .ok_or_else(|| ListenAddrError::NoAddress(host.to_string()))
    }
}

fn parse_port(p: &str) -> Result<u16, ListenAddrError> {
    p.parse::<u16>()
        .map_err(|_| ListenAddrError::Port(p.to_string()))
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(
            ListenAddr::parse(":8080").unwrap().0,
            "0.0.0.0:8080".parse().unwrap()
        );
        assert_eq!(ListenAddr::parse(":0").unwrap().0.port(), 0);
        assert_eq!(
            ListenAddr::parse("127.0.0.1:0").unwrap().0,
            "127.0.0.1:0".parse().unwrap()
        );
        assert_eq!(
            ListenAddr::parse("[::1]:9").unwrap().0,
            "[::1]:9".parse().unwrap()
        );
        assert!(
            ListenAddr::parse("localhost:1")
                .unwrap()
                .0
                .ip()
                .is_loopback()
        );
        assert!(ListenAddr::parse("8080").is_err());
        assert!(ListenAddr::parse(":99999").is_err());
        assert!(ListenAddr::parse("").is_err());
        assert!(ListenAddr::parse("::1:80").is_err());
    }

    #[test]
    fn error_names_key_and_value() {
        let e = ListenAddr::parse_key("metrics.addr", "nope")
            .unwrap_err()
            .to_string();
        assert!(e.contains("metrics.addr") && e.contains("\"nope\""), "{e}");
    }
}
