-- Team secrets (E2B's `/secrets`): named values a team's sandboxes reference as
-- `${e2b.secrets.NAME}` in egress header templates. A name is unique in its team; the value
-- is never answered, only resolved by the egress proxy.
CREATE TABLE team_secrets (
    -- `sec_` + 32 hex; names cannot start with `sec_`, so `{idOrName}` is never ambiguous
    id              TEXT PRIMARY KEY,
    team_id         TEXT NOT NULL REFERENCES teams(id),
    name            TEXT NOT NULL,
    -- the version readers get; every update adds one
    current_version INTEGER NOT NULL,
    -- JSON object of strings (not secret: it is answered)
    metadata        TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    UNIQUE (team_id, name)
);
CREATE INDEX team_secrets_by_team ON team_secrets (team_id, created_at);

-- Every version of a secret, old ones kept so that a sandbox could pin one. `value` is sealed
-- (see secrets.rs) with `team_secret/<team id>/<secret id>/<version>` as associated data, so
-- a sealed value opens in its own row only. Deleting a secret deletes its versions (and
-- secure_delete zeroes the freed cells).
CREATE TABLE team_secret_versions (
    secret_id  TEXT NOT NULL REFERENCES team_secrets(id) ON DELETE CASCADE,
    version    INTEGER NOT NULL,
    value      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (secret_id, version)
);
