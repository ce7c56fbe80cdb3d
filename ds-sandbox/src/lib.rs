//! ds-sandbox: builds the sandbox of one appspace and runs the agent in it.
//!
//! The sandbox is built by three processes, each a fresh exec, so that no
//! setup code ever runs in a forked copy of a multi-threaded program:
//!
//! 1. [`launcher`] (outside, the caller's privileges): data directory,
//!    cgroup, id maps, waiting, reporting, cleanup.
//! 2. [`stage2`] (inside the new namespaces): identity, hostname and
//!    loopback, the filesystem view, then one fork whose child execs...
//! 3. [`agent`] (PID 1 of the sandbox): `/proc`, capabilities dropped,
//!    rlimits, Landlock, seccomp, non-dumpable; forks the app and reaps.
//!
//! One module per isolation step, each with one entry point; the order in
//! which they are called, and why, is written where they are called
//! (`stage2::run`, `agent::run`) and in `docs/sandbox.md`.

pub mod agent;
pub mod caps;
pub mod cgroup;
pub mod fds;
pub mod landlock_policy;
pub mod launcher;
pub mod mounts;
pub mod namespaces;
pub mod rlimits;
pub mod seccomp_filter;
pub mod spec;
pub mod stage2;
pub mod supervise;
pub mod sys;
