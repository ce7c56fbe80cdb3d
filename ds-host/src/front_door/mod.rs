//! The front door: everything that faces the network, in its own
//! unprivileged, confined process (`ds-host __front-door`, started and
//! kept running by the supervisor: [`process`]). Listeners and the
//! connection loop ([`serve`]), the per-core connection workers
//! ([`conn_workers`]), TLS ([`tls`]), routing by Host ([`routes`]) and
//! proxying to the app ([`proxy`]) over pooled keep-alive connections
//! ([`upstream_pool`]) that the agent hands over ([`app_link`]), the
//! header policy both ways ([`headers`]), bodies that must keep moving
//! ([`idle_body`]), plain HTTP's redirect in production ([`redirect`]).
//! It reaches the supervisor only through the control socket ([`door`]).

pub mod app_link;
pub mod conn_workers;
pub mod dns;
pub mod door;
pub(crate) mod headers;
pub(crate) mod idle_body;
pub mod process;
pub mod proxy;
pub(crate) mod redirect;
pub mod routes;
pub mod selftest;
pub mod serve;
pub mod tls;
pub mod upstream_pool;
