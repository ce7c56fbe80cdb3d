-- The admin API's audit log: who changed what, when, and how it went.
CREATE TABLE audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    uid     INTEGER NOT NULL,
    pid     INTEGER,
    user    TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    detail  TEXT NOT NULL DEFAULT '',
    ok      INTEGER NOT NULL CHECK (ok IN (0, 1)),
    result  TEXT NOT NULL
);
CREATE INDEX audit_by_time ON audit (at);
