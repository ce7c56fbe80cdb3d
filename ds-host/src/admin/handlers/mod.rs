//! The admin API's routes, one file per noun. Reads answer directly; every
//! change goes through [`audited`], so that it lands in the audit log with
//! its outcome whether it worked or not.

mod apps;
mod appspaces;
mod backups;
mod egress;
mod limits;
mod transfer;
mod upgrades;

use apps::{install_app, list_apps, remove_app, show_app};
use appspaces::{
    appspace_logs, appspace_usage, create_appspace, delete_appspace, lifecycle_change,
    list_appspaces, show_appspace,
};
use backups::{
    backup_key, create_backup, create_host_backup, delete_backup, list_backups, list_host_backups,
    restore_backup, run_due_backups, verify_backups,
};
use egress::{change_egress_list, egress_log, show_egress};
use limits::{change_limits, show_limits};
use transfer::{export_appspace, import_appspace};
use upgrades::upgrade_appspace;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tracing::{info, warn};

use super::peer::Peer;
use super::{logs, Admin};
use crate::appspace::{Appspace, AppspaceConfig, ResourceLimits, StartError};
use crate::egress::rules::Rule;
use crate::package::InstallError;
use crate::state::{AppspaceRecord, AuditRecord, LimitsUpdate, StateError};
use ds_api::admin::{self as api, ErrorBody, ErrorCode};

/// An error answer: a stable code and a one-line message.
#[derive(Debug)]
pub struct Failure {
    code: ErrorCode,
    message: String,
}

impl Failure {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            error: api::ApiError {
                code: self.code,
                message: self.message,
            },
        };
        (status, Json(body)).into_response()
    }
}

impl From<StateError> for Failure {
    fn from(e: StateError) -> Self {
        let code = match &e {
            StateError::NotFound(_) => ErrorCode::NotFound,
            StateError::Conflict(_) => ErrorCode::Conflict,
            StateError::Install(InstallError::DuplicateVersion { .. }) => ErrorCode::Conflict,
            StateError::Install(InstallError::Io { .. }) => ErrorCode::Internal,
            StateError::Install(_) => ErrorCode::BadPackage,
            _ => ErrorCode::Internal,
        };
        Self::new(code, e.to_string())
    }
}

/// The answer on a connection whose peer may not use the API.
pub fn forbidden() -> Response {
    Failure::new(
        ErrorCode::Forbidden,
        "permission denied: the admin API is for root, the host's user and the admin group",
    )
    .into_response()
}

type Answer<T> = Result<Json<T>, Failure>;

/// Records a change's outcome in the audit log and passes it on.
async fn audited<T>(
    admin: &Admin,
    peer: &Peer,
    action: &str,
    target: &str,
    detail: String,
    outcome: Result<T, Failure>,
) -> Result<T, Failure> {
    let (ok, result) = match &outcome {
        Ok(_) => (true, "ok".to_owned()),
        Err(f) => (false, f.message.clone()),
    };
    info!(user = %peer.user, uid = peer.uid, action, target, ok, "admin change");
    let record = AuditRecord {
        uid: peer.uid,
        pid: peer.pid,
        user: peer.user.clone(),
        action: action.into(),
        target: target.into(),
        detail,
        ok,
        result,
    };
    if let Err(e) = admin.state.audit(&record).await {
        warn!(error = %e, action, target, "could not write the audit log");
    }
    outcome
}

/// Every route of the API.
pub fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/apps", get(list_apps).post(install_app))
        .route("/v1/apps/{name}", get(show_app).delete(remove_app))
        .route("/v1/appspaces", get(list_appspaces).post(create_appspace))
        .route(
            "/v1/appspaces/{key}",
            get(show_appspace).delete(delete_appspace),
        )
        .route("/v1/appspaces/{key}/upgrade", post(upgrade_appspace))
        .route("/v1/appspaces/{key}/export", post(export_appspace))
        .route("/v1/appspaces/{key}/{verb}", post(lifecycle_change))
        .route(
            "/v1/appspaces/{key}/limits",
            get(show_limits).put(change_limits),
        )
        .route("/v1/appspaces/{key}/logs", get(appspace_logs))
        .route("/v1/appspaces/{key}/usage", get(appspace_usage))
        .route("/v1/appspaces/{key}/egress", get(show_egress))
        .route(
            "/v1/appspaces/{key}/egress/{verb}",
            post(change_egress_list),
        )
        .route("/v1/appspaces/{key}/egress/log", get(egress_log))
        .route("/v1/appspaces/{key}/backups", post(create_backup))
        .route("/v1/appspaces/{key}/backups/{id}", delete(delete_backup))
        .route(
            "/v1/appspaces/{key}/backups/{id}/restore",
            post(restore_backup),
        )
        .route("/v1/backups", get(list_backups))
        .route("/v1/backups/verify", post(verify_backups))
        .route("/v1/backups/import", post(import_appspace))
        .route("/v1/backups/run-due", post(run_due_backups))
        .route("/v1/backups/key", get(backup_key))
        .route(
            "/v1/backups/host",
            get(list_host_backups).post(create_host_backup),
        )
        .route("/v1/audit", get(audit_log))
        .fallback(|| async { Failure::new(ErrorCode::NotFound, "no such admin API route") })
        .with_state(admin)
}

