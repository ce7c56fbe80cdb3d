//! `/v1/appspaces/{key}/upgrade`: moving an appspace to another version
//! (docs/upgrades.md).

use super::*;

/// How a failed upgrade or restore is answered.
pub(super) fn upgrade_failure(e: crate::upgrade::UpgradeError) -> Failure {
    use crate::upgrade::UpgradeError as E;
    match e {
        E::State(e) => e.into(),
        E::Backup(crate::backup::BackupError::NoSuchSnapshot { .. }) => {
            Failure::new(ErrorCode::NotFound, e.to_string())
        }
        E::Backup(_) | E::RolledBack { .. } | E::RollbackFailed { .. } => {
            Failure::new(ErrorCode::Unavailable, e.to_string())
        }
        E::SameVersion { .. } | E::Incompatible(_) | E::Paused(_) | E::Busy(_) => {
            Failure::new(ErrorCode::Conflict, e.to_string())
        }
        E::Prepare(_) => Failure::new(ErrorCode::Internal, e.to_string()),
    }
}

/// `POST /v1/appspaces/{key}/upgrade`, audited: moves the appspace to
/// another installed version of its app (docs/upgrades.md).
pub(super) async fn upgrade_appspace(
    State(admin): State<Arc<Admin>>,
    Extension(peer): Extension<Peer>,
    UrlPath(key): UrlPath<String>,
    body: Result<Json<api::Upgrade>, axum::extract::rejection::JsonRejection>,
) -> Answer<api::Upgraded> {
    let outcome = async {
        let Json(req) = body.map_err(|e| Failure::new(ErrorCode::Invalid, e.body_text()))?;
        let version = parse_version(&req.version)?;
        let done =
            crate::upgrade::upgrade(&admin.state, &admin.host, &admin.backups, &key, &version)
                .await
                .map_err(upgrade_failure)?;
        Ok(api::Upgraded {
            appspace: key.clone(),
            from: done.from,
            to: done.to,
            backup: done.backup,
            migrated: done.migration.map(|m| (m.from, m.to)),
            health_status: done.health_status,
        })
    }
    .await;
    let detail = match &outcome {
        Ok(u) => format!("{} -> {} (backup {})", u.from, u.to, u.backup),
        Err(_) => String::new(),
    };
    audited(&admin, &peer, "appspace.upgrade", &key, detail, outcome)
        .await
        .map(Json)
}
