//! `ds-app.toml`: what an app is and what it asks for.
//!
//! ```toml
//! name = "notes"            # [a-z0-9-], 1..=64, starts with a letter
//! version = "1.2.0"         # semver
//! runtime = "native"        # or "deno"
//! entrypoint = "bin/notes"  # relative to the package root; or, with arguments:
//! # command = ["bin/notes", "--port", "${PORT}", "--data", "${DATA}"]
//!
//! health = "/healthz"      # answered without a 5xx when it works (default "/")
//!
//! [env]                     # static values; names the host owns are refused
//! NOTES_THEME = "dark"
//!
//! [requests]                # shown to the admin, granted only by the admin
//! egress = ["api.example.com", { host = "*.example.org:8443", reason = "sync" }]
//! memory = "128M"
//! disk = "2G"
//!
//! [data]
//! schema = 3                # the schema of the data this version keeps (default 0)
//! oldest_schema = 1         # the oldest its migrate command converts from and to
//! migrate = ["bin/notes", "migrate"]  # run with FROM TO appended (docs/upgrades.md)
//! migrate_timeout = "30m"   # how long it may run (1s to 24h, default 10m)
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
    entrypoint: Option<String>,
    command: Option<Vec<String>>,
    health: Option<String>,
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    requests: RawRequests,
    #[serde(default)]
    data: RawData,
    // Reserved for accounts (a later version of ds): named here so that a
    // manifest written for it is refused with a reason, not a typo's error.
    roles: Option<toml::Value>,
    routes: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawData {
    schema: Option<u32>,
    oldest_schema: Option<u32>,
    migrate: Option<Vec<String>>,
    migrate_timeout: Option<String>,
}

/// The data a version keeps, and how it converts data of other schemas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSchema {
    /// The schema of the data this version reads and writes.
    pub schema: u32,
    /// The oldest schema its migrate command converts from (upgrades to
    /// this version) and to (downgrades from it); `schema` when it has none.
    pub oldest: u32,
    /// The migrate command: a program in the package and its first
    /// arguments (FROM and TO are appended).
    pub migrate: Option<Vec<String>>,
    /// How long its migrate command may run before the upgrade is rolled
    /// back ([`DEFAULT_MIGRATE_TIMEOUT`] unless the manifest says).
    pub migrate_timeout: std::time::Duration,
}

/// How long a migration may run when the manifest does not say.
pub const DEFAULT_MIGRATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// The longest `data.migrate_timeout` a manifest may ask for.
pub const MAX_MIGRATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequests {
    #[serde(default)]
    egress: Vec<toml::Value>,
    memory: Option<String>,
    disk: Option<String>,
}

/// A host an app asks to reach: an exact name or `*.suffix`, with an
/// optional port, and the author's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressHost {
    /// Lower-case host name, possibly starting with `*.`.
    pub host: String,
    /// The port, if restricted to one.
    pub port: Option<u16>,
    /// Why the app needs it, in the author's words (shown to the admin).
    pub reason: Option<String>,
}

impl std::fmt::Display for EgressHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{p}", self.host),
            None => write!(f, "{}", self.host),
        }
    }
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
    /// What to run, relative to the package root: the executable, or the
    /// Deno script.
    pub entrypoint: PathBuf,
    /// Its arguments (the rest of `command`), with `${NAME}` placeholders
    /// still in them ([`expand`] fills them in at each start).
    pub args: Vec<String>,
    /// Static environment variables (`[env]`), by name.
    pub env: Vec<(String, String)>,
    /// Hosts it asks to reach (an admin decides).
    pub egress: Vec<EgressHost>,
    /// Memory it asks for, in bytes.
    pub memory_bytes: Option<u64>,
    /// Disk space it asks for, in bytes (the limit of a new appspace).
    pub disk_bytes: Option<u64>,
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

