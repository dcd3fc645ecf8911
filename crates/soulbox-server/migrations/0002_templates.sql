-- Custom templates (E2B's template build API). A template belongs to a team; its name is
-- unique in the team; a public one can be started by every team.
CREATE TABLE templates (
    id         TEXT PRIMARY KEY,
    team_id    TEXT NOT NULL REFERENCES teams(id),
    name       TEXT NOT NULL,
    public     INTEGER NOT NULL DEFAULT 0,
    cpu_count  INTEGER NOT NULL,
    memory_mb  INTEGER NOT NULL,
    disk_mb    INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (team_id, name)
);

-- One build of a template. `image` (JSON: layer ids bottom first, env, user, workdir, start
-- and ready commands) is set once the build is ready.
CREATE TABLE template_builds (
    id          TEXT PRIMARY KEY,
    template_id TEXT NOT NULL REFERENCES templates(id) ON DELETE CASCADE,
    -- waiting | building | ready | error
    status      TEXT NOT NULL,
    -- JSON list of the tags set on it when ready
    tags        TEXT NOT NULL,
    cpu_count   INTEGER NOT NULL,
    memory_mb   INTEGER NOT NULL,
    request     TEXT,
    image       TEXT,
    reason      TEXT,
    created_at  TEXT NOT NULL,
    finished_at TEXT
);

CREATE TABLE template_build_logs (
    build_id  TEXT NOT NULL REFERENCES template_builds(id) ON DELETE CASCADE,
    seq       INTEGER NOT NULL,
    timestamp TEXT NOT NULL,
    level     TEXT NOT NULL,
    step      TEXT,
    message   TEXT NOT NULL,
    PRIMARY KEY (build_id, seq)
);

-- `name:tag` → build. The tag `default` is what a bare name starts.
CREATE TABLE template_tags (
    template_id TEXT NOT NULL REFERENCES templates(id) ON DELETE CASCADE,
    tag         TEXT NOT NULL,
    build_id    TEXT NOT NULL REFERENCES template_builds(id) ON DELETE CASCADE,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (template_id, tag)
);
