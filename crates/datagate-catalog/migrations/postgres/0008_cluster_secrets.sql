-- Secrets every gateway of a cluster must share (the masking key, so a hash-masked value is the
-- same whichever gateway answers): the first gateway's value wins, the others adopt it.
CREATE TABLE cluster_secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
