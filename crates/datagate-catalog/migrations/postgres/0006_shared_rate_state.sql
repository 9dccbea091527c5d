-- The request-rate state gateways share (GCRA): per tier and caller, the theoretical arrival
-- time of the next request, in microseconds of the database's clock. UNLOGGED: losing it in a
-- database crash only forgives the callers' recent bursts.
CREATE UNLOGGED TABLE rate_state (
    caller TEXT PRIMARY KEY,
    tat_us BIGINT NOT NULL
);
