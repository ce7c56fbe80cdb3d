//! `/v1/apps`: install (an uploaded package), list, show, remove.

use super::*;

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

pub(super) async fn list_apps(State(admin): State<Arc<Admin>>) -> Answer<Vec<api::App>> {
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

pub(super) async fn show_app(
    State(admin): State<Arc<Admin>>,
    UrlPath(name): UrlPath<String>,
) -> Answer<api::App> {
    Ok(Json(app_view(admin.state.app(&name).await?)))
}

static UPLOADS: AtomicU64 = AtomicU64::new(0);

/// Removes an uploaded package file when the install is over.
pub(super) struct Upload(pub(super) PathBuf);

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes the request body (a package) to a file under the state
/// directory, refusing more than a package may be.
async fn receive_package(admin: &Admin, body: Body) -> Result<Upload, Failure> {
    receive_upload(admin, body, admin.package_limits.max_total_bytes, "package").await
}

/// A file under `uploads/` of the state directory, removed when dropped.
pub(super) fn upload_path(admin: &Admin, suffix: &str) -> Upload {
    Upload(admin.state_dir.join("uploads").join(format!(
        "upload-{}-{}{suffix}",
        std::process::id(),
        UPLOADS.fetch_add(1, Ordering::Relaxed)
    )))
}

/// Writes the request body to a file under the state directory, refusing
/// more than `cap` bytes; `what` names it in errors.
pub(super) async fn receive_upload(
    admin: &Admin,
    body: Body,
    cap: u64,
    what: &str,
) -> Result<Upload, Failure> {
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
    let upload = upload_path(admin, ".tar.gz");
    let mut file = tokio::fs::File::create(&upload.0)
        .await
        .map_err(|e| internal("writing into", e))?;
    let mut received = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| Failure::new(ErrorCode::Invalid, format!("receiving the {what}: {e}")))?;
        received += chunk.len() as u64;
        if received > cap {
            return Err(Failure::new(
                ErrorCode::TooLarge,
                format!("the {what} is larger than the {} MiB allowed", cap >> 20),
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
        return Err(Failure::new(
            ErrorCode::BadPackage,
            format!("the {what} is empty"),
        ));
    }
    Ok(upload)
}

pub(super) async fn install_app(
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
            egress_requested: egress_requests(&v.manifest),
            memory_bytes: v.manifest.memory_bytes,
            disk_bytes: v.manifest.disk_bytes,
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
pub(super) struct VersionQuery {
    version: Option<String>,
    /// Remove even versions that retained backups were taken at.
    #[serde(default)]
    force: bool,
}

pub(super) async fn remove_app(
    State(admin): State<Arc<Admin>>,
    Extension(peer): Extension<Peer>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<VersionQuery>,
) -> Answer<api::Removed> {
    let outcome = async {
        let version = q.version.as_deref().map(parse_version).transpose()?;
        if !q.force {
            // A backup restores with the version it was taken at: that
            // version stays while a retained backup needs it.
            let wanted = version.as_ref().map(ToString::to_string);
            let mut needed: Vec<String> = admin
                .backups
                .list(None)
                .await
                .map_err(super::backups::failure)?
                .into_iter()
                .filter(|b| b.app.as_deref() == Some(name.as_str()))
                .filter(|b| wanted.is_none() || b.version == wanted)
                .map(|b| format!("{} {} (backup {})", name, b.version.unwrap_or_default(), b.id))
                .collect();
            if !needed.is_empty() {
                let more = needed.len().saturating_sub(5);
                needed.truncate(5);
                let more = if more > 0 { format!(" and {more} more") } else { String::new() };
                return Err(Failure::new(
                    ErrorCode::Conflict,
                    format!(
                        "retained backups were taken at what would go: {}{more}; restoring them needs that version (remove anyway with --force)",
                        needed.join(", ")
                    ),
                ));
            }
        }
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

/// The hosts `manifest` asks to reach, as allowlist entries with reasons.
pub(super) fn egress_requests(manifest: &crate::package::Manifest) -> Vec<api::EgressRequest> {
    manifest
        .egress
        .iter()
        .map(|e| api::EgressRequest {
            host: e.to_string(),
            reason: e.reason.clone(),
        })
        .collect()
}
