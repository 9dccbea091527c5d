//! TLS for the HTTP listener (`server.tls_cert`, `server.tls_key`): rustls on the ring
//! provider, HTTP/2 and HTTP/1.1 offered by ALPN.

use datagate_core::config::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// The acceptor the configuration asks for: `None` for plain HTTP; an error naming the file
/// when a certificate or key cannot be read or does not fit.
pub fn acceptor(cfg: &ServerConfig) -> io::Result<Option<TlsAcceptor>> {
    if cfg.tls_cert.is_empty() && cfg.tls_key.is_empty() {
        return Ok(None);
    }
    let invalid = |what: &str, e: &dyn std::fmt::Display| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{what}: {e}"))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.tls_cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| invalid(&format!("server.tls_cert {}", cfg.tls_cert), &e))?;
    if certs.is_empty() {
        return Err(invalid(
            &format!("server.tls_cert {}", cfg.tls_cert),
            &"no certificate in the file",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.tls_key)
        .map_err(|e| invalid(&format!("server.tls_key {}", cfg.tls_key), &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("TLS", &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid("server.tls_cert and server.tls_key do not fit together", &e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}
