//! Starting an appspace's sandbox: the `ds-sandbox exec` arguments, the
//! agent's greeting and readiness, then the tasks that serve its egress
//! streams and notice its exit.

use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ds_proto::{Config, ControlMessage, Role, Session};
use ds_sandbox::spec::Runtime;
use tracing::{info, warn};

use super::sandbox_spawn::{SandboxFds, Spawned};
use super::{record_crash, Appspace, Launcher, Lifecycle, Running, StartError};

/// How long a sandbox whose channel closed before its app was ready may
/// take to end by itself, so that its launcher's last report (an OOM kill,
/// the app's exit status) reaches the appspace's log, before it is killed.
const LAST_WORDS: std::time::Duration = std::time::Duration::from_secs(2);

impl Appspace {
    /// Ends a sandbox that failed to start, and everything in it, before
    /// the failure is reported: the launcher is killed (its agent has a
    /// parent-death signal) and its cgroup is emptied and removed, which
    /// returns once the last task has exited.
    async fn end_failed(&self, child: &mut tokio::process::Child, launcher: &Launcher) {
        let _ = child.kill().await;
        self.remove_cgroup(launcher).await;
    }

    /// Empties and removes its sandbox's cgroup (returns once the last
    /// task in it has exited).
    pub(super) async fn remove_cgroup(&self, launcher: &Launcher) {
        let (parent, name) = (launcher.cgroups().parent.clone(), self.cgroup_name());
        let _ = tokio::task::spawn_blocking(move || {
            if let Ok(cgroup) = ds_sandbox::cgroup::Cgroup::open(&parent, &name) {
                cgroup.remove();
            }
        })
        .await;
    }

    /// The `ds-sandbox exec` arguments every sandbox of this appspace
    /// gets (all but its sockets and its command), with the files of the
    /// version `version` describes.
    pub(super) fn sandbox_args(
        &self,
        launcher: &Launcher,
        version: &super::AppspaceConfig,
    ) -> Vec<OsString> {
        let cfg = &self.config;
        let limits = self.limits();
        let mut args: Vec<OsString> = vec![
            "--app".into(),
            version.app_dir.clone().into(),
            "--data".into(),
            cfg.data_dir.clone().into(),
            "--memory".into(),
            limits.memory_bytes.to_string().into(),
            "--cpu".into(),
            limits.cpus.to_string().into(),
            "--pids".into(),
            limits.pids.to_string().into(),
        ];
        // The version's static environment (`[env]`, checked at install
        // against the names the host sets and those that bend a layer, so
        // these never replace $PORT, $HOME or the proxies).
        for (k, v) in &version.env {
            args.extend(["--env".into(), format!("{k}={v}").into()]);
        }
        // Root gives each appspace its own host uid and gid, allocated in
        // the state database; otherwise the sandbox maps to our own.
        if rustix::process::geteuid().is_root() {
            args.extend(["--host-uid".into(), cfg.host_id.to_string().into()]);
        }
        args.extend([
            "--cgroup-parent".into(),
            launcher.cgroups().parent.clone().into(),
            "--cgroup-name".into(),
            self.cgroup_name().into(),
        ]);
        if version.runtime == Runtime::Deno {
            args.extend(["--runtime".into(), "deno".into()]);
            if let Some(deno) = &launcher.deno {
                args.extend(["--deno".into(), deno.clone().into()]);
            }
        }
        args
    }

