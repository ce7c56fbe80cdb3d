-- What a version runs besides its entrypoint: the manifest's `command`
-- arguments (placeholders such as ${PORT} unexpanded) and its `[env]`, as
-- JSON ('[]': none; versions installed before have neither).
ALTER TABLE app_versions ADD COLUMN args TEXT NOT NULL DEFAULT '[]';
ALTER TABLE app_versions ADD COLUMN env TEXT NOT NULL DEFAULT '[]';
