//! Signed checkpoints: `(seq, hash, time)` of the log's head, signed with the deployment's
//! Ed25519 key (`<audit dir>/signing.key`, created on first start, mode 0600). An auditor who
//! keeps a checkpoint (from `GET /api/v1/audit/checkpoint`) can later prove the log still
//! extends it, and truncating the log before a signed checkpoint is detected.

use crate::error::{AuditError, Result};
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// A signed statement that the log's record `seq` has hash `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: String,
    pub time: DateTime<Utc>,
    /// Ed25519 public key (hex) that signed it.
    pub public_key: String,
    /// Ed25519 signature (hex) over [`Checkpoint::message`].
    pub signature: String,
}

impl Checkpoint {
    /// The bytes that are signed.
    pub fn message(seq: u64, hash: &str, time: &DateTime<Utc>) -> Vec<u8> {
        format!(
            "datagate-audit-checkpoint:v1\n{seq}\n{hash}\n{}",
            time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        )
        .into_bytes()
    }

    pub fn sign(key: &SigningKey, seq: u64, hash: &str, time: DateTime<Utc>) -> Self {
        let signature = key.sign(&Self::message(seq, hash, &time));
        Self {
            seq,
            hash: hash.to_string(),
            time,
            public_key: hex::encode(key.verifying_key().to_bytes()),
            signature: hex::encode(signature.to_bytes()),
        }
    }

    /// Whether the signature is `key`'s over this checkpoint.
    pub fn verify(&self, key: &VerifyingKey) -> bool {
        let Ok(sig) = hex::decode(&self.signature) else {
            return false;
        };
        let Ok(sig) = Signature::from_slice(&sig) else {
            return false;
        };
        key.verify(&Self::message(self.seq, &self.hash, &self.time), &sig)
            .is_ok()
    }
}

/// Reads a public key given as hex.
pub fn parse_public_key(hex_key: &str) -> Result<VerifyingKey> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| AuditError::Invalid("a public key is 64 hex digits".into()))?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|e| AuditError::Invalid(format!("not an Ed25519 public key: {e}")))
}

/// The signing key at `path`, created (mode 0600) when absent.
pub fn load_or_create_key(path: &Path) -> Result<SigningKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let bytes: [u8; 32] = hex::decode(text.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    AuditError::Invalid(format!("{} is not an audit signing key", path.display()))
                })?;
            Ok(SigningKey::from_bytes(&bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = [0u8; 32];
            rand::fill(&mut secret);
            let key = SigningKey::from_bytes(&secret);
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(path)?;
            f.write_all(hex::encode(secret).as_bytes())?;
            f.sync_all()?;
            Ok(key)
        }
        Err(e) => Err(e.into()),
    }
}

/// The public key of the signing key at `path`, without creating anything.
pub fn read_public_key(path: &Path) -> Result<VerifyingKey> {
    let text = std::fs::read_to_string(path)?;
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            AuditError::Invalid(format!("{} is not an audit signing key", path.display()))
        })?;
    Ok(SigningKey::from_bytes(&bytes).verifying_key())
}

/// Every checkpoint in the file at `path` (none when it does not exist); a torn last line
/// (a crash while appending) is skipped.
pub fn read_checkpoints(path: &Path) -> Result<Vec<Checkpoint>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<Checkpoint>(line) {
            Ok(c) => out.push(c),
            Err(_) if i + 1 == lines.len() && !complete => {}
            Err(e) => {
                return Err(AuditError::Invalid(format!(
                    "checkpoint line {} is unreadable: {e}",
                    i + 1
                )));
            }
        }
    }
    Ok(out)
}
