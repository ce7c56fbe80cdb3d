-- Each appspace's own host uid and gid (one number for both), allocated
-- from ds's range (docs/host.md, "Host uids") and recorded for as long as
-- data owned by it may exist: an id is never handed out again while
-- `released_at` is NULL, and released ids are reused only once the range
-- is exhausted.
CREATE TABLE host_ids (
    id           INTEGER PRIMARY KEY NOT NULL,
    appspace     TEXT NOT NULL,
    allocated_at INTEGER NOT NULL,
    released_at  INTEGER
);
ALTER TABLE appspaces ADD COLUMN uid INTEGER REFERENCES host_ids(id);
CREATE UNIQUE INDEX appspaces_by_uid ON appspaces (uid);
-- Appspaces recorded before ids were allocated get theirs now.
UPDATE appspaces SET uid = 1879048192 + rowid;
INSERT INTO host_ids (id, appspace, allocated_at)
    SELECT uid, name, created_at FROM appspaces;

-- Why an appspace cannot run (its version's files are gone, say): set by
-- the host's start-up check, cleared when an admin repairs it; a broken
-- appspace is kept, never deleted by the host.
ALTER TABLE appspaces ADD COLUMN broken TEXT;

-- Nothing read the event log; the audit log records every admin change
-- and the host's own decisions.
DROP TABLE events;
