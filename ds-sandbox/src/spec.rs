//! What a sandbox is made of: everything the stages need, passed from the
//! launcher to the later stages as JSON over an inherited pipe.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The uid and gid the app (and the agent) have inside the sandbox.
pub const INSIDE_ID: u32 = 1000;
/// The port the app listens on inside its network namespace.
pub const DEFAULT_APP_PORT: u16 = 8000;
/// The port of the agent's egress proxy on the sandbox's loopback.
pub const DEFAULT_PROXY_PORT: u16 = 8001;
/// The hostname every sandbox sees.
pub const HOSTNAME: &str = "appspace";

/// Which runtime files the app needs besides its own (shared with the
/// manifest, hence defined in `ds-api`).
pub use ds_api::Runtime;

/// Resource limits enforced by the cgroup (and rlimits as a backstop).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory limit in bytes (swap is off).
    pub memory_bytes: u64,
    /// Most tasks (processes and threads) at once.
    pub pids: u64,
    /// CPU share in cores (0.5 = half of one core).
    pub cpus: f64,
    /// Size of the `/tmp` tmpfs in bytes (charged to the memory limit too).
    pub tmp_bytes: u64,
    /// Most open files per process.
    pub open_files: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 256 << 20,
            pids: 64,
            cpus: 1.0,
            tmp_bytes: 64 << 20,
            open_files: 1024,
        }
    }
}

/// The whole description of one sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// A short name used for the cgroup and logs.
    pub name: String,
    /// The parent of its cgroup, a path inside each hierarchy
    /// ([`crate::cgroup::Placement`]).
    pub cgroup_parent: String,
    /// Its cgroup's own name; `None`: `<name>-<launcher pid>`.
    pub cgroup_name: Option<String>,
    /// Host directory with the app's files, mounted read-only at `/app`.
    pub app_dir: PathBuf,
    /// Host directory with the appspace's data, mounted read-write at `/data`.
    pub data_dir: PathBuf,
    /// Runtime files to provide.
    pub runtime: Runtime,
    /// The Deno binary on the host (for `Runtime::Deno`).
    pub deno_binary: Option<PathBuf>,
    /// Resource limits.
    pub limits: Limits,
    /// Host uid the sandbox's inside uid maps to.
    pub host_uid: u32,
    /// Host gid the sandbox's inside gid maps to.
    pub host_gid: u32,
    /// Whether `host_uid` belongs to this appspace alone (started by root),
    /// as opposed to being the calling user's.
    pub dedicated_host_uid: bool,
    /// Port the app listens on.
    pub app_port: u16,
    /// Port of the agent's egress proxy.
    pub proxy_port: u16,
    /// Refuse to run without Landlock unless this is set.
    pub allow_missing_landlock: bool,
    /// Use no Landlock ABI above this one even if the kernel has it, as on
    /// an older kernel (Debian 12's 6.1 has ABI 2): for testing the paths
    /// older kernels take on a newer one.
    #[serde(default)]
    pub landlock_abi_cap: Option<i32>,
    /// The command to run, inside paths.
    pub command: Vec<String>,
    /// Extra environment variables for the app.
    pub extra_env: Vec<(String, String)>,
    /// Print a one-line report of the layers applied to stderr.
    pub report: bool,
    /// Whether the agent gets a host channel (at
    /// [`crate::launcher::AGENT_CHANNEL_FD`]) and serves it.
    pub channel: bool,
    /// Whether the agent also gets the host's handoff socket (at
    /// [`crate::launcher::AGENT_HANDOFF_FD`]), on which the host passes
    /// connected egress sockets.
    #[serde(default)]
    pub handoff: bool,
    /// The host files the view is made of, in descriptor order.
    pub sources: Vec<crate::mounts::Source>,
}

impl SandboxSpec {
    /// The app's complete environment: nothing is inherited from the host.
    pub fn app_environment(&self) -> Vec<(String, String)> {
        let proxy = format!("http://127.0.0.1:{}", self.proxy_port);
        let mut env: Vec<(String, String)> = [
            ("PATH", "/usr/local/bin:/usr/bin:/bin"),
            ("HOME", "/data"),
            ("TMPDIR", "/tmp"),
            ("LANG", "C.UTF-8"),
            ("USER", "app"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        env.push(("PORT".into(), self.app_port.to_string()));
        for key in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            env.push((key.into(), proxy.clone()));
        }
        if self.runtime == Runtime::Deno {
            // Deno's cache (transpiled modules, V8 code cache) in the
            // appspace's own data, where it survives restarts: a cold start
            // with it warm is ~25 ms faster than one that rebuilds it in
            // /tmp. It is the app's to read and spoil, like all of /data.
            env.push(("DENO_DIR".into(), "/data/.cache/deno".into()));
            env.push(("DENO_NO_UPDATE_CHECK".into(), "1".into()));
        }
        for (k, v) in &self.extra_env {
            env.retain(|(existing, _)| existing != k);
            env.push((k.clone(), v.clone()));
        }
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_is_complete_and_overridable() {
        let spec = SandboxSpec {
            name: "t".into(),
            cgroup_parent: "ds".into(),
            cgroup_name: None,
            app_dir: "/a".into(),
            data_dir: "/d".into(),
            runtime: Runtime::Native,
            deno_binary: None,
            limits: Limits::default(),
            host_uid: 1,
            host_gid: 1,
            dedicated_host_uid: true,
            app_port: 8000,
            proxy_port: 8001,
            allow_missing_landlock: false,
            landlock_abi_cap: None,
            command: vec!["/app/x".into()],
            extra_env: vec![("HOME".into(), "/tmp".into())],
            report: false,
            channel: false,
            handoff: false,
            sources: Vec::new(),
        };
        let env = spec.app_environment();
        assert!(env.contains(&("PORT".into(), "8000".into())));
        assert!(env.contains(&("HTTPS_PROXY".into(), "http://127.0.0.1:8001".into())));
        assert!(env.contains(&("HOME".into(), "/tmp".into())));
        assert_eq!(env.iter().filter(|(k, _)| k == "HOME").count(), 1);
    }
}
