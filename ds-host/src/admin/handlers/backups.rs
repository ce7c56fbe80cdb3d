//! `/v1/appspaces/{key}/backups` and `/v1/backups`: backups taken by the
//! host (docs/backups.md).

use super::*;

fn view(s: crate::backup::Snapshot) -> api::Backup {
    api::Backup {
        id: s.id,
        appspace: s.appspace,
        time: s.time,
        path: s.path,
        app: s.app,
        version: s.version,
        reason: s.reason,
    }
}

pub(super) fn failure(e: crate::backup::BackupError) -> Failure {
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
            repository,
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

/// `POST /v1/appspaces/{key}/backups/{id}/restore`, audited: the data
/// of backup `id` put back (after a backup of the data it replaces).
pub(super) async fn restore_backup(
    State(admin): State<Arc<Admin>>,
    Extension(peer): Extension<Peer>,
    UrlPath((key, id)): UrlPath<(String, String)>,
    Query(q): Query<RestoreQuery>,
) -> Answer<api::Restored> {
    if let Some(into) = q.into {
        let outcome = restore_into(&admin, &key, &id, &into).await;
        let detail = match &outcome {
            Ok(r) => format!(
                "restored {} of {key} into a new appspace {into}",
                r.restored.id
            ),
            Err(_) => format!("restore {id} into {into}"),
        };
        return audited(&admin, &peer, "backup.restore", &key, detail, outcome)
            .await
            .map(Json);
    }
    let outcome = async {
        let (restored, replaced) =
            crate::upgrade::restore(&admin.state, &admin.host, &admin.backups, &key, &id)
                .await
                .map_err(super::upgrades::upgrade_failure)?;
        Ok(api::Restored {
            appspace: key.clone(),
            restored: view(restored),
            replaced: Some(view(replaced)),
        })
    }
    .await;
    let detail = match &outcome {
        Ok(r) => format!(
            "restored {} (replaced data backed up as {})",
            r.restored.id,
            r.replaced.as_ref().map(|b| b.id.as_str()).unwrap_or("-")
        ),
        Err(_) => format!("restore {id}"),
    };
    audited(&admin, &peer, "backup.restore", &key, detail, outcome)
        .await
        .map(Json)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RestoreQuery {
    /// Restore into a new appspace at this domain instead.
    into: Option<String>,
}

/// Backup `id` of appspace `key` as a new appspace at `domain`, of the
/// app and version the backup was taken at; the source is untouched.
async fn restore_into(
    admin: &Admin,
    key: &str,
    id: &str,
    domain: &str,
) -> Result<api::Restored, Failure> {
    let (rec, _) = find(admin, key).await?;
    let snapshot = admin
        .backups
        .find(&rec.name, id)
        .await
        .map_err(|e| match e {
            crate::backup::BackupError::NoSuchSnapshot { .. } => {
                Failure::new(ErrorCode::NotFound, e.to_string())
            }
            e => failure(e),
        })?;
    let req = api::CreateAppspace {
        app: snapshot.app.clone().unwrap_or_else(|| rec.app.clone()),
        version: Some(
            snapshot
                .version
                .clone()
                .unwrap_or_else(|| rec.version.clone()),
        ),
        domain: domain.to_owned(),
        // A new appspace: its egress is granted anew by the admin.
        grant_egress: false,
    };
    // The source's disk limit, when it has one: its data fits in it.
    let disk = (rec.disk_bytes > 0).then_some(rec.disk_bytes);
    // Journalled as an import until the data is in: a host killed before
    // removes the half-made appspace at its next start.
    let journal = serde_json::to_string(&crate::upgrade::Journal {
        op: crate::upgrade::IMPORT.into(),
        from: format!("backup {} of {}", snapshot.id, rec.name),
        to: req.version.clone().unwrap_or_default(),
        backup: snapshot.id.clone(),
        app_installed: false,
    })
    .unwrap_or_default();
    let (new_rec, new) =
        super::appspaces::create_unserved(admin, &req, disk, Some(&journal)).await?;
    let held = admin.backups.exclusive().await;
    let put = match admin
        .backups
        .put_back(&held, &snapshot, &new.config.data_dir)
        .await
    {
        Ok(()) => admin
            .state
            .set_pending(&new_rec.name, None)
            .await
            .map_err(|e| crate::backup::BackupError::Output {
                what: "restore",
                why: e.to_string(),
            }),
        Err(e) => Err(e),
    };
    drop(held);
    if let Err(e) = put {
        super::appspaces::uncreate(admin, &new_rec).await;
        return Err(failure(e));
    }
    new.log_host(&format!(
        "created from backup {} of appspace {}",
        snapshot.id, rec.name
    ));
    admin.host.add(new.clone());
    Ok(api::Restored {
        appspace: new_rec.domain.clone(),
        restored: view(snapshot),
        replaced: None,
    })
}

/// `POST /v1/backups/verify`, audited: every backup read back and
/// checked; a damaged repository is an error naming what restic found.
pub(super) async fn verify_backups(
    State(admin): State<Arc<Admin>>,
    Extension(peer): Extension<Peer>,
) -> Answer<api::Verified> {
    let outcome = admin
        .backups
        .verify()
        .await
        .map(|n| api::Verified { backups: n as u64 })
        .map_err(|e| {
            Failure::new(
                ErrorCode::Unavailable,
                format!("the backups are damaged or unreadable: {e}"),
            )
        });
    audited(
        &admin,
        &peer,
        "backup.verify",
        "backups",
        String::new(),
        outcome,
    )
    .await
    .map(Json)
}

/// `GET /v1/backups/key`, audited: the repository's key, for root only
/// (members of the admin group manage appspaces, but the key opens every
/// appspace's data).
pub(super) async fn backup_key(
    State(admin): State<Arc<Admin>>,
    Extension(peer): Extension<Peer>,
) -> Answer<api::BackupKey> {
    let outcome = async {
        if peer.uid != 0 {
            return Err(Failure::new(
                ErrorCode::Forbidden,
                "only root may read the backup key (run: sudo dsctl backup key)",
            ));
        }
        let key = admin.backups.key().await.map_err(failure)?;
        Ok(api::BackupKey {
            key: key.trim().to_owned(),
            repository: admin.backups.location().0,
        })
    }
    .await;
    audited(
        &admin,
        &peer,
        "backup.key",
        "backups",
        String::new(),
        outcome,
    )
    .await
    .map(Json)
}

/// `POST /v1/backups/run-due`, audited: the schedule run now, or as of
/// the time given (so schedules and retention are testable).
pub(super) async fn run_due_backups(
    State(admin): State<Arc<Admin>>,
    Extension(peer): Extension<Peer>,
    Json(req): Json<api::RunDue>,
) -> Answer<Vec<api::DueBackup>> {
    let outcome = async {
        let now = match req.now {
            Some(secs) => {
                std::time::UNIX_EPOCH
                    + std::time::Duration::from_secs(u64::try_from(secs).map_err(|_| {
                        Failure::new(ErrorCode::Invalid, format!("now: {secs} is before 1970"))
                    })?)
            }
            None => std::time::SystemTime::now(),
        };
        if admin.backups.schedule().every.is_none() {
            return Err(Failure::new(
                ErrorCode::Conflict,
                "no backup schedule is set ([backups] every_secs, or --backup-every in dev mode)",
            ));
        }
        let ran = admin
            .backups
            .run_due(&admin.host.all(), now, admin.host.lifecycle.stop_grace)
            .await
            .map_err(failure)?;
        Ok(ran
            .into_iter()
            .map(|o| {
                let (backup, error) = match o.result {
                    Ok(s) => (Some(view(s)), None),
                    Err(e) => (None, Some(e)),
                };
                api::DueBackup {
                    appspace: o.appspace,
                    backup,
                    error,
                }
            })
            .collect::<Vec<_>>())
    }
    .await;
    let detail = match &outcome {
        Ok(v) => format!(
            "{} backed up",
            v.iter().filter(|d| d.backup.is_some()).count()
        ),
        Err(_) => String::new(),
    };
    audited(&admin, &peer, "backup.run-due", "backups", detail, outcome)
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

/// `DELETE /v1/appspaces/{key}/backups/{id}`, audited: the backup and
/// the data only it held are removed.
pub(super) async fn delete_backup(
    State(admin): State<Arc<Admin>>,
    Extension(peer): Extension<Peer>,
    UrlPath((key, id)): UrlPath<(String, String)>,
) -> Answer<api::Backup> {
    let outcome = async {
        let (rec, _) = find(&admin, &key).await?;
        let journal = rec
            .pending
            .as_deref()
            .and_then(|j| serde_json::from_str::<crate::upgrade::Journal>(j).ok());
        if journal.is_some_and(|j| j.backup == id) {
            return Err(Failure::new(
                ErrorCode::Conflict,
                format!("backup {id} is what an unfinished change of {key} rolls back to"),
            ));
        }
        admin
            .backups
            .delete(&rec.name, &id)
            .await
            .map(view)
            .map_err(|e| match e {
                crate::backup::BackupError::NoSuchSnapshot { .. } => {
                    Failure::new(ErrorCode::NotFound, e.to_string())
                }
                e => failure(e),
            })
    }
    .await;
    audited(
        &admin,
        &peer,
        "backup.delete",
        &key,
        format!("snapshot {id}"),
        outcome,
    )
    .await
    .map(Json)
}

fn host_view(s: crate::backup::HostSnapshot) -> api::HostBackup {
    api::HostBackup {
        id: s.id,
        time: s.time,
        paths: s.paths,
    }
}

/// `GET /v1/backups/host`: the backups of the host's own state.
pub(super) async fn list_host_backups(
    State(admin): State<Arc<Admin>>,
) -> Answer<Vec<api::HostBackup>> {
    let list = admin.backups.list_host().await.map_err(failure)?;
    Ok(Json(list.into_iter().map(host_view).collect()))
}

/// `POST /v1/backups/host`, audited: the host's own state backed up now.
pub(super) async fn create_host_backup(
    State(admin): State<Arc<Admin>>,
    Extension(peer): Extension<Peer>,
) -> Answer<api::HostBackup> {
    let outcome = admin
        .backups
        .backup_host()
        .await
        .map(host_view)
        .map_err(failure);
    let detail = match &outcome {
        Ok(b) => format!("snapshot {}", b.id),
        Err(_) => String::new(),
    };
    audited(&admin, &peer, "backup.host", "host", detail, outcome)
        .await
        .map(Json)
}
