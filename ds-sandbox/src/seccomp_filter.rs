//! The system-call filter: the policy of [`crate::seccomp_rules`], compiled
//! to classic BPF by libseccomp at build time (`build.rs`) and embedded
//! here. The architecture is checked first: anything but native x86-64
//! (i386 via `int 0x80`, x32) kills the process. Every call the policy
//! does not know (one a newer kernel added, say) gets ENOSYS. Then the
//! deny list: calls
//! and arguments that reach kernel surface an app never needs, refused with
//! an errno chosen so that normal programs (glibc, Rust std, Go, Deno/V8)
//! fall back or fail cleanly; counted refusals go to the agent's listener
//! ([`crate::seccomp_notify`]), which answers with the same errno.

use std::os::fd::OwnedFd;

/// The compiled programs: 8-byte `sock_filter` instructions, host order.
const PLAIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/seccomp_filter.bpf"));
const MEDIATED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/seccomp_filter_mediated.bpf"));
const LISTENER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/seccomp_listener.bpf"));
const FRONT_DOOR: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/front_door.bpf"));
const FRONT_DOOR_STEADY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/front_door_steady.bpf"));

/// Which of the embedded programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// The sandbox's policy filter; `listen` goes to the listener
    /// ([`crate::net_mediation`]).
    Plain,
    /// The same with `bind` handed to the listener too: for kernels whose
    /// Landlock has no TCP rules.
    Mediated,
    /// The listener thread's own policy filter.
    Listener,
    /// The front door's allow-list ([`crate::front_rules`]).
    FrontDoor,
    /// Its second phase, once its threads exist: no new thread, no
    /// socket pair, no thread naming.
    FrontDoorSteady,
}

/// Errors loading the filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The embedded program is not a whole number of instructions.
    #[error("seccomp: the embedded program is {0} bytes, not a whole number of instructions")]
    Malformed(usize),
    /// The kernel refused the program.
    #[error("seccomp: loading the filter: {0}")]
    Load(std::io::Error),
}

/// An embedded program as instructions.
pub fn program(which: Program) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let bytes = match which {
        Program::Plain => PLAIN,
        Program::Mediated => MEDIATED,
        Program::Listener => LISTENER,
        Program::FrontDoor => FRONT_DOOR,
        Program::FrontDoorSteady => FRONT_DOOR_STEADY,
    };
    if bytes.is_empty() || bytes.len() % 8 != 0 {
        return Err(SeccompError::Malformed(bytes.len()));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|i| libc::sock_filter {
            code: u16::from_ne_bytes([i[0], i[1]]),
            jt: i[2],
            jf: i[3],
            k: u32::from_ne_bytes([i[4], i[5], i[6], i[7]]),
        })
        .collect())
}

/// Loads the sandbox's filter on the calling thread (inherited by its
/// children and later threads) and returns the listener its counted
/// refusals go to. `no_new_privs` must already be set (the capabilities
/// step does it).
pub fn load(program: &[libc::sock_filter]) -> Result<OwnedFd, SeccompError> {
    crate::sys::install_seccomp_filter(program, true)
        .map_err(SeccompError::Load)?
        .ok_or_else(|| SeccompError::Load(std::io::Error::other("no listener descriptor")))
}

/// Loads a filter without notifications (the listener thread's own) on
/// the calling thread.
pub fn load_without_listener(program: &[libc::sock_filter]) -> Result<(), SeccompError> {
    crate::sys::install_seccomp_filter(program, false)
        .map(drop)
        .map_err(SeccompError::Load)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_program_checks_the_architecture_first() {
        let program = program(Program::Plain).expect("a whole program");
        // ld [4] (seccomp_data.arch), then a comparison with x86-64's.
        assert_eq!(program[0].code, 0x20);
        assert_eq!(program[0].k, 4);
        assert!(
            program.iter().any(|i| i.k == 0xc000_003e),
            "AUDIT_ARCH_X86_64"
        );
        // Counted refusals notify (SECCOMP_RET_USER_NOTIF); clone3 errs.
        assert!(program.iter().any(|i| i.code == 0x06 && i.k == 0x7fc0_0000));
        let enosys = 0x0005_0000 | libc::ENOSYS as u32;
        assert!(program.iter().any(|i| i.code == 0x06 && i.k == enosys));
    }

    #[test]
    fn the_listeners_filter_never_notifies() {
        let program = program(Program::Listener).expect("a whole program");
        assert!(!program.iter().any(|i| i.code == 0x06 && i.k == 0x7fc0_0000));
        assert!(
            program.iter().any(|i| i.k == 0xc000_003e),
            "AUDIT_ARCH_X86_64"
        );
        // The mediated program is the plain one plus two notify rules.
        assert!(program_len(Program::Mediated) > program_len(Program::Plain));
    }

    fn program_len(which: Program) -> usize {
        program(which).expect("a whole program").len()
    }
}
