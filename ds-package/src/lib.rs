//! App packages: a directory or `.tar.gz` with `ds-app.toml` at its root.
//! Installing validates everything and leaves either a complete, read-only
//! version on disk or nothing at all.

mod install;
mod manifest;

pub use install::{AppStore, InstallError, InstalledVersion, PackageLimits, Staged};
pub use manifest::{
    expand, parse as parse_manifest, DataSchema, EgressHost, HostValues, Manifest, ManifestError,
    HOST_ENV, MANIFEST_FILE, PLACEHOLDERS,
};
