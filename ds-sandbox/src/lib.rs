//! ds-sandbox: builds the sandbox of one appspace and runs the agent in it.
//!
//! No setup code ever runs in a forked copy of a program: every fork or
//! clone is followed by system calls only and an exec.
//!
//! 1. [`launcher`] (outside, the caller's privileges): data directory,
//!    cgroup, a child cloned into new namespaces (it opens the view's
//!    sources, waits for its id maps, becomes the inside uid and execs),
//!    waiting, reporting, cleanup.
//! 2. [`agent`] (PID 1 of the sandbox): cgroup namespace, hostname and
//!    loopback, the filesystem view, `/proc` and `pivot_root`,
//!    capabilities dropped, rlimits, Landlock, seccomp (with a listener
//!    thread that answers and counts refused calls), non-dumpable; forks
//!    the app and reaps.
//!
//! One module per isolation step, each with one entry point; the order in
//! which they are called, and why, is written where they are called
//! (`launcher::child`, `agent::run`) and in `docs/sandbox.md`.

pub mod agent;
pub mod agent_channel;
pub mod caps;
pub mod cgroup;
pub mod data_dir;
pub mod egress_handoff;
pub mod egress_proxy;
pub mod front_confine;
pub mod front_rules;
pub mod landlock_policy;
pub mod launcher;
pub mod mounts;
pub mod namespaces;
pub mod net_mediation;
pub mod rlimits;
pub mod seccomp_filter;
pub mod seccomp_notify;
pub mod seccomp_rules;
pub mod spec;
pub mod supervise;
pub mod sys;
