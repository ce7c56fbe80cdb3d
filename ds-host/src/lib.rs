//! ds-host: the privileged daemon. Built so far: app packages (validation
//! and installation), appspaces started on demand in their sandboxes, and
//! the HTTP front door that routes by Host and proxies over ds-proto. Dev
//! mode serves the bundled examples. State in SQLite, TLS, the admin API,
//! idle stop, restart backoff and log capture are still to come.

pub mod applog;
pub mod appspace;
pub mod dev;
pub mod headers;
pub mod package;
pub mod proxy;
pub mod state;
