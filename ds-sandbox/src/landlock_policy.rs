//! Landlock: the kernel enforces the same allowlist as the filesystem view
//! (defense in depth should a mount ever be wrong), TCP bind/connect to
//! the app and proxy ports only (ABI >= 4), and scoping of abstract Unix
//! sockets and signals to the sandbox (ABI >= 6).

use std::path::Path;

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

use crate::spec::SandboxSpec;

/// The ABI our policy is written against (6 adds scoping; 7 only adds
/// audit logging flags).
const POLICY_ABI: ABI = ABI::V6;

/// Errors building or applying a ruleset.
#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    /// The kernel has no Landlock and the configuration did not allow that.
    #[error("Landlock is not available on this kernel (ABI {0}); refusing to start (allow it explicitly to run without)")]
    Missing(i32),
    /// The crate reported an error.
    #[error("landlock: {0}")]
    Ruleset(#[from] landlock::RulesetError),
    /// A rule's path could not be opened.
    #[error("landlock: opening {path}: {source}")]
    Path {
        /// Which path.
        path: String,
        /// Why.
        source: landlock::PathFdError,
    },
}

/// Which side a ruleset is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// The agent (and, by inheritance, everything under it): may also bind
    /// the proxy port and connect to the app.
    Agent,
    /// The app: binds only `$PORT`, connects only to the proxy.
    App,
}

/// The Landlock ABI the running kernel offers (0 when absent).
pub fn kernel_abi() -> i32 {
    crate::sys::landlock_abi_version()
}

/// The ABI the sandbox uses: the kernel's, or less if the spec caps it.
pub fn effective_abi(spec: &SandboxSpec) -> i32 {
    let kernel = kernel_abi();
    spec.landlock_abi_cap.map_or(kernel, |cap| kernel.min(cap))
}

/// Whether Landlock enforces the TCP port rules itself (ABI >= 4); where
/// it does not, the agent mediates binds ([`crate::net_mediation`]).
pub fn has_tcp_rules(abi: i32) -> bool {
    abi >= 4
}

fn read() -> BitFlags<AccessFs> {
    AccessFs::ReadFile | AccessFs::ReadDir
}

fn read_exec() -> BitFlags<AccessFs> {
    read() | AccessFs::Execute
}

/// Everything on a writable tree but executing and creating devices.
fn read_write() -> BitFlags<AccessFs> {
    AccessFs::from_all(POLICY_ABI)
        & !(AccessFs::Execute | AccessFs::MakeChar | AccessFs::MakeBlock | AccessFs::IoctlDev)
}

/// Builds (but does not apply) the ruleset for `layer`. Paths are those of
/// the sandbox's own root, so this runs after `pivot_root`.
pub fn build(spec: &SandboxSpec, layer: Layer) -> Result<RulesetCreated, LandlockError> {
    let abi = effective_abi(spec);
    if abi < 1 && !spec.allow_missing_landlock {
        return Err(LandlockError::Missing(abi));
    }
    // What this ABI can express, no more (so that a capped ABI behaves as
    // an older kernel would, not as this one with fewer rules).
    let usable = ABI::from(abi.clamp(1, POLICY_ABI as i32));
    let fs_access = AccessFs::from_all(usable);
    let mut rules: Vec<(&str, BitFlags<AccessFs>)> = vec![
        ("/app", read_exec()),
        ("/data", read_write()),
        ("/tmp", read_write()),
        ("/dev", read() | AccessFs::WriteFile | AccessFs::IoctlDev),
        ("/proc", read() | AccessFs::WriteFile),
        ("/etc", read()),
        ("/usr", read_exec()),
    ];
    // Non-merged-/usr systems have real /lib directories.
    for dir in ["/lib", "/lib64"] {
        if std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
            rules.push((dir, read_exec()));
        }
    }
    let ports: Vec<(u16, BitFlags<AccessNet>)> = match layer {
        Layer::App => vec![
            (spec.app_port, AccessNet::BindTcp.into()),
            (spec.proxy_port, AccessNet::ConnectTcp.into()),
        ],
        Layer::Agent => vec![
            (spec.app_port, AccessNet::BindTcp | AccessNet::ConnectTcp),
            (spec.proxy_port, AccessNet::BindTcp | AccessNet::ConnectTcp),
        ],
    };

    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(fs_access)?;
    if has_tcp_rules(abi) {
        ruleset = ruleset.handle_access(AccessNet::from_all(usable))?;
    }
    if abi >= 6 {
        ruleset = ruleset.scope(Scope::from_all(usable))?;
    }
    let mut ruleset = ruleset.create()?;
    for (path, access) in rules {
        if !Path::new(path).exists() {
            continue;
        }
        let fd = PathFd::new(path).map_err(|source| LandlockError::Path {
            path: path.into(),
            source,
        })?;
        ruleset = ruleset.add_rule(PathBeneath::new(fd, access & fs_access))?;
    }
    for (port, access) in ports.into_iter().filter(|_| has_tcp_rules(abi)) {
        ruleset = ruleset.add_rule(NetPort::new(port, access))?;
    }
    Ok(ruleset)
}

/// What was enforced, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    /// Every requested restriction.
    Full,
    /// Those the kernel supports (an older ABI).
    Partial,
    /// None (no Landlock, explicitly allowed).
    None,
}

/// Applies `ruleset` to the calling process (and its future children).
/// Safe to call between fork and exec: two system calls, no allocation.
pub fn apply(ruleset: RulesetCreated, allow_missing: bool) -> Result<Enforcement, LandlockError> {
    let status = ruleset.restrict_self()?;
    match status.ruleset {
        RulesetStatus::FullyEnforced => Ok(Enforcement::Full),
        RulesetStatus::PartiallyEnforced => Ok(Enforcement::Partial),
        RulesetStatus::NotEnforced if allow_missing => Ok(Enforcement::None),
        RulesetStatus::NotEnforced => Err(LandlockError::Missing(kernel_abi())),
    }
}
