//! `ds-host`'s command line, in the library so that the packaging's
//! generator writes the man page and completions from the same definition.

use std::path::PathBuf;

use clap::Parser;

/// The daemon's arguments.
#[derive(Debug, Parser)]
#[command(
    name = "ds-host",
    version,
    about = "Run untrusted web apps in sandboxes"
)]
pub struct Cli {
    /// Start a complete development host with no configuration.
    #[arg(long, conflicts_with = "config")]
    pub dev: bool,
    /// Where dev mode keeps its state.
    #[arg(long, value_name = "DIR", default_value = ".ds-dev", requires = "dev")]
    pub state_dir: PathBuf,
    /// The loopback port dev mode serves HTTP on (0 picks a free one).
    #[arg(long, default_value_t = 7080, requires = "dev")]
    pub port: u16,
    /// The loopback port dev mode serves HTTPS on (0 picks a free one).
    #[arg(long, default_value_t = 7443, requires = "dev")]
    pub tls_port: u16,
    /// Seconds a client has to send a complete request head (dev mode).
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout: u64,
    /// Also install and serve this package (a directory or .tar.gz) in dev
    /// mode; repeatable.
    #[arg(long = "app", value_name = "PATH", requires = "dev")]
    pub apps: Vec<PathBuf>,
    /// Reinstall each --app directory over its version and restart its
    /// appspace whenever a file in it changes, and copy its log to the
    /// terminal (dev mode: an app author's loop).
    #[arg(long, requires = "apps")]
    pub watch: bool,
    /// Stop an appspace after this many seconds without requests (dev mode).
    #[arg(long, value_name = "SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout: u64,
    /// How long an app has to start accepting connections (dev mode).
    #[arg(long, value_name = "SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    pub start_timeout: u64,
    /// Seconds an app has to start its response, 504 beyond (dev mode).
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..), requires = "dev")]
    pub response_timeout: u64,
    /// Seconds a request or response body may move no data (dev mode).
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..), requires = "dev")]
    pub body_idle_timeout: u64,
    /// New egress connections per second per appspace, burst twice that
    /// (dev mode).
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..), requires = "dev")]
    pub egress_rate: u32,
    /// Egress connections one appspace may have open at once (dev mode).
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..), requires = "dev")]
    pub egress_max_connections: u32,
    /// Ask this nameserver (IP:PORT) for egress names instead of those in
    /// /etc/resolv.conf (dev mode); repeatable, asked in order.
    #[arg(long = "nameserver", value_name = "IP:PORT", requires = "dev")]
    pub nameservers: Vec<std::net::SocketAddr>,
    /// Back every appspace up this often, in seconds (dev mode; 0: only
    /// with dsctl backup create).
    #[arg(long, value_name = "SECS", default_value_t = 0, requires = "dev")]
    pub backup_every: u64,
    /// The backups' restic repository (dev mode; default: in the state
    /// directory): a directory, or sftp://user@host[:port]/path.
    #[arg(long, value_name = "DIR|URL", requires = "dev")]
    pub backup_repository: Option<crate::backup::Target>,
    /// The private key for an SFTP repository (dev mode and
    /// --restore-from; production: `[backups] ssh_key`).
    #[arg(long, value_name = "FILE", requires = "backup_known_hosts")]
    pub backup_ssh_key: Option<PathBuf>,
    /// The SFTP server's host keys, OpenSSH known_hosts format (with
    /// --backup-ssh-key).
    #[arg(long, value_name = "FILE", requires = "backup_ssh_key")]
    pub backup_known_hosts: Option<PathBuf>,
    /// Restore a host from the newest backup of its state in this restic
    /// repository (with --key-file; an SFTP one with --backup-ssh-key, or
    /// the config's) into the state directory of --config
    /// or --dev --state-dir, which must hold no host yet, then each
    /// appspace's newest data; and exit (docs/backups.md).
    #[arg(long, value_name = "DIR|URL", requires = "key_file", conflicts_with_all = ["check_config"])]
    pub restore_from: Option<crate::backup::Target>,
    /// The repository's key (what `dsctl backup key` showed), for
    /// --restore-from.
    #[arg(long, value_name = "FILE", requires = "restore_from")]
    pub key_file: Option<PathBuf>,
    /// How appspaces' disk limits are enforced (dev mode; production:
    /// `[appspaces] disk_quota`): project quotas of the state directory's
    /// file system, disk images, whichever works (auto), or none (off).
    #[arg(
        long,
        value_name = "HOW",
        value_enum,
        default_value = "off",
        requires = "dev"
    )]
    pub disk_quota: crate::disk::Wanted,
    /// The disk limit of a new appspace (dev mode; 512M, 4G).
    #[arg(long, value_name = "SIZE", default_value = "4G", value_parser = ds_api::limits::parse_disk, requires = "dev")]
    pub disk_limit: u64,
    /// Run this program with each alert as JSON on its stdin (dev mode).
    #[arg(long, value_name = "PATH", requires = "dev")]
    pub notify_command: Option<PathBuf>,
    /// The production configuration file (see docs/config.md).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Check a configuration file (syntax, values, the certificate and key
    /// it names, the admin group) and exit: 0 if it would start, 1 with the
    /// reason if not. Changes nothing.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["config", "dev"])]
    pub check_config: Option<PathBuf>,
    /// Write a new self-signed certificate and key (cert.pem, key.pem) for
    /// --names into DIR and exit (the Debian package's first certificate).
    #[arg(
        long,
        value_name = "DIR",
        requires = "names",
        conflicts_with_all = ["config", "dev", "check_config"]
    )]
    pub self_signed_certificate: Option<PathBuf>,
    /// The DNS names the self-signed certificate covers, comma-separated.
    #[arg(
        long,
        value_name = "NAME,...",
        value_delimiter = ',',
        requires = "self_signed_certificate"
    )]
    pub names: Vec<String>,
}
