//! The production configuration file (TOML). Every option is documented
//! in `docs/config.md`; unknown keys are errors, so a typo never silently
//! turns a setting off.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::appspace::applog::LogLimits;
use crate::appspace::Lifecycle;
use crate::egress::EgressLimits;
use crate::front_door::serve::ConnLimits;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, or a wrong type.
    #[error("{path}: {message}")]
    Syntax {
        /// Which file.
        path: PathBuf,
        /// The parser's message (it names the key).
        message: String,
    },
    /// A value out of range.
    #[error("{path}: {key}: {why}")]
    Invalid {
        /// Which file.
        path: PathBuf,
        /// Which key.
        key: &'static str,
        /// What is wrong.
        why: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Where state lives (database, apps, appspace data and logs).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Appspaces are served at `<name>.<base_domain>`.
    pub base_domain: String,
    /// Plain HTTP: only redirects to HTTPS.
    #[serde(default)]
    pub http: HttpConfig,
    /// The HTTPS front door.
    pub https: HttpsConfig,
    /// Appspace lifecycle.
    #[serde(default)]
    pub appspaces: AppspacesConfig,
    /// Request limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Appspace log caps.
    #[serde(default)]
    pub logs: LogsConfig,
    /// Where the sandbox and runtime binaries are.
    #[serde(default)]
    pub sandbox: SandboxConfig,
    /// The admin API's socket.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Per-appspace egress limits.
    #[serde(default)]
    pub egress: EgressConfig,
    /// Scheduled backups and what is kept.
    #[serde(default)]
    pub backups: BackupsConfig,
    /// Where alerts go.
    #[serde(default)]
    pub notify: NotifyConfig,
}

/// `[notify]`: a command run with each alert (JSON) on its stdin.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// The program (no shell; absolute path), or none.
    pub command: Option<PathBuf>,
}

/// `[backups]`: every appspace is backed up every `every_secs` (0: only
/// on demand); restic's retention keeps the newest backup of each of the
/// last `keep_hourly` hours, `keep_daily` days, and so on.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BackupsConfig {
    /// Seconds between an appspace's scheduled backups (0: none).
    pub every_secs: u64,
    /// Hourly backups kept.
    pub keep_hourly: u32,
    /// Daily backups kept.
    pub keep_daily: u32,
    /// Weekly backups kept.
    pub keep_weekly: u32,
    /// Monthly backups kept.
    pub keep_monthly: u32,
    /// The restic repository (default: `<state_dir>/backups/repository`);
    /// somewhere a dead disk does not take along: a directory on a USB
    /// disk or an NFS mount, or `sftp://user@host[:port]/path`.
    pub repository: Option<crate::backup::Target>,
    /// The private key ds logs in to an SFTP repository with.
    pub ssh_key: Option<PathBuf>,
    /// The SFTP server's host keys (OpenSSH `known_hosts` format); a
    /// server whose key is not there is refused.
    pub ssh_known_hosts: Option<PathBuf>,
}

impl BackupsConfig {
    /// The SSH access to an SFTP repository, if both files were named.
    pub fn ssh(&self) -> Option<crate::backup::SshAccess> {
        Some(crate::backup::SshAccess {
            key: self.ssh_key.clone()?,
            known_hosts: self.ssh_known_hosts.clone()?,
        })
    }

    /// As the backups' schedule.
    pub fn schedule(&self) -> crate::backup::Schedule {
        crate::backup::Schedule {
            every: (self.every_secs > 0).then(|| Duration::from_secs(self.every_secs)),
            keep: [
                self.keep_hourly,
                self.keep_daily,
                self.keep_weekly,
                self.keep_monthly,
            ],
        }
    }
}

impl Default for BackupsConfig {
    fn default() -> Self {
        Self {
            every_secs: 3600,
            keep_hourly: 24,
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 12,
            repository: None,
            ssh_key: None,
            ssh_known_hosts: None,
        }
    }
}

/// `[egress]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EgressConfig {
    /// Egress connections one appspace may have open at once.
    pub max_connections: usize,
    /// New egress connections per second, sustained, per appspace.
    pub connections_per_second: u32,
    /// New egress connections in a burst.
    pub burst: u32,
    /// Time to resolve and connect.
    pub connect_timeout_secs: u64,
}

