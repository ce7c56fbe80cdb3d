//! What an appspace is (its configuration, limits and timing) and the
//! command line its sandbox runs.

use std::path::PathBuf;
use std::time::Duration;

use ds_sandbox::cgroup::Usage;
use ds_sandbox::spec::{Runtime, DEFAULT_APP_PORT, DEFAULT_PROXY_PORT};
use tracing::warn;

use super::applog::LogLimits;
use crate::egress::rules::Rule;
use crate::egress::EgressLimits;

/// Timing of appspaces' lives.
#[derive(Debug, Clone, Copy)]
pub struct Lifecycle {
    /// How long a sandbox has to report its app ready.
    pub start_timeout: Duration,
    /// A running appspace with no request for this long is stopped.
    pub idle_timeout: Duration,
    /// Between SIGTERM and SIGKILL when stopping.
    pub stop_grace: Duration,
    /// Caps of each appspace's log.
    pub log_limits: LogLimits,
    /// Each appspace's egress limits.
    pub egress: EgressLimits,
    /// Time an app has to start its response (504 beyond).
    pub response_timeout: Duration,
    /// A request or response body that moves no data for this long is
    /// cut off.
    pub body_idle_timeout: Duration,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            start_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(300),
            stop_grace: Duration::from_secs(3),
            log_limits: LogLimits::default(),
            egress: EgressLimits::default(),
            response_timeout: Duration::from_secs(60),
            body_idle_timeout: Duration::from_secs(60),
        }
    }
}

/// What an appspace runs and where its data lives.
#[derive(Debug, Clone)]
pub struct AppspaceConfig {
    /// Its name (the part of its domain before the host's base domain).
    pub name: String,
    /// The domain it is served at.
    pub domain: String,
    /// The app it is an instance of.
    pub app: String,
    /// The version of the app it runs.
    pub version: String,
    /// The installed app version's files.
    pub app_dir: PathBuf,
    /// The appspace's data directory.
    pub data_dir: PathBuf,
    /// Native or Deno.
    pub runtime: Runtime,
    /// The entrypoint, relative to the package root (`/app` inside).
    pub entrypoint: String,
    /// Its arguments from the manifest's `command`, placeholders unexpanded.
    pub args: Vec<String>,
    /// The manifest's `[env]`.
    pub env: Vec<(String, String)>,
    /// Its own host uid and gid, allocated in the state database (used
    /// when the host runs as root).
    pub host_id: u32,
    /// Its resource limits when the host starts.
    pub limits: ResourceLimits,
    /// Paused when the host starts.
    pub paused: bool,
    /// Its egress allowlist when the host starts.
    pub egress: Vec<Rule>,
    /// Where the appspace's log files go.
    pub log_dir: PathBuf,
    /// Why it cannot run (its version's files are missing, say), as
    /// recorded; a broken appspace serves an error page and never starts.
    pub broken: Option<String>,
}

/// The cgroup limits an appspace runs under; changes apply to a running
/// sandbox at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResourceLimits {
    /// Memory in bytes (swap is off).
    pub memory_bytes: u64,
    /// CPU share in cores.
    pub cpus: f64,
    /// Most tasks at once.
    pub pids: u64,
}

impl ResourceLimits {
    pub(crate) fn for_cgroup(&self) -> ds_sandbox::spec::Limits {
        ds_sandbox::spec::Limits {
            memory_bytes: self.memory_bytes,
            cpus: self.cpus,
            pids: self.pids,
            ..ds_sandbox::spec::Limits::default()
        }
    }
}

/// What a running appspace is doing now.
#[derive(Debug, Clone, Copy, Default)]
pub struct RuntimeInfo {
    /// Whether its sandbox is running.
    pub running: bool,
    /// Whether a start is under way.
    pub starting: bool,
    /// Since when it runs.
    pub uptime: Option<Duration>,
    /// Its cgroup's usage, when running and readable.
    pub usage: Option<Usage>,
    /// Requests answered since the host started.
    pub requests: u64,
    /// Connections to the app handed over by the agent, since the host
    /// started.
    pub connections_handed_over: u64,
    /// Connections to the app the front door did not get.
    pub connections_refused: u64,
}

