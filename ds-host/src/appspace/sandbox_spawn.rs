//! Starting `ds-sandbox` processes, with one started ahead of need.
//!
//! Every cold start used to exec `ds-sandbox exec`, and that exec with its
//! start-up (static glibc's CPU feature probing, which traps to the
//! hypervisor on a VM, relocation, argument parsing, the allocator) cost
//! ~0.8 ms before the launcher did anything for the appspace, plus the
//! host's own spawn. So the host keeps one *spare*: `ds-sandbox __spare`,
//! already running with its channel and handoff sockets, blocked reading
//! its `exec` arguments from stdin. A start hands the spare its arguments
//! and closes its stdin; a new spare is started off the request's path.
//! A spare holds nothing appspace-specific until then (no namespace, no
//! cgroup, no file of any appspace), and exits when its stdin closes with
//! nothing written, so a host that stops or dies takes it along.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};
use tracing::debug;

/// How long after a start the next spare is started: on two cores, a spare
/// starting at once competed with the sandbox it had just handed over
/// (~1 ms of CPU) and took back half of what it saved.
pub const SPARE_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

/// A started `ds-sandbox` and the host's ends of its sockets.
#[derive(Debug)]
pub struct Spawned {
    /// The launcher process.
    pub child: Child,
    /// The ds-proto channel to its agent.
    pub channel: UnixStream,
    /// Where connected egress sockets go to its agent.
    pub handoff: OwnedFd,
    /// Where its launcher reports the sandbox's final usage as it ends
    /// (`--report-fd`; read to its end).
    pub report: OwnedFd,
    /// Whether it was the spare (which may have died before it got its
    /// arguments; the agent's greeting on `channel` tells).
    pub from_spare: bool,
}

/// A launcher waiting for its arguments.
#[derive(Debug)]
struct Spare {
    spawned: Spawned,
    stdin: ChildStdin,
    /// The descriptor numbers its sockets have in it.
    fds: SandboxFds,
}

/// The descriptor numbers of a launcher's channel and handoff sockets and
/// its report pipe, as its `exec` arguments name them.
#[derive(Debug, Clone, Copy)]
pub struct SandboxFds {
    /// `--channel-fd`.
    pub channel: i32,
    /// `--handoff-fd`.
    pub handoff: i32,
    /// `--report-fd`.
    pub report: i32,
}

/// Serialises every spawn of this process (sandboxes and the front door):
/// a child's descriptors are briefly inheritable, and no other spawn may
/// pick them up.
pub(crate) static SPAWN_LOCK: Mutex<()> = Mutex::new(());

/// Starts `ds-sandbox` processes (see the module's documentation).
#[derive(Debug)]
pub struct SandboxSpawner {
    /// What is executed: the sealed in-memory copy ([`sealed_copy`]) as
    /// `/proc/self/fd/N`, or the binary's path where no copy could be made.
    sandbox_bin: PathBuf,
    /// The copy, kept open for as long as sandboxes are spawned from it.
    _copy: Option<OwnedFd>,
    spare: Mutex<Option<Spare>>,
    /// A spare is being started: many starts at once (a host starting
    /// every appspace) must not each start one.
    preparing: AtomicBool,
}

impl SandboxSpawner {
    /// A spawner of `sandbox_bin`, with no spare yet.
    pub fn new(sandbox_bin: PathBuf) -> Arc<Self> {
        let (sandbox_bin, copy) = match sealed_copy(&sandbox_bin) {
            Ok(fd) => (
                PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
                Some(fd),
            ),
            Err(e) => {
                tracing::warn!(
                    binary = %sandbox_bin.display(),
                    error = %e,
                    "no in-memory copy of the sandbox binary: running it from its file (a sandbox then pins the host's mounts, such as other appspaces' disk images, while it runs)"
                );
                (sandbox_bin, None)
            }
        };
        Arc::new(Self {
            sandbox_bin,
            _copy: copy,
            spare: Mutex::new(None),
            preparing: AtomicBool::new(false),
        })
    }

