-- Which version of a profile (its updated_at, which every rewrite advances) each delivered payload and each
-- pending change was computed from, so a sync's diff reads only the members whose profile changed since;
-- and the field mapping each sync last planned with, so a changed mapping diffs every member again.

ALTER TABLE sync_delivered ADD COLUMN profile_version BIGINT;
ALTER TABLE sync_outbox ADD COLUMN profile_version BIGINT;

CREATE TABLE sync_mappings (
    sync_id      TEXT NOT NULL PRIMARY KEY,
    mapping_hash TEXT NOT NULL
);
