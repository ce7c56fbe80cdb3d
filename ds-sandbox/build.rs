//! Compiles the seccomp policy (`src/seccomp_rules.rs`) to a classic BPF
//! program with libseccomp, once, at build time: generating it at run time
//! cost every sandbox start about 0.6 ms, and libseccomp is then not
//! needed at run time at all.

use std::path::PathBuf;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};

#[allow(dead_code)]
#[path = "src/seccomp_rules.rs"]
mod seccomp_rules;

#[path = "src/front_rules.rs"]
mod front_rules;

use seccomp_rules::Cond;

fn compare(cond: Cond) -> Option<ScmpArgCompare> {
    match cond {
        Cond::Always => None,
        Cond::MaskedEq { arg, mask, value } => Some(ScmpArgCompare::new(
            u32::from(arg),
            ScmpCompareOp::MaskedEqual(mask),
            value,
        )),
        Cond::Eq { arg, value } => Some(ScmpArgCompare::new(
            u32::from(arg),
            ScmpCompareOp::Equal,
            value,
        )),
        Cond::Greater { arg, value } => Some(ScmpArgCompare::new(
            u32::from(arg),
            ScmpCompareOp::Greater,
            value,
        )),
    }
}

/// Which program to build.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// The sandbox's filter (agent and app); `listen` goes to the agent's
    /// listener.
    Plain,
    /// The same, with `bind` also handed to the agent's listener
    /// (kernels whose Landlock has no TCP rules).
    Mediated,
    /// The listener thread's own: no notifications, and what it needs to
    /// mediate binds left out.
    Listener,
}

/// A native x86-64 filter context answering `default` to what no rule
/// names.
fn context(default: ScmpAction) -> Result<ScmpFilterContext, libseccomp::error::SeccompError> {
    let mut f = ScmpFilterContext::new(default)?;
    // A binary tree over the system call numbers instead of a linear
    // chain: the kernel runs the program once per system call number when
    // the filter is loaded (to find the calls it may then allow without
    // running it), so a shorter path per number is a faster sandbox start.
    f.set_ctl_optimize(2)?;
    // Only native x86-64: i386 (`int 0x80`) and x32 calls hit the
    // bad-architecture action and kill the process.
    f.set_act_badarch(ScmpAction::KillProcess)?;
    if !f.is_arch_present(ScmpArch::X8664)? {
        f.add_arch(ScmpArch::X8664)?;
    }
    if ScmpArch::native() != ScmpArch::X8664 {
        f.remove_arch(ScmpArch::native())?;
    }
    Ok(f)
}

fn filter(variant: Variant) -> Result<ScmpFilterContext, libseccomp::error::SeccompError> {
    let mut f = context(ScmpAction::Allow)?;
    for r in seccomp_rules::rules() {
        if variant == Variant::Listener && seccomp_rules::LISTENER_NEEDS.contains(&r.nr) {
            continue;
        }
        // Counted refusals go to the agent's listener, which answers with
        // the rule's errno; the others get it from the kernel directly.
        let action = if r.counted && variant != Variant::Listener {
            ScmpAction::Notify
        } else {
            ScmpAction::Errno(r.errno)
        };
        let syscall = ScmpSyscall::from(r.nr as i32);
        match compare(r.cond) {
            None => f.add_rule(action, syscall)?,
            Some(cmp) => f.add_rule_conditional(action, syscall, &[cmp])?,
        };
    }
    let mut mediated: Vec<(&str, libc::c_long)> = Vec::new();
    if variant != Variant::Listener {
        mediated.extend(seccomp_rules::MEDIATED);
    }
    if variant == Variant::Mediated {
        mediated.extend(seccomp_rules::MEDIATED_WITHOUT_TCP_RULES);
    }
    for (_, nr) in mediated {
        f.add_rule(ScmpAction::Notify, ScmpSyscall::from(nr as i32))?;
    }
    // Every call the policy does not know gets ENOSYS, in this same
    // filter: a second, stacked filter cost each sandbox start ~1.3 ms.
    // Not in the listener thread's own filter, which only the agent's
    // code runs under (the app never does), to keep its load short.
    if variant != Variant::Listener {
        let known = seccomp_rules::known();
        for nr in 0..=seccomp_rules::HIGHEST_CLOSED_NR {
            if !known.contains(&nr) {
                f.add_rule(
                    ScmpAction::Errno(libc::ENOSYS),
                    ScmpSyscall::from(nr as i32),
                )?;
            }
        }
    }
    Ok(f)
}

