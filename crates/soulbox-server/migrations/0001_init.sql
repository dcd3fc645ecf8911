-- Teams own API keys and sandboxes; a key never sees another team's sandboxes.
CREATE TABLE teams (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    team_id    TEXT NOT NULL REFERENCES teams(id),
    -- sha256 of the key, hex; the key itself is never stored.
    key_hash   TEXT NOT NULL UNIQUE,
    -- the first characters of the key, to tell keys apart in listings.
    prefix     TEXT NOT NULL,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);

CREATE TABLE sandboxes (
    id            TEXT PRIMARY KEY,
    team_id       TEXT NOT NULL REFERENCES teams(id),
    template      TEXT NOT NULL,
    alias         TEXT NOT NULL,
    -- running | paused | killed
    state         TEXT NOT NULL,
    metadata      TEXT NOT NULL,
    env_vars      TEXT NOT NULL,
    access_token  TEXT NOT NULL,
    internet      INTEGER NOT NULL,
    cpu_millis    INTEGER NOT NULL,
    memory_mb     INTEGER NOT NULL,
    disk_mb       INTEGER NOT NULL,
    started_at    TEXT NOT NULL,
    -- unix milliseconds; the lifecycle manager kills the sandbox then
    end_at_ms     INTEGER NOT NULL,
    auto_pause    INTEGER NOT NULL DEFAULT 0,
    pid           INTEGER
);

CREATE INDEX sandboxes_team_state ON sandboxes(team_id, state);
