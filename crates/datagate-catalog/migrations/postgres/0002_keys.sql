-- API keys: only a hash of the secret is stored.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'publisher', 'consumer', 'auditor')),
    department  TEXT REFERENCES departments(id),
    tier        TEXT NOT NULL DEFAULT 'standard',
    secret_hash TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    created_by  TEXT NOT NULL,
    expires_at  TIMESTAMPTZ,
    revoked_at  TIMESTAMPTZ,
    CHECK ((role = 'publisher') = (department IS NOT NULL))
);
