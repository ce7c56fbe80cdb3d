-- Each appspace's use of resources per hour (docs/usage.md): CPU time
-- (accumulated across sandboxes, so across idle stops), the highest
-- memory and disk use seen in the hour, requests served and egress bytes
-- (both ways, counted as each connection closes). `hour` is the hour's
-- first second (Unix time, UTC). Kept 30 days; gone with the appspace.
CREATE TABLE usage_hours (
    appspace          TEXT NOT NULL,
    hour              INTEGER NOT NULL,
    cpu_ms            INTEGER NOT NULL DEFAULT 0,
    memory_peak_bytes INTEGER NOT NULL DEFAULT 0,
    disk_bytes        INTEGER,
    requests          INTEGER NOT NULL DEFAULT 0,
    egress_bytes      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (appspace, hour)
) WITHOUT ROWID;
CREATE INDEX usage_hours_by_hour ON usage_hours (hour);
