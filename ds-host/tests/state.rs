//! The state store: installs and appspaces are recorded transactionally,
//! and disk and database are reconciled after a crash.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ds_host::package::PackageLimits;
use ds_host::state::{State, StateError};

fn package(dir: &Path, name: &str, version: &str) -> PathBuf {
    let pkg = dir.join(format!("{name}-{version}"));
    fs::create_dir_all(&pkg).unwrap();
    fs::write(
        pkg.join("ds-app.toml"),
        format!("name = \"{name}\"\nversion = \"{version}\"\nruntime = \"native\"\nentrypoint = \"app\"\n"),
    )
    .unwrap();
    fs::write(pkg.join("app"), "binary").unwrap();
    fs::set_permissions(pkg.join("app"), fs::Permissions::from_mode(0o755)).unwrap();
    pkg
}

#[tokio::test]
async fn installs_and_appspaces_are_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let state = State::open(&tmp.path().join("s")).await.unwrap();
    let v = state
        .install(
            &package(tmp.path(), "notes", "1.0.0"),
            &PackageLimits::default(),
        )
        .await
        .unwrap();
    let version = v.manifest.version.clone();
    assert!(state.has_version("notes", &version).await.unwrap());
    let data = tmp.path().join("data");
    state
        .create_appspace(
            "notes",
            "notes.localhost",
            "notes",
            &version,
            1 << 26,
            ds_host::state::Storage {
                data_dir: &data,
                disk: (ds_host::state::DiskKind::None, 0),
                pending: None,
            },
        )
        .await
        .unwrap();
    let all = state.appspaces().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].domain, "notes.localhost");
    assert_eq!(all[0].app_dir, v.dir);
    // Survives a reopen.
    drop(state);
    let state = State::open(&tmp.path().join("s")).await.unwrap();
    assert_eq!(state.appspaces().await.unwrap().len(), 1);
}

