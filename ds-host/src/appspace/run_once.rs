//! Running a command of an app version once against an appspace's data
//! (a migration), in a sandbox like its app's but without a channel: no
//! network at all, no port, and the sandbox ends when the command does.

use std::ffi::OsString;
use std::time::Duration;

use ds_sandbox::spec::Runtime;

use super::{Appspace, AppspaceConfig, Launcher};

/// Why a command run once did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum RunOnceError {
    /// The sandbox could not be spawned.
    #[error("spawning the sandbox: {0}")]
    Spawn(std::io::Error),
    /// It ran and failed.
    #[error("{command} exited with {status} (its output is in the appspace's log)")]
    Failed {
        /// What ran.
        command: String,
        /// How it ended.
        status: String,
    },
    /// It did not end in time, and was killed.
    #[error("{command} did not finish within {timeout:?} and was killed")]
    Timeout {
        /// What ran.
        command: String,
        /// The limit.
        timeout: Duration,
    },
}

impl Appspace {
    /// Runs `argv` (`argv[0]` a program in the package of `version`,
    /// relative to its root) in a sandbox of this appspace with
    /// `version`'s files at `/app` and this appspace's data at `/data`;
    /// its output goes to the appspace's log. The appspace must not be
    /// running (the sandbox takes its cgroup's name).
    pub async fn run_once(
        &self,
        launcher: &Launcher,
        version: &AppspaceConfig,
        argv: &[String],
        timeout: Duration,
    ) -> Result<(), RunOnceError> {
        let (program, rest) = argv.split_first().ok_or_else(|| RunOnceError::Failed {
            command: "(nothing)".into(),
            status: "no command given".into(),
        })?;
        let program = format!("/app/{}", program.trim_start_matches("./"));
        let mut command: Vec<String> = match version.runtime {
            Runtime::Native => vec![program],
            Runtime::Deno => std::iter::once("deno".to_owned())
                .chain(super::deno_run_args(&[]))
                .chain([program])
                .collect(),
        };
        command.extend(rest.iter().cloned());
        let shown = command.join(" ");
        let mut args = self.sandbox_args(launcher, version);
        args.push("--".into());
        args.extend(command.iter().map(OsString::from));
        self.log.host(&format!("running {shown}"));
        let mut child = launcher
            .spawner
            .exec_alone(args)
            .await
            .map_err(RunOnceError::Spawn)?;
        if let Some(out) = child.stdout.take() {
            self.log.clone().pump(out, "stdout");
        }
        if let Some(err) = child.stderr.take() {
            self.log.clone().pump(err, "stderr");
        }
        let status = match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => return Err(RunOnceError::Spawn(e)),
            Err(_) => {
                let _ = child.kill().await;
                self.remove_cgroup(launcher).await;
                self.log.host(&format!("{shown} killed after {timeout:?}"));
                return Err(RunOnceError::Timeout {
                    command: shown,
                    timeout,
                });
            }
        };
        self.log.host(&format!("{shown} ended: {status}"));
        if status.success() {
            Ok(())
        } else {
            Err(RunOnceError::Failed {
                command: shown,
                status: status.to_string(),
            })
        }
    }
}
