//! Signed-in sessions: a key is posted once to `/signin` and exchanged for a random session id
//! held in an `HttpOnly`, `SameSite=Strict` cookie; the key stays on the server, in memory,
//! and every page a session views calls the API with it — so a revoked key is refused on the
//! session's next page (which then ends the session), exactly as for an API client.
//!
//! Sessions end after `portal.session_idle_secs` without a page, `portal.session_max_secs`
//! after sign-in, on sign-out, and (oldest first) past `portal.max_sessions`. They live in this
//! process: a restart signs everybody out.

use datagate_core::config::PortalConfig;
use rand::RngCore;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The session cookie's name.
pub const COOKIE: &str = "dg_session";

struct Session {
    key: String,
    started: Instant,
    seen: Instant,
}

pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    idle: Duration,
    max_age: Duration,
    max_sessions: usize,
}

impl Sessions {
    pub fn new(cfg: &PortalConfig) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            idle: Duration::from_secs(cfg.session_idle_secs.max(1)),
            max_age: Duration::from_secs(cfg.session_max_secs.max(1)),
            max_sessions: cfg.max_sessions.max(1),
        }
    }

    /// How long a new session may live (the cookie's `Max-Age`).
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a session for `key`; returns its id (256 random bits, hex).
    pub fn start(&self, key: String) -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let id = hex::encode(bytes);
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, s| self.alive(s, now));
        while map.len() >= self.max_sessions {
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
        id
    }

    fn alive(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.seen) < self.idle && now.duration_since(s.started) < self.max_age
    }

    /// The key of a live session (and the session marked as seen), or `None`.
    pub fn key(&self, id: &str) -> Option<String> {
        let now = Instant::now();
        let mut map = self.lock();
        let alive = map.get(id).is_some_and(|s| self.alive(s, now));
        if !alive {
            map.remove(id);
            return None;
        }
        let s = map.get_mut(id)?;
        s.seen = now;
        Some(s.key.clone())
    }

    /// Ends one session.
    pub fn end(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Ends every session signed in with `key` (it was refused: revoked or expired).
    pub fn end_key(&self, key: &str) {
        self.lock().retain(|_, s| s.key != key);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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

    #[test]
    fn a_session_holds_its_key_until_it_ends() {
        let s = Sessions::new(&config(60, 60, 10));
        let a = s.start("dg_a".into());
        let b = s.start("dg_b".into());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(s.key(&a).as_deref(), Some("dg_a"));
        s.end(&a);
        assert_eq!(s.key(&a), None);
        s.end_key("dg_b");
        assert_eq!(s.key(&b), None);
        assert_eq!(s.key("nonsense"), None);
    }

    #[test]
    fn the_least_recently_seen_session_makes_room() {
        let s = Sessions::new(&config(60, 60, 2));
        let a = s.start("dg_a".into());
        let b = s.start("dg_b".into());
        std::thread::sleep(Duration::from_millis(2));
        assert!(s.key(&a).is_some());
        let c = s.start("dg_c".into());
        assert!(s.key(&b).is_none(), "b was seen least recently");
        assert!(s.key(&a).is_some() && s.key(&c).is_some());
    }

    #[test]
    fn idle_sessions_end() {
        let s = Sessions::new(&config(1, 60, 10));
        let a = s.start("dg_a".into());
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(s.key(&a), None);
    }
}
