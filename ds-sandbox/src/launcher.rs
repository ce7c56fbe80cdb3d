//! The launcher: runs outside the sandbox with the caller's privileges.
//! Prepares the data directory and the cgroup, clones a child straight
//! into new namespaces (the child only makes system calls, moves itself
//! into the cgroup and execs our own binary as the agent, PID 1 of the
//! sandbox), creates the cgroup and writes the child's id maps meanwhile,
//! waits, reports and cleans up so that nothing is left behind.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use crate::cgroup::{Cgroup, CgroupError, CgroupPlan, CgroupVersion};
use crate::mounts::SOURCE_FD_BASE;
use crate::namespaces::{self, NamespaceError};
use crate::spec::SandboxSpec;
use crate::supervise::Supervisor;
use crate::sys::launcher_child::{
    self, ChildPlan, STEP_CGROUP, STEP_DUP, STEP_EXEC, STEP_IDENTITY, STEP_SOURCE,
};
use crate::sys::CArgv;

/// Exit status when the sandbox could not be set up.
pub const SETUP_FAILED: i32 = 125;
/// Where the agent finds the sync socket (the spec arrives on it).
pub const AGENT_SYNC_FD: i32 = 9;
/// Where the agent finds the host channel, when it has one.
pub const AGENT_CHANNEL_FD: i32 = 8;
/// Where the agent finds the host's handoff socket, when it has one.
pub const AGENT_HANDOFF_FD: i32 = 7;
/// Descriptors the cloned child keeps until its exec live at or above this.
pub(crate) const HIGH_FD_FLOOR: i32 = 100;

