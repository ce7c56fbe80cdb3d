//! dsctl's command line (clap) and the parsers of its values. Bad values
//! are refused here, before anything is sent.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};

/// Administer a ds host.
#[derive(Debug, Parser)]
#[command(name = "dsctl", version, about = "Administer a ds host")]
pub struct Cli {
    /// The host's admin socket (default: $DS_ADMIN_SOCKET, else [admin]
    /// socket in the host's config file, else /run/ds/admin.sock).
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// The host's config file, read only for the admin socket's path.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        default_value = "/etc/ds/ds-host.toml"
    )]
    pub config: PathBuf,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The nouns.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Host version, uptime, cgroup mode, Landlock ABI and counts.
    Status,
    /// Installed apps.
    #[command(subcommand)]
    App(AppCommand),
    /// Appspaces: app instances at their own domains.
    #[command(subcommand)]
    Appspace(AppspaceCommand),
    /// Backups of appspaces' data, taken by the host (docs/backups.md).
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Changes made through the admin API.
    Audit {
        /// Only entries since then: a duration ago (30m, 2h, 7d) or a
        /// time (2026-11-22T10:00:00Z, 2026-11-22).
        #[arg(long, value_parser = parse_since)]
        since: Option<i64>,
    },
}

/// `dsctl app ...`
#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Install a package (a directory or a .tar.gz); prints what it asks
    /// for (egress, memory, disk), which nothing grants by itself.
    Install {
        /// The package.
        path: PathBuf,
    },
    /// Check a package (a directory or a .tar.gz) exactly as install
    /// would, without a host; nothing is written.
    Check {
        /// The package.
        path: PathBuf,
    },
    /// Check a package directory as install would and write it as a
    /// .tar.gz (never over an existing file).
    Pack {
        /// The package directory.
        dir: PathBuf,
        /// The file to write, never inside DIR (default: NAME-VERSION.tar.gz
        /// beside DIR).
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// List installed apps and versions.
    List,
    /// Show one app's versions and who uses them.
    Show {
        /// The app.
        name: String,
    },
    /// Remove an app (every version, or one); refused while an appspace
    /// uses it.
    Remove {
        /// The app.
        name: String,
        /// Only this version.
        #[arg(long, value_parser = parse_version)]
        version: Option<String>,
        /// Remove even versions that retained backups were taken at
        /// (restoring those backups then needs the version installed again).
        #[arg(long)]
        force: bool,
    },
}

/// An appspace, by domain or name.
#[derive(Debug, Args)]
pub struct Target {
    /// Its domain (or name).
    pub domain: String,
}

