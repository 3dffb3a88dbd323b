//! TLS for a listener: a rustls server configuration from a PEM certificate chain and key
//! (`http.certFile`/`http.keyFile`, `admin.certFile`/`admin.keyFile`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Why a listener's TLS configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read or holds no certificate.
    #[error("TLS certificate {path} ({key})")]
    Certificate {
        /// The configuration key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The key file could not be read or holds no private key.
    #[error("TLS private key {path} ({key})")]
    Key {
        /// The configuration key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate and key do not form a valid server configuration.
    #[error("TLS certificate {cert} and key {key_file} do not go together")]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key_file: PathBuf,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
}

/// An acceptor serving `cert` (PEM chain, leaf first) with `key` (PEM private key), offering
/// HTTP/2 and HTTP/1.1 through ALPN. `keys` names the configuration keys for messages.
pub fn acceptor(
    keys: (&'static str, &'static str),
    cert: &Path,
    key: &Path,
) -> Result<TlsAcceptor, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certificate {
            key: keys.0,
            path: cert.to_path_buf(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::Certificate {
            key: keys.0,
            path: cert.to_path_buf(),
            source: rustls::pki_types::pem::Error::NoItemsFound,
        });
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
        key: keys.1,
        path: key.to_path_buf(),
        source,
    })?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|source| TlsError::Config {
            cert: cert.to_path_buf(),
            key_file: key.to_path_buf(),
            source,
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