    /// Starts its sandbox and waits for the agent to report the app ready.
    pub(super) async fn start(
        &self,
        launcher: &Launcher,
        life: &Lifecycle,
    ) -> Result<Running, StartError> {
        let command = self.config.command(&self.egress.rules());
        let common = self.sandbox_args(launcher, &self.config);
        let exec_args = |fds: SandboxFds| {
            let mut args: Vec<OsString> = vec![
                "--channel-fd".into(),
                fds.channel.to_string().into(),
                "--handoff-fd".into(),
                fds.handoff.to_string().into(),
                "--report-fd".into(),
                fds.report.to_string().into(),
            ];
            args.extend(common.iter().cloned());
            args.push("--".into());
            args.extend(command.iter().map(OsString::from));
            args
        };
        let cfg = &self.config;
        let deadline = tokio::time::Instant::now() + life.start_timeout;
        let mut use_spare = true;
        let (mut child, child_pid, session, app_port, handoff) = loop {
            let Spawned {
                mut child,
                channel: ours,
                handoff,
                report,
                from_spare,
            } = launcher
                .spawner
                .exec(&exec_args, use_spare)
                .await
                .map_err(StartError::Spawn)?;
            let child_pid = child.id();
            info!(appspace = %cfg.name, pid = ?child_pid, "sandbox started");
            self.log.host("starting the sandbox");
            if let Some(out) = child.stdout.take() {
                self.log.clone().pump(out, "stdout");
            }
            if let Some(err) = child.stderr.take() {
                self.log.clone().pump(err, "stderr");
            }
            crate::usage::read_report(report, cfg.name.clone(), launcher.ended());
            // The agent greets first. A waiting launcher that died before it
            // got its arguments (killed by someone, say) shows here: then
            // once more with a launcher started for this start.
            let greeted = tokio::time::timeout_at(
                deadline,
                Session::connect(ours, Role::Host, Config::default()),
            )
            .await;
            let session = match greeted {
                Ok(Ok(session)) => session,
                Ok(Err(e)) if from_spare => {
                    self.end_failed(&mut child, launcher).await;
                    self.log.host(&format!(
                        "the waiting launcher ended before its agent greeted ({e}); \
                         once more with a new one"
                    ));
                    use_spare = false;
                    continue;
                }
                Ok(Err(e)) => {
                    self.end_failed(&mut child, launcher).await;
                    return Err(e.into());
                }
                Err(_) => {
                    self.end_failed(&mut child, launcher).await;
                    return Err(StartError::Timeout(life.start_timeout));
                }
            };
            let ready = async {
                loop {
                    if let ControlMessage::Ready { app_port } = session.recv_control().await? {
                        return Ok::<_, StartError>(app_port);
                    }
                }
            };
            match tokio::time::timeout_at(deadline, ready).await {
                Ok(Ok(app_port)) => {
                    break (child, child_pid, Arc::new(session), app_port, handoff);
                }
                Ok(Err(e)) => {
                    // The channel closed before the app was ready: the
                    // sandbox is ending by itself (the app died, say, killed
                    // by the OOM killer). Its launcher's last report (why it
                    // died) reaches the log if it may finish first.
                    if tokio::time::timeout(LAST_WORDS, child.wait())
                        .await
                        .is_err()
                    {
                        self.end_failed(&mut child, launcher).await;
                    }
                    return Err(e);
                }
                Err(_) => {
                    self.end_failed(&mut child, launcher).await;
                    return Err(StartError::Timeout(life.start_timeout));
                }
            }
        };
        let handle = session.handle();
        // The supervisor only sends on the handoff socket (egress
        // upstreams); the front door, holding a copy, receives on it.
        let egress_handoff = match handoff.try_clone().and_then(ds_proto::Handoff::sender) {
            Ok(sender) => sender,
            Err(e) => {
                self.end_failed(&mut child, launcher).await;
                return Err(StartError::Spawn(e));
            }
        };
        self.log.host("app ready");
        // Egress streams the agent opens: each one checked and spliced.
        let (acceptor, gate, sink, log, resolver) = (
            session.clone(),
            self.egress.clone(),
            launcher.egress_sink.clone(),
            self.log.clone(),
            launcher.resolver.clone(),
        );
        tokio::spawn(async move {
            while let Ok(incoming) = acceptor.accept().await {
                if let ds_proto::Incoming::Egress(req) = incoming {
                    let (gate, sink, log) = (gate.clone(), sink.clone(), log.clone());
                    let (handoff, resolver) = (egress_handoff.clone(), resolver.clone());
                    tokio::spawn(gate.handle(req, sink, log, Some(handoff), resolver));
                }
            }
        });
        // When the sandbox exits, its channel is closed and the next
        // request starts a new one; an exit we did not ask for is a crash.
        let name = cfg.name.clone();
        let watch = handle.clone();
        let stopping = Arc::new(AtomicBool::new(false));
        let (log, crashes, stop_flag) = (self.log.clone(), self.crashes.clone(), stopping.clone());
        let started = Instant::now();
        let (ended_tx, ended) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let status = child.wait().await;
            watch.close();
            // The launcher has exited, its cgroup cleaned up: a new run may
            // make one of the same name now.
            let _ = ended_tx.send(true);
            let status = status
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string());
            if stop_flag.load(Ordering::Acquire) {
                log.host(&format!("sandbox stopped ({status})"));
            } else {
                let delay = record_crash(
                    &crashes,
                    format!("the sandbox exited: {status}"),
                    started.elapsed(),
                );
                warn!(appspace = %name, %status, "sandbox crashed");
                log.host(&format!(
                    "sandbox crashed ({status}); next start in {delay:?} at the earliest"
                ));
            }
        });
        Ok(Running {
            _session: session,
            cgroup: (launcher.cgroups().parent.clone(), self.cgroup_name()),
            handle,
            run: super::NEXT_RUN.fetch_add(1, Ordering::Relaxed),
            app_port,
            handoff,
            child_pid,
            started,
            stopping,
            ended,
        })
    }
}