    /// Runs `ds-sandbox exec` with the arguments `exec_args` gives for the
    /// sockets' descriptor numbers: through the spare if `use_spare` and
    /// there is a live one, else by starting it now. Either way a new
    /// spare is started [`SPARE_DELAY`] later on a blocking thread, off the
    /// caller's path and out of the way of the sandbox now starting.
    pub async fn exec(
        self: &Arc<Self>,
        exec_args: impl Fn(SandboxFds) -> Vec<OsString>,
        use_spare: bool,
    ) -> std::io::Result<Spawned> {
        let spare = if use_spare { self.take_spare() } else { None };
        let handed = match spare {
            Some(spare) => Self::hand_over(spare, &exec_args)
                .await
                .inspect_err(
                    |e| debug!(error = %e, "the spare launcher could not take its arguments"),
                )
                .ok(),
            None => None,
        };
        let spawned = match handed {
            Some(spawned) => Ok(spawned),
            // The spawn itself (a fork and exec, under the spawn lock) runs
            // on a blocking thread, not on the connection worker that asked.
            None => {
                let prepared = self.prepare(|cmd, fds| {
                    cmd.arg("exec").args(exec_args(fds)).stdin(Stdio::null());
                })?;
                let spawner = self.clone();
                tokio::task::spawn_blocking(move || spawner.launch(prepared).map(|(s, _)| s))
                    .await
                    .map_err(std::io::Error::other)?
            }
        };
        self.prepare_spare_later();
        spawned
    }

    /// Runs `ds-sandbox exec` with `args` and no sockets at all (a sandbox
    /// without a channel: no network, its command runs to its end), its
    /// output piped. Spawned on a blocking thread under the spawn lock.
    pub async fn exec_alone(&self, args: Vec<OsString>) -> std::io::Result<Child> {
        let mut cmd = Command::new(&self.sandbox_bin);
        cmd.arg0("ds-sandbox")
            .arg("exec")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        tokio::task::spawn_blocking(move || {
            let _only_spawn = SPAWN_LOCK.lock().unwrap_or_else(|p| p.into_inner());
            cmd.spawn()
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Starts a spare now if there is none (at host start-up, so that the
    /// first cold start has one too).
    pub fn prepare_spare(&self) {
        if self.has_spare() || self.preparing.swap(true, Ordering::AcqRel) {
            return;
        }
        // Spawned outside the slot's lock: a start taking the spare
        // meanwhile must not wait for a spawn.
        match self.spawn_spare() {
            Ok(spare) => {
                let mut slot = self.spare.lock().unwrap_or_else(|p| p.into_inner());
                if slot.is_none() {
                    *slot = Some(spare);
                }
            }
            Err(e) => debug!(error = %e, "starting a spare launcher failed"),
        }
        self.preparing.store(false, Ordering::Release);
    }

    fn has_spare(&self) -> bool {
        self.spare
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn prepare_spare_later(self: &Arc<Self>) {
        let spawner = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(SPARE_DELAY).await;
            let _ = tokio::task::spawn_blocking(move || spawner.prepare_spare()).await;
        });
    }

    /// The spare, if it is still waiting.
    fn take_spare(&self) -> Option<Spare> {
        let mut spare = self
            .spare
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        match spare.spawned.child.try_wait() {
            Ok(None) => Some(spare),
            _ => None, // gone (killed by someone): start afresh
        }
    }

    /// Gives `spare` its arguments and lets it go.
    async fn hand_over(
        mut spare: Spare,
        exec_args: impl Fn(SandboxFds) -> Vec<OsString>,
    ) -> std::io::Result<Spawned> {
        let args = exec_args(spare.fds);
        // The spare splits its input at NUL bytes; an argument holding one
        // could not be passed to an exec either (spawn refuses it).
        if args.iter().any(|a| a.as_bytes().contains(&0)) {
            let _ = spare.spawned.child.start_kill();
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "an argument holds a NUL byte",
            ));
        }
        let mut input = Vec::new();
        for arg in &args {
            input.extend_from_slice(arg.as_bytes());
            input.push(0);
        }
        if let Err(e) = spare.stdin.write_all(&input).await {
            let _ = spare.spawned.child.start_kill();
            return Err(e);
        }
        drop(spare.stdin); // end of input: it runs now
        Ok(Spawned {
            from_spare: true,
            ..spare.spawned
        })
    }

    fn spawn_spare(&self) -> std::io::Result<Spare> {
        let (mut spawned, fds) = self.spawn_with_fds(|cmd, _| {
            cmd.arg("__spare").stdin(Stdio::piped());
        })?;
        let stdin = spawned
            .child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("the spare launcher has no stdin"))?;
        Ok(Spare {
            spawned,
            stdin,
            fds,
        })
    }

