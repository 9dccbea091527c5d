-- Each gateway's public usage counters per dataset (reads and downloads, from its own audit
-- log), published so every gateway shows the cluster's sums: per day for the recent window,
-- and totals. A gateway overwrites only its own rows.
CREATE TABLE dataset_usage_days (
    node      TEXT NOT NULL,
    dataset   TEXT NOT NULL,
    day       DATE NOT NULL,
    reads     BIGINT NOT NULL,
    downloads BIGINT NOT NULL,
    PRIMARY KEY (node, dataset, day)
);
CREATE TABLE dataset_usage_totals (
    node      TEXT NOT NULL,
    dataset   TEXT NOT NULL,
    reads     BIGINT NOT NULL,
    downloads BIGINT NOT NULL,
    PRIMARY KEY (node, dataset)
);
