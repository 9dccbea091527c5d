-- (Nothing for SQLite: one gateway alone counts its datasets' usage from its own audit log.)
SELECT 1;