/// An egress request: `"host[:port]"` or `{ host = "...", reason = "..." }`.
fn parse_egress(raw: &toml::Value) -> Result<EgressHost, ManifestError> {
    let shape = || {
        invalid(
            "requests.egress",
            format!("{raw}: each entry is \"host[:port]\" or {{ host = \"host[:port]\", reason = \"why\" }}"),
        )
    };
    let (entry, reason) = match raw {
        toml::Value::String(e) => (e.as_str(), None),
        toml::Value::Table(t) => {
            if t.keys().any(|k| k != "host" && k != "reason") {
                return Err(shape());
            }
            let (Some(toml::Value::String(host)), Some(toml::Value::String(reason))) =
                (t.get("host"), t.get("reason"))
            else {
                return Err(shape());
            };
            let r = reason.trim();
            if r.is_empty() || r.len() > 200 || r.chars().any(char::is_control) {
                return Err(invalid(
                    "requests.egress",
                    format!("{host:?}: a reason is one line of 1 to 200 characters"),
                ));
            }
            (host.as_str(), Some(r.to_owned()))
        }
        _ => return Err(shape()),
    };
    let mut host = parse_egress_host(entry)?;
    host.reason = reason;
    Ok(host)
}

fn parse_egress_host(entry: &str) -> Result<EgressHost, ManifestError> {
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
    Ok(EgressHost {
        host,
        port,
        reason: None,
    })
}

/// The values the host defines for `command`: `${PORT}` (the port the app
/// listens on), `${DATA}` (its data directory), `${APP}` (the package's
/// files), `${TMPDIR}` (its temporary directory). `$${` is a literal `${`.
pub const PLACEHOLDERS: [&str; 4] = ["PORT", "DATA", "APP", "TMPDIR"];

/// The values of [`PLACEHOLDERS`] in one sandbox.
#[derive(Debug, Clone, Copy)]
pub struct HostValues<'a> {
    /// `${PORT}`.
    pub port: u16,
    /// `${DATA}`.
    pub data: &'a str,
    /// `${APP}`.
    pub app: &'a str,
    /// `${TMPDIR}`.
    pub tmp: &'a str,
}

