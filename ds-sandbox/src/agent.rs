//! The agent: PID 1 of the sandbox's pid namespace, exec'd by the
//! launcher's cloned child with capabilities in its own user namespace.
//! It enters the cgroup namespace, sets the hostname and loopback, builds
//! the filesystem view, mounts `/proc` and switches root, prepares the
//! app's Landlock layer, drops every capability, applies rlimits, its own
//! Landlock layer and the seccomp filter (which the app inherits), becomes
//! non-dumpable, then forks the app and stays as init: it reaps, forwards
//! signals, and exits with the app's status.
//!
//! (The agent's channel work, splicing HTTP and egress streams over
//! ds-proto, lands with the host.)

use std::ffi::CString;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::landlock_policy::{self, Enforcement, Layer};
use crate::launcher::{AGENT_CHANNEL_FD, AGENT_HANDOFF_FD, AGENT_SYNC_FD};
use crate::net_mediation::Mediation;
use crate::seccomp_filter::Program;
use crate::spec::{SandboxSpec, HOSTNAME};
use crate::supervise::Supervisor;
use crate::sys::app_child::{self, AppChild, LANDLOCK_FAILED};
use crate::sys::{self, CArgv};
use crate::{agent_channel, caps, mounts, namespaces, rlimits, seccomp_filter, seccomp_notify};

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("ds-sandbox: {what}: {e}");
    std::process::exit(crate::launcher::SETUP_FAILED)
}

/// Finds `command` the way a shell would, in the sandbox's PATH.
fn resolve(command: &str) -> PathBuf {
    if command.contains('/') {
        return PathBuf::from(command);
    }
    for dir in ["/usr/local/bin", "/usr/bin", "/bin", "/app"] {
        let candidate = Path::new(dir).join(command);
        if candidate.is_file() {
            return candidate;
        }
    }
    PathBuf::from(command)
}

fn describe(enf: Enforcement) -> &'static str {
    match enf {
        Enforcement::Full => "fully enforced",
        Enforcement::Partial => "partially enforced (older ABI)",
        Enforcement::None => "NOT enforced (allowed by configuration)",
    }
}

/// Largest spec accepted on the sync socket.
const MAX_SPEC: usize = 1 << 20;