#[tokio::test]
async fn conflicts_and_unknowns_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let state = State::open(&tmp.path().join("s")).await.unwrap();
    let pkg = package(tmp.path(), "notes", "1.0.0");
    let v = state
        .install(&pkg, &PackageLimits::default())
        .await
        .unwrap()
        .manifest
        .version;
    let dup = state
        .install(&pkg, &PackageLimits::default())
        .await
        .unwrap_err();
    assert!(dup.to_string().contains("already installed"), "{dup}");
    let data = tmp.path().join("d");
    state
        .create_appspace(
            "a",
            "a.localhost",
            "notes",
            &v,
            1,
            ds_host::state::Storage {
                data_dir: &data,
                disk: (ds_host::state::DiskKind::None, 0),
                pending: None,
            },
        )
        .await
        .unwrap();
    let taken = state
        .create_appspace(
            "b",
            "a.localhost",
            "notes",
            &v,
            1,
            ds_host::state::Storage {
                data_dir: &data,
                disk: (ds_host::state::DiskKind::None, 0),
                pending: None,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(taken, StateError::Conflict(_)), "{taken}");
    let missing = semver::Version::new(9, 9, 9);
    let unknown = state
        .create_appspace(
            "c",
            "c.localhost",
            "notes",
            &missing,
            1,
            ds_host::state::Storage {
                data_dir: &data,
                disk: (ds_host::state::DiskKind::None, 0),
                pending: None,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(unknown, StateError::NotFound(_)), "{unknown}");
    assert_eq!(state.appspaces().await.unwrap().len(), 1);
}

#[tokio::test]
async fn uncommitted_files_are_removed_on_open() {
    // A crash after the files were renamed into place but before the
    // transaction committed leaves a version the database never knew.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    drop(State::open(&dir).await.unwrap());
    let orphan = dir.join("apps/ghost/1.0.0");
    fs::create_dir_all(&orphan).unwrap();
    fs::write(orphan.join("file"), "x").unwrap();
    let state = State::open(&dir).await.unwrap();
    assert!(!orphan.exists(), "an uncommitted version survived");
    // And that version installs normally afterwards.
    state
        .install(
            &package(tmp.path(), "ghost", "1.0.0"),
            &PackageLimits::default(),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn versions_whose_files_vanished_break_their_appspaces_and_nothing_is_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let state = State::open(&dir).await.unwrap();
    let pkg = package(tmp.path(), "notes", "1.0.0");
    let v = state
        .install(&pkg, &PackageLimits::default())
        .await
        .unwrap();
    state
        .create_appspace(
            "notes",
            "notes.localhost",
            "notes",
            &v.manifest.version,
            1,
            ds_host::state::Storage {
                data_dir: &tmp.path().join("d"),
                disk: (ds_host::state::DiskKind::None, 0),
                pending: None,
            },
        )
        .await
        .unwrap();
    drop(state);
    // Someone deleted the files behind the host's back.
    fs::set_permissions(&v.dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::remove_dir_all(&v.dir).unwrap();
    let state = State::open(&dir).await.unwrap();
    // The version and the appspace are kept, the appspace marked broken
    // with the reason, and the host's decision is in the audit log.
    assert!(state
        .has_version("notes", &v.manifest.version)
        .await
        .unwrap());
    let spaces = state.appspaces().await.unwrap();
    assert_eq!(spaces.len(), 1);
    let why = spaces[0].broken.clone().expect("marked broken");
    assert!(why.contains("missing"), "{why}");
    let audit = state.audit_since(0).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.record.action == "host.reconcile" && e.record.target == "notes"),
        "{audit:?}"
    );
    // Opening again changes nothing and audits nothing new.
    drop(state);
    let state = State::open(&dir).await.unwrap();
    assert_eq!(state.audit_since(0).await.unwrap().len(), audit.len());
    // Reinstalling the same package repairs it.
    state
        .install(&pkg, &PackageLimits::default())
        .await
        .unwrap();
    assert!(v.dir.is_dir());
    assert_eq!(state.appspaces().await.unwrap()[0].broken, None);
    // ... while installing it again when nothing is missing is refused.
    assert!(state
        .install(&pkg, &PackageLimits::default())
        .await
        .is_err());
}

#[tokio::test]
async fn every_appspace_gets_its_own_host_uid_from_the_documented_range() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let state = State::open(&dir).await.unwrap();
    let v = state
        .install(
            &package(tmp.path(), "notes", "1.0.0"),
            &PackageLimits::default(),
        )
        .await
        .unwrap();
    for i in 0..1000 {
        let name = format!("n{i}");
        state
            .create_appspace(
                &name,
                &format!("{name}.localhost"),
                "notes",
                &v.manifest.version,
                1,
                ds_host::state::Storage {
                    data_dir: &tmp.path().join(&name),
                    disk: (ds_host::state::DiskKind::None, 0),
                    pending: None,
                },
            )
            .await
            .unwrap();
    }
    let mut uids: Vec<u32> = state
        .appspaces()
        .await
        .unwrap()
        .iter()
        .map(|a| a.uid)
        .collect();
    assert_eq!(uids.len(), 1000);
    assert!(uids.iter().all(|u| ds_api::ids::HOST_IDS.contains(u)));
    uids.sort_unstable();
    uids.dedup();
    assert_eq!(uids.len(), 1000, "uids repeat");
    // A deleted appspace's uid (its data is kept aside) is not handed out
    // again, even after a restart.
    let gone = state.appspace("n5").await.unwrap().uid;
    state.delete_appspace("n5").await.unwrap();
    drop(state);
    let state = State::open(&dir).await.unwrap();
    state
        .create_appspace(
            "n5",
            "n5.localhost",
            "notes",
            &v.manifest.version,
            1,
            ds_host::state::Storage {
                data_dir: &tmp.path().join("x"),
                disk: (ds_host::state::DiskKind::None, 0),
                pending: None,
            },
        )
        .await
        .unwrap();
    let again = state.appspace("n5").await.unwrap().uid;
    assert_ne!(again, gone);
    assert!(!uids.contains(&again));
}

