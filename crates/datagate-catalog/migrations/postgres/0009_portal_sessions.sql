-- Portal sessions shared by the gateways of a cluster (a signed-in visitor may reach any of
-- them). Neither the session id nor the API key is stored: the id as a hash, the key sealed
-- under a key derived from the id (which only the visitor's cookie carries).
CREATE TABLE portal_sessions (
    id_hash    TEXT PRIMARY KEY,
    key_id     TEXT NOT NULL,
    sealed_key BYTEA NOT NULL,
    started    TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    seen       TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX portal_sessions_key ON portal_sessions (key_id);
CREATE INDEX portal_sessions_seen ON portal_sessions (seen);
