-- Segment memberships with their history, and the audience-sync state: what each destination holds,
-- the durable outbox of changes to send, and the records a destination refused.

CREATE TABLE segment_members (
    segment    TEXT    NOT NULL,
    profile_id INTEGER NOT NULL,
    entered_at INTEGER NOT NULL,
    PRIMARY KEY (segment, profile_id)
);

CREATE TABLE segment_history (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    segment    TEXT    NOT NULL,
    profile_id INTEGER NOT NULL,
    change     TEXT    NOT NULL,
    at         INTEGER NOT NULL
);
CREATE INDEX segment_history_by_profile ON segment_history (segment, profile_id, id);

CREATE TABLE sync_delivered (
    sync_id      TEXT    NOT NULL,
    profile_id   INTEGER NOT NULL,
    payload_hash TEXT    NOT NULL,
    delivered_at INTEGER NOT NULL,
    PRIMARY KEY (sync_id, profile_id)
);

CREATE TABLE sync_outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    sync_id      TEXT    NOT NULL,
    profile_id   INTEGER NOT NULL,
    op           TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    payload_hash TEXT    NOT NULL,
    identifiers  TEXT    NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    not_before   INTEGER NOT NULL,
    last_error   TEXT,
    UNIQUE (sync_id, profile_id)
);

CREATE TABLE sync_dead_letters (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    sync_id      TEXT    NOT NULL,
    profile_id   INTEGER NOT NULL,
    op           TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    payload_hash TEXT    NOT NULL,
    identifiers  TEXT    NOT NULL,
    reason       TEXT    NOT NULL,
    at           INTEGER NOT NULL
);
CREATE INDEX sync_dead_letters_by_sync ON sync_dead_letters (sync_id, id);
