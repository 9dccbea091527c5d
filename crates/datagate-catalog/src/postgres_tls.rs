//! TLS from a gateway to its PostgreSQL catalog, asked for in the catalog URL the way libpq
//! users write it: `sslmode=require` (or `verify-ca` / `verify-full`, which mean the same here:
//! rustls always checks the chain and the host name) and optionally `sslrootcert=/path/ca.pem`
//! (without it, the system's trusted roots). `sslmode=prefer` tries TLS and verifies it when
//! the server offers it. Without `sslmode` (or with `disable`) the connection is plain, for a
//! database on loopback or a private network. rustls on the ring provider, as every other TLS
//! link of datagate.

use crate::store::{CatalogError, Result};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::sync::Arc;
use tokio_rustls::rustls;

/// The TLS a catalog URL asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogTls {
    /// No `sslmode`, or `disable`.
    Plain,
    /// TLS verified against these roots (a PEM file; `None` = the system's).
    Verified { root_cert: Option<String> },
}

/// `url` as tokio-postgres reads it (libpq's `sslrootcert` taken out; `verify-ca` and
/// `verify-full` read as `require`) and the TLS it asks for.
pub fn split_url(url: &str) -> Result<(String, CatalogTls)> {
    let invalid = |e: &dyn std::fmt::Display| CatalogError::Invalid(format!("catalog URL: {e}"));
    let mut parsed = url::Url::parse(url).map_err(|e| invalid(&e))?;
    let mut mode = None;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for (k, v) in parsed.query_pairs() {
        match k.as_ref() {
            "sslrootcert" => root_cert = Some(v.into_owned()),
            "sslmode" => {
                let m = match v.as_ref() {
                    "disable" | "prefer" | "require" => v.to_string(),
                    "verify-ca" | "verify-full" => "require".to_string(),
                    other => {
                        return Err(invalid(&format!(
                            "sslmode={other}: use disable, prefer, require, verify-ca or verify-full"
                        )));
                    }
                };
                kept.push(("sslmode".to_string(), m.clone()));
                mode = Some(m);
            }
            _ => kept.push((k.into_owned(), v.into_owned())),
        }
    }
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    let tls = match mode.as_deref() {
        None | Some("disable") => {
            if root_cert.is_some() {
                return Err(invalid(
                    &"sslrootcert needs sslmode=require (or verify-full)",
                ));
            }
            CatalogTls::Plain
        }
        _ => CatalogTls::Verified { root_cert },
    };
    Ok((parsed.into(), tls))
}

/// The connector for verified TLS against `root_cert` (or the system's roots).
pub fn connector(root_cert: Option<&str>) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<std::result::Result<_, _>>())
                .map_err(|e| CatalogError::Invalid(format!("catalog sslrootcert {path}: {e}")))?;
            if certs.is_empty() {
                return Err(CatalogError::Invalid(format!(
                    "catalog sslrootcert {path}: no certificate in the file"
                )));
            }
            for c in certs {
                roots.add(c).map_err(|e| {
                    CatalogError::Invalid(format!("catalog sslrootcert {path}: {e}"))
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(CatalogError::Invalid(
                    "catalog sslmode asks for TLS, but the system has no trusted roots: give \
                     sslrootcert=/path/ca.pem"
                        .into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CatalogError::Invalid(format!("catalog TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_tls_options_are_read_and_taken_out() {
        let (url, tls) = split_url("postgres://u@h:5432/db").unwrap();
        assert_eq!(
            (url.as_str(), tls),
            ("postgres://u@h:5432/db", CatalogTls::Plain)
        );
        let (url, tls) = split_url(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(url, "postgres://u@h/db?sslmode=require&application_name=x");
        assert_eq!(
            tls,
            CatalogTls::Verified {
                root_cert: Some("/etc/ca.pem".into())
            }
        );
        assert!(split_url("postgres://u@h/db?sslmode=allow").is_err());
        assert!(split_url("postgres://u@h/db?sslrootcert=/x.pem").is_err());
        let e = connector(Some("/nonexistent/ca.pem")).err().unwrap();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }
}
