-- A change to an appspace under way that must be finished or undone if
-- the host dies in the middle (an upgrade: the version it goes to and
-- the backup taken before it, as JSON). Set before anything changes,
-- cleared in the same transaction that records the outcome; found set at
-- start-up, it is rolled back (docs/upgrades.md).
ALTER TABLE appspaces ADD COLUMN pending TEXT;
