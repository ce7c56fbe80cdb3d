//! `/v1/appspaces/{key}/limits`: show and change, live.

use super::appspaces::limits_view;
use super::*;

pub(super) async fn show_limits(
    State(admin): State<Arc<Admin>>,
    UrlPath(key): UrlPath<String>,
) -> Answer<api::Limits> {
    let (rec, live) = find(&admin, &key).await?;
    Ok(Json(limits_view(live.limits(), rec.disk_bytes)))
}

fn check_limits(change: &api::LimitsChange) -> Result<(), Failure> {
    use ds_api::limits::{check_cpus, check_disk, check_memory, check_pids};
    let invalid = |m: String| Failure::new(ErrorCode::Invalid, m);
    if let Some(m) = change.memory_bytes {
        check_memory(m).map_err(invalid)?;
    }
    if let Some(c) = change.cpus {
        check_cpus(c).map_err(invalid)?;
    }
    if let Some(p) = change.pids {
        check_pids(p).map_err(invalid)?;
    }
    if let Some(d) = change.disk_bytes {
        check_disk(d).map_err(invalid)?;
    }
    if change.memory_bytes.is_none()
        && change.cpus.is_none()
        && change.pids.is_none()
        && change.disk_bytes.is_none()
    {
        return Err(invalid("no limit to change".into()));
    }
    Ok(())
}

pub(super) async fn change_limits(
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
    let cgroup_change =
        change.memory_bytes.is_some() || change.cpus.is_some() || change.pids.is_some();
    let applied_live = if cgroup_change {
        match live.set_limits(new) {
            Ok(live) => live,
            Err(e) => {
                let _ = live.set_limits(old);
                return Err(Failure::new(
                    ErrorCode::Invalid,
                    format!("the running sandbox refused the limits: {e}"),
                ));
            }
        }
    } else {
        false
    };
    let undo_cgroup = || {
        if cgroup_change {
            let _ = live.set_limits(old);
        }
    };
    let mut disk_bytes = rec.disk_bytes;
    if let Some(disk) = change.disk_bytes.filter(|&d| d != rec.disk_bytes) {
        if let Err(e) = change_disk(admin, &rec, &live, disk).await {
            undo_cgroup();
            return Err(e);
        }
        disk_bytes = disk;
    }
    let update = LimitsUpdate {
        memory_bytes: change.memory_bytes,
        cpus: change.cpus,
        pids: change.pids,
    };
    if let Err(e) = admin.state.set_limits(&rec.name, update).await {
        undo_cgroup();
        return Err(e.into());
    }
    super::follow_successor(admin, &live).await;
    Ok(api::LimitsApplied {
        limits: limits_view(new, disk_bytes),
        applied_live,
    })
}

/// Changes the appspace's disk limit in the kernel, then records it; a
/// failure on either side leaves both as they were. A disk image that
/// cannot be resized while mounted (shrinking; growing without
/// `CAP_SYS_RESOURCE`) takes the appspace out of service (and holds off
/// backups) while its file system is resized.
async fn change_disk(
    admin: &Admin,
    rec: &AppspaceRecord,
    live: &Arc<Appspace>,
    bytes: u64,
) -> Result<(), Failure> {
    use crate::disk::DiskError;
    let failure = |e: DiskError| {
        let code = match e {
            DiskError::BelowUse { .. } | DiskError::TooSmall { .. } | DiskError::NotEnforced(_) => {
                ErrorCode::Invalid
            }
            DiskError::Running(_) => ErrorCode::Conflict,
            _ => ErrorCode::Internal,
        };
        Failure::new(code, format!("changing the disk limit: {e}"))
    };
    if rec.disk_kind == crate::state::DiskKind::None
        && admin.disks.kind() != crate::state::DiskKind::None
    {
        return move_onto_limit(admin, rec, live, bytes).await;
    }
    let resized = match admin.disks.resize(rec, bytes, false).await {
        Err(DiskError::Running(why)) => {
            let _held = admin.backups.exclusive().await;
            let grace = admin.host.lifecycle.stop_grace;
            live.out_of_service(
                grace,
                &format!("resizing its disk ({why})"),
                admin.disks.resize(rec, bytes, true),
            )
            .await
            .1
        }
        other => other,
    };
    resized.map_err(failure)?;
    if let Err(e) = admin.state.set_disk_limit(&rec.name, bytes).await {
        // The kernel has the new limit; put the old one back (a grown
        // image stays grown: only its limit is what was recorded).
        let mut now = rec.clone();
        now.disk_bytes = bytes;
        let _ = admin.disks.resize(&now, rec.disk_bytes, false).await;
        return Err(e.into());
    }
    Ok(())
}

