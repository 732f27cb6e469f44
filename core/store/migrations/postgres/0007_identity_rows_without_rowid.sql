-- On SQLite this version stores membership and identifier rows in their primary key's b-tree only
-- (`WITHOUT ROWID`). PostgreSQL tables have no rowid b-tree to drop: nothing changes here.
SELECT 1;
