-- An appspace's disk limit (bytes; 0: none) and what enforces it:
-- 'project' (a project quota of the file system holding the data
-- directory, the project being the appspace's host uid), 'image' (a file
-- system of its own in <home>/disk.img, mounted at <home>/disk, the data
-- directory inside it) or 'none' (docs/quotas.md).
ALTER TABLE appspaces ADD COLUMN disk_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE appspaces ADD COLUMN disk_kind TEXT NOT NULL DEFAULT 'none';
