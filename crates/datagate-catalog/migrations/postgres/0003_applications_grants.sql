-- Applications for conditional datasets, and the grants approved applications become.
-- Every transition keeps who made it and when.
CREATE TABLE applications (
    id          TEXT PRIMARY KEY,
    department  TEXT NOT NULL,
    dataset     TEXT NOT NULL,
    applicant   TEXT NOT NULL REFERENCES api_keys(id),
    purpose     TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected')),
    created_at  TIMESTAMPTZ NOT NULL,
    decided_by  TEXT,
    decided_at  TIMESTAMPTZ,
    reason      TEXT,
    FOREIGN KEY (department, dataset) REFERENCES datasets(department_id, name)
);
CREATE INDEX applications_by_dataset ON applications(department, dataset);
CREATE INDEX applications_by_applicant ON applications(applicant);

CREATE TABLE grants (
    id             TEXT PRIMARY KEY,
    application_id TEXT NOT NULL UNIQUE REFERENCES applications(id),
    key_id         TEXT NOT NULL REFERENCES api_keys(id),
    department     TEXT NOT NULL,
    dataset        TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    created_by     TEXT NOT NULL,
    expires_at     TIMESTAMPTZ,
    revoked_at     TIMESTAMPTZ,
    revoked_by     TEXT,
    FOREIGN KEY (department, dataset) REFERENCES datasets(department_id, name)
);
CREATE INDEX grants_by_key ON grants(key_id);
