//! The admin API's routes. Reads answer directly; every change goes
//! through [`audited`], so that it lands in the audit log with its outcome
//! whether it worked or not.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tracing::{info, warn};

use super::api::{self, bounds, ErrorBody, ErrorCode};
use super::peer::Peer;
use super::{logs, Admin};
use crate::appspace::{Appspace, AppspaceConfig, ResourceLimits, StartError};
use crate::egress::rules::Rule;
use crate::package::InstallError;
use crate::state::{AppspaceRecord, AuditRecord, LimitsUpdate, StateError};

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
        .route("/v1/appspaces/{key}/{verb}", post(lifecycle_change))
        .route(
            "/v1/appspaces/{key}/limits",
            get(show_limits).put(change_limits),
        )
        .route("/v1/appspaces/{key}/logs", get(appspace_logs))
        .route("/v1/appspaces/{key}/egress", get(show_egress))
        .route(
            "/v1/appspaces/{key}/egress/{verb}",
            post(change_egress_list),
        )
        .route("/v1/appspaces/{key}/egress/log", get(egress_log))
        .route("/v1/audit", get(audit_log))
        .fallback(|| async { Failure::new(ErrorCode::NotFound, "no such admin API route") })
        .with_state(admin)
}

async fn status(State(admin): State<Arc<Admin>>) -> Answer<api::Status> {
    let apps = admin.state.apps().await?;
    let appspaces = admin.state.appspaces().await?;
    let mut running = 0;
    for a in admin.door.all() {
        if a.is_running().await {
            running += 1;
        }
    }
    let cgroup = match ds_sandbox::cgroup::CgroupVersion::detect() {
        Ok(ds_sandbox::cgroup::CgroupVersion::V1) => "v1",
        Ok(ds_sandbox::cgroup::CgroupVersion::V2) => "v2",
        Err(_) => "unavailable",
    };
    Ok(Json(api::Status {
        version: env!("CARGO_PKG_VERSION").into(),
        mode: admin.mode.into(),
        uptime_secs: admin.started.elapsed().as_secs(),
        cgroup: cgroup.into(),
        landlock_abi: ds_sandbox::sys::landlock_abi_version().max(0),
        base_domain: admin.door.base_domain.clone(),
        apps: apps.len() as u64,
        versions: apps.iter().map(|a| a.versions.len() as u64).sum(),
        appspaces: appspaces.len() as u64,
        running,
        paused: appspaces.iter().filter(|a| a.paused).count() as u64,
    }))
}

fn app_view(a: crate::state::AppSummary) -> api::App {
    api::App {
        name: a.name,
        versions: a
            .versions
            .into_iter()
            .map(|v| api::AppVersion {
                version: v.version.to_string(),
                runtime: v.runtime,
                entrypoint: v.entrypoint,
                memory_bytes: v.memory_bytes,
                installed_at: v.installed_at,
                appspaces: v.appspaces,
            })
            .collect(),
    }
}

async fn list_apps(State(admin): State<Arc<Admin>>) -> Answer<Vec<api::App>> {
    Ok(Json(
        admin
            .state
            .apps()
            .await?
            .into_iter()
            .map(app_view)
            .collect(),
    ))
}

async fn show_app(
    State(admin): State<Arc<Admin>>,
    UrlPath(name): UrlPath<String>,
) -> Answer<api::App> {
    Ok(Json(app_view(admin.state.app(&name).await?)))
}

static UPLOADS: AtomicU64 = AtomicU64::new(0);

