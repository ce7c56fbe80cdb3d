//! `POST /v1/appspaces/{key}/export` and `POST /v1/backups/import`: one
//! appspace moved to another host as a file (docs/backups.md, "Moving an
//! appspace"; the format is [`crate::backup::export`]).

use super::*;
use crate::backup::export::{self, ExportError, Manifest};

fn export_failure(e: ExportError) -> Failure {
    match e {
        ExportError::Invalid(_) => Failure::new(ErrorCode::BadPackage, e.to_string()),
        ExportError::TooLarge { .. } => Failure::new(ErrorCode::TooLarge, e.to_string()),
        ExportError::Io { .. } => Failure::new(ErrorCode::Internal, e.to_string()),
    }
}

fn joined<T>(r: Result<T, tokio::task::JoinError>) -> Result<T, Failure> {
    r.map_err(|e| Failure::new(ErrorCode::Internal, format!("a worker thread failed: {e}")))
}

/// `POST /v1/appspaces/{key}/export`, audited: a fresh backup of the
/// appspace, written with its app version and settings as one file,
/// which is the answer's body (`application/gzip`).
pub(super) async fn export_appspace(
    State(admin): State<Arc<Admin>>,
    Extension(peer): Extension<Peer>,
    UrlPath(key): UrlPath<String>,
) -> Result<Response, Failure> {
    let outcome = export(&admin, &key).await;
    let detail = match &outcome {
        Ok((_, m, w)) => format!(
            "from backup {}: {} entries, {} bytes{}",
            m.backup,
            w.entries,
            w.bytes,
            if w.skipped > 0 {
                format!(", {} special files left out", w.skipped)
            } else {
                String::new()
            }
        ),
        Err(_) => String::new(),
    };
    let (file, _, written) = audited(&admin, &peer, "backup.export", &key, detail, outcome).await?;
    let stream = futures::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 256 << 10];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/gzip".to_owned()),
            (
                header::HeaderName::from_static("x-ds-export-skipped"),
                written.skipped.to_string(),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Backs the appspace up and writes the export from that backup into a
/// file that is unlinked once open (nothing is left behind, whatever
/// becomes of the answer).
async fn export(
    admin: &Admin,
    key: &str,
) -> Result<(tokio::fs::File, Manifest, export::Written), Failure> {
    let (rec, live) = find(admin, key).await?;
    let (snapshot, _) = admin
        .backups
        .create(&live, admin.host.lifecycle.stop_grace)
        .await
        .map_err(super::backups::failure)?;
    let limits = live.limits();
    let manifest = Manifest {
        format: export::FORMAT.into(),
        format_version: export::FORMAT_VERSION,
        exported_at: crate::state::now(),
        host_version: env!("CARGO_PKG_VERSION").into(),
        name: rec.name.clone(),
        domain: rec.domain.clone(),
        app: rec.app.clone(),
        version: rec.version.clone(),
        memory_bytes: limits.memory_bytes,
        cpus: limits.cpus,
        pids: limits.pids,
        disk_bytes: rec.disk_bytes,
        egress: live
            .egress()
            .rules()
            .iter()
            .map(ToString::to_string)
            .collect(),
        backup: snapshot.id.clone(),
    };
    let dir = admin.state_dir.join("uploads");
    tokio::fs::create_dir_all(&dir).await.map_err(|e| {
        Failure::new(
            ErrorCode::Internal,
            format!("creating {}: {e}", dir.display()),
        )
    })?;
    let package = super::apps::upload_path(admin, ".package.tar.gz");
    let out = super::apps::upload_path(admin, ".export.tar.gz");
    let (app_dir, pkg) = (rec.app_dir.clone(), package.0.clone());
    joined(tokio::task::spawn_blocking(move || export::pack_version(&app_dir, &pkg)).await)?
        .map_err(export_failure)?;
    let mut dump = admin
        .backups
        .dump(&snapshot)
        .map_err(super::backups::failure)?;
    let (Some(stdout), Some(mut stderr)) = (dump.stdout.take(), dump.stderr.take()) else {
        return Err(Failure::new(
            ErrorCode::Internal,
            "restic dump has no output",
        ));
    };
    let said = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut text = String::new();
        let _ = (&mut stderr).take(64 << 10).read_to_string(&mut text).await;
        text
    });
    let reader = std::fs::File::from(
        stdout
            .into_owned_fd()
            .map_err(|e| Failure::new(ErrorCode::Internal, format!("reading restic dump: {e}")))?,
    );
    let (m, pkg, file, prefix) = (
        manifest.clone(),
        package.0.clone(),
        out.0.clone(),
        snapshot.path.clone(),
    );
    let written = joined(
        tokio::task::spawn_blocking(move || export::write(&file, &m, &pkg, reader, &prefix)).await,
    )?;
    let status = dump.wait().await;
    let said = said.await.unwrap_or_default();
    if !status.as_ref().is_ok_and(|s| s.success()) {
        return Err(Failure::new(
            ErrorCode::Unavailable,
            format!(
                "restic dump of backup {} failed: {}",
                snapshot.id,
                said.lines().last().unwrap_or("no reason given")
            ),
        ));
    }
    let written = written.map_err(export_failure)?;
    let file = tokio::fs::File::open(&out.0).await.map_err(|e| {
        Failure::new(
            ErrorCode::Internal,
            format!("opening {}: {e}", out.0.display()),
        )
    })?;
    drop(out); // unlinked; the open file is read to the end by the answer
    Ok((file, manifest, written))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ImportQuery {
    /// The domain the new appspace is served at.
    domain: String,
}