/// Errors of the launcher, naming the step.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The data directory could not be prepared.
    #[error(transparent)]
    Data(#[from] crate::data_dir::DataDirError),
    /// The cgroup could not be created.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// Id maps could not be written.
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    /// The sandbox's first process failed before becoming the agent.
    #[error("starting the sandbox: {what}: {source}")]
    Child {
        /// The step that failed.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Talking to the sandbox's first process failed.
    #[error("starting the sandbox: {0}")]
    Stage(std::io::Error),
}

/// Reads the child's "ready for maps" or its failure report.
fn await_child(sync: &mut UnixStream, spec: &SandboxSpec) -> Result<(), LaunchError> {
    let mut first = [0u8; 1];
    match sync.read(&mut first).map_err(LaunchError::Stage)? {
        1 if first == *b"U" => Ok(()),
        1 if first == *b"E" => Err(child_error(sync, spec)),
        _ => Err(LaunchError::Stage(std::io::Error::other(
            "the sandbox's first process exited during setup",
        ))),
    }
}

fn child_error(sync: &mut UnixStream, spec: &SandboxSpec) -> LaunchError {
    let mut rest = [0u8; 6];
    if let Err(e) = sync.read_exact(&mut rest) {
        return LaunchError::Stage(e);
    }
    let step = u16::from_be_bytes([rest[0], rest[1]]);
    let errno = i32::from_be_bytes([rest[2], rest[3], rest[4], rest[5]]);
    let what = match step {
        STEP_IDENTITY => "switching to the inside user".to_owned(),
        STEP_CGROUP => "joining the sandbox's cgroup".to_owned(),
        STEP_DUP => "passing descriptors".to_owned(),
        STEP_EXEC => "executing the agent".to_owned(),
        i => match spec.sources.get(usize::from(i - STEP_SOURCE)) {
            Some(s) => format!("opening {}", s.host_path.display()),
            None => format!("step {i}"),
        },
    };
    LaunchError::Child {
        what,
        source: std::io::Error::from_raw_os_error(errno),
    }
}

/// Runs `spec` to completion and returns the exit status to report.
/// `channel` is the sandbox's end of the host channel (required when
/// `spec.channel` is set).
/// `handoff` is the host's handoff socket (required when `spec.handoff` is
/// set). `report`, if given, gets the sandbox's final usage as one line
/// ([`usage_line`]) once it has ended, read just before its cgroup is
/// removed: the host's accounting must not lose what a removed cgroup
/// counted.
pub fn run(
    spec: &SandboxSpec,
    channel: Option<OwnedFd>,
    handoff: Option<OwnedFd>,
    report: Option<std::fs::File>,
) -> Result<i32, LaunchError> {
    if spec.channel != channel.is_some() || spec.handoff != handoff.is_some() {
        return Err(LaunchError::Stage(std::io::Error::other(
            "the spec and the channel descriptor disagree",
        )));
    }
    crate::data_dir::prepare(
        &spec.data_dir,
        spec.host_uid,
        spec.host_gid,
        rustix::process::geteuid().is_root(),
    )?;
    if rustix::process::geteuid().is_root() {
        // The sandbox cannot drop supplementary groups itself (setgroups is
        // denied in its user namespace), so it must not inherit root's.
        rustix::thread::set_thread_groups(&[]).map_err(|e| LaunchError::Stage(e.into()))?;
    }
    let cgroup_name = spec
        .cgroup_name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", spec.name, std::process::id()));
    let plan = CgroupPlan::new(&spec.cgroup_parent, &cgroup_name)?;
    let mut cgroup = None;
    let mut born_inside = false;
    let result = run_in(spec, plan, &mut cgroup, &mut born_inside, channel, handoff);
    let Some(cgroup) = cgroup else {
        return result;
    };
    let usage = cgroup.usage();
    let dir = cgroup
        .dirs()
        .first()
        .map_or(String::new(), |d| d.display().to_string());
    let version = cgroup.version();
    cgroup.remove();
    if let Some(mut report) = report {
        use std::io::Write as _;
        // Best effort: a host that went away has nothing to account.
        let _ = report.write_all(usage_line(&usage).as_bytes());
    }
    let status = result?;
    if spec.report {
        eprintln!(
            "ds-sandbox: cgroup {dir} ({version:?}, {})",
            if born_inside {
                "born inside: clone3 into the cgroup"
            } else {
                "joined by the child"
            }
        );
        eprint!("ds-sandbox: usage: {}", usage_line(&usage));
    }
    if usage.oom_kills > 0 {
        eprintln!(
            "ds-sandbox: killed: out of memory (the sandbox's limit is {} MiB; {} OOM kill(s))",
            spec.limits.memory_bytes >> 20,
            usage.oom_kills
        );
    }
    Ok(status)
}

/// A sandbox's final usage as the launcher reports it: `cpu_ms=N
/// memory_peak_bytes=N oom_kills=N` and a newline.
pub fn usage_line(usage: &crate::cgroup::Usage) -> String {
    format!(
        "cpu_ms={} memory_peak_bytes={} oom_kills={}\n",
        usage.cpu_ns / 1_000_000,
        usage.memory_peak,
        usage.oom_kills
    )
}

/// What the cloned child needs, prepared before the clone: `join`, the
/// cgroup files it writes itself into (none if it is born in its cgroup),
/// and copies of the sync socket, the channel and the handoff socket.
fn prepare_child(
    spec: &SandboxSpec,
    join: Vec<std::path::PathBuf>,
    (sync, channel, handoff): (&OwnedFd, Option<&OwnedFd>, Option<&OwnedFd>),
) -> Result<ChildPlan, LaunchError> {
    // The child moves sources to SOURCE_FD_BASE.. and the sync socket and
    // channel to their fixed numbers; every descriptor it still needs must
    // sit above all of those so that no move clobbers it.
    let lift = |fd: &OwnedFd| {
        rustix::io::fcntl_dupfd_cloexec(fd, HIGH_FD_FLOOR).map_err(|e| LaunchError::Stage(e.into()))
    };
    let sync = lift(sync)?;
    let channel = channel.map(lift).transpose()?;
    let handoff = handoff.map(lift).transpose()?;
    let nul = |e: std::ffi::NulError| LaunchError::Stage(std::io::Error::other(e));
    let sources = spec
        .sources
        .iter()
        .map(|s| {
            Ok((
                CString::new(s.host_path.as_os_str().as_encoded_bytes()).map_err(nul)?,
                s.required,
            ))
        })
        .collect::<Result<Vec<_>, LaunchError>>()?;
    let cgroup_join = join
        .iter()
        .map(|p| CString::new(p.as_os_str().as_encoded_bytes()).map_err(nul))
        .collect::<Result<Vec<_>, LaunchError>>()?;
    let exe = rustix::fs::open(
        "/proc/self/exe",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| LaunchError::Stage(e.into()))?;
    let exe = lift(&exe)?;
    if spec.sources.len() as i32 + SOURCE_FD_BASE >= HIGH_FD_FLOOR {
        return Err(LaunchError::Stage(std::io::Error::other(
            "too many sandbox sources",
        )));
    }
    Ok(ChildPlan {
        cgroup_join,
        sources,
        sync,
        channel,
        handoff,
        exe,
        argv: CArgv::new(["ds-agent", "__agent"]).map_err(nul)?,
        envp: CArgv::new(Vec::<String>::new()).map_err(nul)?,
        last_cap: crate::caps::last_cap(),
    })
}

fn unshare_error(e: std::io::Error) -> LaunchError {
    LaunchError::Namespace(NamespaceError::Unshare {
        what: "user, mount, net, ipc, uts, pid",
        source: e,
    })
}

/// Creates the planned cgroup (keeping it in `cgroup`, for the caller to
/// read its usage and remove it) and clones the child into it or, on v1,
/// clones the child and creates the cgroup while it opens its sources;
/// then sees the child through to the agent and waits for it.
fn run_in(
    spec: &SandboxSpec,
    plan: CgroupPlan,
    cgroup: &mut Option<Cgroup>,
    born_inside: &mut bool,
    channel: Option<OwnedFd>,
    handoff: Option<OwnedFd>,
) -> Result<i32, LaunchError> {
    let (mut ours, theirs) = UnixStream::pair().map_err(LaunchError::Stage)?;
    let theirs = OwnedFd::from(theirs);
    let mut supervisor = Supervisor::new().map_err(LaunchError::Stage)?;
    let flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWPID;
    let descriptors = (&theirs, channel.as_ref(), handoff.as_ref());
    // cgroup v2: the cgroup is made first and the child is born in it
    // (clone3 with CLONE_INTO_CGROUP), which spares the 7-25 ms a move
    // into a v2 cgroup costs (see `sys::clone3_into_cgroup`). v1, or a
    // kernel without it: the cgroup is made while the child opens its
    // sources, and the child moves itself in after our "G".
    let mut later = None;
    let pid = if plan.version() == CgroupVersion::V2 {
        if spec.cgroup_name.is_none() {
            Cgroup::remove_stale(&spec.cgroup_parent, &spec.name);
        }
        let created = cgroup.insert(plan.create(&spec.limits)?);
        let into = rustix::fs::open(
            &created.dirs()[0],
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .ok()
        .and_then(|dir| {
            let child_plan = prepare_child(spec, Vec::new(), descriptors).ok()?;
            launcher_child::clone_child_into_cgroup(flags, dir.as_fd(), &child_plan).ok()
        });
        *born_inside = into.is_some();
        match into {
            Some(pid) => pid,
            None => {
                let child_plan = prepare_child(spec, created.self_join_paths(), descriptors)?;
                launcher_child::clone_child(flags, &child_plan).map_err(unshare_error)?
            }
        }
    } else {
        let child_plan = prepare_child(spec, plan.self_join_paths(), descriptors)?;
        let pid = launcher_child::clone_child(flags, &child_plan).map_err(unshare_error)?;
        later = Some(plan);
        pid
    };
    // The child has its copies: ours would keep its end of the sync socket,
    // the channel and the handoff socket open after it exits.
    drop((theirs, channel, handoff));
    let setup = (|| {
        // v1: the cgroup is made while the child opens its sources; it
        // joins after our "G", before it can fork.
        if let Some(plan) = later.take() {
            if spec.cgroup_name.is_none() {
                Cgroup::remove_stale(&spec.cgroup_parent, &spec.name);
            }
            *cgroup = Some(plan.create(&spec.limits)?);
        }
        await_child(&mut ours, spec)?;
        namespaces::write_id_maps(pid as u32, spec.host_uid, spec.host_gid)?;
        let json = serde_json::to_vec(spec).map_err(|e| LaunchError::Stage(e.into()))?;
        let mut msg = Vec::with_capacity(5 + json.len());
        msg.push(b'G');
        msg.extend_from_slice(&(json.len() as u32).to_be_bytes());
        msg.extend_from_slice(&json);
        ours.write_all(&msg).map_err(LaunchError::Stage)?;
        // EOF once the agent has read the spec and closed the socket; a
        // failure before the exec arrives as a report instead.
        let mut report = [0u8; 1];
        match ours.read(&mut report).map_err(LaunchError::Stage)? {
            1 if report == *b"E" => Err(child_error(&mut ours, spec)),
            _ => Ok(()),
        }
    })();
    if let Err(e) = setup {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid).expect("clone returned a positive pid"),
            rustix::process::Signal::KILL,
        );
        let _ = supervisor.wait(pid, false);
        return Err(e);
    }
    drop(ours);
    let exit = supervisor.wait(pid, false).map_err(LaunchError::Stage)?;
    Ok(exit.status())
}