/// `dsctl backup ...`
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Back up an appspace's data now (frozen while it is read).
    Create {
        /// The appspace (domain or name).
        appspace: String,
    },
    /// Write an appspace (its data from a fresh backup, its app version,
    /// its limits) into one file, to move it to another host with
    /// `backup import`.
    Export {
        /// The appspace (domain or name).
        appspace: String,
        /// The file to write (never overwritten); default:
        /// NAME-TIME.ds-export.tar.gz here.
        #[arg(long, short = 'o')]
        output: Option<std::path::PathBuf>,
    },
    /// Make a new appspace from an export (`backup export`): checked
    /// through first, its app version installed if missing; egress it was
    /// allowed is shown, never granted.
    Import {
        /// The export file.
        file: std::path::PathBuf,
        /// The domain to serve it at.
        #[arg(long)]
        domain: String,
    },
    /// Put an appspace's data back as backup ID holds it (its current
    /// data is backed up first; it is out of service meanwhile). A backup
    /// taken at another version brings that version back with it.
    Restore {
        /// The appspace (domain or name).
        appspace: String,
        /// The backup's id (`dsctl backup list`).
        id: String,
        /// Into a new appspace at this domain instead (of the app and
        /// version the backup was taken at; the appspace it is of stays
        /// as it is).
        #[arg(long, value_name = "DOMAIN")]
        into: Option<String>,
    },
    /// Delete backup ID of an appspace (and the data only it holds).
    Delete {
        /// The appspace (domain or name).
        appspace: String,
        /// The backup's id.
        id: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Back up now every appspace the schedule says is due (and apply
    /// the retention), as the host does every minute.
    RunDue {
        /// Act as if it were this time (a time, 2026-11-22T10:00:00Z), to
        /// try a schedule and its retention without waiting.
        #[arg(long, value_parser = parse_since)]
        now: Option<i64>,
    },
    /// Back up the host's own state now (its database, installed apps,
    /// configuration and certificate files), or list those backups; a
    /// new machine is restored from them with `ds-host --restore-from`.
    Host {
        /// List them instead.
        #[arg(long)]
        list: bool,
    },
    /// Show the backups' key (root only): keep a copy off this machine,
    /// the backups cannot be read without it.
    Key,
    /// Read every backup back and check it (a damaged repository is
    /// reported, never restored from silently).
    Verify,
    /// List backups, oldest first.
    List {
        /// Only this appspace's (domain or name).
        appspace: Option<String>,
    },
}

/// `dsctl appspace ...`
#[derive(Debug, Subcommand)]
pub enum AppspaceCommand {
    /// Create an appspace of an installed app.
    Create {
        /// The app.
        #[arg(long)]
        app: String,
        /// Its version (default: the newest installed).
        #[arg(long, value_parser = parse_version)]
        version: Option<String>,
        /// The domain to serve it at.
        #[arg(long)]
        domain: String,
        /// Allow the hosts the app's manifest asks to reach (`app install`
        /// shows them); without it the appspace reaches none.
        #[arg(long)]
        grant_egress: bool,
    },
    /// List appspaces.
    List,
    /// Status, limits and usage of one appspace.
    Show(Target),
    /// Start its sandbox now.
    Start(Target),
    /// Stop its sandbox (the next request starts it again).
    Stop(Target),
    /// Stop it and keep it from serving or starting until resumed.
    Pause(Target),
    /// Let a paused appspace serve again.
    Resume(Target),
    /// Move it to another installed version of its app, up or down: its
    /// data is backed up first, migrated, and the new version started and
    /// checked; on any failure the backup and the old version come back
    /// by themselves (docs/upgrades.md).
    Upgrade {
        /// Which appspace.
        #[command(flatten)]
        target: Target,
        /// The version to move to.
        #[arg(long, value_parser = parse_version)]
        version: String,
    },
    /// Show or change its limits (a running sandbox changes at once).
    Limits {
        /// Which appspace.
        #[command(flatten)]
        target: Target,
        /// Memory, e.g. 256M or 1G.
        #[arg(long, value_parser = ds_api::limits::parse_memory)]
        memory: Option<u64>,
        /// CPU share in cores, e.g. 0.5.
        #[arg(long, value_parser = ds_api::limits::parse_cpus)]
        cpu: Option<f64>,
        /// Most processes and threads at once.
        #[arg(long, value_parser = ds_api::limits::parse_pids)]
        pids: Option<u64>,
        /// Disk space for its data, e.g. 512M or 20G (enforced by the
        /// kernel; shrinking a disk image stops the appspace meanwhile).
        #[arg(long, value_parser = ds_api::limits::parse_disk)]
        disk: Option<u64>,
    },
    /// Its use of resources per hour (kept 30 days): CPU time, memory and
    /// disk highs, requests, egress bytes.
    Usage {
        /// Which appspace.
        #[command(flatten)]
        target: Target,
        /// From when: a duration ago (6h, 7d) or a UTC time
        /// (2026-11-22T10:00:00Z, 2026-11-22); default: the last 24 hours.
        #[arg(long, value_parser = parse_since)]
        since: Option<i64>,
    },
    /// Print its log.
    Logs {
        /// Which appspace.
        #[command(flatten)]
        target: Target,
        /// Keep printing new lines as they come.
        #[arg(long, short)]
        follow: bool,
        /// How many of the last lines to print first.
        #[arg(long, short = 'n', default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=100_000))]
        lines: u64,
    },
    /// Its egress allowlist and log.
    #[command(subcommand)]
    Egress(EgressCommand),
    /// Delete an appspace (its data is kept aside unless --purge).
    Delete {
        /// Which appspace.
        #[command(flatten)]
        target: Target,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Remove its data and logs too.
        #[arg(long)]
        purge: bool,
    },
}

/// `dsctl appspace egress ...`
#[derive(Debug, Subcommand)]
pub enum EgressCommand {
    /// The allowlist, and what the app's manifest asks for.
    List(Target),
    /// Allow destinations: host names (api.example.com, *.example.com),
    /// addresses or networks (203.0.113.7, 10.1.0.0/16, [2001:db8::1]),
    /// each with an optional :port (default: 80 and 443).
    Allow {
        /// Which appspace.
        #[command(flatten)]
        target: Target,
        /// The entries.
        #[arg(required = true, value_name = "ENTRY")]
        entries: Vec<String>,
    },
    /// Remove entries from the allowlist.
    Deny {
        /// Which appspace.
        #[command(flatten)]
        target: Target,
        /// The entries.
        #[arg(required = true, value_name = "ENTRY")]
        entries: Vec<String>,
    },
    /// Recent egress attempts: destination, address, outcome, bytes, time.
    Log {
        /// Which appspace.
        #[command(flatten)]
        target: Target,
        /// How many of the newest attempts.
        #[arg(long, short = 'n', default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        lines: u32,
    },
}

/// A semver version.
pub fn parse_version(text: &str) -> Result<String, String> {
    text.trim()
        .parse::<semver::Version>()
        .map(|v| v.to_string())
        .map_err(|e| format!("invalid version {text:?}: {e}"))
}

/// `--since`: a duration ago or a time, as Unix seconds.
pub fn parse_since(text: &str) -> Result<i64, String> {
    let now = SystemTime::now();
    let t = text.trim();
    let at = if let Ok(d) = humantime::parse_duration(t) {
        now.checked_sub(d).unwrap_or(UNIX_EPOCH)
    } else if let Ok(at) = humantime::parse_rfc3339_weak(t) {
        at
    } else if let Ok(at) = humantime::parse_rfc3339_weak(&format!("{t} 00:00:00")) {
        at
    } else {
        return Err(format!(
            "invalid time {text:?}: use a duration ago (30m, 2h, 7d) or a UTC time (2026-11-22T10:00:00Z, 2026-11-22)"
        ));
    };
    Ok(at
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("dsctl").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_well_formed() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = parse(&["appspace", "list", "--json", "--socket", "/x.sock"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.socket.as_deref(), Some(std::path::Path::new("/x.sock")));
        let cli = parse(&["--json", "status"]).unwrap();
        assert!(cli.json && matches!(cli.command, Command::Status));
    }

    #[test]
    fn limits_parse_and_refuse() {
        let cli = parse(&[
            "appspace",
            "limits",
            "a.localhost",
            "--memory",
            "128M",
            "--cpu",
            "0.5",
            "--pids",
            "10",
            "--disk",
            "2G",
        ])
        .unwrap();
        match cli.command {
            Command::Appspace(AppspaceCommand::Limits {
                target,
                memory,
                cpu,
                pids,
                disk,
            }) => {
                assert_eq!(target.domain, "a.localhost");
                assert_eq!(disk, Some(2 << 30));
                assert_eq!(memory, Some(128 << 20));
                assert_eq!(cpu, Some(0.5));
                assert_eq!(pids, Some(10));
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            ["--memory", "lots"],
            ["--memory", "1K"],
            ["--memory", "5T"],
            ["--cpu", "-1"],
            ["--cpu", "x"],
            ["--pids", "0"],
            ["--pids", "many"],
            ["--disk", "1M"],
            ["--disk", "huge"],
        ] {
            let args = [&["appspace", "limits", "a.localhost"][..], &bad[..]].concat();
            assert!(parse(&args).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn required_arguments_are_required() {
        assert!(parse(&["appspace", "create", "--app", "x"]).is_err());
        assert!(parse(&["appspace", "create", "--domain", "x.localhost"]).is_err());
        assert!(parse(&["app", "install"]).is_err());
        assert!(parse(&["appspace", "show"]).is_err());
        assert!(parse(&["bogus"]).is_err());
        assert!(parse(&["app", "remove", "x", "--version", "one"]).is_err());
        assert!(parse(&["appspace", "logs", "d", "--lines", "-3"]).is_err());
        let cli = parse(&[
            "appspace",
            "create",
            "--app",
            "x",
            "--domain",
            "x.localhost",
            "--version",
            "1.2.3",
        ])
        .unwrap();
        assert!(
            matches!(cli.command, Command::Appspace(AppspaceCommand::Create { version: Some(v), .. }) if v == "1.2.3")
        );
    }

    #[test]
    fn since_takes_durations_and_times() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let hour_ago = parse_since("1h").unwrap();
        assert!((now - 3600 - hour_ago).abs() <= 2);
        assert_eq!(parse_since("2026-11-22T10:00:00Z").unwrap(), 1_795_341_600);
        assert_eq!(parse_since("2026-11-22").unwrap(), 1_795_305_600);
        assert!(parse_since("yesterday-ish").is_err());
        assert!(parse(&["audit", "--since", "soon"]).is_err());
    }
}
