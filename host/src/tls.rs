//! The listener's TLS (`server.tls`): a certificate chain and its key from PEM files, served
//! with rustls (the same library and crypto provider as the upstream client), HTTP/2 offered
//! through ALPN next to HTTP/1.1.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// `server.tls`: the files, and the server configuration built from them.
#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub config: Arc<rustls::ServerConfig>,
}

/// Which of the two files a problem is in, and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsError {
    Cert(String),
    Key(String),
}

impl Tls {
    /// Reads and checks both files and builds the server configuration: the chain must hold at
    /// least one certificate, the key must be one (PKCS#8, PKCS#1 or SEC1) that matches it.
    pub fn load(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<_, _>>())
            .map_err(|e| {
                TlsError::Cert(format!(
                    "cannot read certificates from `{}`: {e}",
                    cert.display()
                ))
            })?;
        if chain.is_empty() {
            return Err(TlsError::Cert(format!(
                "`{}` holds no PEM certificate",
                cert.display()
            )));
        }
        let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
            TlsError::Key(format!(
                "cannot read a private key from `{}`: {e}",
                key.display()
            ))
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Key(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(|e| {
                TlsError::Key(format!(
                    "`{}` does not fit the certificate in `{}`: {e}",
                    key.display(),
                    cert.display()
                ))
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            config: Arc::new(config),
        })
    }
}
