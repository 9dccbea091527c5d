-- (Nothing for SQLite: one gateway alone keeps its portal sessions in memory.)
SELECT 1;