/// Removes an uploaded package file when the install is over.
struct Upload(PathBuf);

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes the request body to a file under the state directory, refusing
/// more than `cap` bytes.
async fn receive_package(admin: &Admin, body: Body) -> Result<Upload, Failure> {
    let dir = admin.state_dir.join("uploads");
    let internal = |what: &str, e: std::io::Error| {
        Failure::new(
            ErrorCode::Internal,
            format!("{what} {}: {e}", dir.display()),
        )
    };
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| internal("creating", e))?;
    let upload = Upload(dir.join(format!(
        "upload-{}-{}.tar.gz",
        std::process::id(),
        UPLOADS.fetch_add(1, Ordering::Relaxed)
    )));
    let mut file = tokio::fs::File::create(&upload.0)
        .await
        .map_err(|e| internal("writing into", e))?;
    let cap = admin.package_limits.max_total_bytes;
    let mut received = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| Failure::new(ErrorCode::Invalid, format!("receiving the package: {e}")))?;
        received += chunk.len() as u64;
        if received > cap {
            return Err(Failure::new(
                ErrorCode::TooLarge,
                format!("the package is larger than the {} MiB allowed", cap >> 20),
            ));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| internal("writing into", e))?;
    }
    file.flush()
        .await
        .map_err(|e| internal("writing into", e))?;
    if received == 0 {
        return Err(Failure::new(ErrorCode::BadPackage, "the package is empty"));
    }
    Ok(upload)
}

async fn install_app(
    State(admin): State<Arc<Admin>>,
    Extension(peer): Extension<Peer>,
    body: Body,
) -> Answer<api::Installed> {
    let outcome = async {
        let upload = receive_package(&admin, body).await?;
        let v = admin
            .state
            .install(&upload.0, &admin.package_limits)
            .await?;
        Ok(api::Installed {
            name: v.manifest.name,
            version: v.manifest.version.to_string(),
            runtime: crate::state::runtime_name(v.manifest.runtime).into(),
        })
    }
    .await;
    let target = outcome
        .as_ref()
        .map(|i: &api::Installed| format!("{} {}", i.name, i.version))
        .unwrap_or_else(|_| "(package)".into());
    audited(
        &admin,
        &peer,
        "app.install",
        &target,
        String::new(),
        outcome,
    )
    .await
    .map(Json)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionQuery {
    version: Option<String>,
}

fn parse_version(text: &str) -> Result<semver::Version, Failure> {
    semver::Version::from_str(text.trim())
        .map_err(|e| Failure::new(ErrorCode::Invalid, format!("version {text:?}: {e}")))
}

async fn remove_app(
    State(admin): State<Arc<Admin>>,
    Extension(peer): Extension<Peer>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<VersionQuery>,
) -> Answer<api::Removed> {
    let outcome = async {
        let version = q.version.as_deref().map(parse_version).transpose()?;
        let removed = admin.state.remove_app(&name, version.as_ref()).await?;
        Ok(api::Removed {
            name: name.clone(),
            versions: removed.iter().map(ToString::to_string).collect(),
        })
    }
    .await;
    let detail = q
        .version
        .map(|v| format!("version {v}"))
        .unwrap_or_default();
    audited(&admin, &peer, "app.remove", &name, detail, outcome)
        .await
        .map(Json)
}

async fn appspace_view(rec: AppspaceRecord, live: Option<&Appspace>) -> api::Appspace {
    let runtime = match live {
        Some(a) => a.runtime().await,
        None => Default::default(),
    };
    let limits = live.map(Appspace::limits).unwrap_or(ResourceLimits {
        memory_bytes: rec.memory_bytes,
        cpus: rec.cpus,
        pids: rec.pids,
    });
    let status = if rec.paused {
        "paused"
    } else if runtime.running {
        "running"
    } else {
        "stopped"
    };
    api::Appspace {
        status: status.into(),
        limits: limits_view(limits),
        data_dir: rec.data_dir.display().to_string(),
        created_at: rec.created_at,
        uptime_secs: runtime.uptime.map(|u| u.as_secs()),
        requests: runtime.requests,
        usage: runtime.usage.map(|u| api::Usage {
            memory_bytes: u.memory_current,
            memory_peak_bytes: u.memory_peak,
            cpu_ms: u.cpu_ns / 1_000_000,
            pids: u.pids_current,
            oom_kills: u.oom_kills,
        }),
        name: rec.name,
        domain: rec.domain,
        app: rec.app,
        version: rec.version,
    }
}

fn limits_view(l: ResourceLimits) -> api::Limits {
    api::Limits {
        memory_bytes: l.memory_bytes,
        cpus: l.cpus,
        pids: l.pids,
    }
}

async fn list_appspaces(State(admin): State<Arc<Admin>>) -> Answer<Vec<api::Appspace>> {
    let mut out = Vec::new();
    for rec in admin.state.appspaces().await? {
        let live = admin.door.get(&rec.name);
        out.push(appspace_view(rec, live.as_deref()).await);
    }
    Ok(Json(out))
}

/// The record and the served appspace that `key` names.
async fn find(admin: &Admin, key: &str) -> Result<(AppspaceRecord, Arc<Appspace>), Failure> {
    let rec = admin.state.appspace(key).await?;
    let live = admin.door.get(&rec.name).ok_or_else(|| {
        Failure::new(
            ErrorCode::Internal,
            format!("appspace {} is recorded but not served", rec.name),
        )
    })?;
    Ok((rec, live))
}

async fn show_appspace(
    State(admin): State<Arc<Admin>>,
    UrlPath(key): UrlPath<String>,
) -> Answer<api::Appspace> {
    let (rec, live) = find(&admin, &key).await?;
    Ok(Json(appspace_view(rec, Some(&live)).await))
}

/// Checks a domain and returns the appspace name it gives: the labels
/// before the base domain.
pub(crate) fn name_for_domain(domain: &str, base: &str) -> Result<String, Failure> {
    let invalid = |why: &str| Failure::new(ErrorCode::Invalid, format!("domain {domain:?}: {why}"));
    let d = domain
        .strip_suffix('.')
        .unwrap_or(domain)
        .to_ascii_lowercase();
    if d.is_empty() || d.len() > 253 {
        return Err(invalid("must be 1 to 253 characters"));
    }
    for label in d.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(invalid("every label must be 1 to 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(invalid("only letters, digits, '-' and '.' are allowed"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid("a label may not begin or end with '-'"));
        }
    }
    let name = d
        .strip_suffix(base)
        .and_then(|n| n.strip_suffix('.'))
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid(&format!("must be a name under the host's domain {base}")))?;
    Ok(name.to_owned())
}

