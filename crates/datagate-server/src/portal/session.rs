//! Signed-in sessions: a key is posted once to `/signin` and exchanged for a random session id
//! held in an `HttpOnly`, `SameSite=Strict` cookie; the key stays on the server, and every page
//! a session views calls the API with it — so a revoked key is refused on the session's next
//! page (which then ends the session and every other session of that key), exactly as for an
//! API client.
//!
//! Sessions end after `portal.session_idle_secs` without a page, `portal.session_max_secs`
//! after sign-in, on sign-out, and (least recently seen first) past `portal.max_sessions`.
//! One gateway alone keeps them in memory (a restart signs everybody out). Gateways sharing a
//! catalog keep them in it, so a visitor stays signed in whichever gateway answers: the
//! catalog holds a hash of the session id and the key sealed (ChaCha20-Poly1305) under a key
//! derived from the id, so neither a session nor a key can be taken from the database.

use datagate_catalog::CatalogStore;
use datagate_catalog::KeyToken;
use datagate_catalog::sessions::{SessionLimits, StoredSession};
use datagate_core::config::PortalConfig;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The session cookie's name.
pub const COOKIE: &str = "dg_session";

struct Session {
    key: String,
    started: Instant,
    seen: Instant,
}

enum Store {
    /// This process's sessions.
    Local(Mutex<HashMap<String, Session>>),
    /// The shared catalog's.
    Shared(Arc<dyn CatalogStore>),
}

pub struct Sessions {
    store: Store,
    limits: SessionLimits,
}

impl Sessions {
    /// Sessions in this process's memory.
    pub fn new(cfg: &PortalConfig) -> Self {
        Self {
            store: Store::Local(Mutex::new(HashMap::new())),
            limits: limits(cfg),
        }
    }

    /// Sessions in `catalog` when gateways share it, else in memory.
    pub fn on(cfg: &PortalConfig, catalog: &Arc<dyn CatalogStore>) -> Self {
        if catalog.shared_sessions().is_some() {
            Self {
                store: Store::Shared(Arc::clone(catalog)),
                limits: limits(cfg),
            }
        } else {
            Self::new(cfg)
        }
    }

    /// How long a new session may live (the cookie's `Max-Age`).
    pub fn max_age(&self) -> Duration {
        self.limits.max_age
    }

    /// Starts a session for `key`; returns its id (256 random bits, hex).
    pub async fn start(&self, key: String) -> Result<String, String> {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let id = hex::encode(bytes);
        match &self.store {
            Store::Local(map) => {
                let now = Instant::now();
                let mut map = lock(map);
                map.retain(|_, s| self.alive(s, now));
                while map.len() >= self.limits.max_sessions {
                    let Some(oldest) = map
                        .iter()
                        .min_by_key(|(_, s)| s.seen)
                        .map(|(id, _)| id.clone())
                    else {
                        break;
                    };
                    map.remove(&oldest);
                }
                map.insert(
                    id.clone(),
                    Session {
                        key,
                        started: now,
                        seen: now,
                    },
                );
            }
            Store::Shared(catalog) => {
                let stored = StoredSession {
                    id_hash: id_hash(&id),
                    key_id: key_id(&key),
                    sealed_key: seal(&id, &key),
                };
                shared(catalog)
                    .start_session(stored, self.limits)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(id)
    }

    fn alive(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.seen) < self.limits.idle
            && now.duration_since(s.started) < self.limits.max_age
    }

    /// The key of a live session (and the session marked as seen), or `None` (also when the
    /// shared store cannot be read: the visitor is then treated as signed out, and told so).
    pub async fn key(&self, id: &str) -> Option<String> {
        match &self.store {
            Store::Local(map) => {
                let now = Instant::now();
                let mut map = lock(map);
                let alive = map.get(id).is_some_and(|s| self.alive(s, now));
                if !alive {
                    map.remove(id);
                    return None;
                }
                let s = map.get_mut(id)?;
                s.seen = now;
                Some(s.key.clone())
            }
            Store::Shared(catalog) => {
                if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                match shared(catalog)
                    .touch_session(&id_hash(id), self.limits)
                    .await
                {
                    Ok(sealed) => sealed.and_then(|s| open(id, s)),
                    Err(e) => {
                        tracing::warn!(error = %e, "reading a portal session from the catalog");
                        None
                    }
                }
            }
        }
    }

    /// Ends one session.
    pub async fn end(&self, id: &str) {
        match &self.store {
            Store::Local(map) => {
                lock(map).remove(id);
            }
            Store::Shared(catalog) => {
                if let Err(e) = shared(catalog).end_session(&id_hash(id)).await {
                    tracing::warn!(error = %e, "ending a portal session in the catalog");
                }
            }
        }
    }

    /// Ends every session signed in with `key` (it was refused: revoked or expired).
    pub async fn end_key(&self, key: &str) {
        match &self.store {
            Store::Local(map) => lock(map).retain(|_, s| s.key != key),
            Store::Shared(catalog) => {
                if let Err(e) = shared(catalog).end_key_sessions(&key_id(key)).await {
                    tracing::warn!(error = %e, "ending a key's portal sessions in the catalog");
                }
            }
        }
    }
}

fn limits(cfg: &PortalConfig) -> SessionLimits {
    SessionLimits {
        idle: Duration::from_secs(cfg.session_idle_secs.max(1)),
        max_age: Duration::from_secs(cfg.session_max_secs.max(1)),
        max_sessions: cfg.max_sessions.max(1),
    }
}

fn lock(
    map: &Mutex<HashMap<String, Session>>,
) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
    map.lock().unwrap_or_else(|p| p.into_inner())
}

