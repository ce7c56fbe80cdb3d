-- Every egress attempt: what the app asked for, what it reached, and how
-- it went. Pruned to the newest rows by the host (see egress_log writer).
CREATE TABLE egress_log (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           INTEGER NOT NULL,
    appspace     TEXT NOT NULL,
    destination  TEXT NOT NULL,
    address      TEXT,
    outcome      TEXT NOT NULL CHECK (outcome IN ('allowed', 'denied', 'failed')),
    reason       TEXT NOT NULL DEFAULT '',
    bytes_up     INTEGER NOT NULL DEFAULT 0,
    bytes_down   INTEGER NOT NULL DEFAULT 0,
    duration_ms  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX egress_log_by_appspace ON egress_log (appspace, id);
