-- Foundation: raw records, source cursors, quarantine, job runs, audit log.
-- Timestamps are milliseconds since the Unix epoch (UTC).

CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO counters (name, value) VALUES ('record_seq', 0);

CREATE TABLE raw_records (
    source        TEXT    NOT NULL,
    stream        TEXT    NOT NULL,
    external_id   TEXT    NOT NULL,
    seq           INTEGER NOT NULL UNIQUE,
    version       INTEGER NOT NULL,
    updated_at    INTEGER,
    deleted       INTEGER NOT NULL DEFAULT 0,
    payload       TEXT    NOT NULL,
    first_seen_at INTEGER NOT NULL,
    observed_at   INTEGER NOT NULL,
    PRIMARY KEY (source, stream, external_id)
);

CREATE TABLE source_cursors (
    source     TEXT    NOT NULL,
    stream     TEXT    NOT NULL,
    position   TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (source, stream)
);

CREATE TABLE quarantine (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    source         TEXT    NOT NULL,
    stream         TEXT    NOT NULL,
    location       TEXT    NOT NULL,
    reason         TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    payload_sha256 TEXT    NOT NULL,
    quarantined_at INTEGER NOT NULL,
    UNIQUE (source, stream, location, payload_sha256)
);

CREATE TABLE job_runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    job_kind      TEXT    NOT NULL,
    job_name      TEXT    NOT NULL,
    trigger       TEXT    NOT NULL,
    scheduled_for INTEGER NOT NULL,
    started_at    INTEGER NOT NULL,
    finished_at   INTEGER,
    status        TEXT    NOT NULL,
    error         TEXT,
    counts        TEXT    NOT NULL
);
CREATE INDEX job_runs_by_job ON job_runs (job_kind, job_name, id);

CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    target  TEXT    NOT NULL,
    details TEXT    NOT NULL
);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
