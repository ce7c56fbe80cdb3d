//! Each command: one API call (two for delete's confirmation), then the
//! answer printed as JSON or as a table.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use ds_api::admin as api;
use http_body_util::BodyExt;
use hyper::Method;

use crate::cli::{AppCommand, AppspaceCommand, BackupCommand, Cli, Command, EgressCommand};
use crate::client::{Client, ClientError};
use crate::{package, table};

/// Percent-encodes a path segment (domains and names are plain, but a
/// typo must not turn into another route).
fn seg(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn print_json(raw: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(raw).unwrap_or_else(|_| raw.to_string())
    );
}

/// Runs `cli`'s command against the socket at `socket`.
/// A process's line in `status`: pid, ids and confinement.
fn process(p: Option<&api::ProcessInfo>) -> String {
    let Some(p) = p else {
        return "not running".into();
    };
    let landlock = if p.landlock_abi > 0 {
        format!("Landlock ABI {}", p.landlock_abi)
    } else {
        "no Landlock".into()
    };
    let seccomp = match p.seccomp_phase {
        0 => "no seccomp".to_owned(),
        n => format!("seccomp phase {n}"),
    };
    format!(
        "pid {}, uid {}, gid {}, {landlock}, {seccomp}",
        p.pid, p.uid, p.gid
    )
}

pub async fn run(cli: Cli, socket: &Path) -> Result<(), ClientError> {
    let client = Client::new(socket);
    let json = cli.json;
    match cli.command {
        Command::Status => {
            let (s, raw): (api::Status, _) = client.call(Method::GET, "/v1/status", None).await?;
            if json {
                print_json(&raw);
            } else {
                table::print_pairs(&[
                    ("version", s.version),
                    ("mode", s.mode),
                    ("uptime", table::duration(s.uptime_secs)),
                    (
                        "cgroup",
                        format!("{} (sandboxes under {})", s.cgroup, s.cgroup_parent),
                    ),
                    (
                        "landlock",
                        if s.landlock_abi > 0 {
                            format!("ABI {}", s.landlock_abi)
                        } else {
                            "unavailable".into()
                        },
                    ),
                    ("domain", s.base_domain),
                    ("supervisor", process(s.supervisor.as_ref())),
                    (
                        "front door",
                        format!(
                            "{} ({} restarts)",
                            process(s.front_door.as_ref()),
                            s.front_door_restarts
                        ),
                    ),
                    ("disk limits", s.disk_quota.clone()),
                    (
                        "backups",
                        if s.backups_overdue.is_empty() {
                            "none overdue".to_owned()
                        } else {
                            format!("OVERDUE: {}", s.backups_overdue.join(", "))
                        },
                    ),
                    ("apps", format!("{} ({} versions)", s.apps, s.versions)),
                    (
                        "appspaces",
                        format!(
                            "{} ({} running, {} paused)",
                            s.appspaces, s.running, s.paused
                        ),
                    ),
                ]);
            }
        }
        Command::App(cmd) => app(&client, json, cmd).await?,
        Command::Appspace(cmd) => appspace(&client, json, cmd).await?,
        Command::Backup(cmd) => backup(&client, json, cmd).await?,
        Command::Audit { since } => {
            let path = format!("/v1/audit?since={}", since.unwrap_or(0));
            let (entries, raw): (Vec<api::AuditEntry>, _) =
                client.call(Method::GET, &path, None).await?;
            if json {
                print_json(&raw);
            } else {
                let rows: Vec<Vec<String>> = entries
                    .into_iter()
                    .map(|e| {
                        vec![
                            table::time(e.at),
                            format!("{} ({})", e.user, e.uid),
                            e.action,
                            e.target,
                            if e.ok {
                                "ok".into()
                            } else {
                                format!("failed: {}", e.result)
                            },
                        ]
                    })
                    .collect();
                table::print(&["TIME", "WHO", "ACTION", "TARGET", "RESULT"], &rows);
            }
        }
    }
    Ok(())
}

