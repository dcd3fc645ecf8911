-- Roles, quotas and the audit log (docs/operations.md).

-- What a key may do: admin | member | read-only. Keys made before roles existed could do
-- everything, so they stay admins.
ALTER TABLE api_keys ADD COLUMN role TEXT NOT NULL DEFAULT 'admin';

-- A team's limits; a NULL column (or no row) is no limit.
CREATE TABLE team_quotas (
    team_id          TEXT PRIMARY KEY REFERENCES teams(id),
    max_sandboxes    INTEGER,
    max_vcpus        INTEGER,
    max_memory_mb    INTEGER,
    max_storage_mb   INTEGER,
    -- each of the team's keys: a bucket of `rate_burst` requests refilled at this rate
    rate_per_second  REAL,
    rate_burst       INTEGER,
    updated_at       TEXT NOT NULL
);

CREATE TABLE audit_log (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    at       TEXT NOT NULL,
    -- NULL for the operator's changes that belong to no team
    team_id  TEXT,
    -- the key's id (never the key); NULL when the server or the CLI acted
    key_id   TEXT,
    -- key | cli | server
    actor    TEXT NOT NULL,
    source   TEXT NOT NULL,
    action   TEXT NOT NULL,
    target   TEXT NOT NULL,
    -- ok | denied | error
    outcome  TEXT NOT NULL,
    status   INTEGER,
    detail   TEXT NOT NULL
);
CREATE INDEX audit_log_team ON audit_log (team_id, seq);

-- Append-only: the store refuses to change or remove an entry.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