/// `POST /v1/backups/import?domain=D`, audited: the export in the body
/// becomes a new appspace at `D`: checked through first (nothing is made
/// from a bad file), its app version installed if missing (validated as
/// an install is), its limits set, its data unpacked beside the new data
/// directory and renamed in; served once all is in place, undone on any
/// failure. Egress is never granted by an import.
pub(super) async fn import_appspace(
    State(admin): State<Arc<Admin>>,
    Extension(peer): Extension<Peer>,
    Query(q): Query<ImportQuery>,
    body: Body,
) -> Answer<api::Imported> {
    let outcome = import(&admin, &q.domain, body).await;
    let detail = match &outcome {
        Ok(i) => format!(
            "from {} ({} entries, {} bytes){}",
            i.from_domain,
            i.entries,
            i.bytes,
            if i.app_installed {
                format!(", installed {} {}", i.appspace.app, i.appspace.version)
            } else {
                String::new()
            }
        ),
        Err(_) => String::new(),
    };
    audited(&admin, &peer, "backup.import", &q.domain, detail, outcome)
        .await
        .map(Json)
}

async fn import(admin: &Admin, domain: &str, body: Body) -> Result<api::Imported, Failure> {
    // Checked before the upload is even read: a taken domain changes nothing.
    let name = super::appspaces::name_for_domain(domain, &admin.host.base_domain)?;
    if admin.state.appspace(&name).await.is_ok() {
        return Err(Failure::new(
            ErrorCode::Conflict,
            format!("an appspace already serves {domain}"),
        ));
    }
    let cap = admin.package_limits.max_total_bytes + ds_api::limits::DISK.end();
    let upload = super::apps::receive_upload(admin, body, cap, "export").await?;
    let package = super::apps::upload_path(admin, ".package.tar.gz");
    let (file, pkg, max) = (
        upload.0.clone(),
        package.0.clone(),
        admin.package_limits.max_total_bytes,
    );
    let checked =
        joined(tokio::task::spawn_blocking(move || export::check(&file, &pkg, max, 0)).await)?
            .map_err(export_failure)?;
    let m = &checked.manifest;
    // Its settings are checked as dsctl's own would be.
    let bad = |e: String| Failure::new(ErrorCode::BadPackage, format!("the export's limits: {e}"));
    ds_api::limits::check_memory(m.memory_bytes).map_err(bad)?;
    ds_api::limits::check_cpus(m.cpus).map_err(bad)?;
    ds_api::limits::check_pids(m.pids).map_err(bad)?;
    let disk = match admin.disks.kind() {
        crate::state::DiskKind::None => None,
        _ if m.disk_bytes > 0 => Some(ds_api::limits::check_disk(m.disk_bytes).map_err(bad)?),
        _ => Some(admin.disks.default_bytes()),
    };
    if let Some(limit) = disk {
        if checked.bytes > limit {
            return Err(export_failure(ExportError::TooLarge {
                bytes: checked.bytes,
                limit,
            }));
        }
    }
    let version = parse_version(&m.version)?;
    let app_installed = if admin.state.has_version(&m.app, &version).await? {
        false
    } else {
        let v = admin
            .state
            .install(&package.0, &admin.package_limits)
            .await?;
        if v.manifest.name != m.app || v.manifest.version != version {
            // Not what the export says it runs: undone, refused.
            let _ = admin
                .state
                .remove_app(&v.manifest.name, Some(&v.manifest.version))
                .await;
            return Err(Failure::new(
                ErrorCode::BadPackage,
                format!(
                    "the export says it runs {} {version}, its package is {} {}",
                    m.app, v.manifest.name, v.manifest.version
                ),
            ));
        }
        true
    };
    let req = api::CreateAppspace {
        app: m.app.clone(),
        version: Some(m.version.clone()),
        domain: domain.to_owned(),
        // What it was allowed on the other host is shown, never granted.
        grant_egress: false,
    };
    // Recorded with a journal until the data is in: a host killed before
    // that removes the half-made appspace (and what was installed for it)
    // at its next start, so an import is all there or not there at all.
    let journal = serde_json::to_string(&crate::upgrade::Journal {
        op: crate::upgrade::IMPORT.into(),
        from: m.domain.clone(),
        to: version.to_string(),
        backup: String::new(),
        app_installed,
    })
    .unwrap_or_default();
    let made = super::appspaces::create_unserved(admin, &req, disk, Some(&journal)).await;
    let (rec, new) = match made {
        Ok(made) => made,
        Err(f) => {
            undo_install(admin, app_installed, m, &version).await;
            return Err(f);
        }
    };
    let placed = match place(admin, &rec, &new, &upload.0, m).await {
        Ok(()) => admin
            .state
            .set_pending(&rec.name, None)
            .await
            .map_err(Failure::from),
        Err(f) => Err(f),
    };
    if let Err(f) = placed {
        super::appspaces::uncreate(admin, &rec).await;
        undo_install(admin, app_installed, m, &version).await;
        return Err(f);
    }
    new.log_host(&format!(
        "created from an export of {} taken {}",
        m.domain,
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(m.exported_at.max(0) as u64)
        )
    ));
    admin.host.add(new.clone());
    let rec = admin.state.appspace(&rec.name).await?;
    Ok(api::Imported {
        appspace: super::appspaces::appspace_view(rec, Some(&new)).await,
        app_installed,
        from_domain: m.domain.clone(),
        exported_at: m.exported_at,
        entries: checked.entries,
        bytes: checked.bytes,
        egress_not_granted: m.egress.clone(),
    })
}

