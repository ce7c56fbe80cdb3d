//! `/v1/appspaces`: create, list, show, lifecycle verbs, logs, delete.

use super::*;

pub(super) async fn appspace_view(rec: AppspaceRecord, live: Option<&Appspace>) -> api::Appspace {
    let runtime = match live {
        Some(a) => a.runtime(),
        None => Default::default(),
    };
    let limits = live.map(Appspace::limits).unwrap_or(ResourceLimits {
        memory_bytes: rec.memory_bytes,
        cpus: rec.cpus,
        pids: rec.pids,
    });
    let status = if rec.broken.is_some() {
        "broken"
    } else if rec.paused {
        "paused"
    } else if runtime.running {
        "running"
    } else if runtime.starting {
        "starting"
    } else {
        "stopped"
    };
    let disk = api::Disk {
        enforced_by: crate::disk::enforced_by(rec.disk_kind).into(),
        limit_bytes: rec.disk_bytes,
        used_bytes: crate::disk::usage(&rec),
    };
    api::Appspace {
        status: status.into(),
        limits: limits_view(limits, rec.disk_bytes),
        disk: Some(disk),
        egress_not_granted: Vec::new(),
        data_dir: rec.data_dir.display().to_string(),
        host_uid: rec.uid,
        broken: rec.broken,
        created_at: rec.created_at,
        uptime_secs: runtime.uptime.map(|u| u.as_secs()),
        requests: runtime.requests,
        connections_handed_over: runtime.connections_handed_over,
        connections_refused: runtime.connections_refused,
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

pub(super) fn limits_view(l: ResourceLimits, disk_bytes: u64) -> api::Limits {
    api::Limits {
        memory_bytes: l.memory_bytes,
        cpus: l.cpus,
        pids: l.pids,
        disk_bytes,
    }
}

pub(super) async fn list_appspaces(State(admin): State<Arc<Admin>>) -> Answer<Vec<api::Appspace>> {
    admin.front.refresh_usage().await;
    let mut out = Vec::new();
    for rec in admin.state.appspaces().await? {
        let live = admin.host.get(&rec.name);
        out.push(appspace_view(rec, live.as_deref()).await);
    }
    Ok(Json(out))
}

pub(super) async fn show_appspace(
    State(admin): State<Arc<Admin>>,
    UrlPath(key): UrlPath<String>,
) -> Answer<api::Appspace> {
    let (rec, live) = find(&admin, &key).await?;
    admin.front.refresh_usage().await;
    let mut view = appspace_view(rec.clone(), Some(&live)).await;
    view.egress_not_granted = not_granted(&admin, &rec).await;
    Ok(Json(view))
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

pub(super) async fn create_appspace(
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
    let (rec, appspace) = create_unserved(admin, req, None, None).await?;
    admin.host.add(appspace.clone());
    let mut view = appspace_view(rec.clone(), Some(&appspace)).await;
    view.egress_not_granted = not_granted(admin, &rec).await;
    Ok(view)
}

/// What `rec`'s version asks to reach that its allowlist does not grant.
pub(super) async fn not_granted(admin: &Admin, rec: &AppspaceRecord) -> Vec<api::EgressRequest> {
    let Ok(version) = semver::Version::parse(&rec.version) else {
        return Vec::new();
    };
    let Ok(manifest) = admin.state.manifest(&rec.app, &version).await else {
        return Vec::new();
    };
    let granted: Vec<crate::egress::rules::Rule> =
        rec.egress.iter().filter_map(|e| e.parse().ok()).collect();
    super::apps::egress_requests(&manifest)
        .into_iter()
        .filter(|r| {
            r.host
                .parse::<crate::egress::rules::Rule>()
                .map_or(true, |rule| !granted.contains(&rule))
        })
        .collect()
}

/// Creates an appspace (recorded, its data directory made) that the
/// host does not serve yet: the caller adds it to the host, or undoes it
/// with [`uncreate`]. Its disk limit is `disk_bytes`, or the host's
/// default. `pending`: the journal it is recorded with while its data is
/// put in (see [`crate::upgrade::IMPORT`]); the caller clears it.
pub(super) async fn create_unserved(
    admin: &Admin,
    req: &api::CreateAppspace,
    disk_bytes: Option<u64>,
    pending: Option<&str>,
) -> Result<(AppspaceRecord, Arc<Appspace>), Failure> {
    let name = name_for_domain(&req.domain, &admin.host.base_domain)?;
    let domain = format!("{name}.{}", admin.host.base_domain);
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
    let data_dir = admin.disks.data_dir(&home);
    std::fs::create_dir_all(&home).map_err(|e| internal("creating", e))?;
    let manifest = admin.state.manifest(&req.app, &version).await?;
    let memory = manifest.memory_bytes.unwrap_or(admin.default_memory);
    // The disk the caller gives (an import keeps its source's), else what
    // the manifest asks for, else the host's default.
    let disk = disk_bytes
        .or(manifest.disk_bytes)
        .unwrap_or(admin.disks.default_bytes());
    admin
        .state
        .create_appspace(
            &name,
            &domain,
            &req.app,
            &version,
            memory,
            crate::state::Storage {
                data_dir: &data_dir,
                disk: (admin.disks.kind(), disk),
                pending,
            },
        )
        .await?;
    // Egress the manifest asks for, only when the admin said so.
    if req.grant_egress && !manifest.egress.is_empty() {
        let entries: Vec<String> = manifest
            .egress
            .iter()
            .filter_map(|e| e.to_string().parse::<crate::egress::rules::Rule>().ok())
            .map(|r| r.to_string())
            .collect();
        if let Err(e) = admin.state.set_egress(&name, &entries).await {
            let _ = admin.state.delete_appspace(&name).await;
            return Err(e.into());
        }
    }
    let rec = admin.state.appspace(&name).await?;
    if let Err(e) = admin.disks.attach(&rec).await {
        uncreate(admin, &rec).await;
        return Err(Failure::new(
            ErrorCode::Internal,
            format!("making the appspace's disk: {e}"),
        ));
    }
    let appspace = match Appspace::new(
        AppspaceConfig::from_record(rec.clone()),
        &admin.host.lifecycle,
    ) {
        Ok(a) => Arc::new(a),
        Err(e) => {
            // Undo: a recorded appspace that cannot be served helps nobody.
            let _ = admin.state.delete_appspace(&name).await;
            return Err(internal("opening the log under", e));
        }
    };
    Ok((rec, appspace))
}

/// Undoes [`create_unserved`]: the record, its host id and its files go.
pub(super) async fn uncreate(admin: &Admin, rec: &AppspaceRecord) {
    let _ = admin.state.delete_appspace(&rec.name).await;
    let _ = admin.state.release_host_id(rec.uid).await;
    let _ = admin.disks.release(rec).await;
    let _ = std::fs::remove_dir_all(rec.home());
}

/// `POST /v1/appspaces/{key}/{start,stop,pause,resume}`, audited.
pub(super) async fn lifecycle_change(
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
        let grace = admin.host.lifecycle.stop_grace;
        match verb.as_str() {
            "start" => live
                .start_now(&admin.host.launcher, &admin.host.lifecycle)
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
                super::follow_successor(&admin, &live).await;
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UsageQuery {
    /// Unix time; default: a day ago.
    since: Option<i64>,
}

/// The usage history, sampled afresh first so that it is up to now.
pub(super) async fn appspace_usage(
    State(admin): State<Arc<Admin>>,
    UrlPath(key): UrlPath<String>,
    Query(q): Query<UsageQuery>,
) -> Answer<api::UsageHistory> {
    let (rec, _) = find(&admin, &key).await?;
    let now = crate::state::now();
    let since = q.since.unwrap_or(now - 24 * 3600);
    if since > now {
        return Err(Failure::new(
            ErrorCode::Invalid,
            format!("since {since}: in the future (now is {now})"),
        ));
    }
    admin.usage.sample(now).await?;
    let hours = admin.state.usage_hours(&rec.name, since).await?;
    Ok(Json(api::UsageHistory {
        domain: rec.domain,
        since,
        hours: hours
            .into_iter()
            .map(|h| api::UsageHour {
                hour: h.hour,
                cpu_ms: h.cpu_ms,
                memory_peak_bytes: h.memory_peak_bytes,
                disk_bytes: h.disk_bytes,
                requests: h.requests,
                egress_bytes: h.egress_bytes,
            })
            .collect(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogsQuery {
    lines: Option<usize>,
    #[serde(default)]
    follow: bool,
}

pub(super) async fn appspace_logs(
    State(admin): State<Arc<Admin>>,
    UrlPath(key): UrlPath<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, Failure> {
    let (_, live) = find(&admin, &key).await?;
    let dir = live.config.log_dir.clone();
    let lines = q.lines.unwrap_or(50).min(100_000);
    // Off the runtime's threads: the queued lines are written first (so
    // the answer has everything logged before it was asked for), then
    // the files are read.
    let reading = dir.clone();
    let read = tokio::task::spawn_blocking(move || {
        crate::appspace::flush_logs();
        logs::last_lines(&reading, lines)
    })
    .await
    .map_err(|e| Failure::new(ErrorCode::Internal, format!("reading the log: {e}")))?;
    let (text, offset) = read.map_err(|e| {
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
pub(super) struct DeleteQuery {
    #[serde(default)]
    purge: bool,
}

pub(super) async fn delete_appspace(
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
    let live = admin.host.remove(&rec.name);
    if let Some(live) = &live {
        live.stop(admin.host.lifecycle.stop_grace).await;
    }
    if let Err(e) = admin.state.delete_appspace(&rec.name).await {
        if let Some(live) = live {
            admin.host.add(live);
        }
        return Err(e.into());
    }
    let home = rec.home();
    if let Err(e) = admin.disks.release(&rec).await {
        warn!(appspace = %rec.name, error = %e, "releasing a deleted appspace's disk");
    }
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
}
