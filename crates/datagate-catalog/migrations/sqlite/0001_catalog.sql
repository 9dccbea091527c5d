-- Departments, datasets, columns and versions.
CREATE TABLE departments (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
) STRICT;

CREATE TABLE datasets (
    id                INTEGER PRIMARY KEY,
    department_id     TEXT NOT NULL REFERENCES departments(id),
    name              TEXT NOT NULL,
    title             TEXT NOT NULL,
    description       TEXT NOT NULL DEFAULT '',
    tags              TEXT NOT NULL DEFAULT '[]',   -- JSON array of strings
    license           TEXT NOT NULL DEFAULT '',
    contact_name      TEXT NOT NULL DEFAULT '',
    contact_email     TEXT NOT NULL DEFAULT '',
    update_frequency  TEXT NOT NULL DEFAULT '',
    access_level      TEXT NOT NULL CHECK (access_level IN ('open', 'conditional', 'shared')),
    temporal_coverage TEXT,
    spatial_coverage  TEXT,
    primary_key       TEXT NOT NULL DEFAULT '[]',   -- JSON array of column names
    current_version   INTEGER,
    unpublished_at    TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    UNIQUE (department_id, name)
) STRICT;

CREATE TABLE columns (
    dataset_id  INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    name        TEXT NOT NULL,
    data_type   TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    sensitivity TEXT NOT NULL DEFAULT 'public' CHECK (sensitivity IN ('public', 'masked', 'private')),
    mask        TEXT CHECK (mask IS NULL OR mask IN ('hash', 'redact', 'partial', 'year', 'null')),
    PRIMARY KEY (dataset_id, name),
    UNIQUE (dataset_id, position)
) STRICT;

CREATE TABLE versions (
    dataset_id    INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
    version       INTEGER NOT NULL,
    mode          TEXT NOT NULL CHECK (mode IN ('append', 'replace')),
    rows_added    INTEGER NOT NULL,
    row_count     INTEGER NOT NULL,
    bytes         INTEGER NOT NULL,
    columns       TEXT NOT NULL,                   -- JSON: the schema of this version
    source_digest TEXT,
    created_at    TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    PRIMARY KEY (dataset_id, version)
) STRICT;

CREATE TABLE version_files (
    dataset_id INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    position   INTEGER NOT NULL,
    path       TEXT NOT NULL,
    rows       INTEGER NOT NULL,
    bytes      INTEGER NOT NULL,
    PRIMARY KEY (dataset_id, version, position),
    FOREIGN KEY (dataset_id, version) REFERENCES versions(dataset_id, version) ON DELETE CASCADE
) STRICT;

CREATE INDEX version_files_path ON version_files(path);
CREATE INDEX datasets_visible ON datasets(unpublished_at, access_level);