/// The export's limits and data into the new (unserved) appspace.
async fn place(
    admin: &Admin,
    rec: &AppspaceRecord,
    new: &Appspace,
    file: &Path,
    m: &Manifest,
) -> Result<(), Failure> {
    let limits = ResourceLimits {
        memory_bytes: m.memory_bytes,
        cpus: m.cpus,
        pids: m.pids,
    };
    admin
        .state
        .set_limits(
            &rec.name,
            LimitsUpdate {
                memory_bytes: Some(limits.memory_bytes),
                cpus: Some(limits.cpus),
                pids: Some(limits.pids),
            },
        )
        .await?;
    new.set_limits(limits)
        .map_err(|e| Failure::new(ErrorCode::Internal, format!("setting the limits: {e}")))?;
    let data = rec.data_dir.clone();
    let staging = data.parent().unwrap_or(&data).join(".restoring");
    let (file, at) = (file.to_owned(), staging.clone());
    let unpacked = joined(
        tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_dir_all(&at);
            std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
                .create(&at)
                .map_err(|e| ExportError::Io {
                    what: "creating",
                    path: at.clone(),
                    source: e,
                })?;
            // Counted to the appspace's disk quota from the first byte.
            crate::backup::restic::inherit_project(&data, &at);
            export::unpack_data(&file, &at)
        })
        .await,
    )?;
    if let Err(e) = unpacked {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(export_failure(e));
    }
    crate::backup::restic::swap_in(&staging, &rec.data_dir).map_err(super::backups::failure)
}

async fn undo_install(admin: &Admin, installed: bool, m: &Manifest, version: &semver::Version) {
    if installed {
        let _ = admin.state.remove_app(&m.app, Some(version)).await;
    }
}