/// Moves `dir` aside under `deleted/` (nothing is ever thrown away unasked);
/// returns where it went.
fn keep_aside(state_dir: &Path, dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    let deleted = state_dir.join("deleted");
    std::fs::create_dir_all(&deleted)?;
    let stamp = crate::state::now();
    let mut to = deleted.join(format!("{name}-{stamp}"));
    let mut n = 1;
    while to.exists() {
        to = deleted.join(format!("{name}-{stamp}-{n}"));
        n += 1;
    }
    std::fs::rename(dir, &to)?;
    Ok(to)
}

async fn create_appspace(
    State(admin): State<Arc<Admin>>,
    Extension(peer): Extension<Peer>,
    body: Result<Json<api::CreateAppspace>, axum::extract::rejection::JsonRejection>,
) -> Answer<api::Appspace> {
    let req = match body {
        Ok(Json(req)) => req,
        Err(e) => {
            let f = Failure::new(ErrorCode::Invalid, e.body_text());
            return audited(&admin, &peer, "appspace.create", "?", String::new(), Err(f))
                .await
                .map(Json);
        }
    };
    let detail = format!(
        "app {} version {}",
        req.app,
        req.version.as_deref().unwrap_or("latest")
    );
    let outcome = create(&admin, &req).await;
    audited(
        &admin,
        &peer,
        "appspace.create",
        &req.domain,
        detail,
        outcome,
    )
    .await
    .map(Json)
}

