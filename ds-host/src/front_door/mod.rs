//! The front door: everything that faces the network. Listeners and the
//! connection loop ([`serve`]), the per-core connection workers
//! ([`conn_workers`]), TLS ([`tls`]), routing by Host and proxying to the
//! app ([`proxy`]) over pooled keep-alive connections
//! ([`upstream_pool`]), the header policy both ways ([`headers`]) and
//! bodies that must keep moving ([`idle_body`]). It reaches appspaces
//! only through the shared [`crate::host::Host`].

pub mod conn_workers;
pub(crate) mod headers;
pub(crate) mod idle_body;
pub mod proxy;
pub mod selftest;
pub mod serve;
pub mod tls;
pub mod upstream_pool;