/// Deno's own permissions for an app, narrowed to what the sandbox allows
/// (a second, independent layer inside the first): read `/app`, `/data`
/// and `/tmp`; write `/data` and `/tmp`; listen on `$PORT`; connect to
/// the agent's proxy and to the hosts the egress allowlist names. Never
/// run or FFI. Environment and system information stay open: both are
/// the sandbox's own (a clean environment, its own namespaces).
pub fn deno_run_args(egress: &[Rule]) -> Vec<String> {
    // `[::]`: Node's `server.listen(port)` (and so Express's
    // `app.listen(port)`) binds the IPv6 wildcard, dual-stack.
    let mut net: Vec<String> = ["0.0.0.0", "127.0.0.1", "localhost", "[::]", "[::1]"]
        .iter()
        .map(|h| format!("{h}:{DEFAULT_APP_PORT}"))
        .chain(
            ["127.0.0.1", "localhost"]
                .iter()
                .map(|h| format!("{h}:{DEFAULT_PROXY_PORT}")),
        )
        .collect();
    for rule in egress {
        match rule.deno_hosts() {
            Some(hosts) => net.extend(hosts),
            None => warn!(
                entry = %rule,
                "Deno's permissions cannot name a network; Deno itself refuses connections to it"
            ),
        }
    }
    vec![
        "run".into(),
        "--no-prompt".into(),
        "--allow-read=/app,/data,/tmp".into(),
        "--allow-write=/data,/tmp".into(),
        format!("--allow-net={}", net.join(",")),
        "--allow-env".into(),
        "--allow-sys".into(),
    ]
}

impl AppspaceConfig {
    /// What to run for a recorded appspace: its version's entrypoint (under
    /// Deno for Deno apps), logs next to its data directory.
    pub fn from_record(a: crate::state::AppspaceRecord) -> Self {
        // The logs stay outside a disk image: they count to the host's
        // limits (`[logs]`), not to the app's.
        let log_dir = a.home().join("log");
        Self {
            name: a.name,
            domain: a.domain.clone(),
            app: a.app,
            version: a.version,
            app_dir: a.app_dir,
            data_dir: a.data_dir,
            runtime: a.runtime,
            entrypoint: a.entrypoint,
            args: a.args,
            env: a.env,
            host_id: a.uid,
            limits: ResourceLimits {
                memory_bytes: a.memory_bytes,
                cpus: a.cpus,
                pids: a.pids,
            },
            paused: a.paused,
            egress: a
                .egress
                .iter()
                .filter_map(|e| match e.parse() {
                    Ok(rule) => Some(rule),
                    Err(err) => {
                        warn!(appspace = %a.domain, error = %err, "ignoring a stored egress entry");
                        None
                    }
                })
                .collect(),
            log_dir,
            broken: a.broken,
        }
    }

    /// The command its sandbox runs (paths as seen inside), given the
    /// egress allowlist in force: the entrypoint (under `deno run` with
    /// the host's permission flags for Deno apps) and the manifest's
    /// arguments with the host's values filled in. An argument that no
    /// longer expands (the manifest was validated, so only a database
    /// edited by hand) is passed as written, and said so.
    pub fn command(&self, egress: &[Rule]) -> Vec<String> {
        let entry = format!("/app/{}", self.entrypoint);
        let values = ds_package::HostValues {
            port: ds_sandbox::spec::DEFAULT_APP_PORT,
            data: "/data",
            app: "/app",
            tmp: "/tmp",
        };
        let args = self.args.iter().map(|a| {
            ds_package::expand(a, Some(&values)).unwrap_or_else(|e| {
                warn!(appspace = %self.domain, error = %e, "passing an argument as written");
                a.clone()
            })
        });
        match self.runtime {
            Runtime::Native => std::iter::once(entry).chain(args).collect(),
            // The manifest's words follow the script: they are the
            // script's arguments, never Deno's flags.
            Runtime::Deno => std::iter::once("deno".to_owned())
                .chain(deno_run_args(egress))
                .chain([entry])
                .chain(args)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deno_permissions_name_only_what_the_sandbox_allows() {
        let rules: Vec<Rule> = ["api.example.com", "*.example.org:8443", "203.0.113.7"]
            .iter()
            .map(|r| r.parse().unwrap())
            .collect();
        let args = deno_run_args(&rules);
        assert!(args.contains(&"--allow-read=/app,/data,/tmp".to_owned()));
        assert!(args.contains(&"--allow-write=/data,/tmp".to_owned()));
        let net = args
            .iter()
            .find_map(|a| a.strip_prefix("--allow-net="))
            .unwrap();
        for want in [
            "127.0.0.1:8000",
            "[::]:8000",
            "127.0.0.1:8001",
            "api.example.com:80",
            "api.example.com:443",
            "*.example.org:8443",
            "203.0.113.7:443",
        ] {
            assert!(net.split(',').any(|h| h == want), "{want} in {net}");
        }
        assert!(!args.iter().any(|a| a == "--allow-net"
            || a == "--allow-read"
            || a == "--allow-write"
            || a.starts_with("--allow-run")
            || a.starts_with("--allow-ffi")
            || a == "-A"));
        // Only the app's port is open on the wildcards.
        assert!(!net
            .split(',')
            .any(|h| h == "[::]:8001" || h == "0.0.0.0:8001"));
        let networks = deno_run_args(&["10.1.0.0/16".parse().unwrap()]);
        assert!(!networks.iter().any(|a| a.contains("10.1.")));
    }
}
