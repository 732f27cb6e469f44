-- Profiles: resolved customers, their member records and identifiers, and the ids merged into others.

CREATE TABLE profiles (
    id           BIGINT PRIMARY KEY,
    document     TEXT    NOT NULL,
    search_text  TEXT    NOT NULL,
    record_count BIGINT  NOT NULL,
    created_at   BIGINT  NOT NULL,
    updated_at   BIGINT  NOT NULL
);

CREATE TABLE profile_members (
    source      TEXT    NOT NULL,
    stream      TEXT    NOT NULL,
    external_id TEXT    NOT NULL,
    profile_id  BIGINT  NOT NULL,
    PRIMARY KEY (source, stream, external_id)
);
CREATE INDEX profile_members_by_profile ON profile_members (profile_id);

CREATE TABLE profile_identifiers (
    id_type    TEXT    NOT NULL,
    id_value   TEXT    NOT NULL,
    profile_id BIGINT  NOT NULL,
    PRIMARY KEY (id_type, id_value, profile_id)
);
CREATE INDEX profile_identifiers_by_profile ON profile_identifiers (profile_id);

CREATE TABLE profile_aliases (
    old_id    BIGINT PRIMARY KEY,
    new_id    BIGINT  NOT NULL,
    merged_at BIGINT  NOT NULL
);

INSERT INTO counters (name, value) VALUES ('profile_id', 0);
INSERT INTO counters (name, value) VALUES ('identity_seq', 0);
