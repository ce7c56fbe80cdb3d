-- Apps, their installed versions, appspaces and an event log.
CREATE TABLE apps (
    name        TEXT PRIMARY KEY NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE app_versions (
    app          TEXT NOT NULL REFERENCES apps(name),
    version      TEXT NOT NULL,
    runtime      TEXT NOT NULL CHECK (runtime IN ('native', 'deno')),
    entrypoint   TEXT NOT NULL,
    memory_bytes INTEGER,
    dir          TEXT NOT NULL,
    manifest     TEXT NOT NULL,
    installed_at INTEGER NOT NULL,
    PRIMARY KEY (app, version)
);

CREATE TABLE appspaces (
    name         TEXT PRIMARY KEY NOT NULL,
    domain       TEXT NOT NULL UNIQUE,
    app          TEXT NOT NULL,
    version      TEXT NOT NULL,
    data_dir     TEXT NOT NULL,
    memory_bytes INTEGER NOT NULL,
    cpus         REAL NOT NULL DEFAULT 1.0,
    pids         INTEGER NOT NULL DEFAULT 64,
    egress       TEXT NOT NULL DEFAULT '[]',
    status       TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused')),
    created_at   INTEGER NOT NULL,
    FOREIGN KEY (app, version) REFERENCES app_versions(app, version)
);

CREATE TABLE events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        INTEGER NOT NULL,
    appspace  TEXT,
    kind      TEXT NOT NULL,
    detail    TEXT NOT NULL DEFAULT ''
);
CREATE INDEX events_by_appspace ON events (appspace, at);
