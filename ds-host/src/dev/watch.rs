//! `ds-host --dev --app DIR --watch`: the author's loop. When a file under
//! DIR changes (and then nothing for a moment: an editor's save is several
//! events), the package is validated exactly as an install and put over
//! the installed files of the same version, and its appspace is restarted
//! with them; a package that does not validate is reported and the
//! previous files keep serving. The appspace's log (the app's stdout and
//! stderr, the host's lines about it) is copied to the terminal.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher;

use crate::appspace::{Appspace, AppspaceConfig};
use crate::host::Host;
use crate::package::PackageLimits;
use crate::state::{DevPackage, State};

/// Quiet time after the last change before reinstalling.
const SETTLE: Duration = Duration::from_millis(300);

/// Why the watch could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// `--watch` needs a package directory.
    #[error("--watch {0}: not a package directory (a .tar.gz cannot be watched)")]
    NotADirectory(PathBuf),
    /// Its manifest could not be read.
    #[error("--watch {path}: {why}")]
    Manifest {
        /// The package.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The kernel's file notification could not be set up.
    #[error("--watch {path}: watching for changes: {source}")]
    Notify {
        /// The package.
        path: PathBuf,
        /// Why.
        source: notify::Error,
    },
}

/// Watches the package directory `dir` (installed by [`super::prepare`],
/// served by the appspace named after its app) until the host stops.
pub fn spawn(dir: PathBuf, state: Arc<State>, host: Arc<Host>) -> Result<(), WatchError> {
    if !dir.is_dir() {
        return Err(WatchError::NotADirectory(dir));
    }
    let manifest_file = dir.join(crate::package::MANIFEST_FILE);
    let name = std::fs::read_to_string(&manifest_file)
        .map_err(|e| e.to_string())
        .and_then(|t| crate::package::parse_manifest(&t).map_err(|e| e.to_string()))
        .map_err(|why| WatchError::Manifest {
            path: dir.clone(),
            why,
        })?
        .name;
    let (tx, mut changed) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.send(());
        }
    })
    .map_err(|source| WatchError::Notify {
        path: dir.clone(),
        source,
    })?;
    watcher
        .watch(&dir, notify::RecursiveMode::Recursive)
        .map_err(|source| WatchError::Notify {
            path: dir.clone(),
            source,
        })?;
    if let Some(live) = host.get(&name) {
        echo_log(&name, &live.config.log_dir);
    }
    println!(
        "ds-host (dev): watching {} for changes to {name}",
        dir.display()
    );
    tokio::spawn(async move {
        let _watching = watcher;
        while changed.recv().await.is_some() {
            // Let the burst of events of one save end.
            while let Ok(Some(())) = tokio::time::timeout(SETTLE, changed.recv()).await {}
            reload(&dir, &name, &state, &host).await;
        }
    });
    Ok(())
}

/// Reinstalls `dir` over its version and restarts appspace `name`.
async fn reload(dir: &Path, name: &str, state: &State, host: &Host) {
    let Some(live) = host.get(name) else {
        println!("ds-host (dev): {name} is no longer served; not reinstalling it");
        return;
    };
    // Validated while the previous files still serve.
    let staged = match state.stage_dev(dir, &PackageLimits::default()).await {
        Ok(DevPackage::Staged(staged)) => staged,
        Ok(DevPackage::Installed(v)) => {
            println!(
                "ds-host (dev): installed {} {} beside {}; `dsctl appspace upgrade {name} --version {}` moves the appspace to it (its migration runs)",
                v.manifest.name, v.manifest.version, live.config.version, v.manifest.version
            );
            return;
        }
        Err(e) => {
            println!(
                "ds-host (dev): {} not reinstalled: {e}; the previous files still serve",
                dir.display()
            );
            return;
        }
    };
    // The successor takes the old one's place before the old one is back
    // in service: requests that waited meanwhile find it retired and go to
    // the successor, which runs the new files with the (possibly new)
    // command and environment of the manifest.
    let (_, reloaded) = live
        .out_of_service(
            host.lifecycle.stop_grace,
            "reinstalling its package (dev --watch)",
            async {
                let failed = |e: &dyn std::fmt::Display| format!("{name}: not reinstalled: {e}");
                let version = state
                    .reinstall_dev(staged)
                    .await
                    .map_err(|e| failed(&e))?
                    .manifest
                    .version;
                let rec = state.appspace(name).await.map_err(|e| failed(&e))?;
                let next = Appspace::new(AppspaceConfig::from_record(rec), &host.lifecycle)
                    .map_err(|e| failed(&e))?;
                let next = Arc::new(next);
                crate::upgrade::hand_over(state, host, &live, &next).await;
                Ok::<_, String>((version, next))
            },
        )
        .await;
    let (version, next) = match reloaded {
        Ok(r) => r,
        Err(why) => {
            println!("ds-host (dev): {why}");
            return;
        }
    };
    println!(
        "ds-host (dev): reinstalled {name} {version} from {}; restarting it",
        dir.display()
    );
    match next.start_now(&host.launcher, &host.lifecycle).await {
        Ok(()) => println!("ds-host (dev): {name} is running"),
        Err(e) => println!("ds-host (dev): {name} did not start: {e}"),
    }
}

/// Copies what is logged from now on in `log_dir` to stdout, each line
/// prefixed with the appspace's name.
fn echo_log(name: &str, log_dir: &Path) {
    let offset = crate::admin::logs::last_lines(log_dir, 0).map_or(0, |(_, end)| end);
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    crate::admin::logs::follow(log_dir.to_owned(), offset, tx);
    let prefix = format!("[{name}] ");
    tokio::spawn(async move {
        let mut partial = String::new();
        while let Some(Ok(chunk)) = rx.recv().await {
            partial.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = partial.find('\n') {
                println!("{prefix}{}", &partial[..end]);
                partial.drain(..=end);
            }
        }
    });
}
