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

fn filter() -> Result<ScmpFilterContext, libseccomp::error::SeccompError> {
    let mut f = ScmpFilterContext::new(ScmpAction::Allow)?;
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
    for r in seccomp_rules::rules() {
        // Counted refusals go to the agent's listener, which answers with
        // the rule's errno; the others get it from the kernel directly.
        let action = if r.counted {
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
    Ok(f)
}

fn main() {
    println!("cargo:rerun-if-changed=src/seccomp_rules.rs");
    println!("cargo:rerun-if-changed=build.rs");
    // The table holds x86-64 system call numbers (this build script's own
    // libc, which is the host's): refuse to build a wrong filter.
    let target = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let host_is_x86_64 = cfg!(target_arch = "x86_64");
    if target != "x86_64" || !host_is_x86_64 {
        panic!("ds-sandbox's seccomp policy is written for x86-64 (building for {target})");
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let path = out.join("seccomp_filter.bpf");
    let file =
        std::fs::File::create(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    filter()
        .and_then(|f| f.export_bpf(&file))
        .unwrap_or_else(|e| panic!("compiling the seccomp policy with libseccomp: {e}"));
}
