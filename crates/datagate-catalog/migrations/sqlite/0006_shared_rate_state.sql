-- (Nothing for SQLite: one gateway alone keeps its request rates in memory. The step exists so
-- both backends number their schema alike.)
SELECT 1;
