//! The link between a gateway and its workers: every call carries the shared secret, and a
//! worker refuses any call without it before decoding anything.
//!
//! Calls from the gateway also carry the deployment's hash-mask key, so a worker computes
//! `mask_hash` inside the fragments it runs and raw values of masked columns never leave it.
//! A worker reads every stored value anyway; the key gives it nothing more. The link carries
//! data, plan fragments and these headers: on a private network, or over TLS (`https://`
//! worker URLs, verified against `query.worker_tls_ca`).

use crate::masking::MaskKey;
use async_trait::async_trait;
use datafusion::error::DataFusionError;
use datafusion_distributed::grpc::BoxCloneSyncChannel;
use datafusion_distributed::{ChannelResolver, WorkerChannel};
use http::{HeaderMap, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tower::ServiceExt;
use url::Url;

/// The header carrying the shared secret.
pub const SECRET_HEADER: &str = "x-datagate-worker-secret";
/// The header carrying the hash-mask key (hex) from a gateway to its workers.
pub const MASK_KEY_HEADER: &str = "x-datagate-mask-key";

/// Opens (and reuses) connections to workers, adding the link's headers to every call.
#[derive(Clone)]
pub struct WorkerLink {
    /// One HTTP/2 connection per worker, reconnected by tonic when it breaks.
    channels: Arc<Mutex<HashMap<Url, Channel>>>,
    /// How `https://` workers are verified.
    tls: ClientTlsConfig,
    headers: HeaderMap,
}

impl WorkerLink {
    /// A gateway's link: the secret and the mask key on every call; `https://` workers are
    /// verified against `tls_ca` (PEM).
    pub fn for_gateway(
        secret: &str,
        mask_key: &MaskKey,
        tls_ca: Option<&[u8]>,
    ) -> Result<Self, DataFusionError> {
        let mut link = Self::for_worker(secret, tls_ca)?;
        link.headers.insert(
            HeaderName::from_static(MASK_KEY_HEADER),
            header_value(&hex::encode(mask_key.bytes()))?,
        );
        Ok(link)
    }

    /// A worker's link to the other workers (a stage reading another's output): the secret only.
    pub fn for_worker(secret: &str, tls_ca: Option<&[u8]>) -> Result<Self, DataFusionError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static(SECRET_HEADER),
            header_value(secret)?,
        );
        let mut tls = ClientTlsConfig::new();
        if let Some(pem) = tls_ca {
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        Ok(Self {
            channels: Arc::new(Mutex::new(HashMap::new())),
            tls,
            headers,
        })
    }

    /// The connection to `url`, made on first use.
    fn channel(&self, url: &Url) -> Result<Channel, DataFusionError> {
        let bad = |e: tonic::transport::Error| {
            DataFusionError::Configuration(format!("worker URL {url}: {e}"))
        };
        let mut channels = self
            .channels
            .lock()
            .map_err(|_| DataFusionError::Internal("worker channels poisoned".into()))?;
        if let Some(c) = channels.get(url) {
            return Ok(c.clone());
        }
        let mut endpoint = Endpoint::from_shared(url.to_string())
            .map_err(bad)?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        if url.scheme() == "https" {
            endpoint = endpoint.tls_config(self.tls.clone()).map_err(bad)?;
        }
        let channel = endpoint.connect_lazy();
        channels.insert(url.clone(), channel.clone());
        Ok(channel)
    }
}

fn header_value(v: &str) -> Result<HeaderValue, DataFusionError> {
    let mut value = HeaderValue::from_str(v).map_err(|_| {
        DataFusionError::Configuration("the worker secret must be printable ASCII".into())
    })?;
    value.set_sensitive(true);
    Ok(value)
}

#[async_trait]
impl ChannelResolver for WorkerLink {
    async fn get_worker_client_for_url(
        &self,
        url: &Url,
    ) -> Result<Box<dyn WorkerChannel>, DataFusionError> {
        let channel = self.channel(url)?;
        let headers = self.headers.clone();
        let with_headers = channel.map_request(move |mut req: http::Request<tonic::body::Body>| {
            for (name, value) in &headers {
                req.headers_mut().insert(name.clone(), value.clone());
            }
            req
        });
        Ok(datafusion_distributed::grpc::create_worker_client(
            BoxCloneSyncChannel::new(with_headers),
        ))
    }
}

/// A worker's check of every incoming call: the secret, compared by digest (in constant time
/// with respect to the secret's content).
#[derive(Clone)]
pub struct SecretCheck {
    expected: [u8; 32],
}

impl SecretCheck {
    pub fn new(secret: &str) -> Self {
        Self {
            expected: Sha256::digest(secret.as_bytes()).into(),
        }
    }

    /// Whether `given` is the secret.
    pub fn admits(&self, given: Option<&[u8]>) -> bool {
        let Some(given) = given else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(given).into();
        digest
            .iter()
            .zip(self.expected.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl tonic::service::Interceptor for SecretCheck {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let given = req.metadata().get(SECRET_HEADER).map(|v| v.as_bytes());
        if self.admits(given) {
            Ok(req)
        } else {
            metrics::counter!("datagate_worker_refused_calls_total").increment(1);
            Err(tonic::Status::unauthenticated(
                "this worker answers only gateways that share its secret",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    #[test]
    fn only_the_secret_is_admitted() {
        let mut check = SecretCheck::new("0123456789abcdef-secret");
        assert!(check.admits(Some(b"0123456789abcdef-secret")));
        assert!(!check.admits(Some(b"0123456789abcdef-secreT")));
        assert!(!check.admits(Some(b"")));
        assert!(!check.admits(None));
        let mut req = tonic::Request::new(());
        assert_eq!(
            check.call(req).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        req = tonic::Request::new(());
        req.metadata_mut()
            .insert(SECRET_HEADER, "0123456789abcdef-secret".parse().unwrap());
        assert!(check.call(req).is_ok());
    }
}
