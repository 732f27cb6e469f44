-- Segment memberships with their history, and the audience-sync state: what each destination holds,
-- the durable outbox of changes to send, and the records a destination refused.

CREATE TABLE segment_members (
    segment    TEXT    NOT NULL,
    profile_id BIGINT  NOT NULL,
    entered_at BIGINT  NOT NULL,
    PRIMARY KEY (segment, profile_id)
);

CREATE TABLE segment_history (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    segment    TEXT    NOT NULL,
    profile_id BIGINT  NOT NULL,
    change     TEXT    NOT NULL,
    at         BIGINT  NOT NULL
);
CREATE INDEX segment_history_by_profile ON segment_history (segment, profile_id, id);

CREATE TABLE sync_delivered (
    sync_id      TEXT    NOT NULL,
    profile_id   BIGINT  NOT NULL,
    payload_hash TEXT    NOT NULL,
    delivered_at BIGINT  NOT NULL,
    PRIMARY KEY (sync_id, profile_id)
);

CREATE TABLE sync_outbox (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sync_id      TEXT    NOT NULL,
    profile_id   BIGINT  NOT NULL,
    op           TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    payload_hash TEXT    NOT NULL,
    identifiers  TEXT    NOT NULL,
    attempts     BIGINT  NOT NULL DEFAULT 0,
    not_before   BIGINT  NOT NULL,
    last_error   TEXT,
    UNIQUE (sync_id, profile_id)
);

CREATE TABLE sync_dead_letters (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sync_id      TEXT    NOT NULL,
    profile_id   BIGINT  NOT NULL,
    op           TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    payload_hash TEXT    NOT NULL,
    identifiers  TEXT    NOT NULL,
    reason       TEXT    NOT NULL,
    at           BIGINT  NOT NULL
);
CREATE INDEX sync_dead_letters_by_sync ON sync_dead_letters (sync_id, id);