fn version_rows(a: &api::App) -> Vec<Vec<String>> {
    a.versions
        .iter()
        .map(|v| {
            vec![
                a.name.clone(),
                v.version.clone(),
                v.runtime.clone(),
                table::time(v.installed_at),
                if v.appspaces.is_empty() {
                    "-".into()
                } else {
                    v.appspaces.join(", ")
                },
            ]
        })
        .collect()
}

const VERSION_HEADERS: [&str; 5] = ["APP", "VERSION", "RUNTIME", "INSTALLED", "APPSPACES"];

/// What a package asks for, said so that nobody takes it for granted.
fn print_requests(egress: &[api::EgressRequest], memory: Option<u64>, disk: Option<u64>) {
    for e in egress {
        match &e.reason {
            Some(why) => println!("asks for egress to {} ({why})", e.host),
            None => println!("asks for egress to {}", e.host),
        }
    }
    if !egress.is_empty() {
        println!(
            "egress is not granted: appspace create --grant-egress allows these, or appspace egress allow D HOST"
        );
    }
    if let Some(m) = memory {
        println!(
            "asks for {} of memory (a new appspace's limit)",
            table::size(m)
        );
    }
    if let Some(d) = disk {
        println!(
            "asks for {} of disk (a new appspace's limit)",
            table::size(d)
        );
    }
}

fn runtime_word(r: ds_api::Runtime) -> &'static str {
    match r {
        ds_api::Runtime::Native => "native",
        ds_api::Runtime::Deno => "deno",
    }
}

fn manifest_requests(m: &ds_package::Manifest) -> Vec<api::EgressRequest> {
    m.egress
        .iter()
        .map(|e| api::EgressRequest {
            host: e.to_string(),
            reason: e.reason.clone(),
        })
        .collect()
}

/// `app check --json` and `app pack --json`: the manifest as validated.
fn manifest_json(m: &ds_package::Manifest) -> serde_json::Value {
    let mut command = vec![m.entrypoint.display().to_string()];
    command.extend(m.args.iter().cloned());
    serde_json::json!({
        "name": m.name,
        "version": m.version.to_string(),
        "runtime": runtime_word(m.runtime),
        "command": command,
        "env": m.env.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "egress_requested": manifest_requests(m),
        "memory_bytes": m.memory_bytes,
        "disk_bytes": m.disk_bytes,
        "health": m.health,
        "schema": m.data.schema,
    })
}

