-- (Nothing for SQLite: one gateway alone keeps its secrets in its data directory.)
SELECT 1;