fn read_spec(sync: &mut std::fs::File) -> std::io::Result<SandboxSpec> {
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

/// Runs the agent; never returns.
pub fn run() -> ! {
    let sync = sys::adopt_fd(AGENT_SYNC_FD).unwrap_or_else(|e| fail("opening the sync socket", e));
    let spec = read_spec(&mut std::fs::File::from(sync))
        .unwrap_or_else(|e| fail("reading the sandbox spec", e));
    let channel = spec.channel.then(|| {
        sys::adopt_fd(AGENT_CHANNEL_FD).unwrap_or_else(|e| fail("opening the host channel", e))
    });
    let handoff = spec.handoff.then(|| {
        sys::adopt_fd(AGENT_HANDOFF_FD).unwrap_or_else(|e| fail("opening the handoff socket", e))
    });
    let sources =
        mounts::Sources::adopt(&spec.sources).unwrap_or_else(|e| fail("receiving sources", e));

    // The cgroup namespace first: the launcher moved us into our cgroup,
    // which becomes its root.
    namespaces::enter_cgroup().unwrap_or_else(|e| fail("entering the cgroup namespace", e));
    // Hostname and loopback need CAP_SYS_ADMIN / CAP_NET_ADMIN, held here.
    namespaces::configure_uts_and_net(HOSTNAME)
        .unwrap_or_else(|e| fail("configuring the network namespace", e));
    // The filesystem view, built under a tmpfs in our private mount namespace.
    mounts::build_tree(&spec, &sources).unwrap_or_else(|e| fail("building the filesystem view", e));
    drop(sources);
    // /proc must be mounted from inside the pid namespace, and while the
    // host's procfs is still visible; then pivot_root detaches the host.
    mounts::mount_proc_and_enter_root().unwrap_or_else(|e| fail("entering the sandbox root", e));
    // Nothing but stdio, the channel and the handoff socket crossed into
    // the agent: the launcher's child closed the rest before its exec
    // (`sys::launcher_child`), and everything opened since is ours.

    // Everything that allocates is prepared now, before the fork.
    let Some(command) = spec.command.first() else {
        fail("starting the app", "no command given")
    };
    let program = resolve(command);
    let c_program =
        CString::new(program.as_os_str().as_encoded_bytes()).unwrap_or_else(|e| fail("command", e));
    let argv = CArgv::new(spec.command.iter().map(String::as_str))
        .unwrap_or_else(|e| fail("arguments", e));
    let env: Vec<String> = spec
        .app_environment()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let envp = CArgv::new(env).unwrap_or_else(|e| fail("environment", e));
    let app_rules =
        landlock_policy::build(&spec, Layer::App).unwrap_or_else(|e| fail("preparing Landlock", e));
    let agent_rules = landlock_policy::build(&spec, Layer::Agent)
        .unwrap_or_else(|e| fail("preparing Landlock", e));
    let abi = landlock_policy::effective_abi(&spec);
    // The listener performs listen calls itself, and binds too where
    // Landlock has no TCP rules.
    let mediation = Mediation {
        app_port: spec.app_port,
        binds: !landlock_policy::has_tcp_rules(abi),
    };
    let which = if mediation.binds {
        Program::Mediated
    } else {
        Program::Plain
    };
    let filter = seccomp_filter::program(which).unwrap_or_else(|e| fail("preparing seccomp", e));

    // Privileges go first: nothing below needs any, and no_new_privs must
    // be set before Landlock and seccomp.
    caps::drop_all().unwrap_or_else(|e| fail("dropping capabilities", e));
    rlimits::apply(&spec.limits, spec.dedicated_host_uid).unwrap_or_else(|e| fail("rlimits", e));
    let enforcement = landlock_policy::apply(agent_rules, spec.allow_missing_landlock)
        .unwrap_or_else(|e| fail("Landlock", e));
    // The egress proxy binds before seccomp (under the mediated filter the
    // agent's own bind would wait for its own listener) and before the app
    // starts, so that the app's first outbound request finds it; the app
    // does not inherit it.
    let proxy = channel.as_ref().map(|_| {
        std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, spec.proxy_port))
            .unwrap_or_else(|e| fail("binding the egress proxy", e))
    });
    // Signals are blocked before any thread exists, so that every thread
    // inherits the mask and they all reach the supervisor's signalfd.
    let mut supervisor = Supervisor::new().unwrap_or_else(|e| fail("blocking signals", e));
    // The listener thread starts under every layer above (capabilities,
    // no_new_privs and Landlock are per thread, inherited at creation) but
    // before the sandbox's filter, which it must not inherit: it loads its
    // own, without notifications (it would wait for itself).
    let pending = seccomp_notify::Denials::start(mediation, spec.channel)
        .unwrap_or_else(|e| fail("starting the seccomp listener", e));
    // Seccomp last: after it, the setup calls above would be denied.
    let listener = seccomp_filter::load(&filter).unwrap_or_else(|e| fail("seccomp", e));
    let denials = pending.answer(listener);
    // Non-dumpable: the app (same uid) cannot ptrace us, read our memory or
    // open our descriptors through /proc/1.
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .unwrap_or_else(|e| fail("making the agent non-dumpable", e));

    if spec.report {
        let capped = if abi < landlock_policy::kernel_abi() {
            format!(" (kernel {}, capped)", landlock_policy::kernel_abi())
        } else {
            String::new()
        };
        let binds = if mediation.binds {
            "; binds mediated by the agent"
        } else {
            ""
        };
        eprintln!(
            "ds-sandbox: landlock ABI {abi}{capped} {}; seccomp filter loaded{binds}; no capabilities; uid {} (host {})",
            describe(enforcement),
            crate::spec::INSIDE_ID,
            spec.host_uid
        );
    }

    let (err_r, err_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .unwrap_or_else(|e| fail("creating the exec-status pipe", e));
    let pid = app_child::fork_app(AppChild {
        program: c_program,
        argv,
        envp,
        landlock: app_rules,
        allow_missing_landlock: spec.allow_missing_landlock,
        status: err_w,
    })
    .unwrap_or_else(|e| fail("forking the app", e));
    let mut status = [0u8; 4];
    let got = std::fs::File::from(err_r).read(&mut status).unwrap_or(0);
    if got == 4 {
        let errno = i32::from_ne_bytes(status);
        if errno == LANDLOCK_FAILED {
            eprintln!("ds-sandbox: applying the app's Landlock layer failed");
        } else {
            let err = std::io::Error::from_raw_os_error(errno);
            eprintln!("ds-sandbox: cannot execute {}: {err}", program.display());
        }
    }
    let exit = match (channel, proxy) {
        (Some(channel), Some(proxy)) => agent_channel::serve(
            channel.into(),
            pid,
            spec.app_port,
            proxy,
            handoff,
            supervisor,
            denials.clone(),
        ),
        _ => supervisor.wait(pid, true),
    }
    .unwrap_or_else(|e| fail("supervising the app", e));
    if spec.report {
        eprintln!("ds-sandbox: seccomp: {}", denials.summary());
    }
    std::process::exit(exit.status())
}