async fn app(client: &Client, json: bool, cmd: AppCommand) -> Result<(), ClientError> {
    match cmd {
        AppCommand::Install { path } => {
            let bytes = package::read(&path)?;
            let (i, raw): (api::Installed, _) = client
                .call(
                    Method::POST,
                    "/v1/apps",
                    Some(("application/gzip", bytes.into())),
                )
                .await?;
            if json {
                print_json(&raw);
            } else {
                println!("installed {} {} ({})", i.name, i.version, i.runtime);
                print_requests(&i.egress_requested, i.memory_bytes, i.disk_bytes);
            }
        }
        AppCommand::Check { path } => {
            let scratch = package::scratch()?;
            let staged = package::check(&path, scratch.path())?;
            let m = staged.manifest();
            if json {
                print_json(&manifest_json(m));
            } else {
                println!(
                    "{}: {} {} ({}) is a valid package",
                    path.display(),
                    m.name,
                    m.version,
                    runtime_word(m.runtime)
                );
                print_requests(&manifest_requests(m), m.memory_bytes, m.disk_bytes);
            }
        }
        AppCommand::Pack { dir, output } => {
            let (file, m) = package::pack(&dir, output)?;
            if json {
                let mut v = manifest_json(&m);
                v["file"] = file.display().to_string().into();
                print_json(&v);
            } else {
                println!(
                    "wrote {} ({} {}, checked as install checks it)",
                    file.display(),
                    m.name,
                    m.version
                );
            }
        }
        AppCommand::List => {
            let (apps, raw): (Vec<api::App>, _) =
                client.call(Method::GET, "/v1/apps", None).await?;
            if json {
                print_json(&raw);
            } else {
                let rows: Vec<Vec<String>> = apps.iter().flat_map(version_rows).collect();
                table::print(&VERSION_HEADERS, &rows);
            }
        }
        AppCommand::Show { name } => {
            let (a, raw): (api::App, _) = client
                .call(Method::GET, &format!("/v1/apps/{}", seg(&name)), None)
                .await?;
            if json {
                print_json(&raw);
            } else {
                let rows: Vec<Vec<String>> = a
                    .versions
                    .iter()
                    .map(|v| {
                        vec![
                            v.version.clone(),
                            v.runtime.clone(),
                            v.entrypoint.clone(),
                            v.memory_bytes
                                .map(table::size)
                                .unwrap_or_else(|| "-".into()),
                            table::time(v.installed_at),
                            if v.appspaces.is_empty() {
                                "-".into()
                            } else {
                                v.appspaces.join(", ")
                            },
                        ]
                    })
                    .collect();
                println!("app {}", a.name);
                table::print(
                    &[
                        "VERSION",
                        "RUNTIME",
                        "ENTRYPOINT",
                        "MEMORY",
                        "INSTALLED",
                        "APPSPACES",
                    ],
                    &rows,
                );
            }
        }
        AppCommand::Remove {
            name,
            version,
            force,
        } => {
            let mut query = Vec::new();
            if let Some(v) = &version {
                query.push(format!("version={}", seg(v)));
            }
            if force {
                query.push("force=true".to_owned());
            }
            let mut path = format!("/v1/apps/{}", seg(&name));
            if !query.is_empty() {
                path.push_str(&format!("?{}", query.join("&")));
            }
            let (r, raw): (api::Removed, _) = client.call(Method::DELETE, &path, None).await?;
            if json {
                print_json(&raw);
            } else {
                println!("removed {} {}", r.name, r.versions.join(", "));
            }
        }
    }
    Ok(())
}

fn appspace_row(a: &api::Appspace) -> Vec<String> {
    vec![
        a.domain.clone(),
        format!("{} {}", a.app, a.version),
        a.status.clone(),
        a.usage
            .map(|u| table::size(u.memory_bytes))
            .unwrap_or_else(|| "-".into()),
        a.uptime_secs
            .map(table::duration)
            .unwrap_or_else(|| "-".into()),
        a.requests.to_string(),
    ]
}

fn print_appspace(a: &api::Appspace) {
    let mut pairs = vec![
        ("domain", a.domain.clone()),
        ("name", a.name.clone()),
        ("app", format!("{} {}", a.app, a.version)),
        ("status", a.status.clone()),
    ];
    if let Some(why) = &a.broken {
        pairs.push(("broken", why.clone()));
    }
    pairs.extend([
        (
            "uptime",
            a.uptime_secs
                .map(table::duration)
                .unwrap_or_else(|| "-".into()),
        ),
        ("requests", a.requests.to_string()),
        (
            "app connections",
            format!(
                "{} handed over, {} refused",
                a.connections_handed_over, a.connections_refused
            ),
        ),
        ("memory limit", table::size(a.limits.memory_bytes)),
        ("cpu limit", format!("{} CPU", a.limits.cpus)),
        ("pids limit", a.limits.pids.to_string()),
        ("host uid", a.host_uid.to_string()),
    ]);
    if let Some(d) = &a.disk {
        let used = d.used_bytes.map(table::size);
        pairs.push((
            "disk",
            match (d.limit_bytes, used) {
                (0, Some(u)) => format!("{u} used, no limit"),
                (0, None) => "no limit".to_owned(),
                (l, Some(u)) => format!("{u} used of {} ({})", table::size(l), d.enforced_by),
                (l, None) => format!("limit {} ({})", table::size(l), d.enforced_by),
            },
        ));
    }
    if let Some(u) = a.usage {
        pairs.extend([
            (
                "memory",
                format!(
                    "{} (peak {})",
                    table::size(u.memory_bytes),
                    table::size(u.memory_peak_bytes)
                ),
            ),
            ("cpu time", format!("{:.3}s", u.cpu_ms as f64 / 1000.0)),
            ("pids", u.pids.to_string()),
            ("oom kills", u.oom_kills.to_string()),
        ]);
    }
    pairs.extend([
        ("data", a.data_dir.clone()),
        ("created", table::time(a.created_at)),
    ]);
    for e in &a.egress_not_granted {
        pairs.push((
            "egress not granted",
            match &e.reason {
                Some(why) => format!(
                    "{} ({why}): dsctl appspace egress allow {} {}",
                    e.host, a.domain, e.host
                ),
                None => format!(
                    "{}: dsctl appspace egress allow {} {}",
                    e.host, a.domain, e.host
                ),
            },
        ));
    }
    table::print_pairs(&pairs);
}

