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
            &data,
            1 << 26,
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
        .create_appspace("a", "a.localhost", "notes", &v, &data, 1)
        .await
        .unwrap();
    let taken = state
        .create_appspace("b", "a.localhost", "notes", &v, &data, 1)
        .await
        .unwrap_err();
    assert!(matches!(taken, StateError::Conflict(_)), "{taken}");
    let missing = semver::Version::new(9, 9, 9);
    let unknown = state
        .create_appspace("c", "c.localhost", "notes", &missing, &data, 1)
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
async fn versions_whose_files_vanished_are_forgotten() {
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
    state
        .create_appspace(
            "notes",
            "notes.localhost",
            "notes",
            &v.manifest.version,
            &tmp.path().join("d"),
            1,
        )
        .await
        .unwrap();
    drop(state);
    // Someone deleted the files behind the host's back.
    fs::set_permissions(&v.dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::remove_dir_all(&v.dir).unwrap();
    let state = State::open(&dir).await.unwrap();
    assert!(!state
        .has_version("notes", &v.manifest.version)
        .await
        .unwrap());
    assert!(state.appspaces().await.unwrap().is_empty());
}