async fn create(admin: &Admin, req: &api::CreateAppspace) -> Result<api::Appspace, Failure> {
    let name = name_for_domain(&req.domain, &admin.door.base_domain)?;
    let domain = format!("{name}.{}", admin.door.base_domain);
    let version = match &req.version {
        Some(v) => parse_version(v)?,
        None => admin.state.latest_version(&req.app).await?,
    };
    if !admin.state.has_version(&req.app, &version).await? {
        return Err(Failure::new(
            ErrorCode::NotFound,
            format!("{} {version} is not installed", req.app),
        ));
    }
    if admin.state.appspace(&domain).await.is_ok() || admin.state.appspace(&name).await.is_ok() {
        return Err(Failure::new(
            ErrorCode::Conflict,
            format!("an appspace already serves {domain}"),
        ));
    }
    let home = admin.state_dir.join("appspaces").join(&name);
    let internal = |what: &str, e: std::io::Error| {
        Failure::new(
            ErrorCode::Internal,
            format!("{what} {}: {e}", home.display()),
        )
    };
    if home.exists() {
        // Left by an appspace deleted in a crash: kept, not reused.
        let to = keep_aside(&admin.state_dir, &home, &name).map_err(|e| internal("moving", e))?;
        warn!(from = %home.display(), to = %to.display(), "moved an orphaned appspace directory aside");
    }
    let data_dir = home.join("data");
    std::fs::create_dir_all(&data_dir).map_err(|e| internal("creating", e))?;
    let memory = admin
        .state
        .manifest(&req.app, &version)
        .await?
        .memory_bytes
        .unwrap_or(admin.default_memory);
    admin
        .state
        .create_appspace(&name, &domain, &req.app, &version, &data_dir, memory)
        .await?;
    let rec = admin.state.appspace(&name).await?;
    let appspace = match Appspace::new(
        AppspaceConfig::from_record(rec.clone()),
        &admin.door.lifecycle,
    ) {
        Ok(a) => Arc::new(a),
        Err(e) => {
            // Undo: a recorded appspace that cannot be served helps nobody.
            let _ = admin.state.delete_appspace(&name).await;
            return Err(internal("opening the log under", e));
        }
    };
    admin.door.add(appspace.clone());
    Ok(appspace_view(rec, Some(&appspace)).await)
}

/// `POST /v1/appspaces/{key}/{start,stop,pause,resume}`, audited.
async fn lifecycle_change(
    State(admin): State<Arc<Admin>>,
    Extension(peer): Extension<Peer>,
    UrlPath((key, verb)): UrlPath<(String, String)>,
) -> Answer<api::Appspace> {
    let action = match verb.as_str() {
        "start" => "appspace.start",
        "stop" => "appspace.stop",
        "pause" => "appspace.pause",
        "resume" => "appspace.resume",
        _ => return Err(Failure::new(ErrorCode::NotFound, "no such admin API route")),
    };
    let outcome = async {
        let (rec, live) = find(&admin, &key).await?;
        let grace = admin.door.lifecycle.stop_grace;
        match verb.as_str() {
            "start" => live
                .start_now(&admin.door.launcher, &admin.door.lifecycle)
                .await
                .map_err(|e| match e {
                    StartError::Paused => Failure::new(
                        ErrorCode::Conflict,
                        format!("{} is paused; resume it first", rec.domain),
                    ),
                    e => Failure::new(
                        ErrorCode::Unavailable,
                        format!("{} did not start: {e}", rec.domain),
                    ),
                })?,
            "stop" => live.stop(grace).await,
            paused => {
                let paused = paused == "pause";
                admin.state.set_paused(&rec.name, paused).await?;
                live.set_paused(paused, grace).await;
            }
        }
        let rec = admin.state.appspace(&rec.name).await?;
        Ok(appspace_view(rec, Some(&live)).await)
    }
    .await;
    audited(&admin, &peer, action, &key, String::new(), outcome)
        .await
        .map(Json)
}

async fn show_limits(
    State(admin): State<Arc<Admin>>,
    UrlPath(key): UrlPath<String>,
) -> Answer<api::Limits> {
    let (_, live) = find(&admin, &key).await?;
    Ok(Json(limits_view(live.limits())))
}