async fn status(State(admin): State<Arc<Admin>>) -> Answer<api::Status> {
    let apps = admin.state.apps().await?;
    let appspaces = admin.state.appspaces().await?;
    let mut running = 0;
    for a in admin.host.all() {
        if a.is_running() {
            running += 1;
        }
    }
    let cgroup = match ds_sandbox::cgroup::CgroupVersion::detect() {
        Ok(ds_sandbox::cgroup::CgroupVersion::V1) => "v1",
        Ok(ds_sandbox::cgroup::CgroupVersion::V2) => "v2",
        Err(_) => "unavailable",
    };
    let front = admin.front.status();
    Ok(Json(api::Status {
        version: env!("CARGO_PKG_VERSION").into(),
        mode: admin.mode.into(),
        uptime_secs: admin.started.elapsed().as_secs(),
        cgroup: cgroup.into(),
        landlock_abi: ds_sandbox::sys::landlock_abi_version().max(0),
        base_domain: admin.host.base_domain.clone(),
        cgroup_parent: admin.host.launcher.cgroups().parent.clone(),
        apps: apps.len() as u64,
        versions: apps.iter().map(|a| a.versions.len() as u64).sum(),
        appspaces: appspaces.len() as u64,
        running,
        paused: appspaces.iter().filter(|a| a.paused).count() as u64,
        supervisor: Some(api::ProcessInfo {
            pid: std::process::id(),
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
            landlock_abi: 0,
            seccomp_phase: 0,
        }),
        front_door: front
            .pid
            .zip(front.confined)
            .map(|(pid, c)| api::ProcessInfo {
                pid,
                uid: c.uid,
                gid: c.gid,
                landlock_abi: c.landlock_abi,
                seccomp_phase: c.seccomp_phase,
            }),
        front_door_restarts: front.restarts,
        backups_overdue: admin.backups.overdue(),
        disk_quota: admin.disks.describe(),
    }))
}

fn parse_version(text: &str) -> Result<semver::Version, Failure> {
    semver::Version::from_str(text.trim())
        .map_err(|e| Failure::new(ErrorCode::Invalid, format!("version {text:?}: {e}")))
}

/// The record and the served appspace that `key` names.
async fn find(admin: &Admin, key: &str) -> Result<(AppspaceRecord, Arc<Appspace>), Failure> {
    let rec = admin.state.appspace(key).await?;
    let live = admin.host.get(&rec.name).ok_or_else(|| {
        Failure::new(
            ErrorCode::Internal,
            format!("appspace {} is recorded but not served", rec.name),
        )
    })?;
    Ok((rec, live))
}

/// When `live` was replaced (an upgrade or a restore finished) while an
/// admin change was applied to it, applies what is recorded now to its
/// successor: the change is never lost on the retired object.
async fn follow_successor(admin: &Admin, live: &Arc<Appspace>) {
    if !live.is_retired() {
        return;
    }
    if let Some(now) = admin.host.successor(live) {
        if let Ok(rec) = admin.state.appspace(&now.config.name).await {
            if now.adopt(&rec, admin.host.lifecycle.stop_grace).await {
                admin.host.restart_for_allowlist(&now);
            }
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[serde(default)]
    since: i64,
}

async fn audit_log(
    State(admin): State<Arc<Admin>>,
    Query(q): Query<AuditQuery>,
) -> Answer<Vec<api::AuditEntry>> {
    Ok(Json(
        admin
            .state
            .audit_since(q.since)
            .await?
            .into_iter()
            .map(|e| api::AuditEntry {
                id: e.id,
                at: e.at,
                uid: e.record.uid,
                pid: e.record.pid,
                user: e.record.user,
                action: e.record.action,
                target: e.record.target,
                detail: e.record.detail,
                ok: e.record.ok,
                result: e.record.result,
            })
            .collect(),
    ))
}