    /// Starts `ds-sandbox` with fresh channel and handoff sockets whose
    /// far ends it inherits (at the descriptor numbers returned), its
    /// arguments set by `configure`; stdout and stderr piped (the appspace
    /// log), never killed on drop. Blocks for the spawn: call it on a
    /// blocking thread.
    fn spawn_with_fds(
        &self,
        configure: impl FnOnce(&mut Command, SandboxFds),
    ) -> std::io::Result<(Spawned, SandboxFds)> {
        self.launch(self.prepare(configure)?)
    }

    /// The sockets and the command line of a launcher, ready to spawn.
    fn prepare(
        &self,
        configure: impl FnOnce(&mut Command, SandboxFds),
    ) -> std::io::Result<Prepared> {
        let (channel, theirs) = UnixStream::pair()?;
        // Connected egress sockets go to the agent on their own seqpacket
        // socket: the channel itself never carries descriptors.
        let (handoff, handoff_theirs) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )?;
        // The launcher's own report, apart from the app's output (which
        // shares its stdout and stderr and so could forge one).
        let (report, report_theirs) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let fds = SandboxFds {
            channel: theirs.as_raw_fd(),
            handoff: handoff_theirs.as_raw_fd(),
            report: report_theirs.as_raw_fd(),
        };
        let mut cmd = Command::new(&self.sandbox_bin);
        cmd.arg0("ds-sandbox");
        configure(&mut cmd, fds);
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false);
        Ok(Prepared {
            cmd,
            fds,
            ours: (channel, handoff, report),
            theirs: (OwnedFd::from(theirs), handoff_theirs, report_theirs),
        })
    }

    /// Spawns a prepared launcher (blocking: a fork and exec, under the
    /// spawn lock).
    fn launch(&self, prepared: Prepared) -> std::io::Result<(Spawned, SandboxFds)> {
        let Prepared {
            mut cmd,
            fds,
            ours: (channel, handoff, report),
            theirs,
        } = prepared;
        let child = {
            let _only_spawn = SPAWN_LOCK.lock().unwrap_or_else(|p| p.into_inner());
            for fd in [theirs.0.as_fd(), theirs.1.as_fd(), theirs.2.as_fd()] {
                rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
            }
            cmd.spawn()?
        };
        Ok((
            Spawned {
                child,
                channel,
                handoff,
                report,
                from_spare: false,
            },
            fds,
        ))
    }
}

/// A launcher's sockets and command, before the spawn.
#[derive(Debug)]
struct Prepared {
    cmd: Command,
    fds: SandboxFds,
    /// The host's ends: channel, handoff, report.
    ours: (UnixStream, OwnedFd, OwnedFd),
    /// The ends the launcher inherits (closed here once it has them).
    theirs: (OwnedFd, OwnedFd, OwnedFd),
}

/// A sealed in-memory copy (memfd) of the sandbox binary, which sandboxes
/// are executed from. The agent runs from the binary it was executed
/// from; run from its file, that file's mount (the host's root file
/// system) stays referenced after the agent's pivot_root, and with it,
/// locked to it in the sandbox's user namespace, every mount the host
/// had when the sandbox started: another appspace's disk image could not
/// be released (to resize it) until this sandbox stopped. A memfd lives
/// on no mount of the host's tree. Sealed, it cannot change under the
/// sandboxes; an upgrade of the package takes effect at the host's next
/// start, as for ds-host itself.
fn sealed_copy(binary: &std::path::Path) -> std::io::Result<OwnedFd> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    // Kernels from 6.3 may refuse to execute a memfd not made executable
    // (vm.memfd_noexec); older ones do not know the flag.
    let fd = rustix::fs::memfd_create("ds-sandbox", flags | MemfdFlags::EXEC)
        .or_else(|_| rustix::fs::memfd_create("ds-sandbox", flags))?;
    let mut copy = std::fs::File::from(fd);
    std::io::copy(&mut std::fs::File::open(binary)?, &mut copy)?;
    rustix::fs::fcntl_add_seals(
        &copy,
        SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL,
    )?;
    Ok(copy.into())
}
