-- The format a version was uploaded in (csv, ndjson, parquet, arrow). NULL for versions
-- committed before this column existed.
ALTER TABLE versions ADD COLUMN source_format TEXT
    CHECK (source_format IS NULL OR source_format IN ('csv', 'ndjson', 'parquet', 'arrow'));
