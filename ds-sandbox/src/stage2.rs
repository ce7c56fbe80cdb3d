//! Stage 2: a fresh process that enters the namespaces, becomes the inside
//! user, builds the filesystem view, and then forks exactly once: the child
//! immediately execs the agent (PID 1 of the new pid namespace). Stage 2
//! stays outside that pid namespace only to wait and pass the exit on.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use crate::spec::{SandboxSpec, HOSTNAME};
use crate::supervise::Supervisor;
use crate::sys::{self, CArgv, Forked};
use crate::{caps, fds, mounts, namespaces};

/// Largest spec accepted on the sync socket.
const MAX_SPEC: usize = 1 << 20;

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("ds-sandbox: {what}: {e}");
    std::process::exit(crate::launcher::SETUP_FAILED)
}

fn read_spec(sync: &mut UnixStream) -> std::io::Result<SandboxSpec> {
    let mut len = [0u8; 4];
    sync.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_SPEC {
        return Err(std::io::Error::other("sandbox spec too large"));
    }
    let mut json = vec![0u8; len];
    sync.read_exact(&mut json)?;
    serde_json::from_slice(&json).map_err(std::io::Error::other)
}

/// Runs stage 2; never returns.
pub fn run(sync_fd: RawFd) -> ! {
    let sync = sys::adopt_fd(sync_fd).unwrap_or_else(|e| fail("opening the sync socket", e));
    let mut sync = UnixStream::from(sync);
    let spec = read_spec(&mut sync).unwrap_or_else(|e| fail("reading the sandbox spec", e));
    // Our own binary, to exec the agent from once no path to it exists.
    let exe: OwnedFd = rustix::fs::open(
        "/proc/self/exe",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .unwrap_or_else(|e| fail("opening /proc/self/exe", e));

    // 1. Namespaces first: everything after happens inside them, and the
    //    mount/net/uts/ipc namespaces are owned by our new user namespace.
    namespaces::enter().unwrap_or_else(|e| fail("entering namespaces", e));
    // 2. The launcher maps our ids and moves us into the cgroup.
    let mut go = [0u8; 1];
    if sync
        .write_all(b"U")
        .and_then(|()| sync.read_exact(&mut go))
        .is_err()
        || go != *b"G"
    {
        fail(
            "waiting for the launcher",
            "it went away before mapping our ids",
        );
    }
    drop(sync);
    // 3. Open the host files the view is made of while we still have the
    //    caller's host uid (their paths may not be traversable by the
    //    appspace's uid).
    let sources =
        mounts::Sources::open(&spec).unwrap_or_else(|e| fail("opening sandbox sources", e));
    // 4. Become the inside uid, keeping capabilities for the setup to come.
    caps::become_inside_user_keeping_caps()
        .unwrap_or_else(|e| fail("switching to the inside user", e));
    // 5. The cgroup namespace, now that we are in our cgroup (its root).
    namespaces::enter_cgroup().unwrap_or_else(|e| fail("entering the cgroup namespace", e));
    // 6. Hostname and loopback: needs CAP_SYS_ADMIN / CAP_NET_ADMIN here.
    namespaces::configure_uts_and_net(HOSTNAME)
        .unwrap_or_else(|e| fail("configuring the network namespace", e));
    // 7. The filesystem view (the agent mounts /proc and enters it).
    mounts::build_tree(&spec, &sources).unwrap_or_else(|e| fail("building the filesystem view", e));
    drop(sources);

    // 8. Hand the spec to the agent through a pipe it inherits.
    let (spec_r, spec_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .unwrap_or_else(|e| fail("creating the spec pipe", e));
    rustix::io::fcntl_setfd(&spec_r, rustix::io::FdFlags::empty())
        .unwrap_or_else(|e| fail("spec pipe", e));
    let json = serde_json::to_vec(&spec).unwrap_or_else(|e| fail("encoding the spec", e));
    std::fs::File::from(spec_w)
        .write_all(&json)
        .unwrap_or_else(|e| fail("writing the spec", e));
    // 9. Nothing else crosses into the sandbox.
    fds::close_all_except(&[exe.as_raw_fd(), spec_r.as_raw_fd()])
        .unwrap_or_else(|e| fail("closing inherited descriptors", e));

    let mut supervisor = Supervisor::new().unwrap_or_else(|e| fail("blocking signals", e));
    let argv = CArgv::new([
        "ds-agent",
        "__agent",
        "--spec-fd",
        &spec_r.as_raw_fd().to_string(),
    ])
    .unwrap_or_else(|e| fail("agent arguments", e));
    let envp = CArgv::new(Vec::<String>::new()).unwrap_or_else(|e| fail("agent environment", e));
    // 10. Fork once; the child only execs (async-signal-safe).
    match sys::fork().unwrap_or_else(|e| fail("forking the agent", e)) {
        Forked::Child => {
            let e = sys::exec_fd(exe.as_fd(), &argv, &envp);
            drop(e);
            sys::write_stderr(b"ds-sandbox: could not exec the agent\n");
            sys::exit_now(crate::launcher::SETUP_FAILED)
        }
        Forked::Parent(pid) => {
            drop(spec_r);
            let exit = supervisor
                .wait(pid, false)
                .unwrap_or_else(|e| fail("waiting for the agent", e));
            std::process::exit(exit.status())
        }
    }
}
