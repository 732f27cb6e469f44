-- The profile change log: one row per write of profiles (a resolution step or a rebuild), listing the
-- ids written or removed, so an in-memory copy of the profiles (the daemon's segment table) catches up
-- with any writer, in this process or another, by reading the rows after the generation it holds.
-- Old rows are pruned; a reader older than the oldest row kept reloads everything.

CREATE TABLE profile_changes (
    generation  INTEGER PRIMARY KEY AUTOINCREMENT,
    changed_at  INTEGER NOT NULL,
    everything  INTEGER NOT NULL,
    profile_ids TEXT    NOT NULL
);