fn shared(catalog: &Arc<dyn CatalogStore>) -> &dyn datagate_catalog::sessions::SharedSessions {
    catalog
        .shared_sessions()
        .expect("a catalog that shares sessions")
}

/// The session's name in the shared store: a hash of its id, under its own label so it says
/// nothing of the sealing key.
fn id_hash(id: &str) -> String {
    hex::encode(Sha256::digest(format!("datagate portal session id\0{id}")))
}

/// The id of the API key a session holds (the whole string if it is not a key's shape).
fn key_id(key: &str) -> String {
    KeyToken::parse(key).map_or_else(|_| key.to_string(), |t| t.id)
}

/// The key sealing a session's API key: derived from the session id, which only the visitor's
/// cookie carries. Each derived key seals exactly one message, so a fixed nonce is safe.
fn sealing_key(id: &str) -> ring::aead::LessSafeKey {
    let bytes = Sha256::digest(format!("datagate portal session key\0{id}"));
    let key = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &bytes)
        .expect("a 32-byte ChaCha20-Poly1305 key");
    ring::aead::LessSafeKey::new(key)
}

fn seal(id: &str, key: &str) -> Vec<u8> {
    let mut data = key.as_bytes().to_vec();
    sealing_key(id)
        .seal_in_place_append_tag(
            ring::aead::Nonce::assume_unique_for_key([0; 12]),
            ring::aead::Aad::empty(),
            &mut data,
        )
        .expect("sealing a short key");
    data
}

/// The key sealed for session `id`; `None` if it was not sealed for that id or was altered.
fn open(id: &str, mut sealed: Vec<u8>) -> Option<String> {
    let plain = sealing_key(id)
        .open_in_place(
            ring::aead::Nonce::assume_unique_for_key([0; 12]),
            ring::aead::Aad::empty(),
            &mut sealed,
        )
        .ok()?;
    String::from_utf8(plain.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(idle: u64, max: u64, n: usize) -> PortalConfig {
        PortalConfig {
            session_idle_secs: idle,
            session_max_secs: max,
            max_sessions: n,
            ..PortalConfig::default()
        }
    }

    #[tokio::test]
    async fn a_session_holds_its_key_until_it_ends() {
        let s = Sessions::new(&config(60, 60, 10));
        let a = s.start("dg_a".into()).await.unwrap();
        let b = s.start("dg_b".into()).await.unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(s.key(&a).await.as_deref(), Some("dg_a"));
        s.end(&a).await;
        assert_eq!(s.key(&a).await, None);
        s.end_key("dg_b").await;
        assert_eq!(s.key(&b).await, None);
        assert_eq!(s.key("nonsense").await, None);
    }

    #[tokio::test]
    async fn the_least_recently_seen_session_makes_room() {
        let s = Sessions::new(&config(60, 60, 2));
        let a = s.start("dg_a".into()).await.unwrap();
        let b = s.start("dg_b".into()).await.unwrap();
        std::thread::sleep(Duration::from_millis(2));
        assert!(s.key(&a).await.is_some());
        let c = s.start("dg_c".into()).await.unwrap();
        assert!(s.key(&b).await.is_none(), "b was seen least recently");
        assert!(s.key(&a).await.is_some() && s.key(&c).await.is_some());
    }

    #[tokio::test]
    async fn idle_sessions_end() {
        let s = Sessions::new(&config(1, 60, 10));
        let a = s.start("dg_a".into()).await.unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(s.key(&a).await, None);
    }

    #[test]
    fn a_sealed_key_opens_only_with_its_session_id() {
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let sealed = seal(&a, "dg_k1_secret");
        assert!(
            !sealed.windows(6).any(|w| w == b"secret"),
            "not in the clear"
        );
        assert_eq!(open(&a, sealed.clone()).as_deref(), Some("dg_k1_secret"));
        assert_eq!(open(&b, sealed.clone()), None, "another session's id");
        let mut altered = sealed;
        altered[0] ^= 1;
        assert_eq!(open(&a, altered), None, "altered in the store");
        assert_ne!(id_hash(&a), id_hash(&b));
        assert!(!id_hash(&a).contains(&a));
    }
}
