-- Bytes served per caller per UTC day (fair-use quotas). `caller` is `key:<id>` or `ip:<addr>`.
CREATE TABLE daily_usage (
    day    DATE NOT NULL,
    caller TEXT NOT NULL,
    bytes  BIGINT NOT NULL CHECK (bytes >= 0),
    PRIMARY KEY (day, caller)
);
