-- API keys: only a hash of the secret is stored.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'publisher', 'consumer', 'auditor')),
    department  TEXT REFERENCES departments(id),
    tier        TEXT NOT NULL DEFAULT 'standard',
    secret_hash TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    expires_at  TEXT,
    revoked_at  TEXT,
    CHECK ((role = 'publisher') = (department IS NOT NULL))
) STRICT;