/// The front door's allow-list (`src/front_rules.rs`): EPERM for the rest.
/// Phase 1 is what it loads before it makes its threads; phase 2, loaded
/// on all of them once they exist, also refuses `clone` (no thread
/// more), `socketpair` and `prctl` (used only while starting).
fn front_door(phase: u8) -> Result<ScmpFilterContext, libseccomp::error::SeccompError> {
    let mut f = context(ScmpAction::Errno(libc::EPERM))?;
    for &(_, nr) in front_rules::ALLOWED {
        f.add_rule(ScmpAction::Allow, ScmpSyscall::from(nr as i32))?;
    }
    f.add_rule(
        ScmpAction::Errno(libc::ENOSYS),
        ScmpSyscall::from(libc::SYS_clone3 as i32),
    )?;
    for &cmd in front_rules::IOCTLS {
        f.add_rule_conditional(
            ScmpAction::Allow,
            ScmpSyscall::from(libc::SYS_ioctl as i32),
            &[ScmpArgCompare::new(
                1,
                ScmpCompareOp::MaskedEqual(0xffff_ffff),
                cmd,
            )],
        )?;
    }
    if phase >= 2 {
        return Ok(f);
    }
    let masked =
        |arg: u32, bits: u64| ScmpArgCompare::new(arg, ScmpCompareOp::MaskedEqual(bits), bits);
    f.add_rule_conditional(
        ScmpAction::Allow,
        ScmpSyscall::from(libc::SYS_clone as i32),
        &[masked(0, front_rules::CLONE_THREAD)],
    )?;
    f.add_rule_conditional(
        ScmpAction::Allow,
        ScmpSyscall::from(libc::SYS_prctl as i32),
        &[ScmpArgCompare::new(
            0,
            ScmpCompareOp::Equal,
            front_rules::PRCTL_SET_NAME,
        )],
    )?;
    f.add_rule_conditional(
        ScmpAction::Allow,
        ScmpSyscall::from(libc::SYS_socketpair as i32),
        &[ScmpArgCompare::new(
            0,
            ScmpCompareOp::Equal,
            front_rules::SOCKETPAIR_DOMAIN,
        )],
    )?;
    // Loading phase 2 (a filter only ever adds refusals).
    f.add_rule_conditional(
        ScmpAction::Allow,
        ScmpSyscall::from(libc::SYS_seccomp as i32),
        &[
            ScmpArgCompare::new(0, ScmpCompareOp::Equal, front_rules::SECCOMP_OP),
            ScmpArgCompare::new(1, ScmpCompareOp::Equal, front_rules::SECCOMP_FLAGS),
        ],
    )?;
    Ok(f)
}

fn main() {
    println!("cargo:rerun-if-changed=src/seccomp_rules.rs");
    println!("cargo:rerun-if-changed=src/front_rules.rs");
    println!("cargo:rerun-if-changed=build.rs");
    // The table holds x86-64 system call numbers (this build script's own
    // libc, which is the host's): refuse to build a wrong filter.
    let target = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let host_is_x86_64 = cfg!(target_arch = "x86_64");
    if target != "x86_64" || !host_is_x86_64 {
        panic!("ds-sandbox's seccomp policy is written for x86-64 (building for {target})");
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for (variant, name) in [
        (Variant::Plain, "seccomp_filter.bpf"),
        (Variant::Mediated, "seccomp_filter_mediated.bpf"),
        (Variant::Listener, "seccomp_listener.bpf"),
    ] {
        let path = out.join(name);
        let file = std::fs::File::create(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        filter(variant)
            .and_then(|f| f.export_bpf(&file))
            .unwrap_or_else(|e| panic!("compiling the seccomp policy with libseccomp: {e}"));
    }
    for (phase, name) in [(1, "front_door.bpf"), (2, "front_door_steady.bpf")] {
        let path = out.join(name);
        let file = std::fs::File::create(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        front_door(phase)
            .and_then(|f| f.export_bpf(&file))
            .unwrap_or_else(|e| panic!("compiling the front door's filter with libseccomp: {e}"));
    }
}
