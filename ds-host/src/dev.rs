//! `ds-host --dev`: a complete host with no configuration. The bundled
//! example apps are installed into the state directory's app store and get
//! one appspace each, served at `<name>.localhost`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ds_sandbox::spec::Runtime;
use tracing::{info, warn};

use crate::appspace::AppspaceConfig;
use crate::package::{AppStore, InstallError, InstalledVersion, PackageLimits};

const NATIVE_MANIFEST: &str = include_str!("../../packaging/examples/hello-native/ds-app.toml");
const DENO_MANIFEST: &str = include_str!("../../packaging/examples/hello-deno/ds-app.toml");
const DENO_MAIN: &str = include_str!("../../packaging/examples/hello-deno/main.ts");

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
    /// Installing a bundled app failed.
    #[error("installing a bundled example: {0}")]
    Install(#[from] InstallError),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DevError {
    let path = path.to_owned();
    move |source| DevError::Io { what, path, source }
}

/// Installs (if not yet installed) the package described by `files`,
/// assembled under `state/packages/<dir>`.
fn install_bundled(
    store: &AppStore,
    state: &Path,
    dir: &str,
    files: &[(&str, Vec<u8>, u32)],
) -> Result<InstalledVersion, DevError> {
    let pkg = state.join("packages").join(dir);
    let _ = fs::remove_dir_all(&pkg);
    fs::create_dir_all(&pkg).map_err(io("creating", &pkg))?;
    for (name, bytes, mode) in files {
        let path = pkg.join(name);
        fs::write(&path, bytes).map_err(io("writing", &path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(*mode))
            .map_err(io("chmod", &path))?;
    }
    let manifest_text = String::from_utf8_lossy(&files[0].1).into_owned();
    let manifest: crate::package::Manifest = manifest_text.parse().map_err(InstallError::from)?;
    let existing = store.version_dir(&manifest.name, &manifest.version);
    if existing.exists() {
        return Ok(InstalledVersion {
            manifest,
            dir: existing,
        });
    }
    Ok(store.install(&pkg, &PackageLimits::default())?)
}

/// Installs the bundled examples that can run here and returns their
/// appspaces. The native example's binary is looked for next to `ds-host`
/// (Cargo builds it there); the Deno example needs a Deno binary.
///
/// `extra` packages (directories or `.tar.gz`, e.g. an app under
/// development) are installed too and get an appspace each; a version
/// already installed is reused.
pub fn prepare(
    state: &Path,
    deno: Option<&Path>,
    extra: &[PathBuf],
) -> Result<Vec<AppspaceConfig>, DevError> {
    let store = AppStore::open(state.join("apps"))?;
    let mut installed = Vec::new();
    for package in extra {
        installed.push(match store.install(package, &PackageLimits::default()) {
            Ok(v) => v,
            Err(InstallError::DuplicateVersion { name, version }) => {
                let dir = store.version_dir(&name, &version);
                let text = fs::read_to_string(dir.join(crate::package::MANIFEST_FILE))
                    .map_err(io("reading the manifest in", &dir))?;
                let manifest = text.parse().map_err(InstallError::from)?;
                InstalledVersion { manifest, dir }
            }
            Err(e) => return Err(e.into()),
        });
    }
    let native_bin = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("hello-native")));
    match native_bin.as_deref().map(fs::read) {
        Some(Ok(binary)) => installed.push(install_bundled(
            &store,
            state,
            "hello-native",
            &[("ds-app.toml", NATIVE_MANIFEST.into(), 0o644), ("hello-native", binary, 0o755)],
        )?),
        _ => warn!("hello-native is not built next to ds-host (cargo build -p hello-native); not serving it"),
    }
    if deno.is_some() {
        installed.push(install_bundled(
            &store,
            state,
            "hello-deno",
            &[
                ("ds-app.toml", DENO_MANIFEST.into(), 0o644),
                ("main.ts", DENO_MAIN.into(), 0o644),
            ],
        )?);
    } else {
        warn!("no Deno binary (set DS_DENO); not serving hello-deno");
    }

    let mut appspaces = Vec::new();
    for v in installed {
        let m = &v.manifest;
        let appspace_dir = state.join("appspaces").join(&m.name);
        let data_dir = appspace_dir.join("data");
        fs::create_dir_all(&data_dir).map_err(io("creating", &data_dir))?;
        let entry = format!("/app/{}", m.entrypoint.display());
        let command = match m.runtime {
            Runtime::Native => vec![entry],
            Runtime::Deno => [
                "deno",
                "run",
                "--allow-net",
                "--allow-read",
                "--allow-write",
                "--allow-env",
                "--allow-sys",
            ]
            .into_iter()
            .map(String::from)
            .chain([entry])
            .collect(),
        };
        info!(appspace = %m.name, version = %m.version, "bundled app installed");
        appspaces.push(AppspaceConfig {
            name: m.name.clone(),
            app_dir: v.dir.clone(),
            data_dir,
            runtime: m.runtime,
            command,
            memory_bytes: m.memory_bytes.unwrap_or(256 << 20),
            log_dir: appspace_dir.join("log"),
        });
    }
    Ok(appspaces)
}
