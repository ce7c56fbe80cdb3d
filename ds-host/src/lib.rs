//! ds-host: the privileged daemon: app packages (validation and
//! installation), state in SQLite, appspaces started on demand in their
//! sandboxes (idle stop, crash backoff, logs), the front door (HTTP and
//! HTTPS) that routes by Host and proxies to the app over keep-alive
//! connections the agent hands over (or streams on the channel), and the
//! egress checks for the agent's proxy. Dev mode serves the bundled
//! examples. The admin API ([`admin`]) serves `dsctl`.

pub mod admin;
pub mod app_link;
pub mod applog;
pub mod appspace;
pub mod config;
pub mod conn_workers;
pub mod dev;
pub mod egress;
pub mod headers;
pub mod idle_body;
pub mod log_fields;
pub mod package;
pub mod proxy;
pub mod sandbox_spawn;
pub mod serve;
pub mod state;
pub mod tls;
pub mod upstream_pool;
