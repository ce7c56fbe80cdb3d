//! `ds-app.toml`: what an app is and what it asks for.
//!
//! ```toml
//! name = "notes"            # [a-z0-9-], 1..=64, starts with a letter
//! version = "1.2.0"         # semver
//! runtime = "native"        # or "deno"
//! entrypoint = "bin/notes"  # relative to the package root
//!
//! health = "/healthz"      # answered without a 5xx when it works (default "/")
//!
//! [requests]
//! egress = ["api.example.com", "*.example.org:8443"]
//! memory = "128M"
//!
//! [data]
//! schema = 3                # the schema of the data this version keeps (default 0)
//! oldest_schema = 1         # the oldest its migrate command converts from and to
//! migrate = ["bin/notes", "migrate"]  # run with FROM TO appended (docs/upgrades.md)
//! ```
//! Unknown keys are errors, so a typo never silently drops a setting.

use std::path::{Component, Path, PathBuf};

use ds_api::limits::parse_memory;
use ds_api::Runtime;
use serde::Deserialize;

/// The manifest's file name at the package root.
pub const MANIFEST_FILE: &str = "ds-app.toml";

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    /// Not TOML, or not the expected keys and types.
    #[error("{MANIFEST_FILE}: {0}")]
    Syntax(String),
    /// A value is out of its allowed range or form.
    #[error("{MANIFEST_FILE}: {field}: {why}")]
    Invalid {
        /// Which key.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
}

fn invalid(field: &'static str, why: impl Into<String>) -> ManifestError {
    ManifestError::Invalid {
        field,
        why: why.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    version: String,
    runtime: Runtime,
    entrypoint: String,
    health: Option<String>,
    #[serde(default)]
    requests: RawRequests,
    #[serde(default)]
    data: RawData,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawData {
    schema: Option<u32>,
    oldest_schema: Option<u32>,
    migrate: Option<Vec<String>>,
}

/// The data a version keeps, and how it converts data of other schemas.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataSchema {
    /// The schema of the data this version reads and writes.
    pub schema: u32,
    /// The oldest schema its migrate command converts from (upgrades to
    /// this version) and to (downgrades from it); `schema` when it has none.
    pub oldest: u32,
    /// The migrate command: a program in the package and its first
    /// arguments (FROM and TO are appended).
    pub migrate: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequests {
    #[serde(default)]
    egress: Vec<String>,
    memory: Option<String>,
}

/// A host an app asks to reach: an exact name or `*.suffix`, with an
/// optional port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressHost {
    /// Lower-case host name, possibly starting with `*.`.
    pub host: String,
    /// The port, if restricted to one.
    pub port: Option<u16>,
}

/// A validated manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The app's name.
    pub name: String,
    /// The version.
    pub version: semver::Version,
    /// Runtime files it needs.
    pub runtime: Runtime,
    /// What to run, relative to the package root.
    pub entrypoint: PathBuf,
    /// Hosts it asks to reach (an admin decides).
    pub egress: Vec<EgressHost>,
    /// Memory it asks for, in bytes.
    pub memory_bytes: Option<u64>,
    /// The path that says whether it works (after an upgrade).
    pub health: String,
    /// Its data schema and migrations.
    pub data: DataSchema,
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
}

fn parse_entrypoint(text: &str) -> Result<PathBuf, ManifestError> {
    let path = Path::new(text);
    let normal = !text.is_empty()
        && text.len() <= 1024
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !normal {
        return Err(invalid(
            "entrypoint",
            format!("{text:?} must be a relative path inside the package"),
        ));
    }
    Ok(path
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect())
}

fn parse_egress(entry: &str) -> Result<EgressHost, ManifestError> {
    let bad = |why: &str| invalid("requests.egress", format!("{entry:?}: {why}"));
    let (host, port) = match entry.rsplit_once(':') {
        Some((h, p)) => (
            h,
            Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| bad("invalid port"))?,
            ),
        ),
        None => (entry, None),
    };
    let host = host.to_ascii_lowercase();
    let name = host.strip_prefix("*.").unwrap_or(&host);
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(bad(
            "not a host name (use name, *.suffix, with an optional :port)",
        ));
    }
    if host.starts_with("*.") && !name.contains('.') {
        return Err(bad("a wildcard needs at least two labels after it"));
    }
    Ok(EgressHost { host, port })
}

impl DataSchema {
    /// The migrate command's program, relative to the package root.
    pub fn migrate_program(&self) -> Option<PathBuf> {
        let program = self.migrate.as_ref()?.first()?;
        parse_entrypoint(program).ok()
    }
}

fn parse_health(text: Option<&str>) -> Result<String, ManifestError> {
    let Some(text) = text else {
        return Ok("/".into());
    };
    let ok =
        text.starts_with('/') && text.len() <= 1024 && text.bytes().all(|b| b.is_ascii_graphic());
    if !ok {
        return Err(invalid(
            "health",
            format!("{text:?} must be a path starting with '/', printable ASCII without spaces"),
        ));
    }
    Ok(text.to_owned())
}

