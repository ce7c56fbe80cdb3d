//! `ds-host __front-selftest --state-db FILE --admin-socket PATH`: confines
//! this process exactly as the front door is confined
//! (`ds_sandbox::front_confine::confine`, then `tighten`: the one code
//! path, both phases), then tries
//! what a compromised front door would: open files (the state database
//! among them), exec, connect to the admin socket, ptrace, make sockets of
//! each family, mount, unshare. Prints `BLOCKED`/`ESCAPED` lines and the
//! kernel's view of the process (`/proc/self/status`, opened before), and
//! exits 0 only if everything was refused. Runs before any thread exists.

use std::io::Write;
use std::path::PathBuf;

use ds_sandbox::front_confine::{self, Targets};

/// Runs the self-test with `args` (after `__front-selftest`); returns the
/// exit status.
pub fn run(args: &[String]) -> i32 {
    let mut state_db = None;
    let mut admin_socket = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match (arg.as_str(), it.next()) {
            ("--state-db", Some(v)) => state_db = Some(PathBuf::from(v)),
            ("--admin-socket", Some(v)) => admin_socket = Some(PathBuf::from(v)),
            _ => {
                eprintln!("usage: ds-host __front-selftest --state-db FILE --admin-socket PATH");
                return 2;
            }
        }
    }
    let (Some(state_db), Some(admin_socket)) = (state_db, admin_socket) else {
        eprintln!("usage: ds-host __front-selftest --state-db FILE --admin-socket PATH");
        return 2;
    };
    let status = match rustix::fs::open(
        "/proc/self/status",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("ds-host: opening /proc/self/status: {e}");
            return 1;
        }
    };
    let root = rustix::process::geteuid().is_root();
    let id = ds_api::ids::FRONT_DOOR_DEV_ID;
    let confined = match front_confine::confine(root.then_some((id, id)), None) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ds-host: {e}");
            return 1;
        }
    };
    // Phase 2 as the front door loads it once its threads exist.
    let phase = match front_confine::tighten() {
        Ok(phase) => phase,
        Err(e) => {
            eprintln!("ds-host: {e}");
            return 1;
        }
    };
    let targets = Targets {
        state_db,
        admin_socket,
        status,
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "CONFINED uid={} landlock_abi={} landlock_full={} seccomp_phase={}",
        confined.uid, confined.landlock_abi, confined.landlock_full, phase
    );
    let mut escaped = 0;
    for (name, result) in front_confine::selftest(&targets) {
        let _ = match result {
            Ok(how) => writeln!(out, "BLOCKED {name}: {how}"),
            Err(what) => {
                escaped += 1;
                writeln!(out, "ESCAPED {name}: {what}")
            }
        };
    }
    for line in front_confine::status_of(&targets.status).lines() {
        let keys = ["Uid:", "Gid:", "Groups:", "Cap", "NoNewPrivs:", "Seccomp:"];
        if keys.iter().any(|k| line.starts_with(k)) {
            let _ = writeln!(out, "STATUS {line}");
        }
    }
    let _ = out.flush();
    i32::from(escaped != 0)
}
