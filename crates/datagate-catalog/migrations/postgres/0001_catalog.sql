-- Departments, datasets, columns and versions (PostgreSQL; the SQLite text has the same shape).
CREATE TABLE departments (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE datasets (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    department_id     TEXT NOT NULL REFERENCES departments(id),
    name              TEXT NOT NULL,
    title             TEXT NOT NULL,
    description       TEXT NOT NULL DEFAULT '',
    tags              JSONB NOT NULL DEFAULT '[]',   -- array of strings
    license           TEXT NOT NULL DEFAULT '',
    contact_name      TEXT NOT NULL DEFAULT '',
    contact_email     TEXT NOT NULL DEFAULT '',
    update_frequency  TEXT NOT NULL DEFAULT '',
    access_level      TEXT NOT NULL CHECK (access_level IN ('open', 'conditional', 'shared')),
    temporal_coverage TEXT,
    spatial_coverage  TEXT,
    primary_key       JSONB NOT NULL DEFAULT '[]',   -- array of column names
    current_version   BIGINT,
    unpublished_at    TIMESTAMPTZ,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL,
    UNIQUE (department_id, name)
);

CREATE TABLE columns (
    dataset_id  BIGINT NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    name        TEXT NOT NULL,
    data_type   TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    sensitivity TEXT NOT NULL DEFAULT 'public' CHECK (sensitivity IN ('public', 'masked', 'private')),
    mask        TEXT CHECK (mask IS NULL OR mask IN ('hash', 'redact', 'partial', 'year', 'null')),
    PRIMARY KEY (dataset_id, name),
    UNIQUE (dataset_id, position)
);

-- The unique (dataset, version) key is the backstop of concurrent commits from several
-- gateways: the second insert of a number waits for the first and fails when it commits.
CREATE TABLE versions (
    dataset_id    BIGINT NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
    version       BIGINT NOT NULL,
    mode          TEXT NOT NULL CHECK (mode IN ('append', 'replace')),
    rows_added    BIGINT NOT NULL,
    row_count     BIGINT NOT NULL,
    bytes         BIGINT NOT NULL,
    columns       JSONB NOT NULL,                   -- the schema of this version
    source_digest TEXT,
    created_at    TIMESTAMPTZ NOT NULL,
    created_by    TEXT NOT NULL,
    PRIMARY KEY (dataset_id, version)
);

CREATE TABLE version_files (
    dataset_id BIGINT NOT NULL,
    version    BIGINT NOT NULL,
    position   INTEGER NOT NULL,
    path       TEXT NOT NULL,
    rows       BIGINT NOT NULL,
    bytes      BIGINT NOT NULL,
    PRIMARY KEY (dataset_id, version, position),
    FOREIGN KEY (dataset_id, version) REFERENCES versions(dataset_id, version) ON DELETE CASCADE
);

CREATE INDEX version_files_path ON version_files(path);
CREATE INDEX datasets_visible ON datasets(unpublished_at, access_level);