fn check_limits(change: &api::LimitsChange) -> Result<(), Failure> {
    let invalid = |m: String| Err(Failure::new(ErrorCode::Invalid, m));
    if let Some(m) = change.memory_bytes {
        if !(bounds::MIN_MEMORY..=bounds::MAX_MEMORY).contains(&m) {
            return invalid(format!(
                "memory {m} bytes: must be between {} MiB and {} GiB",
                bounds::MIN_MEMORY >> 20,
                bounds::MAX_MEMORY >> 30
            ));
        }
    }
    if let Some(c) = change.cpus {
        if !bounds::CPUS.contains(&c) {
            return invalid(format!(
                "cpu {c}: must be between {} and {}",
                bounds::CPUS.start(),
                bounds::CPUS.end()
            ));
        }
    }
    if let Some(p) = change.pids {
        if !bounds::PIDS.contains(&p) {
            return invalid(format!(
                "pids {p}: must be between {} and {}",
                bounds::PIDS.start(),
                bounds::PIDS.end()
            ));
        }
    }
    if change.memory_bytes.is_none() && change.cpus.is_none() && change.pids.is_none() {
        return invalid("no limit to change".into());
    }
    Ok(())
}

async fn change_limits(
    State(admin): State<Arc<Admin>>,
    Extension(peer): Extension<Peer>,
    UrlPath(key): UrlPath<String>,
    body: Result<Json<api::LimitsChange>, axum::extract::rejection::JsonRejection>,
) -> Answer<api::LimitsApplied> {
    let (outcome, detail) = match body {
        Err(e) => (
            Err(Failure::new(ErrorCode::Invalid, e.body_text())),
            String::new(),
        ),
        Ok(Json(change)) => (
            apply_limits(&admin, &key, change).await,
            format!("{change:?}"),
        ),
    };
    audited(&admin, &peer, "appspace.limits", &key, detail, outcome)
        .await
        .map(Json)
}