impl Default for EgressConfig {
    fn default() -> Self {
        let l = EgressLimits::default();
        Self {
            max_connections: l.max_connections,
            connections_per_second: l.per_second.get(),
            burst: l.burst.get(),
            connect_timeout_secs: l.connect_timeout.as_secs(),
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// The Unix socket `dsctl` talks to.
    pub socket: PathBuf,
    /// A group whose members may use it too (the socket becomes 0660).
    pub group: Option<String>,
}

/// Where the admin socket is unless configured.
pub use ds_api::DEFAULT_ADMIN_SOCKET;

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_ADMIN_SOCKET),
            group: None,
        }
    }
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/ds")
}

/// `[http]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address for plain HTTP (redirects only).
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 80)),
        }
    }
}

/// `[https]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpsConfig {
    /// Address for HTTPS.
    #[serde(default = "default_https")]
    pub listen: SocketAddr,
    /// PEM certificate chain covering `*.<base_domain>`.
    pub certificate: PathBuf,
    /// PEM private key of that certificate.
    pub private_key: PathBuf,
}

fn default_https() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 443))
}

/// `[appspaces]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AppspacesConfig {
    /// Stop an appspace after this long without requests.
    pub idle_timeout_secs: u64,
    /// Time an app has to start accepting connections.
    pub start_timeout_secs: u64,
    /// Between SIGTERM and SIGKILL when stopping.
    pub stop_grace_secs: u64,
    /// How disk limits are enforced: `auto` (project quotas where the
    /// state directory's file system has them, else disk images),
    /// `project`, `image` or `off`.
    pub disk_quota: crate::disk::Wanted,
    /// A new appspace's disk limit, in bytes.
    pub disk_bytes: u64,
}

impl Default for AppspacesConfig {
    fn default() -> Self {
        let l = Lifecycle::default();
        Self {
            idle_timeout_secs: l.idle_timeout.as_secs(),
            start_timeout_secs: l.start_timeout.as_secs(),
            stop_grace_secs: l.stop_grace.as_secs(),
            disk_quota: crate::disk::Wanted::Auto,
            disk_bytes: crate::disk::DEFAULT_DISK,
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Time a client has to send a request head.
    pub header_read_timeout_secs: u64,
    /// Largest request head.
    pub max_header_bytes: usize,
    /// Time a client has to finish the TLS handshake.
    pub tls_handshake_timeout_secs: u64,
    /// Time an app has to start its response (504 beyond).
    pub response_timeout_secs: u64,
    /// A request or response body that moves no data for this long is cut off.
    pub body_idle_timeout_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let l = ConnLimits::default();
        let life = Lifecycle::default();
        Self {
            header_read_timeout_secs: l.header_read_timeout.as_secs(),
            max_header_bytes: l.max_header_bytes,
            tls_handshake_timeout_secs: l.tls_handshake_timeout.as_secs(),
            response_timeout_secs: life.response_timeout.as_secs(),
            body_idle_timeout_secs: life.body_idle_timeout.as_secs(),
        }
    }
}

/// `[logs]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// Rotate `app.log` at this size.
    pub max_file_bytes: usize,
    /// Rotated files kept.
    pub keep_files: usize,
    /// Sustained app output accepted per second.
    pub bytes_per_second: u32,
    /// Burst of app output accepted.
    pub burst_bytes: u32,
}

impl Default for LogsConfig {
    fn default() -> Self {
        let l = LogLimits::default();
        Self {
            max_file_bytes: l.max_file_bytes,
            keep_files: l.keep_files,
            bytes_per_second: l.bytes_per_second.get(),
            burst_bytes: l.burst_bytes.get(),
        }
    }
}

/// `[sandbox]`
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// The `ds-sandbox` binary (default: next to `ds-host`, then PATH).
    pub binary: Option<PathBuf>,
    /// The Deno binary for Deno apps (default: PATH).
    pub deno: Option<PathBuf>,
}