/// Asks on the terminal; without one, refuses (scripts pass --yes).
fn confirm(question: &str) -> Result<bool, ClientError> {
    let refuse = |why: &str| ClientError::Local {
        what: "confirming",
        path: "stdin".into(),
        source: std::io::Error::other(why.to_owned()),
    };
    if !std::io::stdin().is_terminal() {
        return Err(refuse(
            "not a terminal; pass --yes to delete without asking",
        ));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| refuse(&e.to_string()))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

async fn backup(client: &Client, json: bool, cmd: BackupCommand) -> Result<(), ClientError> {
    match cmd {
        BackupCommand::Create { appspace } => {
            let path = format!("/v1/appspaces/{}/backups", seg(&appspace));
            let (t, raw): (api::BackupTaken, _) = client.call(Method::POST, &path, None).await?;
            if json {
                print_json(&raw);
            } else {
                println!(
                    "backed up {} as {} ({} while read) into {} (key: {})",
                    t.backup.appspace, t.backup.id, t.held, t.repository, t.key_file
                );
            }
        }
        BackupCommand::Export { appspace, output } => {
            export(client, json, &appspace, output).await?;
        }
        BackupCommand::Import { file, domain } => {
            let path = format!("/v1/backups/import?domain={}", seg(&domain));
            let (i, raw): (api::Imported, _) = client
                .call_file(Method::POST, &path, "application/gzip", &file)
                .await?;
            if json {
                print_json(&raw);
            } else {
                println!(
                    "imported {} as {} ({} {}{}): {} entries, {} of data",
                    i.from_domain,
                    i.appspace.domain,
                    i.appspace.app,
                    i.appspace.version,
                    if i.app_installed {
                        ", installed now"
                    } else {
                        ""
                    },
                    i.entries,
                    table::size(i.bytes)
                );
                for e in &i.egress_not_granted {
                    println!(
                        "not granted: egress to {e}, which it was allowed before (dsctl appspace egress allow {} {e})",
                        i.appspace.domain
                    );
                }
            }
        }
        BackupCommand::Restore { appspace, id, into } => {
            let mut path = format!(
                "/v1/appspaces/{}/backups/{}/restore",
                seg(&appspace),
                seg(&id)
            );
            if let Some(domain) = &into {
                path.push_str(&format!("?into={}", seg(domain)));
            }
            let (r, raw): (api::Restored, _) = client.call(Method::POST, &path, None).await?;
            if json {
                print_json(&raw);
            } else {
                match &r.replaced {
                    Some(replaced) => println!(
                        "restored {} from {} (taken {}); the data it replaced is backup {}",
                        r.restored.appspace, r.restored.id, r.restored.time, replaced.id
                    ),
                    None => println!(
                        "created {} from backup {} of {} (taken {}, {} {})",
                        r.appspace,
                        r.restored.id,
                        r.restored.appspace,
                        r.restored.time,
                        r.restored.app.as_deref().unwrap_or("?"),
                        r.restored.version.as_deref().unwrap_or("?")
                    ),
                }
            }
        }
        BackupCommand::Delete { appspace, id, yes } => {
            if !yes && !confirm(&format!("Delete backup {id} of {appspace} for good?"))? {
                eprintln!("dsctl: not deleted");
                return Ok(());
            }
            let path = format!("/v1/appspaces/{}/backups/{}", seg(&appspace), seg(&id));
            let (b, raw): (api::Backup, _) = client.call(Method::DELETE, &path, None).await?;
            if json {
                print_json(&raw);
            } else {
                println!(
                    "deleted backup {} of {} (taken {})",
                    b.id, b.appspace, b.time
                );
            }
        }
        BackupCommand::RunDue { now } => {
            let (ran, raw): (Vec<api::DueBackup>, _) = client
                .call_json(Method::POST, "/v1/backups/run-due", &api::RunDue { now })
                .await?;
            if json {
                print_json(&raw);
            } else if ran.is_empty() {
                println!("no appspace was due a backup");
            } else {
                for d in ran {
                    match (d.backup, d.error) {
                        (Some(b), _) => println!("{}: backed up as {}", d.appspace, b.id),
                        (None, e) => println!("{}: failed: {}", d.appspace, e.unwrap_or_default()),
                    }
                }
            }
        }
        BackupCommand::Host { list } => {
            if list {
                let (l, raw): (Vec<api::HostBackup>, _) =
                    client.call(Method::GET, "/v1/backups/host", None).await?;
                if json {
                    print_json(&raw);
                } else {
                    let rows: Vec<Vec<String>> = l
                        .into_iter()
                        .map(|b| vec![b.id, b.time, b.paths.join(" ")])
                        .collect();
                    table::print(&["ID", "TAKEN", "HOLDS"], &rows);
                }
            } else {
                let (b, raw): (api::HostBackup, _) =
                    client.call(Method::POST, "/v1/backups/host", None).await?;
                if json {
                    print_json(&raw);
                } else {
                    println!(
                        "backed up the host's state as {} ({})",
                        b.id,
                        b.paths.join(", ")
                    );
                }
            }
        }
        BackupCommand::Key => {
            let (k, raw): (api::BackupKey, _) =
                client.call(Method::GET, "/v1/backups/key", None).await?;
            if json {
                print_json(&raw);
            } else {
                println!("{}", k.key);
                eprintln!(
                    "dsctl: the key of {}; keep a copy off this machine (restic --password-file)",
                    k.repository
                );
            }
        }
        BackupCommand::Verify => {
            let (v, raw): (api::Verified, _) = client
                .call(Method::POST, "/v1/backups/verify", None)
                .await?;
            if json {
                print_json(&raw);
            } else {
                println!("{} backup(s) read back: intact", v.backups);
            }
        }
        BackupCommand::List { appspace } => {
            let path = match &appspace {
                Some(a) => format!("/v1/backups?appspace={}", seg(a)),
                None => "/v1/backups".to_owned(),
            };
            let (list, raw): (Vec<api::Backup>, _) = client.call(Method::GET, &path, None).await?;
            if json {
                print_json(&raw);
            } else {
                let rows: Vec<Vec<String>> = list
                    .into_iter()
                    .map(|b| {
                        let version = match (b.app, b.version) {
                            (Some(a), Some(v)) => format!("{a} {v}"),
                            _ => "-".into(),
                        };
                        vec![
                            b.id,
                            b.appspace,
                            b.time,
                            version,
                            b.reason.unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                table::print(&["ID", "APPSPACE", "TAKEN", "VERSION", "REASON"], &rows);
            }
        }
    }
    Ok(())
}

async fn appspace(client: &Client, json: bool, cmd: AppspaceCommand) -> Result<(), ClientError> {
    let one = |raw: &serde_json::Value, a: &api::Appspace| {
        if json {
            print_json(raw);
        } else {
            print_appspace(a);
        }
    };
    match cmd {
        AppspaceCommand::Create {
            app,
            version,
            domain,
            grant_egress,
        } => {
            let body = api::CreateAppspace {
                app,
                version,
                domain,
                grant_egress,
            };
            let (a, raw): (api::Appspace, _) = client
                .call_json(Method::POST, "/v1/appspaces", &body)
                .await?;
            one(&raw, &a);
        }
        AppspaceCommand::List => {
            let (list, raw): (Vec<api::Appspace>, _) =
                client.call(Method::GET, "/v1/appspaces", None).await?;
            if json {
                print_json(&raw);
            } else {
                let rows: Vec<Vec<String>> = list.iter().map(appspace_row).collect();
                table::print(
                    &["DOMAIN", "APP", "STATUS", "MEMORY", "UPTIME", "REQUESTS"],
                    &rows,
                );
            }
        }
        AppspaceCommand::Show(t) => {
            let (a, raw): (api::Appspace, _) = client
                .call(
                    Method::GET,
                    &format!("/v1/appspaces/{}", seg(&t.domain)),
                    None,
                )
                .await?;
            one(&raw, &a);
        }
        AppspaceCommand::Upgrade { target, version } => {
            let path = format!("/v1/appspaces/{}/upgrade", seg(&target.domain));
            let (u, raw): (api::Upgraded, _) = client
                .call_json(Method::POST, &path, &api::Upgrade { version })
                .await?;
            if json {
                print_json(&raw);
            } else {
                let migrated = match u.migrated {
                    Some((from, to)) => format!(", data migrated from schema {from} to {to}"),
                    None => String::new(),
                };
                println!(
                    "{} now runs {} (was {}){migrated}; health check answered {}; backup {} holds the data as it was",
                    u.appspace, u.to, u.from, u.health_status, u.backup
                );
            }
        }
        AppspaceCommand::Start(t) => lifecycle(client, json, &t.domain, "start").await?,
        AppspaceCommand::Stop(t) => lifecycle(client, json, &t.domain, "stop").await?,
        AppspaceCommand::Pause(t) => lifecycle(client, json, &t.domain, "pause").await?,
        AppspaceCommand::Resume(t) => lifecycle(client, json, &t.domain, "resume").await?,
        AppspaceCommand::Limits {
            target,
            memory,
            cpu,
            pids,
            disk,
        } => {
            let path = format!("/v1/appspaces/{}/limits", seg(&target.domain));
            if memory.is_none() && cpu.is_none() && pids.is_none() && disk.is_none() {
                let (l, raw): (api::Limits, _) = client.call(Method::GET, &path, None).await?;
                if json {
                    print_json(&raw);
                } else {
                    print_limits(&l);
                }
            } else {
                let change = api::LimitsChange {
                    memory_bytes: memory,
                    cpus: cpu,
                    pids,
                    disk_bytes: disk,
                };
                let (l, raw): (api::LimitsApplied, _) =
                    client.call_json(Method::PUT, &path, &change).await?;
                if json {
                    print_json(&raw);
                } else {
                    print_limits(&l.limits);
                    println!(
                        "{}",
                        if l.applied_live {
                            "applied to the running sandbox"
                        } else {
                            "applies when it next starts"
                        }
                    );
                }
            }
        }
        AppspaceCommand::Logs {
            target,
            follow,
            lines,
        } => {
            let path = format!(
                "/v1/appspaces/{}/logs?lines={lines}&follow={follow}",
                seg(&target.domain)
            );
            let resp = client.send(Method::GET, &path, None).await?;
            let mut body = resp.into_body();
            let mut out = std::io::stdout();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| ClientError::Http(e.to_string()))?;
                if let Ok(data) = frame.into_data() {
                    if out.write_all(&data).and_then(|()| out.flush()).is_err() {
                        break; // the reader (e.g. head) went away
                    }
                }
            }
        }
        AppspaceCommand::Usage { target, since } => {
            let mut path = format!("/v1/appspaces/{}/usage", seg(&target.domain));
            if let Some(since) = since {
                path.push_str(&format!("?since={since}"));
            }
            let (u, raw): (api::UsageHistory, _) = client.call(Method::GET, &path, None).await?;
            if json {
                print_json(&raw);
            } else {
                print_usage(&u);
            }
        }
        AppspaceCommand::Egress(cmd) => egress(client, json, cmd).await?,
        AppspaceCommand::Delete { target, yes, purge } => {
            let key = seg(&target.domain);
            if !yes {
                let (a, _): (api::Appspace, _) = client
                    .call(Method::GET, &format!("/v1/appspaces/{key}"), None)
                    .await?;
                let what = if purge {
                    "its data and logs will be REMOVED"
                } else {
                    "its data and logs are kept aside"
                };
                if !confirm(&format!("Delete appspace {} ({what})?", a.domain))? {
                    eprintln!("dsctl: not deleted");
                    return Ok(());
                }
            }
            let (d, raw): (api::Deleted, _) = client
                .call(
                    Method::DELETE,
                    &format!("/v1/appspaces/{key}?purge={purge}"),
                    None,
                )
                .await?;
            if json {
                print_json(&raw);
            } else {
                match d.kept_at {
                    Some(at) => {
                        println!("deleted {}; its data and logs are kept in {at}", d.domain)
                    }
                    None => println!("deleted {} and its data", d.domain),
                }
            }
        }
    }
    Ok(())
}

async fn egress(client: &Client, json: bool, cmd: EgressCommand) -> Result<(), ClientError> {
    let print_list = |e: &api::Egress, raw: &serde_json::Value| {
        if json {
            print_json(raw);
            return;
        }
        let rows: Vec<Vec<String>> = e
            .allow
            .iter()
            .map(|a| vec![a.clone(), "allowed".into()])
            .chain(
                e.requested
                    .iter()
                    .filter(|r| !e.allow.contains(r))
                    .map(|r| vec![r.clone(), "requested by the app, not allowed".into()]),
            )
            .collect();
        table::print(&["DESTINATION", "STATUS"], &rows);
    };
    match cmd {
        EgressCommand::List(t) => {
            let (e, raw): (api::Egress, _) = client
                .call(
                    Method::GET,
                    &format!("/v1/appspaces/{}/egress", seg(&t.domain)),
                    None,
                )
                .await?;
            print_list(&e, &raw);
        }
        EgressCommand::Allow { target, entries } => {
            let (e, raw): (api::Egress, _) = client
                .call_json(
                    Method::POST,
                    &format!("/v1/appspaces/{}/egress/allow", seg(&target.domain)),
                    &api::EgressChange { entries },
                )
                .await?;
            print_list(&e, &raw);
        }
        EgressCommand::Deny { target, entries } => {
            let (e, raw): (api::Egress, _) = client
                .call_json(
                    Method::POST,
                    &format!("/v1/appspaces/{}/egress/deny", seg(&target.domain)),
                    &api::EgressChange { entries },
                )
                .await?;
            print_list(&e, &raw);
        }
        EgressCommand::Log { target, lines } => {
            let (log, raw): (Vec<api::EgressLogEntry>, _) = client
                .call(
                    Method::GET,
                    &format!(
                        "/v1/appspaces/{}/egress/log?lines={lines}",
                        seg(&target.domain)
                    ),
                    None,
                )
                .await?;
            if json {
                print_json(&raw);
            } else {
                let rows: Vec<Vec<String>> = log
                    .into_iter()
                    .map(|e| {
                        vec![
                            table::time(e.at),
                            e.destination,
                            e.address.unwrap_or_else(|| "-".into()),
                            if e.reason.is_empty() {
                                e.outcome
                            } else {
                                format!("{}: {}", e.outcome, e.reason)
                            },
                            e.bytes_up.to_string(),
                            e.bytes_down.to_string(),
                            format!("{} ms", e.duration_ms),
                        ]
                    })
                    .collect();
                table::print(
                    &[
                        "TIME",
                        "DESTINATION",
                        "ADDRESS",
                        "OUTCOME",
                        "OUT",
                        "IN",
                        "DURATION",
                    ],
                    &rows,
                );
            }
        }
    }
    Ok(())
}

/// `start`, `stop`, `pause` or `resume`.
async fn lifecycle(client: &Client, json: bool, key: &str, verb: &str) -> Result<(), ClientError> {
    let (a, raw): (api::Appspace, _) = client
        .call(
            Method::POST,
            &format!("/v1/appspaces/{}/{verb}", seg(key)),
            None,
        )
        .await?;
    if json {
        print_json(&raw);
    } else {
        println!("{}: {}", a.domain, a.status);
    }
    Ok(())
}

fn print_limits(l: &api::Limits) {
    table::print_pairs(&[
        ("memory", table::size(l.memory_bytes)),
        ("cpu", format!("{} CPU", l.cpus)),
        ("pids", l.pids.to_string()),
        ("disk", disk_limit(l.disk_bytes)),
    ]);
}

fn disk_limit(bytes: u64) -> String {
    if bytes == 0 {
        "none".into()
    } else {
        table::size(bytes)
    }
}

/// An appspace's usage history as a table, one line per hour with any
/// use, and the totals (highs for memory and disk).
fn print_usage(u: &api::UsageHistory) {
    if u.hours.is_empty() {
        println!(
            "{}: no use recorded since {}",
            u.domain,
            table::time(u.since)
        );
        return;
    }
    let cpu = |ms: u64| format!("{}.{:03}s", ms / 1000, ms % 1000);
    let disk = |d: Option<u64>| d.map_or_else(|| "-".to_owned(), table::size);
    let mut rows: Vec<Vec<String>> = u
        .hours
        .iter()
        .map(|h| {
            vec![
                table::time(h.hour),
                cpu(h.cpu_ms),
                table::size(h.memory_peak_bytes),
                disk(h.disk_bytes),
                h.requests.to_string(),
                table::size(h.egress_bytes),
            ]
        })
        .collect();
    rows.push(vec![
        "total".into(),
        cpu(u.hours.iter().map(|h| h.cpu_ms).sum()),
        table::size(
            u.hours
                .iter()
                .map(|h| h.memory_peak_bytes)
                .max()
                .unwrap_or(0),
        ),
        disk(u.hours.iter().filter_map(|h| h.disk_bytes).max()),
        u.hours.iter().map(|h| h.requests).sum::<u64>().to_string(),
        table::size(u.hours.iter().map(|h| h.egress_bytes).sum()),
    ]);
    table::print(
        &[
            "HOUR (UTC)",
            "CPU",
            "MEMORY PEAK",
            "DISK",
            "REQUESTS",
            "EGRESS",
        ],
        &rows,
    );
}

/// `backup export`: the answer's body into `output` (written beside as
/// `.partial`, renamed when complete; an existing file is never replaced).
async fn export(
    client: &Client,
    json: bool,
    appspace: &str,
    output: Option<std::path::PathBuf>,
) -> Result<(), ClientError> {
    let out = output.unwrap_or_else(|| {
        let stamp = table::time(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
        )
        .replace([':', '-'], "");
        let name = appspace.split('.').next().unwrap_or(appspace);
        std::path::PathBuf::from(format!("{name}-{stamp}.ds-export.tar.gz"))
    });
    let local = |what: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| ClientError::Local { what, path, source }
    };
    if out.exists() {
        return Err(local("not replacing", &out)(std::io::Error::from(
            std::io::ErrorKind::AlreadyExists,
        )));
    }
    let partial = std::path::PathBuf::from(format!("{}.partial", out.display()));
    let path = format!("/v1/appspaces/{}/export", seg(appspace));
    let resp = client.send(Method::POST, &path, None).await?;
    let skipped: u64 = resp
        .headers()
        .get("x-ds-export-skipped")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial)
        .map_err(local("creating", &partial))?;
    let mut body = resp.into_body();
    let mut size = 0u64;
    let copied: Result<(), ClientError> = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ClientError::Http(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                size += data.len() as u64;
                file.write_all(&data).map_err(local("writing", &partial))?;
            }
        }
        file.sync_all().map_err(local("writing", &partial))?;
        std::fs::rename(&partial, &out).map_err(local("renaming into place", &out))
    }
    .await;
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    if json {
        print_json(&serde_json::json!({
            "file": out.display().to_string(),
            "bytes": size,
            "skipped_special_files": skipped,
        }));
    } else {
        println!(
            "exported {appspace} to {} ({})",
            out.display(),
            table::size(size)
        );
        if skipped > 0 {
            println!("left out: {skipped} FIFOs, sockets or device files (not data)");
        }
    }
    Ok(())
}
