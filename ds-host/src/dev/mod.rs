//! `ds-host --dev`: a complete host with no configuration. The bundled
//! example apps are installed into the state directory's app store and get
//! one appspace each, served at `<name>.localhost`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tracing::{info, warn};

pub mod watch;

use crate::appspace::AppspaceConfig;
use crate::package::{InstallError, PackageLimits};
use crate::state::{DevPackage, State, StateError};

const NATIVE_MANIFEST: &str = include_str!("../../../packaging/examples/hello-native/ds-app.toml");
const DENO_MANIFEST: &str = include_str!("../../../packaging/examples/hello-deno/ds-app.toml");
const DENO_MAIN: &str = include_str!("../../../packaging/examples/hello-deno/main.ts");

/// Why dev mode could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// Writing a package or data directory failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The state store or an install failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The state directory is inside a package given with `--app`.
    #[error(
        "the state directory {state} is inside the package {package}: run from the folder above it (ds-host --dev --app ./NAME) or pass --state-dir outside the package"
    )]
    StateInPackage {
        /// The state directory.
        state: PathBuf,
        /// The package.
        package: PathBuf,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DevError {
    let path = path.to_owned();
    move |source| DevError::Io { what, path, source }
}

/// Writes a bundled package's files under `state/packages/<dir>` and
/// returns that directory.
fn write_bundled(
    state: &Path,
    dir: &str,
    files: &[(&str, Vec<u8>, u32)],
) -> Result<PathBuf, DevError> {
    let pkg = state.join("packages").join(dir);
    let _ = fs::remove_dir_all(&pkg);
    fs::create_dir_all(&pkg).map_err(io("creating", &pkg))?;
    for (name, bytes, mode) in files {
        let path = pkg.join(name);
        fs::write(&path, bytes).map_err(io("writing", &path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(*mode))
            .map_err(io("chmod", &path))?;
    }
    Ok(pkg)
}

/// Installs `package` unless that version is installed already; returns
/// the app's name and version.
async fn ensure_installed(
    state: &State,
    package: &Path,
) -> Result<(String, semver::Version), DevError> {
    match state.install(package, &PackageLimits::default()).await {
        Ok(v) => Ok((v.manifest.name, v.manifest.version)),
        Err(StateError::Install(InstallError::DuplicateVersion { name, version })) => {
            Ok((name, version))
        }
        Err(e) => Err(e.into()),
    }
}

/// Refuses a state directory inside an `--app` package directory (the
/// default `./.ds-dev` run from the package folder): every install would
/// copy the state into the package, and every write to it would be a
/// change to the package. Checked before anything is written.
pub fn check_apart(state_dir: &Path, apps: &[PathBuf]) -> Result<(), DevError> {
    for app in apps.iter().filter(|a| a.is_dir()) {
        let within = |pkg: &Path| state_dir.starts_with(pkg);
        let absolute = std::path::absolute(app).unwrap_or_else(|_| app.clone());
        let real = fs::canonicalize(app).unwrap_or_else(|_| absolute.clone());
        if within(&absolute) || within(&real) {
            return Err(DevError::StateInPackage {
                state: state_dir.to_owned(),
                package: app.clone(),
            });
        }
    }
    Ok(())
}

/// Installs the bundled examples that can run here (and `extra` packages,
/// e.g. an app under development), gives each app an appspace at
/// `<name>.localhost` unless it has one, and returns every appspace. The
/// native example's binary is looked for next to `ds-host` (Cargo builds
/// it there); the Deno example needs a Deno binary.
pub async fn prepare(
    state_dir: &Path,
    deno: Option<&Path>,
    extra: &[PathBuf],
    disks: &crate::disk::Disks,
) -> Result<(State, Vec<AppspaceConfig>), DevError> {
    let state = State::open(state_dir).await?;
    let mut packages = Vec::new();
    let native_bin = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("hello-native")));
    match native_bin.as_deref().map(fs::read) {
        Some(Ok(binary)) => packages.push(write_bundled(
            state_dir,
            "hello-native",
            &[("ds-app.toml", NATIVE_MANIFEST.into(), 0o644), ("hello-native", binary, 0o755)],
        )?),
        _ => warn!("hello-native is not built next to ds-host (cargo build -p hello-native); not serving it"),
    }
    if deno.is_some() {
        packages.push(write_bundled(
            state_dir,
            "hello-deno",
            &[
                ("ds-app.toml", DENO_MANIFEST.into(), 0o644),
                ("main.ts", DENO_MAIN.into(), 0o644),
            ],
        )?);
    } else {
        warn!("no Deno binary (set DS_DENO); not serving hello-deno");
    }
    let bundled = packages.len();
    packages.extend(extra.iter().cloned());

    for (i, package) in packages.iter().enumerate() {
        let (name, version) = if i < bundled {
            ensure_installed(&state, package).await?
        } else {
            // An app under development: what is in its folder now, even
            // over the same version installed by an earlier run.
            let limits = PackageLimits::default();
            let m = match state.stage_dev(package, &limits).await? {
                DevPackage::Staged(staged) => state.reinstall_dev(staged).await?.manifest,
                DevPackage::Installed(v) => v.manifest,
            };
            (m.name, m.version)
        };
        // The disk is made (or mounted) with every other appspace's at
        // start-up.
        let data_dir = disks.data_dir(&state_dir.join("appspaces").join(&name));
        // What the manifest asks for, as `appspace create` gives it; never
        // its egress requests (only an admin grants those).
        let manifest = state.manifest(&name, &version).await?;
        let memory = manifest.memory_bytes.unwrap_or(256 << 20);
        let disk = manifest.disk_bytes.unwrap_or_else(|| disks.default_bytes());
        let domain = format!("{name}.localhost");
        match state
            .create_appspace(
                &name,
                &domain,
                &name,
                &version,
                memory,
                crate::state::Storage {
                    data_dir: &data_dir,
                    disk: (disks.kind(), disk),
                    pending: None,
                },
            )
            .await
        {
            Ok(()) => info!(appspace = %name, %version, "appspace created"),
            Err(StateError::Conflict(_)) => {} // it has one from an earlier run
            Err(e) => return Err(e.into()),
        }
    }

    let appspaces = state
        .appspaces()
        .await?
        .into_iter()
        .map(AppspaceConfig::from_record)
        .collect();
    if deno.is_none() {
        warn!("no Deno binary: Deno appspaces cannot start");
    }
    Ok((state, appspaces))
}