impl HostConfig {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates `text` (`path` only names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim().to_owned(),
        })?;
        let invalid = |key, why: &str| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            why: why.to_owned(),
        };
        let domain_ok = |d: &str| {
            !d.is_empty()
                && d.len() <= 200
                && d.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                })
        };
        if !domain_ok(&config.base_domain) {
            return Err(invalid(
                "base_domain",
                "must be a DNS name like apps.example.org",
            ));
        }
        if config
            .notify
            .command
            .as_ref()
            .is_some_and(|c| !c.is_absolute())
        {
            return Err(invalid("notify.command", "must be an absolute path"));
        }
        if config.backups.ssh_key.is_some() != config.backups.ssh_known_hosts.is_some() {
            return Err(invalid(
                "backups.ssh_key",
                "ssh_key and ssh_known_hosts go together",
            ));
        }
        if let Some(target) = &config.backups.repository {
            if let Err(e) = target.check_access(config.backups.ssh().as_ref()) {
                return Err(invalid("backups.repository", &e.to_string()));
            }
        }
        if !config.state_dir.is_absolute() {
            return Err(invalid("state_dir", "must be an absolute path"));
        }
        for (key, v) in [
            (
                "appspaces.idle_timeout_secs",
                config.appspaces.idle_timeout_secs,
            ),
            (
                "appspaces.start_timeout_secs",
                config.appspaces.start_timeout_secs,
            ),
            (
                "limits.header_read_timeout_secs",
                config.limits.header_read_timeout_secs,
            ),
            (
                "limits.tls_handshake_timeout_secs",
                config.limits.tls_handshake_timeout_secs,
            ),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if let Err(e) = ds_api::limits::check_disk(config.appspaces.disk_bytes) {
            return Err(invalid("appspaces.disk_bytes", &e));
        }
        if config.limits.max_header_bytes < 8192 {
            return Err(invalid("limits.max_header_bytes", "must be at least 8192"));
        }
        if config.logs.bytes_per_second == 0
            || config.logs.burst_bytes == 0
            || config.logs.max_file_bytes == 0
        {
            return Err(invalid("logs", "sizes and rates must be positive"));
        }
        if config.limits.response_timeout_secs == 0 || config.limits.body_idle_timeout_secs == 0 {
            return Err(invalid("limits", "timeouts must be positive"));
        }
        if config.egress.max_connections == 0
            || config.egress.connections_per_second == 0
            || config.egress.burst == 0
            || config.egress.connect_timeout_secs == 0
        {
            return Err(invalid("egress", "limits and timeouts must be positive"));
        }
        Ok(config)
    }

    /// The lifecycle settings.
    pub fn lifecycle(&self) -> Lifecycle {
        Lifecycle {
            start_timeout: Duration::from_secs(self.appspaces.start_timeout_secs),
            idle_timeout: Duration::from_secs(self.appspaces.idle_timeout_secs),
            stop_grace: Duration::from_secs(self.appspaces.stop_grace_secs),
            log_limits: LogLimits {
                max_file_bytes: self.logs.max_file_bytes,
                keep_files: self.logs.keep_files,
                bytes_per_second: NonZeroU32::new(self.logs.bytes_per_second).expect("validated"),
                burst_bytes: NonZeroU32::new(self.logs.burst_bytes).expect("validated"),
            },
            egress: EgressLimits {
                max_connections: self.egress.max_connections,
                per_second: NonZeroU32::new(self.egress.connections_per_second).expect("validated"),
                burst: NonZeroU32::new(self.egress.burst).expect("validated"),
                connect_timeout: Duration::from_secs(self.egress.connect_timeout_secs),
            },
            response_timeout: Duration::from_secs(self.limits.response_timeout_secs),
            body_idle_timeout: Duration::from_secs(self.limits.body_idle_timeout_secs),
        }
    }

    /// The connection limits.
    pub fn conn_limits(&self) -> ConnLimits {
        ConnLimits {
            header_read_timeout: Duration::from_secs(self.limits.header_read_timeout_secs),
            max_header_bytes: self.limits.max_header_bytes,
            tls_handshake_timeout: Duration::from_secs(self.limits.tls_handshake_timeout_secs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
base_domain = "apps.example.org"
[https]
certificate = "/etc/ds/cert.pem"
private_key = "/etc/ds/key.pem"
"#;

    /// The Debian package's conffile parses, and its values are the
    /// defaults it says it leaves (every commented key is a default).
    #[test]
    fn the_packaged_config_is_valid_and_documents_the_defaults() {
        let text = include_str!("../../packaging/deb/ds-host.toml");
        let path = Path::new("packaging/deb/ds-host.toml");
        let config = HostConfig::parse(text, path).expect("the conffile parses");
        assert_eq!(config.base_domain, "localhost");
        assert_eq!(config.admin.group.as_deref(), Some("ds"));
        assert_eq!(
            config.sandbox.binary.as_deref(),
            Some(Path::new("/usr/lib/ds/ds-sandbox"))
        );
        // Uncommenting every "#key = value" line changes nothing.
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.contains(" = ") && !rest.starts_with(' ') => rest,
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let explicit = HostConfig::parse(&uncommented, path).expect("uncommented parses");
        assert_eq!(explicit, config);
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = HostConfig::parse(MINIMAL, Path::new("ds.toml")).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/ds"));
        assert_eq!(c.http.listen, "0.0.0.0:80".parse().unwrap());
        assert_eq!(c.https.listen, "0.0.0.0:443".parse().unwrap());
        assert_eq!(c.lifecycle().idle_timeout, Duration::from_secs(300));
        assert_eq!(c.conn_limits().max_header_bytes, 64 * 1024);
    }

    #[test]
    fn every_option_parses() {
        let text = r#"
state_dir = "/srv/ds"
base_domain = "apps.example.org"
[http]
listen = "127.0.0.1:8080"
[https]
listen = "127.0.0.1:8443"
certificate = "/c.pem"
private_key = "/k.pem"
[appspaces]
idle_timeout_secs = 60
start_timeout_secs = 5
stop_grace_secs = 1
disk_quota = "image"
disk_bytes = 1073741824
[limits]
header_read_timeout_secs = 3
max_header_bytes = 16384
tls_handshake_timeout_secs = 4
[logs]
max_file_bytes = 4096
keep_files = 1
bytes_per_second = 100
burst_bytes = 200
[sandbox]
binary = "/usr/lib/ds/ds-sandbox"
deno = "/usr/lib/ds/deno"
"#;
        let c = HostConfig::parse(text, Path::new("ds.toml")).unwrap();
        assert_eq!(c.lifecycle().stop_grace, Duration::from_secs(1));
        assert_eq!(c.conn_limits().header_read_timeout, Duration::from_secs(3));
        assert_eq!(c.sandbox.deno, Some(PathBuf::from("/usr/lib/ds/deno")));
    }

    #[test]
    fn bad_configs_name_the_problem() {
        let cases = [
            (format!("{MINIMAL}\ntypo_key = 1\n"), "typo_key"),
            (
                MINIMAL.replace("[https]", "[https]\nlisten = \"nowhere\""),
                "listen",
            ),
            (
                MINIMAL.replace("apps.example.org", "apps..org"),
                "base_domain",
            ),
            (format!("state_dir = \"relative\"\n{MINIMAL}"), "state_dir"),
            (
                format!("{MINIMAL}\n[appspaces]\nidle_timeout_secs = 0\n"),
                "idle_timeout_secs",
            ),
            (
                format!("{MINIMAL}\n[limits]\nmax_header_bytes = 10\n"),
                "max_header_bytes",
            ),
            (format!("{MINIMAL}\n[logs]\nburst = 1\n"), "burst"),
            (
                format!("{MINIMAL}\n[notify]\ncommand = \"alert.sh\"\n"),
                "notify.command",
            ),
            (
                format!("{MINIMAL}\n[backups]\nrepository = \"sftp://b@nas/srv/ds\"\n"),
                "needs an SSH key",
            ),
            (
                format!("{MINIMAL}\n[backups]\nrepository = \"nas:/srv\"\n"),
                "sftp://user@host",
            ),
            (
                format!("{MINIMAL}\n[backups]\nssh_key = \"/etc/ds/k\"\n"),
                "go together",
            ),
            (
                format!(
                    "{MINIMAL}\n[backups]\nrepository = \"sftp://b@nas/srv\"\n\
                     ssh_key = \"k\"\nssh_known_hosts = \"/etc/ds/h\"\n"
                ),
                "absolute",
            ),
            ("base_domain = \"a.b\"\n".to_owned(), "https"),
            ("not toml [".to_owned(), "ds.toml"),
        ];
        let ok = format!(
            "{MINIMAL}\n[backups]\nrepository = \"sftp://b@nas:2222/srv/ds\"\n\
             ssh_key = \"/etc/ds/k\"\nssh_known_hosts = \"/etc/ds/h\"\n"
        );
        let c = HostConfig::parse(&ok, Path::new("ds.toml")).unwrap();
        assert_eq!(
            c.backups
                .repository
                .as_ref()
                .map(|t| t.to_string())
                .as_deref(),
            Some("sftp://b@nas:2222/srv/ds")
        );
        assert!(c.backups.ssh().is_some());
        for (text, needle) in cases {
            let err = HostConfig::parse(&text, Path::new("ds.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{text:?} gave {err:?}");
            assert!(err.starts_with("ds.toml"), "{err}");
        }
    }
}
