//! API keys: `dg_<id>_<secret>` (API.md §3).
//!
//! `<id>` is public (it appears in listings and audit records); `<secret>` is 32 random bytes in
//! lower-case hex. Only the SHA-256 of the secret is stored, and secrets are compared in constant
//! time.

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    /// Bound to one department.
    Publisher,
    Consumer,
    Auditor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Publisher => "publisher",
            Self::Consumer => "consumer",
            Self::Auditor => "auditor",
        }
    }

    /// The fair-use tier a new key of this role gets unless one is named: departments' keys
    /// are `internal`, the others `standard`.
    pub fn default_tier(self) -> &'static str {
        match self {
            Self::Admin | Self::Publisher => "internal",
            Self::Consumer | Self::Auditor => "standard",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "admin" => Ok(Self::Admin),
            "publisher" => Ok(Self::Publisher),
            "consumer" => Ok(Self::Consumer),
            "auditor" => Ok(Self::Auditor),
            _ => Err(format!(
                "unknown role {s:?}; expected admin, publisher, consumer or auditor"
            )),
        }
    }
}

/// A key as the catalog stores it (no secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub department: Option<String>,
    pub tier: String,
    #[serde(skip)]
    pub secret_hash: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    /// Whether the key may be used at `now`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

/// A key to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewApiKey {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub department: Option<String>,
    pub tier: String,
    pub secret_hash: String,
    pub created_by: String,
    pub expires_at: Option<DateTime<Utc>>,
}

impl NewApiKey {
    /// Checks a key before it is stored, the same for every backend and front door (the API,
    /// `datagate key create`): a publisher key names its department and no other role names
    /// one, the name says whose key it is, and an expiry is still to come (a key born expired
    /// would only answer 401).
    pub fn validate(&self, now: DateTime<Utc>) -> Result<(), crate::CatalogError> {
        let invalid = |m: &str| Err(crate::CatalogError::Invalid(m.to_string()));
        if (self.role == Role::Publisher) != self.department.is_some() {
            return invalid("a publisher key names exactly one department; other roles name none");
        }
        if self.name.trim().is_empty() {
            return invalid("name is empty");
        }
        if self.expires_at.is_some_and(|e| e <= now) {
            return invalid("expires_at is in the past");
        }
        Ok(())
    }
}

/// A full key string, parsed. Its `Debug` and `Display` never show the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyToken {
    pub id: String,
    secret: String,
}

/// A string that is not `dg_<id>_<secret>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "malformed key: expected dg_<id>_<secret> with an alphanumeric id and a secret of at least 43 base62 or 64 hex characters"
)]
pub struct MalformedKey;

impl KeyToken {
    /// Makes a new key with a random id and a 32-byte secret.
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let mut id = [0u8; 8];
        rng.fill_bytes(&mut id);
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        Self {
            id: hex::encode(id),
            secret: hex::encode(secret),
        }
    }

    /// Parses `dg_<id>_<secret>`.
    pub fn parse(s: &str) -> Result<Self, MalformedKey> {
        let rest = s.strip_prefix("dg_").ok_or(MalformedKey)?;
        let (id, secret) = rest.split_once('_').ok_or(MalformedKey)?;
        let id_ok =
            !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric());
        // 32 bytes are 64 hex or 43 base62 characters at least.
        let secret_ok = secret.len() >= 43
            && secret.len() <= 256
            && secret.bytes().all(|b| b.is_ascii_alphanumeric());
        if id_ok && secret_ok {
            Ok(Self {
                id: id.to_string(),
                secret: secret.to_string(),
            })
        } else {
            Err(MalformedKey)
        }
    }

    /// The full key string, to show once to its owner.
    pub fn expose(&self) -> String {
        format!("dg_{}_{}", self.id, self.secret)
    }

    /// The stored form of the secret.
    pub fn secret_hash(&self) -> String {
        hash_secret(&self.secret)
    }

    /// Whether this token's secret matches a stored hash, in constant time.
    pub fn matches(&self, stored_hash: &str) -> bool {
        let mine = self.secret_hash();
        let (a, b) = (mine.as_bytes(), stored_hash.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl fmt::Debug for KeyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyToken(dg_{}_***)", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_parse_match() {
        let k = KeyToken::generate();
        let s = k.expose();
        assert!(s.starts_with("dg_"));
        let p = KeyToken::parse(&s).unwrap();
        assert_eq!(p, k);
        assert!(p.matches(&k.secret_hash()));
        assert!(!KeyToken::generate().matches(&k.secret_hash()));
        assert!(
            !format!("{p:?}").contains(&s[20..]),
            "Debug hides the secret"
        );
        for bad in [
            "",
            "dg_",
            "dg_abc",
            "dg_abc_short",
            "xx_abc_0123456789012345678901234567890123456789012345",
            "dg_a-b_01234567890123456789012345678901234567890123456789",
        ] {
            assert!(KeyToken::parse(bad).is_err(), "{bad}");
        }
    }
}
