-- Foundation: raw records, source cursors, quarantine, job runs, audit log.
-- Timestamps are milliseconds since the Unix epoch (UTC).

CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('record_seq', 0);

CREATE TABLE raw_records (
    source        TEXT   NOT NULL,
    stream        TEXT   NOT NULL,
    external_id   TEXT   NOT NULL,
    seq           BIGINT NOT NULL UNIQUE,
    version       BIGINT NOT NULL,
    updated_at    BIGINT,
    deleted       BIGINT NOT NULL DEFAULT 0,
    payload       TEXT   NOT NULL,
    first_seen_at BIGINT NOT NULL,
    observed_at   BIGINT NOT NULL,
    PRIMARY KEY (source, stream, external_id)
);

CREATE TABLE source_cursors (
    source     TEXT   NOT NULL,
    stream     TEXT   NOT NULL,
    position   TEXT   NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (source, stream)
);

CREATE TABLE quarantine (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source         TEXT   NOT NULL,
    stream         TEXT   NOT NULL,
    location       TEXT   NOT NULL,
    reason         TEXT   NOT NULL,
    payload        TEXT   NOT NULL,
    payload_sha256 TEXT   NOT NULL,
    quarantined_at BIGINT NOT NULL,
    UNIQUE (source, stream, location, payload_sha256)
);

CREATE TABLE job_runs (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_kind      TEXT   NOT NULL,
    job_name      TEXT   NOT NULL,
    trigger       TEXT   NOT NULL,
    scheduled_for BIGINT NOT NULL,
    started_at    BIGINT NOT NULL,
    finished_at   BIGINT,
    status        TEXT   NOT NULL,
    error         TEXT,
    counts        TEXT   NOT NULL
);
CREATE INDEX job_runs_by_job ON job_runs (job_kind, job_name, id);

CREATE TABLE audit_log (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      BIGINT NOT NULL,
    actor   TEXT   NOT NULL,
    action  TEXT   NOT NULL,
    target  TEXT   NOT NULL,
    details TEXT   NOT NULL
);
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_update_or_delete BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