fn parse_data(raw: RawData) -> Result<DataSchema, ManifestError> {
    let schema = raw.schema.unwrap_or(0);
    let oldest = raw.oldest_schema.unwrap_or(schema);
    if oldest > schema {
        return Err(invalid(
            "data.oldest_schema",
            format!("{oldest} is newer than data.schema {schema}"),
        ));
    }
    let migrate = match raw.migrate {
        Some(argv) => {
            let Some(program) = argv.first() else {
                return Err(invalid(
                    "data.migrate",
                    "is empty: name a program in the package",
                ));
            };
            parse_entrypoint(program).map_err(|_| {
                invalid(
                    "data.migrate",
                    format!("{program:?} must be a relative path inside the package"),
                )
            })?;
            if argv.len() > 64 || argv.iter().any(|a| a.len() > 4096 || a.contains('\0')) {
                return Err(invalid(
                    "data.migrate",
                    "at most 64 arguments of at most 4096 bytes, without NUL",
                ));
            }
            Some(argv)
        }
        None => None,
    };
    if oldest < schema && migrate.is_none() {
        return Err(invalid(
            "data.migrate",
            format!("is needed to convert data of schemas {oldest}..{schema} (data.oldest_schema)"),
        ));
    }
    Ok(DataSchema {
        schema,
        oldest,
        migrate,
    })
}

/// Parses and validates manifest text.
pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
    let raw: RawManifest =
        toml::from_str(text).map_err(|e| ManifestError::Syntax(e.message().to_owned()))?;
    if !valid_name(&raw.name) {
        return Err(invalid(
            "name",
            format!(
                "{:?}: use 1-64 lower-case letters, digits and '-', starting with a letter",
                raw.name
            ),
        ));
    }
    let version = semver::Version::parse(&raw.version)
        .map_err(|e| invalid("version", format!("{:?} is not semver: {e}", raw.version)))?;
    let entrypoint = parse_entrypoint(&raw.entrypoint)?;
    let egress = raw
        .requests
        .egress
        .iter()
        .map(|e| parse_egress(e))
        .collect::<Result<_, _>>()?;
    let memory_bytes = raw
        .requests
        .memory
        .as_deref()
        .map(|m| parse_memory(m).map_err(|e| invalid("requests.memory", e)))
        .transpose()?;
    let health = parse_health(raw.health.as_deref())?;
    let data = parse_data(raw.data)?;
    Ok(Manifest {
        name: raw.name,
        version,
        runtime: raw.runtime,
        entrypoint,
        egress,
        memory_bytes,
        health,
        data,
    })
}

impl std::str::FromStr for Manifest {
    type Err = ManifestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "notes"
version = "1.2.0"
runtime = "native"
entrypoint = "./bin/notes"

[requests]
egress = ["API.example.com", "*.example.org:8443"]
memory = "128M"
"#;

    #[test]
    fn good_manifest_parses() {
        let m = parse(GOOD).unwrap();
        assert_eq!(m.name, "notes");
        assert_eq!(m.version, semver::Version::new(1, 2, 0));
        assert_eq!(m.runtime, Runtime::Native);
        assert_eq!(m.entrypoint, PathBuf::from("bin/notes"));
        assert_eq!(
            m.egress[0],
            EgressHost {
                host: "api.example.com".into(),
                port: None
            }
        );
        assert_eq!(
            m.egress[1],
            EgressHost {
                host: "*.example.org".into(),
                port: Some(8443)
            }
        );
        assert_eq!(m.memory_bytes, Some(128 << 20));
        let minimal =
            "name = \"a\"\nversion = \"0.1.0\"\nruntime = \"deno\"\nentrypoint = \"main.ts\"\n";
        let minimal = parse(minimal).unwrap();
        assert_eq!(minimal.egress, vec![]);
        assert_eq!(minimal.health, "/");
        assert_eq!(minimal.data, DataSchema::default());
        let migrating = parse(
            "name = \"a\"\nversion = \"2.0.0\"\nruntime = \"native\"\nentrypoint = \"a\"\nhealth = \"/up?x=1\"\n[data]\nschema = 3\noldest_schema = 1\nmigrate = [\"./bin/a\", \"migrate\"]\n",
        )
        .unwrap();
        assert_eq!(migrating.health, "/up?x=1");
        assert_eq!(
            migrating.data,
            DataSchema {
                schema: 3,
                oldest: 1,
                migrate: Some(vec!["./bin/a".into(), "migrate".into()]),
            }
        );
    }

    #[test]
    fn bad_manifests_say_what_is_wrong() {
        let cases = [
            ("", "missing field `name`"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"x\"\nextra = 1\n", "unknown field `extra`"),
            ("name = \"X\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"x\"\n", "name"),
            ("name = \"x\"\nversion = \"1.0\"\nruntime = \"native\"\nentrypoint = \"x\"\n", "version"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"python\"\nentrypoint = \"x\"\n", "unknown variant `python`"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"../x\"\n", "entrypoint"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"/bin/sh\"\n", "entrypoint"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"x\"\n[requests]\negress = [\"http://a\"]\n", "requests.egress"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"x\"\n[requests]\negress = [\"*.com\"]\n", "wildcard"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"x\"\n[requests]\nmemory = \"lots\"\n", "requests.memory"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"x\"\n[requests]\negress = [\"a.com:0\"]\n", "invalid port"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"x\"\nhealth = \"up\"\n", "health"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"x\"\n[data]\nschema = 1\noldest_schema = 2\n", "data.oldest_schema"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"x\"\n[data]\nschema = 2\noldest_schema = 1\n", "data.migrate: is needed"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"x\"\n[data]\nschema = 2\nmigrate = []\n", "data.migrate: is empty"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"x\"\n[data]\nmigrate = [\"/bin/sh\"]\n", "data.migrate"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"x\"\n[data]\nschemas = 2\n", "unknown field `schemas`"),
            ("not toml at all [", ""),
        ];
        for (text, needle) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(
                err.contains(needle),
                "{text:?} gave {err:?}, expected {needle:?}"
            );
            assert!(err.starts_with(MANIFEST_FILE), "{err}");
        }
    }
}
