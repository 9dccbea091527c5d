-- Bytes served per caller per UTC day (fair-use quotas). `caller` is `key:<id>` or `ip:<addr>`.
CREATE TABLE daily_usage (
    day    TEXT NOT NULL,
    caller TEXT NOT NULL,
    bytes  INTEGER NOT NULL CHECK (bytes >= 0),
    PRIMARY KEY (day, caller)
) STRICT, WITHOUT ROWID;
