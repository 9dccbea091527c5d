//! Portal sessions shared by the gateways of a cluster, so a signed-in visitor stays signed in
//! whichever gateway the load balancer picks. The store never sees a session id or an API key
//! in the clear: a session is found by a hash of its id, and the key it holds is sealed by the
//! portal under a key derived from the id (which only the visitor's cookie carries).

use crate::store::Result;
use async_trait::async_trait;
use std::time::Duration;

/// One session as the portal stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// A hash of the session id (hex).
    pub id_hash: String,
    /// The id of the API key the session signed in with (to end a revoked key's sessions).
    pub key_id: String,
    /// The API key, sealed under the session id.
    pub sealed_key: Vec<u8>,
}

/// How long sessions live, and how many there may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// A session ends this long after its last page.
    pub idle: Duration,
    /// ... and this long after sign-in.
    pub max_age: Duration,
    /// At most this many live sessions; the least recently seen end first.
    pub max_sessions: usize,
}

/// Where gateways keep the portal's sessions. Time is the database's clock.
#[async_trait]
pub trait SharedSessions: Send + Sync {
    /// Stores a new session (ending expired ones, and the least recently seen beyond the
    /// limit).
    async fn start_session(&self, session: StoredSession, limits: SessionLimits) -> Result<()>;
    /// The sealed key of the live session `id_hash`, marking it seen; `None` for an unknown or
    /// expired session (which is then forgotten).
    async fn touch_session(&self, id_hash: &str, limits: SessionLimits) -> Result<Option<Vec<u8>>>;
    /// Ends one session.
    async fn end_session(&self, id_hash: &str) -> Result<()>;
    /// Ends every session signed in with key `key_id`.
    async fn end_key_sessions(&self, key_id: &str) -> Result<()>;
}
