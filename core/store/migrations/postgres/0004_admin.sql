-- Segments created through the admin API. Segments written in connectors.toml are not stored here: the
-- configuration owns them, and the API refuses to create one with the same id.

CREATE TABLE api_segments (
    id          TEXT   PRIMARY KEY,
    expression  TEXT   NOT NULL,
    description TEXT,
    created_at  BIGINT NOT NULL,
    created_by  TEXT   NOT NULL,
    updated_at  BIGINT NOT NULL,
    updated_by  TEXT   NOT NULL
);