/// Applies to the running sandbox first (the kernel may refuse, e.g. a
/// memory limit below what is in use), then records; a failure on either
/// side leaves both as they were.
async fn apply_limits(
    admin: &Admin,
    key: &str,
    change: api::LimitsChange,
) -> Result<api::LimitsApplied, Failure> {
    check_limits(&change)?;
    let (rec, live) = find(admin, key).await?;
    let old = live.limits();
    let new = ResourceLimits {
        memory_bytes: change.memory_bytes.unwrap_or(old.memory_bytes),
        cpus: change.cpus.unwrap_or(old.cpus),
        pids: change.pids.unwrap_or(old.pids),
    };
    let applied_live = match live.set_limits(new).await {
        Ok(live) => live,
        Err(e) => {
            let _ = live.set_limits(old).await;
            return Err(Failure::new(
                ErrorCode::Invalid,
                format!("the running sandbox refused the limits: {e}"),
            ));
        }
    };
    let update = LimitsUpdate {
        memory_bytes: change.memory_bytes,
        cpus: change.cpus,
        pids: change.pids,
    };
    if let Err(e) = admin.state.set_limits(&rec.name, update).await {
        let _ = live.set_limits(old).await;
        return Err(e.into());
    }
    Ok(api::LimitsApplied {
        limits: limits_view(new),
        applied_live,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsQuery {
    lines: Option<usize>,
    #[serde(default)]
    follow: bool,
}

async fn appspace_logs(
    State(admin): State<Arc<Admin>>,
    UrlPath(key): UrlPath<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, Failure> {
    let (_, live) = find(&admin, &key).await?;
    let dir = live.config.log_dir.clone();
    let lines = q.lines.unwrap_or(50).min(100_000);
    let (text, offset) = logs::last_lines(&dir, lines).map_err(|e| {
        Failure::new(
            ErrorCode::Internal,
            format!("reading the log in {}: {e}", dir.display()),
        )
    })?;
    let text_plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !q.follow {
        return Ok((text_plain, text).into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let _ = tx.send(Ok(bytes::Bytes::from(text))).await;
    logs::follow(dir, offset, tx);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((text_plain, Body::from_stream(stream)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    #[serde(default)]
    purge: bool,
}

async fn delete_appspace(
    State(admin): State<Arc<Admin>>,
    Extension(peer): Extension<Peer>,
    UrlPath(key): UrlPath<String>,
    Query(q): Query<DeleteQuery>,
) -> Answer<api::Deleted> {
    let outcome = delete(&admin, &key, q.purge).await;
    let detail = if q.purge { "purge" } else { "" };
    audited(
        &admin,
        &peer,
        "appspace.delete",
        &key,
        detail.into(),
        outcome,
    )
    .await
    .map(Json)
}

/// Stops serving, stops the sandbox, forgets the record, then keeps the
/// files aside (or removes them with `purge`). A crash after the record is
/// gone leaves the directory, which the next create of that name keeps
/// aside too.
async fn delete(admin: &Admin, key: &str, purge: bool) -> Result<api::Deleted, Failure> {
    let (rec, _) = find(admin, key).await?;
    let live = admin.door.remove(&rec.name);
    if let Some(live) = &live {
        live.stop(admin.door.lifecycle.stop_grace).await;
    }
    if let Err(e) = admin.state.delete_appspace(&rec.name).await {
        if let Some(live) = live {
            admin.door.add(live);
        }
        return Err(e.into());
    }
    let home = rec.data_dir.parent().unwrap_or(&rec.data_dir).to_owned();
    let fail = |what: &str, e: std::io::Error| {
        Failure::new(
            ErrorCode::Internal,
            format!(
                "the appspace is deleted but {what} {} failed: {e}",
                home.display()
            ),
        )
    };
    let kept_at = if purge {
        std::fs::remove_dir_all(&home).map_err(|e| fail("removing", e))?;
        None
    } else {
        let to = keep_aside(&admin.state_dir, &home, &rec.name).map_err(|e| fail("moving", e))?;
        Some(to.display().to_string())
    };
    Ok(api::Deleted {
        name: rec.name,
        domain: rec.domain,
        kept_at,
    })
}

async fn egress_view(
    admin: &Admin,
    rec: &AppspaceRecord,
    live: &Appspace,
) -> Result<api::Egress, Failure> {
    let version = parse_version(&rec.version)?;
    let manifest = admin.state.manifest(&rec.app, &version).await?;
    Ok(api::Egress {
        allow: live
            .egress()
            .rules()
            .iter()
            .map(ToString::to_string)
            .collect(),
        requested: manifest
            .egress
            .iter()
            .map(|e| match e.port {
                Some(p) => format!("{}:{p}", e.host),
                None => e.host.clone(),
            })
            .collect(),
    })
}

async fn show_egress(
    State(admin): State<Arc<Admin>>,
    UrlPath(key): UrlPath<String>,
) -> Answer<api::Egress> {
    let (rec, live) = find(&admin, &key).await?;
    Ok(Json(egress_view(&admin, &rec, &live).await?))
}

/// Adds (`allow`) or removes entries; all are checked first, and an entry
/// to remove that is not on the list is an error: nothing changes then.
async fn change_egress(
    admin: &Admin,
    key: &str,
    body: Result<Json<api::EgressChange>, axum::extract::rejection::JsonRejection>,
    allow: bool,
) -> Result<api::Egress, Failure> {
    let Json(change) = body.map_err(|e| Failure::new(ErrorCode::Invalid, e.body_text()))?;
    if change.entries.is_empty() {
        return Err(Failure::new(ErrorCode::Invalid, "no entries given"));
    }
    let mut parsed = Vec::new();
    for e in &change.entries {
        let rule: Rule = e.parse().map_err(|err: crate::egress::rules::BadEntry| {
            Failure::new(ErrorCode::Invalid, format!("egress entry {err}"))
        })?;
        parsed.push(rule);
    }
    let (rec, live) = find(admin, key).await?;
    let mut rules = live.egress().rules();
    for rule in parsed {
        let present = rules.iter().position(|r| *r == rule);
        match (allow, present) {
            (true, None) => rules.push(rule),
            (true, Some(_)) => {}
            (false, Some(i)) => {
                rules.remove(i);
            }
            (false, None) => {
                return Err(Failure::new(
                    ErrorCode::NotFound,
                    format!("{rule} is not on the egress allowlist of {}", rec.domain),
                ))
            }
        }
    }
    let texts: Vec<String> = rules.iter().map(ToString::to_string).collect();
    admin.state.set_egress(&rec.name, &texts).await?;
    live.egress().set_rules(rules);
    egress_view(admin, &rec, &live).await
}

/// `POST /v1/appspaces/{key}/egress/{allow,deny}`, audited.
async fn change_egress_list(
    State(admin): State<Arc<Admin>>,
    Extension(peer): Extension<Peer>,
    UrlPath((key, verb)): UrlPath<(String, String)>,
    body: Result<Json<api::EgressChange>, axum::extract::rejection::JsonRejection>,
) -> Answer<api::Egress> {
    let (action, allow) = match verb.as_str() {
        "allow" => ("appspace.egress.allow", true),
        "deny" => ("appspace.egress.deny", false),
        _ => return Err(Failure::new(ErrorCode::NotFound, "no such admin API route")),
    };
    let detail = body
        .as_ref()
        .map(|b| b.entries.join(" "))
        .unwrap_or_default();
    let outcome = change_egress(&admin, &key, body, allow).await;
    audited(&admin, &peer, action, &key, detail, outcome)
        .await
        .map(Json)
}

async fn egress_log(
    State(admin): State<Arc<Admin>>,
    UrlPath(key): UrlPath<String>,
    Query(q): Query<LinesQuery>,
) -> Answer<Vec<api::EgressLogEntry>> {
    let rec = admin.state.appspace(&key).await?;
    let lines = q.lines.unwrap_or(50).min(10_000);
    let entries = admin.state.egress_log(&rec.name, lines).await?;
    Ok(Json(
        entries
            .into_iter()
            .map(|e| api::EgressLogEntry {
                id: e.id,
                at: e.at,
                destination: e.event.destination,
                address: e.event.address,
                outcome: e.event.outcome.as_str().into(),
                reason: e.event.reason,
                bytes_up: e.event.bytes_up,
                bytes_down: e.event.bytes_down,
                duration_ms: e.event.duration.as_millis() as u64,
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinesQuery {
    lines: Option<u32>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_checked_and_named() {
        let ok = |d: &str| name_for_domain(d, "localhost").map_err(|f| f.message);
        assert_eq!(ok("notes.localhost").unwrap(), "notes");
        assert_eq!(ok("Notes.LocalHost.").unwrap(), "notes");
        assert_eq!(ok("a.b.localhost").unwrap(), "a.b");
        for bad in [
            "",
            "localhost",
            ".localhost",
            "notes.example.com",
            "no tes.localhost",
            "-x.localhost",
            "x-.localhost",
            "a..localhost",
            "ünï.localhost",
            "x_y.localhost",
            "notes.localhost.evil",
            "evil-localhost",
        ] {
            assert!(ok(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(ok(&format!("{}.localhost", "a".repeat(64))).is_err());
    }

    #[test]
    fn limits_are_bounded() {
        let c = |memory_bytes, cpus, pids| {
            check_limits(&api::LimitsChange {
                memory_bytes,
                cpus,
                pids,
            })
            .is_ok()
        };
        assert!(c(Some(64 << 20), Some(0.5), Some(32)));
        assert!(!c(None, None, None));
        assert!(!c(Some(1024), None, None));
        assert!(!c(None, Some(0.0), None));
        assert!(!c(None, Some(f64::NAN), None));
        assert!(!c(None, None, Some(0)));
    }
}
