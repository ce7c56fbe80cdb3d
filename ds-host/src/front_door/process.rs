//! `ds-host __front-door --control-fd N`: the front door's process,
//! started by the supervisor (docs/privsep.md). In order, and why:
//!
//! 1. its set-up arrives on the control socket (the one descriptor it
//!    inherits) with the listening sockets, each checked to be one;
//! 2. the TLS configuration is made from the certificate bytes it got
//!    (it will never open a file) and the worker count is read;
//! 3. it confines itself ([`ds_sandbox::front_confine::confine`]) while it
//!    is still single-threaded, so every thread made later inherits the
//!    uid, the dropped capabilities, Landlock and seccomp; it dies with
//!    the supervisor;
//! 4. only then do the runtime and the connection workers start; once
//!    they have, a second, tighter filter goes on every thread (no thread
//!    more, no socket pair), and it serves until the supervisor closes
//!    the control socket.

use std::net::TcpListener as StdListener;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::conn_workers::ConnWorkers;
use super::door::Door;
use super::routes::{Routes, Timing};
use super::serve::{self, ConnLimits};
use crate::front_link::messages::{Confined, Init, ListenerRole, ToFront};
use crate::front_link::wire::{self, Wire};

/// Why the front door could not start.
#[derive(Debug, thiserror::Error)]
pub enum FrontDoorError {
    /// Bad arguments.
    #[error("usage: ds-host __front-door --control-fd N ({0})")]
    Usage(String),
    /// The control socket failed or sent a bad set-up.
    #[error("the set-up from the supervisor: {0}")]
    Setup(String),
    /// Confinement failed: the front door must not serve.
    #[error(transparent)]
    Confine(#[from] ds_sandbox::front_confine::ConfineError),
    /// The runtime or a worker could not start.
    #[error("starting {what}: {source}")]
    Start {
        /// What.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

fn control_fd(args: &[String]) -> Result<OwnedFd, FrontDoorError> {
    let [flag, n] = args else {
        return Err(FrontDoorError::Usage("one option expected".into()));
    };
    if flag != "--control-fd" {
        return Err(FrontDoorError::Usage(format!("unknown option {flag}")));
    }
    let n: i32 = n
        .parse()
        .map_err(|_| FrontDoorError::Usage(format!("{n} is not a descriptor number")))?;
    ds_sandbox::sys::adopt_fd(n)
        .map_err(|e| FrontDoorError::Usage(format!("--control-fd {n}: {e}")))
}

/// Runs the front door with `args` (after `__front-door`) until the
/// supervisor goes away. Call before any thread exists.
pub fn run(args: &[String]) -> Result<(), FrontDoorError> {
    let control = control_fd(args)?;
    let setup = |e: &dyn std::fmt::Display| FrontDoorError::Setup(e.to_string());
    let (init, listeners) = wire::recv_blocking::<ToFront>(control.as_fd(), ToFront::descriptors)
        .map_err(|e| setup(&e))?;
    let ToFront::Init(init) = init else {
        return Err(FrontDoorError::Setup(
            "the first message is not the set-up".into(),
        ));
    };
    for fd in &listeners {
        wire::check_listener(fd).map_err(|e| setup(&e))?;
    }
    let tls = super::tls::from_pem(
        &super::tls::PemPair {
            certificate: init.certificate_pem.clone(),
            private_key: init.private_key_pem.clone(),
        },
        Path::new("the certificate from the supervisor"),
        Path::new("the key from the supervisor"),
    )
    .map_err(|e| setup(&e))?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let gid = init
        .ids
        .map_or_else(|| rustix::process::getgid().as_raw(), |(_, gid)| gid);
    let confined = ds_sandbox::front_confine::confine(init.ids, Some(init.supervisor_pid))?;
    tracing::info!(
        uid = confined.uid,
        gid,
        landlock_abi = confined.landlock_abi,
        seccomp_phase = confined.seccomp_phase,
        "front door confined"
    );
    let confined = Confined {
        uid: confined.uid,
        gid,
        landlock_abi: confined.landlock_abi,
        seccomp_phase: confined.seccomp_phase,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("ds-front-main")
        .enable_all()
        .build()
        .map_err(|source| FrontDoorError::Start {
            what: "the runtime",
            source,
        })?;
    runtime.block_on(serve_all(init, listeners, tls, workers, control, confined))
}

async fn serve_all(
    init: Init,
    listeners: Vec<OwnedFd>,
    tls: Arc<rustls::ServerConfig>,
    workers: usize,
    control: OwnedFd,
    confined: Confined,
) -> Result<(), FrontDoorError> {
    let start = |what| move |source| FrontDoorError::Start { what, source };
    let ms = Duration::from_millis;
    let routes = Routes::new(Timing {
        response_timeout: ms(init.response_timeout_ms),
        body_idle_timeout: ms(init.body_idle_timeout_ms),
        idle_timeout: ms(init.idle_timeout_ms),
        start_answer_timeout: ms(init.start_answer_timeout_ms),
    });
    let door = Arc::new(Door::new(
        routes,
        Wire::new(control).map_err(start("the control socket"))?,
    ));
    let workers = Arc::new(ConnWorkers::start(workers).map_err(start("the connection workers"))?);
    let limits = ConnLimits {
        header_read_timeout: ms(init.header_read_timeout_ms),
        max_header_bytes: init.max_header_bytes,
        tls_handshake_timeout: ms(init.tls_handshake_timeout_ms),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // The route table first: a connection accepted before it would be
    // told that nothing is served.
    let (routed_tx, routed) = tokio::sync::oneshot::channel();
    let supervisor = tokio::spawn(door.clone().serve_supervisor(stop_tx, routed_tx));
    if routed.await.is_err() {
        return Ok(()); // the supervisor went away first
    }
    let proxy = super::proxy::handler(door.clone());
    let mut serving = tokio::task::JoinSet::new();
    for (fd, role) in listeners.into_iter().zip(&init.listeners) {
        let listener = StdListener::from(fd);
        listener
            .set_nonblocking(true)
            .map_err(start("a listener"))?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(start("a listener"))?;
        let (tls, handler) = match role {
            ListenerRole::Http => (None, proxy.clone()),
            ListenerRole::Https => (Some(tls.clone()), proxy.clone()),
            ListenerRole::Redirect { https_port } => (None, super::redirect::handler(*https_port)),
        };
        let mut rx = stop_rx.clone();
        serving.spawn(serve::serve(
            listener,
            tls,
            handler,
            limits,
            workers.clone(),
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            },
        ));
    }
    // Phase 2: every thread exists now (the runtime's, the workers'), so
    // none may be made any more; the filter goes on all of them at once.
    let mut confined = confined;
    // (The phase-1 filter allows this one call: seccomp, adding a filter.)
    confined.seccomp_phase = ds_sandbox::front_confine::tighten()?;
    tracing::info!(
        seccomp_phase = confined.seccomp_phase,
        "front door tightened"
    );
    door.report_confined(confined).await;
    // Until the supervisor closes the control socket (it stopped, or
    // died): then the process ends, open connections with it.
    let _ = supervisor.await;
    Ok(())
}
