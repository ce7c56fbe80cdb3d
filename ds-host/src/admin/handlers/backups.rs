//! `/v1/appspaces/{key}/backups` and `/v1/backups`: backups taken by the
//! host (docs/backups.md).

use super::*;

fn view(s: crate::backup::Snapshot) -> api::Backup {
    api::Backup {
        id: s.id,
        appspace: s.appspace,
        time: s.time,
        path: s.path,
    }
}

fn failure(e: crate::backup::BackupError) -> Failure {
    Failure::new(ErrorCode::Unavailable, e.to_string())
}

/// `POST /v1/appspaces/{key}/backups`, audited: a backup now.
pub(super) async fn create_backup(
    State(admin): State<Arc<Admin>>,
    Extension(peer): Extension<Peer>,
    UrlPath(key): UrlPath<String>,
) -> Answer<api::BackupTaken> {
    let outcome = async {
        let (_, live) = find(&admin, &key).await?;
        let (snapshot, held) = admin
            .backups
            .create(&live, admin.host.lifecycle.stop_grace)
            .await
            .map_err(failure)?;
        let (repository, key_file) = admin.backups.location();
        Ok(api::BackupTaken {
            backup: view(snapshot),
            held: held.into(),
            repository: repository.display().to_string(),
            key_file: key_file.display().to_string(),
        })
    }
    .await;
    let detail = match &outcome {
        Ok(t) => format!("snapshot {} ({})", t.backup.id, t.held),
        Err(_) => String::new(),
    };
    audited(&admin, &peer, "backup.create", &key, detail, outcome)
        .await
        .map(Json)
}

/// `GET /v1/backups?appspace=NAME`: the backups, oldest first.
pub(super) async fn list_backups(
    State(admin): State<Arc<Admin>>,
    Query(q): Query<BackupQuery>,
) -> Answer<Vec<api::Backup>> {
    let name = match &q.appspace {
        Some(key) => Some(find(&admin, key).await?.0.name),
        None => None,
    };
    let list = admin.backups.list(name.as_deref()).await.map_err(failure)?;
    Ok(Json(list.into_iter().map(view).collect()))
}

/// The query of `GET /v1/backups`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BackupQuery {
    appspace: Option<String>,
}
