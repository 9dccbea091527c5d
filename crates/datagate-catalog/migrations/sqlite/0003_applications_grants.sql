-- Applications for conditional datasets, and the grants approved applications become.
-- Every transition keeps who made it and when.
CREATE TABLE applications (
    id          TEXT PRIMARY KEY NOT NULL,
    department  TEXT NOT NULL,
    dataset     TEXT NOT NULL,
    applicant   TEXT NOT NULL REFERENCES api_keys(id),
    purpose     TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected')),
    created_at  TEXT NOT NULL,
    decided_by  TEXT,
    decided_at  TEXT,
    reason      TEXT,
    FOREIGN KEY (department, dataset) REFERENCES datasets(department_id, name)
) STRICT;
CREATE INDEX applications_by_dataset ON applications(department, dataset);
CREATE INDEX applications_by_applicant ON applications(applicant);

CREATE TABLE grants (
    id             TEXT PRIMARY KEY NOT NULL,
    application_id TEXT NOT NULL UNIQUE REFERENCES applications(id),
    key_id         TEXT NOT NULL REFERENCES api_keys(id),
    department     TEXT NOT NULL,
    dataset        TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    created_by     TEXT NOT NULL,
    expires_at     TEXT,
    revoked_at     TEXT,
    revoked_by     TEXT,
    FOREIGN KEY (department, dataset) REFERENCES datasets(department_id, name)
) STRICT;
CREATE INDEX grants_by_key ON grants(key_id);
