//! Handles that travel: a statement's ticket or a prepared statement's handle carries, besides
//! the id of what this gateway holds for it, what any gateway of the cluster needs to redo it —
//! the owner, an expiry, the SQL text and the bound parameters (Arrow IPC) — sealed with an
//! HMAC under the cluster's ticket key (agreed through the shared catalog; one gateway alone
//! makes its own at start). A load balancer may send `GetFlightInfo` to one gateway and `DoGet`
//! to another: the second finds no plan of its own and plans the statement again from the
//! handle, with the same checks. A handle changed by one bit, another key's, or past its expiry
//! is answered like an unknown one.

use arrow::array::{ArrayRef, RecordBatch};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use datafusion::common::ScalarValue;
use datagate_access::CallerId;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a handle carries for another gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Portable {
    /// `CallerId` of the key that asked, as text.
    pub owner: String,
    /// Seconds since the Unix epoch after which the handle is refused.
    pub expires: u64,
    pub sql: String,
    /// Bound parameters (Arrow IPC stream, base64), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<String>,
}

/// Seals and opens handles under one key.
pub struct Sealer {
    key: [u8; 32],
    ttl: Duration,
}

/// The parts of an opened handle.
pub struct Opened {
    /// The id of what the gateway that made it holds.
    pub local: String,
    pub portable: Portable,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Sealer {
    pub fn new(key: [u8; 32], ttl: Duration) -> Self {
        Self { key, ttl }
    }

    fn mac(&self, body: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(b"datagate flight handle\0");
        mac.update(body.as_bytes());
        mac
    }

    /// A handle of `local` for `owner`: `<local>.<payload>.<mac>`.
    pub fn seal(
        &self,
        local: &str,
        owner: &CallerId,
        sql: &str,
        parameters: Option<Vec<u8>>,
    ) -> String {
        let portable = Portable {
            owner: owner.to_string(),
            expires: now_secs() + self.ttl.as_secs().max(1),
            sql: sql.to_string(),
            parameters: parameters.map(|p| B64.encode(p)),
        };
        let json = serde_json::to_vec(&portable).expect("a handle serialises");
        let body = format!("{local}.{}", B64.encode(json));
        let tag = B64.encode(self.mac(&body).finalize().into_bytes());
        format!("{body}.{tag}")
    }

    /// The parts of `handle` if it was sealed here (or by a gateway sharing the key), for
    /// `who`, and has not expired.
    pub fn open(&self, handle: &[u8], who: &CallerId) -> Option<Opened> {
        let handle = std::str::from_utf8(handle).ok()?;
        let (body, tag) = handle.rsplit_once('.')?;
        let tag = B64.decode(tag).ok()?;
        self.mac(body).verify_slice(&tag).ok()?;
        let (local, payload) = body.split_once('.')?;
        let portable: Portable = serde_json::from_slice(&B64.decode(payload).ok()?).ok()?;
        (portable.owner == who.to_string() && portable.expires >= now_secs()).then(|| Opened {
            local: local.to_string(),
            portable,
        })
    }
}

/// Batches of parameters as one Arrow IPC stream.
pub fn batches_to_ipc(batches: &[RecordBatch]) -> Option<Vec<u8>> {
    let first = batches.first()?;
    let mut out = Vec::new();
    let mut w = StreamWriter::try_new(&mut out, &first.schema()).ok()?;
    for b in batches {
        w.write(b).ok()?;
    }
    w.finish().ok()?;
    drop(w);
    Some(out)
}

/// One execution's `$1..$n` values as a one-row Arrow IPC stream (`None` without values).
pub fn values_to_ipc(values: &[ScalarValue]) -> Option<Vec<u8>> {
    if values.is_empty() {
        return None;
    }
    let columns: Vec<(String, ArrayRef)> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Some((format!("${}", i + 1), v.to_array().ok()?)))
        .collect::<Option<_>>()?;
    let batch = RecordBatch::try_from_iter(columns).ok()?;
    batches_to_ipc(&[batch])
}

/// The batches of an Arrow IPC stream in base64, as [`Portable::parameters`] holds them.
pub fn ipc_to_batches(encoded: &str) -> Result<Vec<RecordBatch>, String> {
    let bytes = B64.decode(encoded).map_err(|e| e.to_string())?;
    let reader =
        StreamReader::try_new(std::io::Cursor::new(bytes), None).map_err(|e| e.to_string())?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

/// The values of a one-row batch made by [`values_to_ipc`].
pub fn batches_to_values(batches: &[RecordBatch]) -> Result<Vec<ScalarValue>, String> {
    let Some(batch) = batches.first() else {
        return Ok(Vec::new());
    };
    batch
        .columns()
        .iter()
        .map(|c| ScalarValue::try_from_array(c, 0).map_err(|e| e.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_opens_only_unchanged_for_its_owner_before_it_expires() {
        let s = Sealer::new([7; 32], Duration::from_secs(60));
        let alice = CallerId::Key("alice".into());
        let bob = CallerId::Key("bob".into());
        let values = vec![
            ScalarValue::Int64(Some(42)),
            ScalarValue::Utf8(Some("x".into())),
        ];
        let h = s.seal("abc", &alice, "SELECT $1, $2", values_to_ipc(&values));
        let o = s.open(h.as_bytes(), &alice).expect("opens for alice");
        assert_eq!(
            (o.local.as_str(), o.portable.sql.as_str()),
            ("abc", "SELECT $1, $2")
        );
        let batches = ipc_to_batches(o.portable.parameters.as_deref().unwrap()).unwrap();
        assert_eq!(batches_to_values(&batches).unwrap(), values);
        assert!(s.open(h.as_bytes(), &bob).is_none(), "another key's");
        let other = Sealer::new([8; 32], Duration::from_secs(60));
        assert!(
            other.open(h.as_bytes(), &alice).is_none(),
            "another cluster's"
        );
        let mut bytes = h.clone().into_bytes();
        let i = bytes.len() / 2;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        assert!(s.open(&bytes, &alice).is_none(), "changed");
        assert!(s.open(b"abc", &alice).is_none(), "not sealed");
        let expired = Sealer::new([7; 32], Duration::from_secs(1));
        let h = expired.seal("abc", &alice, "SELECT 1", None);
        let mut p = expired.open(h.as_bytes(), &alice).unwrap().portable;
        p.expires = 1;
        let json = serde_json::to_vec(&p).unwrap();
        let body = format!("abc.{}", B64.encode(json));
        let tag = B64.encode(expired.mac(&body).finalize().into_bytes());
        assert!(
            expired
                .open(format!("{body}.{tag}").as_bytes(), &alice)
                .is_none(),
            "expired"
        );
    }
}
