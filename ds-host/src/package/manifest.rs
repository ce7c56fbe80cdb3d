//! `ds-app.toml`: what an app is and what it asks for.
//!
//! ```toml
//! name = "notes"            # [a-z0-9-], 1..=64, starts with a letter
//! version = "1.2.0"         # semver
//! runtime = "native"        # or "deno"
//! entrypoint = "bin/notes"  # relative to the package root
//!
//! [requests]
//! egress = ["api.example.com", "*.example.org:8443"]
//! memory = "128M"
//! ```
//! Unknown keys are errors, so a typo never silently drops a setting.

use std::path::{Component, Path, PathBuf};

use ds_api::limits::parse_memory;
use ds_sandbox::spec::Runtime;
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
    #[serde(default)]
    requests: RawRequests,
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
    Ok(Manifest {
        name: raw.name,
        version,
        runtime: raw.runtime,
        entrypoint,
        egress,
        memory_bytes,
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
        assert_eq!(parse(minimal).unwrap().egress, vec![]);
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