#[tokio::test]
async fn usage_adds_up_per_hour_keeps_highs_forgets_old_hours_and_goes_with_its_appspace() {
    use ds_host::state::{hour_of, UsageHour, USAGE_KEEP_SECS};
    let tmp = tempfile::tempdir().unwrap();
    let state = State::open(&tmp.path().join("s")).await.unwrap();
    let v = state
        .install(
            &package(tmp.path(), "notes", "1.0.0"),
            &PackageLimits::default(),
        )
        .await
        .unwrap();
    let data = tmp.path().join("data");
    state
        .create_appspace(
            "a",
            "a.localhost",
            "notes",
            &v.manifest.version,
            1 << 26,
            ds_host::state::Storage {
                data_dir: &data,
                disk: (ds_host::state::DiskKind::None, 0),
                pending: None,
            },
        )
        .await
        .unwrap();
    let now = 1_800_000_123;
    let sample = |at: i64, cpu: u64, mem: u64, disk: Option<u64>, req: u64| {
        (
            "a".to_owned(),
            UsageHour {
                hour: at,
                cpu_ms: cpu,
                memory_peak_bytes: mem,
                disk_bytes: disk,
                requests: req,
                egress_bytes: 0,
            },
        )
    };
    let long_ago = now - USAGE_KEEP_SECS - 3600;
    state
        .add_usage(
            &[
                sample(now - 60, 10, 100, Some(5), 1),
                sample(now, 20, 50, None, 2),
                sample(now - 3600, 1, 1, None, 1),
                // Deleted meanwhile (or never there): dropped.
                (
                    "gone".to_owned(),
                    UsageHour {
                        hour: now,
                        cpu_ms: 5,
                        ..Default::default()
                    },
                ),
            ],
            now,
        )
        .await
        .unwrap();
    // Egress counts into the hour its connection closed in (now, as the
    // log writes it).
    let egress = |appspace: &str, up: u64, down: u64| ds_host::egress::EgressEvent {
        appspace: appspace.into(),
        destination: "example.com:443".into(),
        address: None,
        outcome: ds_host::egress::Outcome::Allowed,
        reason: String::new(),
        bytes_up: up,
        bytes_down: down,
        duration: std::time::Duration::ZERO,
    };
    state
        .record_egress(&[
            egress("a", 300, 700),
            egress("a", 0, 24),
            egress("gone", 1, 1),
        ])
        .await
        .unwrap();
    let wall_hour = hour_of(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    );
    let hours = state.usage_hours("a", 0).await.unwrap();
    let at = |h: i64| {
        hours
            .iter()
            .find(|u| u.hour == h)
            .cloned()
            .unwrap_or_default()
    };
    let this = at(hour_of(now));
    assert_eq!(
        (
            this.cpu_ms,
            this.memory_peak_bytes,
            this.disk_bytes,
            this.requests
        ),
        (30, 100, Some(5), 3),
        "{hours:?}"
    );
    assert_eq!(at(hour_of(now) - 3600).cpu_ms, 1);
    assert_eq!(at(wall_hour).egress_bytes, 1024, "{hours:?}");
    assert!(state.usage_hours("gone", 0).await.unwrap().is_empty());
    // --since: from the hour holding it.
    let recent = state.usage_hours("a", now - 10).await.unwrap();
    assert!(recent.iter().all(|u| u.hour >= hour_of(now)), "{recent:?}");
    // Hours older than the 30 days go at the next write.
    state
        .add_usage(&[sample(long_ago, 7, 7, None, 7)], long_ago)
        .await
        .unwrap();
    assert!(state
        .usage_hours("a", 0)
        .await
        .unwrap()
        .iter()
        .any(|u| u.cpu_ms == 7));
    state.add_usage(&[], now).await.unwrap();
    assert!(!state
        .usage_hours("a", 0)
        .await
        .unwrap()
        .iter()
        .any(|u| u.cpu_ms == 7));
    // Gone with the appspace.
    state.delete_appspace("a").await.unwrap();
    assert!(state.usage_hours("a", 0).await.unwrap().is_empty());
}
