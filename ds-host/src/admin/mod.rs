//! The admin API: HTTP/JSON on a Unix socket, for `dsctl`. The peer's
//! credentials are checked on every connection ([`peer`]); every change
//! is written to the audit log ([`crate::state::AuditRecord`]); errors are
//! JSON with a stable code ([`ds_api::admin::ErrorBody`]).

mod handlers;
pub mod logs;
pub mod peer;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::UnixListener;
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::host::Host;
use crate::package::PackageLimits;
use crate::state::{AuditRecord, State};
use peer::{AccessPolicy, Peer};

/// Everything the admin API works on.
#[derive(Debug)]
pub struct Admin {
    /// The database and app store.
    pub state: Arc<State>,
    /// Every appspace, and how they run.
    pub host: Arc<Host>,
    /// Backups of appspaces' data.
    pub backups: Arc<crate::backup::Backups>,
    /// The front door's keeper.
    pub front: Arc<crate::supervisor::front_door::FrontDoor>,
    /// Where appspace data, deleted appspaces and uploads go.
    pub state_dir: PathBuf,
    /// `dev` or `production`.
    pub mode: &'static str,
    /// When the host started.
    pub started: Instant,
    /// Caps on installed packages (and on uploads).
    pub package_limits: PackageLimits,
    /// Who may connect.
    pub policy: AccessPolicy,
    /// Memory of a new appspace whose manifest asks for none.
    pub default_memory: u64,
    /// How appspaces' disks are limited.
    pub disks: Arc<crate::disk::Disks>,
    /// The usage history's sampler.
    pub usage: Arc<crate::usage::Sampler>,
}

/// Why the admin socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AdminSocketError {
    /// Another host answers on the socket.
    #[error("another ds-host is serving the admin socket {0}")]
    InUse(PathBuf),
    /// Creating, binding or securing it failed.
    #[error("admin socket {path}: {what}: {source}")]
    Io {
        /// Which socket.
        path: PathBuf,
        /// What we were doing.
        what: &'static str,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// Binds the admin socket at `path`: a stale socket left by a killed host
/// is replaced, a live one is refused. The file is made `0600` (`0660`
/// with `group` as its group) at once; credentials are checked per
/// connection anyway.
pub fn bind(path: &Path, group: Option<u32>) -> Result<UnixListener, AdminSocketError> {
    let io = |what| {
        let path = path.to_owned();
        move |source| AdminSocketError::Io { path, what, source }
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io("creating its directory"))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(AdminSocketError::InUse(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(io("removing the stale socket"))?;
    }
    let listener = UnixListener::bind(path).map_err(io("binding"))?;
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io("setting its mode"))?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(io("setting its group"))?;
    }
    Ok(listener)
}

/// Serves the admin API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: UnixListener,
    admin: Arc<Admin>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    // Uploads left by a host that died mid-install are of no use.
    let _ = std::fs::remove_dir_all(admin.state_dir.join("uploads"));
    let router = handlers::router(admin.clone());
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tokio::select! {
                        () = crate::front_door::serve::after_accept_error(&e, "admin API") => continue,
                        () = &mut shutdown => return,
                    }
                }
            },
            () = &mut shutdown => return,
        };
        let peer = match Peer::of(&stream).await {
            Ok(peer) => peer,
            Err(e) => {
                warn!(error = %e, "admin connection without credentials; closed");
                continue;
            }
        };
        let allowed = admin.policy.allows(&peer);
        if !allowed {
            warn!(uid = peer.uid, pid = ?peer.pid, "admin connection refused");
            let _ = admin
                .state
                .audit(&AuditRecord {
                    uid: peer.uid,
                    pid: peer.pid,
                    user: peer.user.clone(),
                    action: "connect".into(),
                    target: "admin socket".into(),
                    detail: String::new(),
                    ok: false,
                    result: "forbidden: not root, the host's user or the admin group".into(),
                })
                .await;
        }
        let router = router.clone();
        tokio::spawn(async move {
            let service = tower::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(peer.clone());
                let router = router.clone();
                async move {
                    if !allowed {
                        return Ok(handlers::forbidden());
                    }
                    router.oneshot(req.map(axum::body::Body::new)).await
                }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                .await
            {
                debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
}