/// `arg` with its placeholders filled in from `values`, or why it cannot
/// be (an unknown name, an unclosed `${`).
pub fn expand(arg: &str, values: Option<&HostValues<'_>>) -> Result<String, String> {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(lit) = after.strip_prefix("${") {
            out.push_str("${");
            rest = lit;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = inner
                .find('}')
                .ok_or_else(|| format!("{arg:?}: an unclosed ${{"))?;
            let name = &inner[..end];
            let value = match (name, values) {
                ("PORT", Some(v)) => v.port.to_string(),
                ("DATA", Some(v)) => v.data.to_owned(),
                ("APP", Some(v)) => v.app.to_owned(),
                ("TMPDIR", Some(v)) => v.tmp.to_owned(),
                (n, None) if PLACEHOLDERS.contains(&n) => String::new(),
                _ => {
                    return Err(format!(
                        "{arg:?}: unknown ${{{name}}} (the host defines {}; $${{ is a literal ${{)",
                        PLACEHOLDERS.map(|p| format!("${{{p}}}")).join(", ")
                    ))
                }
            };
            out.push_str(&value);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Environment names the host sets itself, which `[env]` may not change.
pub const HOST_ENV: [&str; 11] = [
    "PATH",
    "HOME",
    "TMPDIR",
    "LANG",
    "USER",
    "PORT",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "NO_PROXY",
];

/// Prefixes and names that would switch off or bend a layer of the
/// sandbox or the runtime (the dynamic loader, glibc's tunables and
/// allocator, Deno's and Node's own settings): refused in `[env]`.
const LAYER_ENV_PREFIXES: [&str; 5] = ["LD_", "DENO_", "GLIBC_", "MALLOC_", "NODE_"];
const LAYER_ENV: [&str; 4] = ["no_proxy", "GCONV_PATH", "LOCPATH", "HOSTALIASES"];

fn parse_env(
    raw: std::collections::BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, ManifestError> {
    if raw.len() > 64 {
        return Err(invalid("env", "at most 64 variables"));
    }
    let mut out = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        let name_ok = !name.is_empty()
            && name.len() <= 128
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !name_ok {
            return Err(invalid(
                "env",
                format!("{name:?}: a name is letters, digits and _, not starting with a digit"),
            ));
        }
        if HOST_ENV.contains(&name.as_str()) {
            return Err(invalid(
                "env",
                format!("{name}: set by the host (docs/apps.md says what it is)"),
            ));
        }
        if LAYER_ENV.contains(&name.as_str())
            || LAYER_ENV_PREFIXES.iter().any(|p| name.starts_with(p))
        {
            return Err(invalid(
                "env",
                format!("{name}: refused, it would change how the runtime or the loader confines the app"),
            ));
        }
        if value.len() > 4096 || value.contains('\0') {
            return Err(invalid(
                "env",
                format!("{name}: a value is at most 4096 bytes, without NUL"),
            ));
        }
        out.push((name, value));
    }
    Ok(out)
}

/// The program and its arguments, from `entrypoint` or `command`.
fn parse_command(
    entrypoint: Option<String>,
    command: Option<Vec<String>>,
) -> Result<(PathBuf, Vec<String>), ManifestError> {
    match (entrypoint, command) {
        (Some(_), Some(_)) => Err(invalid(
            "command",
            "give entrypoint or command, not both (command's first word is the entrypoint)",
        )),
        (None, None) => Err(invalid(
            "entrypoint",
            "missing: name the program (entrypoint = \"bin/app\") or give command = [\"bin/app\", ...]",
        )),
        (Some(e), None) => Ok((parse_entrypoint(&e)?, Vec::new())),
        (None, Some(argv)) => {
            let Some((program, args)) = argv.split_first() else {
                return Err(invalid("command", "is empty: name a program in the package"));
            };
            let program = parse_entrypoint(program).map_err(|_| {
                invalid(
                    "command",
                    format!("{program:?}: the first word must be a relative path inside the package"),
                )
            })?;
            if args.len() > 256 || args.iter().any(|a| a.len() > 4096 || a.contains('\0')) {
                return Err(invalid(
                    "command",
                    "at most 256 arguments of at most 4096 bytes, without NUL",
                ));
            }
            for a in args {
                expand(a, None).map_err(|e| invalid("command", e))?;
            }
            Ok((program, args.to_vec()))
        }
    }
}

impl Default for DataSchema {
    /// Schema 0, no migrate command.
    fn default() -> Self {
        Self {
            schema: 0,
            oldest: 0,
            migrate: None,
            migrate_timeout: DEFAULT_MIGRATE_TIMEOUT,
        }
    }
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
    let migrate_timeout = match raw.migrate_timeout {
        None => DEFAULT_MIGRATE_TIMEOUT,
        Some(text) => {
            let bad = || {
                invalid(
                    "data.migrate_timeout",
                    format!(
                        "{text:?}: a duration from 1s to 24h, such as \"90s\", \"30m\" or \"2h\""
                    ),
                )
            };
            let d = humantime::parse_duration(&text).map_err(|_| bad())?;
            if d < std::time::Duration::from_secs(1) || d > MAX_MIGRATE_TIMEOUT {
                return Err(bad());
            }
            if migrate.is_none() {
                return Err(invalid(
                    "data.migrate_timeout",
                    "is for a migrate command; there is none",
                ));
            }
            d
        }
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
        migrate_timeout,
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
    if raw.roles.is_some() || raw.routes.is_some() {
        return Err(invalid(
            if raw.roles.is_some() {
                "roles"
            } else {
                "routes"
            },
            "reserved for user accounts, which this version of ds does not have yet",
        ));
    }
    let (entrypoint, args) = parse_command(raw.entrypoint, raw.command)?;
    let env = parse_env(raw.env)?;
    if raw.requests.egress.len() > 64 {
        return Err(invalid("requests.egress", "at most 64 hosts"));
    }
    let egress = raw
        .requests
        .egress
        .iter()
        .map(parse_egress)
        .collect::<Result<_, _>>()?;
    let disk_bytes = raw
        .requests
        .disk
        .as_deref()
        .map(|d| ds_api::limits::parse_disk(d).map_err(|e| invalid("requests.disk", e)))
        .transpose()?;
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
        args,
        env,
        egress,
        memory_bytes,
        disk_bytes,
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
                port: None,
                reason: None,
            }
        );
        assert_eq!(
            m.egress[1],
            EgressHost {
                host: "*.example.org".into(),
                port: Some(8443),
                reason: None,
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
                migrate_timeout: DEFAULT_MIGRATE_TIMEOUT,
            }
        );
        let patient = parse(
            "name = \"a\"\nversion = \"2.0.0\"\nruntime = \"native\"\nentrypoint = \"a\"\n[data]\nschema = 2\noldest_schema = 1\nmigrate = [\"a\"]\nmigrate_timeout = \"2h 30m\"\n",
        )
        .unwrap();
        assert_eq!(
            patient.data.migrate_timeout,
            std::time::Duration::from_secs(9000)
        );
    }

    #[test]
    fn command_env_and_requests_parse() {
        let m = parse(
            r#"
name = "files"
version = "0.5.0"
runtime = "native"
command = ["./bin/dufs", "--port", "${PORT}", "--allow-upload", "${DATA}/files", "cost: $5", "$${PORT}"]
[env]
DUFS_THEME = "dark"
RUST_LOG = "info"
[requests]
egress = [{ host = "api.example.com:443", reason = "checks for updates" }, "cdn.example.org"]
disk = "2G"
"#,
        )
        .unwrap();
        assert_eq!(m.entrypoint, PathBuf::from("bin/dufs"));
        assert_eq!(m.args[1], "${PORT}");
        assert_eq!(
            m.env,
            vec![
                ("DUFS_THEME".into(), "dark".into()),
                ("RUST_LOG".into(), "info".into())
            ]
        );
        assert_eq!(m.egress[0].reason.as_deref(), Some("checks for updates"));
        assert_eq!(m.egress[0].to_string(), "api.example.com:443");
        assert_eq!(m.egress[1].reason, None);
        assert_eq!(m.disk_bytes, Some(2 << 30));
        let values = HostValues {
            port: 8000,
            data: "/data",
            app: "/app",
            tmp: "/tmp",
        };
        let argv: Vec<String> = m
            .args
            .iter()
            .map(|a| expand(a, Some(&values)).unwrap())
            .collect();
        assert_eq!(
            argv,
            [
                "--port",
                "8000",
                "--allow-upload",
                "/data/files",
                "cost: $5",
                "${PORT}"
            ]
        );
        // Only the host's names are filled in; nothing from the
        // environment, and no shell.
        assert!(expand("${HOME}", Some(&values)).is_err());
        assert!(expand("${PORT", Some(&values)).is_err());
        assert_eq!(expand("$PORT", Some(&values)).unwrap(), "$PORT");
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
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"x\"\n[data]\nschema = 2\noldest_schema = 1\nmigrate = [\"x\"]\nmigrate_timeout = \"3d\"\n", "data.migrate_timeout"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"x\"\n[data]\nschema = 2\noldest_schema = 1\nmigrate = [\"x\"]\nmigrate_timeout = \"soon\"\n", "data.migrate_timeout"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"x\"\n[data]\nschema = 1\nmigrate_timeout = \"1m\"\n", "data.migrate_timeout: is for a migrate command"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"x\"\n[data]\nschema = 2\nmigrate = []\n", "data.migrate: is empty"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"x\"\n[data]\nmigrate = [\"/bin/sh\"]\n", "data.migrate"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"x\"\n[data]\nschemas = 2\n", "unknown field `schemas`"),
            ("not toml at all [", ""),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\n", "entrypoint: missing"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"x\"\ncommand = [\"x\"]\n", "not both"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\ncommand = []\n", "command: is empty"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\ncommand = [\"/bin/sh\", \"-c\"]\n", "command"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\ncommand = [\"x\", \"${HOME}\"]\n", "unknown ${HOME}"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\ncommand = [\"x\", \"${PORT\"]\n", "unclosed"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"x\"\n[env]\nPORT = \"1\"\n", "PORT: set by the host"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"x\"\n[env]\nLD_PRELOAD = \"/data/x.so\"\n", "LD_PRELOAD: refused"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"deno\"\nentrypoint = \"x\"\n[env]\nDENO_DIR = \"/tmp\"\n", "DENO_DIR: refused"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"x\"\n[env]\nGLIBC_TUNABLES = \"a\"\n", "GLIBC_TUNABLES: refused"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"x\"\n[env]\n\"A-B\" = \"a\"\n", "env"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"x\"\n[env]\nN = 3\n", "invalid type"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"x\"\n[requests]\negress = [{ host = \"a.com\" }]\n", "requests.egress"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"x\"\n[requests]\negress = [{ host = \"a.com\", reason = \"\" }]\n", "a reason is one line"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"x\"\n[requests]\ndisk = \"1M\"\n", "requests.disk"),
            ("name = \"x\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"x\"\nroles = [\"admin\"]\n", "reserved for user accounts"),
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
