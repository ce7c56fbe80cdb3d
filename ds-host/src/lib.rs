//! ds-host: the privileged daemon. One [`host::Host`] holds every
//! appspace; around it:
//!
//! - [`appspace`]: one appspace's life: its sandbox started on demand
//!   (`ds-sandbox`, a spare kept ready), stopped when idle, restarted
//!   with backoff after crashes, its log and the link to its app;
//! - [`front_door`]: listeners, TLS, routing by Host, header policy and
//!   proxying to apps;
//! - [`state`]: SQLite, one file per table;
//! - [`egress`]: the checks and splicing behind the agent's proxy;
//! - [`package`]: validating and installing app packages;
//! - [`admin`]: the admin API `dsctl` talks to;
//! - [`config`] and [`dev`]: production configuration and dev mode;
//! - [`cli`]: the command line (also read by the packaging's man page
//!   generator).

pub mod admin;
pub mod appspace;
pub mod backup;
pub mod cli;
pub mod config;
pub mod dev;
pub mod disk;
pub mod egress;
pub mod front_door;
pub mod front_link;
pub mod host;
pub mod log_fields;
pub use ds_package as package;
pub mod state;
pub mod supervisor;
pub mod upgrade;
pub mod usage;
