//! TLS for both servers: a PEM certificate chain and PKCS#8 or RSA private key, rustls with ring.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

use crate::error::{QueryError, Result};

/// A loaded certificate and key.
#[derive(Clone)]
pub struct TlsSettings {
    pub config: Arc<rustls::ServerConfig>,
    /// The certificate as PEM, for SCRAM channel binding.
    pub certificate_pem: Vec<u8>,
}

impl TlsSettings {
    /// Loads `cert` and `key`; the errors name the file and what is wrong with it.
    pub fn load(cert: &Path, key: &Path) -> Result<TlsSettings> {
        let certificate_pem = std::fs::read(cert).map_err(|e| QueryError::io(cert.display().to_string(), e))?;
        let chain = rustls_pemfile::certs(&mut certificate_pem.as_slice())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| QueryError::Config(format!("{}: not a PEM certificate chain: {e}", cert.display())))?;
        if chain.is_empty() {
            return Err(QueryError::Config(format!("{}: no certificate in the file", cert.display())));
        }
        let key_pem = std::fs::read(key).map_err(|e| QueryError::io(key.display().to_string(), e))?;
        let private_key = rustls_pemfile::private_key(&mut key_pem.as_slice())
            .map_err(|e| QueryError::Config(format!("{}: not a PEM private key: {e}", key.display())))?
            .ok_or_else(|| QueryError::Config(format!("{}: no private key in the file", key.display())))?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| QueryError::Config(format!("TLS: {e}")))?
            .with_no_client_auth()
            .with_single_cert(chain, private_key)
            .map_err(|e| QueryError::Config(format!("{} and {}: {e}", cert.display(), key.display())))?;
        Ok(TlsSettings { config: Arc::new(config), certificate_pem })
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }

    /// The same settings offering HTTP/2 and HTTP/1.1 by ALPN, for the HTTP server.
    pub fn for_http(&self) -> TlsSettings {
        let mut config = (*self.config).clone();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TlsSettings { config: Arc::new(config), certificate_pem: self.certificate_pem.clone() }
    }
}