/// An appspace made without a disk limit (before the host had a way to
/// enforce one) moves onto the host's way with limit `bytes`, out of
/// service meanwhile: a project quota is put on its data directory where
/// it is; for a disk image, one is made and mounted, the data copied in
/// through a backup (restic writes it, never following the app's links)
/// and the old directory removed. The record changes in one statement
/// once the data is in place; anything failing before leaves it as it
/// was. A successor with the new data directory takes its place.
async fn move_onto_limit(
    admin: &Admin,
    rec: &AppspaceRecord,
    live: &Arc<Appspace>,
    bytes: u64,
) -> Result<(), Failure> {
    use crate::state::DiskKind;
    let failed = |what: String| {
        Failure::new(
            ErrorCode::Internal,
            format!("moving onto a disk limit: {what}"),
        )
    };
    let held = admin.backups.exclusive().await;
    let grace = admin.host.lifecycle.stop_grace;
    let mut next = rec.clone();
    next.disk_kind = admin.disks.kind();
    next.disk_bytes = bytes;
    next.data_dir = admin.disks.data_dir(&rec.home());
    let why = format!("moving its data onto a disk limit of {} MiB", bytes >> 20);
    let (_, moved) = live
        .out_of_service(grace, &why, async {
            let old = rec.data_dir.clone();
            let used = tokio::task::spawn_blocking(move || crate::disk::tree_bytes(&old))
                .await
                .map_err(|e| failed(e.to_string()))?
                .map_err(|e| failed(e.to_string()))?;
            if used >= bytes {
                return Err(Failure::new(
                    ErrorCode::Invalid,
                    format!(
                        "changing the disk limit: {}",
                        crate::disk::DiskError::BelowUse { used, limit: bytes }
                    ),
                ));
            }
            let placed = async {
                // What an earlier, interrupted move left (an image of
                // another size) goes first: the data is still in `rec`'s.
                admin.disks.undo_attach(&next).await;
                admin.disks.attach(&next).await.map_err(|e| failed(e.to_string()))?;
                if next.data_dir != rec.data_dir {
                    let copy = admin
                        .backups
                        .backup_still(&held, live, "pre-disk-limit")
                        .await
                        .map_err(|e| failed(e.to_string()))?;
                    admin
                        .backups
                        .put_back(&held, &copy, &next.data_dir)
                        .await
                        .map_err(|e| failed(e.to_string()))?;
                }
                admin
                    .state
                    .set_disk(&rec.name, next.disk_kind, &next.data_dir, bytes)
                    .await
                    .map_err(Failure::from)
            }
            .await;
            if let Err(f) = placed {
                admin.disks.undo_attach(&next).await;
                return Err(f);
            }
            live.log_host(&format!(
                "its data now has a disk limit of {} MiB ({})",
                bytes >> 20,
                match next.disk_kind {
                    DiskKind::Image => "a disk image",
                    _ => "a project quota",
                }
            ));
            // The successor serves the new data directory; the old one
            // goes only once nothing will run on it (if making the
            // successor fails, the next start serves the recorded new
            // place and removes the old directory then).
            let now = admin.state.appspace(&rec.name).await?;
            let successor = match Appspace::new(AppspaceConfig::from_record(now), &admin.host.lifecycle) {
                Ok(s) => s,
                Err(e) => {
                    // The old one must not write to the old place again.
                    live.mark_replaced();
                    return Err(failed(format!(
                        "the data is in place but the appspace could not be set up on it ({e}); restart ds-host"
                    )));
                }
            };
            crate::upgrade::hand_over(&admin.state, &admin.host, live, &Arc::new(successor)).await;
            if next.data_dir != rec.data_dir {
                if let Err(e) = std::fs::remove_dir_all(&rec.data_dir) {
                    warn!(appspace = %rec.name, error = %e, "removing the data directory it moved from");
                }
            }
            Ok(())
        })
        .await;
    moved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_bounded() {
        let c = |memory_bytes, cpus, pids| {
            check_limits(&api::LimitsChange {
                memory_bytes,
                cpus,
                pids,
                disk_bytes: None,
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
