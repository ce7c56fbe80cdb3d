//! Usage history (docs/usage.md): each appspace's CPU time, memory and
//! disk highs, requests and egress bytes per hour, kept 30 days.
//!
//! A [`Sampler`] adds what changed since its last sample to the hour it
//! samples in, every [`EVERY`] and whenever someone asks for the history
//! (so what is shown is up to date), and once more when the host stops.
//! Sources:
//! - CPU: the running sandbox's cgroup, plus what ended sandboxes used
//!   ([`Ended`]): a launcher reads its cgroup's totals just before it
//!   removes it and reports them on a pipe of its own (`--report-fd`),
//!   which the host reads as the sandbox ends. An idle stop loses nothing.
//! - Memory: the cgroup's current use at each sample, an ended sandbox's
//!   peak, and a running one's peak when it started within the hour.
//! - Disk: what the appspace's disk limit measures (its quota or its
//!   image's file system); nothing where it has no limit.
//! - Requests: the front door's counts (which restart from zero when the
//!   front door does).
//! - Egress bytes: written with the egress log as each connection closes
//!   (`State::record_egress`), not here.

mod ended;
mod sampler;

pub use ended::{parse_report, read_report, Ended};
pub use sampler::Sampler;

/// How often usage is sampled.
pub const EVERY: std::time::Duration = std::time::Duration::from_secs(60);
