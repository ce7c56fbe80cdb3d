//! The supervisor's one home for appspaces: the registry every part
//! shares (the front door's route table is made from it and follows its
//! changes, the admin API changes it, shutdown walks it; later the
//! dashboard, backups, upgrades and metrics will too), with the launcher
//! that starts sandboxes and the timing of their lives.
//!
//! Reads never lock: the registry is an immutable map swapped whole
//! (`arc-swap`) when an admin adds or removes an appspace. Writers are
//! serialised by a plain mutex and are rare; each change bumps a version
//! the front door's keeper watches.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::appspace::{Appspace, Launcher, Lifecycle};

type Table = HashMap<String, Arc<Appspace>>;

/// Every appspace this host serves, and how they are run.
#[derive(Debug)]
pub struct Host {
    /// By lower-case domain.
    by_domain: ArcSwap<Table>,
    /// Serialises changes to `by_domain` (readers never take it).
    changing: std::sync::Mutex<()>,
    /// How sandboxes are started.
    pub launcher: Arc<Launcher>,
    /// The domain under which appspaces live (`localhost` in dev mode).
    pub base_domain: String,
    /// Start, idle and stop timing.
    pub lifecycle: Lifecycle,
    /// Set once the host is shutting down: nothing starts any more.
    stopping: AtomicBool,
    /// Bumped on every change of the table.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Host {
    /// A host serving nothing yet.
    pub fn new(launcher: Launcher, base_domain: String, lifecycle: Lifecycle) -> Self {
        Self {
            by_domain: ArcSwap::from_pointee(Table::new()),
            changing: std::sync::Mutex::new(()),
            launcher: Arc::new(launcher),
            base_domain,
            lifecycle,
            stopping: AtomicBool::new(false),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Sees every change of the table (domains added or removed).
    pub fn watch_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn change(&self, f: impl FnOnce(&mut Table)) {
        let _one_writer = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        let mut table = Table::clone(&self.by_domain.load());
        f(&mut table);
        self.by_domain.store(Arc::new(table));
        self.changes.send_modify(|v| *v += 1);
    }

    /// Serves `appspace` at its domain (replacing what was there).
    pub fn add(&self, appspace: Arc<Appspace>) {
        let domain = appspace.config.domain.to_ascii_lowercase();
        self.change(|t| {
            t.insert(domain, appspace);
        });
    }

    /// Serves `new` in place of `old`, if `old` is still what its domain
    /// serves (an appspace deleted meanwhile is not brought back);
    /// returns whether it was replaced.
    pub fn replace(&self, old: &Arc<Appspace>, new: Arc<Appspace>) -> bool {
        let domain = new.config.domain.to_ascii_lowercase();
        let mut replaced = false;
        self.change(|t| {
            if t.get(&domain)
                .is_some_and(|current| Arc::ptr_eq(current, old))
            {
                t.insert(domain, new);
                replaced = true;
            }
        });
        replaced
    }

    /// Stops serving the appspace whose domain or name is `key`; returns it.
    pub fn remove(&self, key: &str) -> Option<Arc<Appspace>> {
        let mut removed = None;
        self.change(|t| {
            let domain = t
                .iter()
                .find(|(d, a)| *d == key || a.config.name == key)
                .map(|(d, _)| d.clone());
            removed = domain.and_then(|d| t.remove(&d));
        });
        removed
    }

    /// The appspace whose domain or name is `key`.
    pub fn get(&self, key: &str) -> Option<Arc<Appspace>> {
        let table = self.by_domain.load();
        table
            .get(key)
            .or_else(|| table.values().find(|a| a.config.name == key))
            .cloned()
    }

    /// What serves `old`'s appspace now, when that is no longer `old`
    /// (an upgrade or a restore replaced it).
    pub(crate) fn successor(&self, old: &Arc<Appspace>) -> Option<Arc<Appspace>> {
        self.get(&old.config.name)
            .filter(|now| now.config.name == old.config.name && !Arc::ptr_eq(now, old))
    }

    /// A running Deno app holds its egress allowlist in its own
    /// permissions (`--allow-net`), fixed when it started: after a change
    /// it is stopped gracefully (SIGTERM, its grace) and started again with
    /// the new list, in the background. Native apps are checked per
    /// connection by the host alone, and keep running.
    pub(crate) fn restart_for_allowlist(&self, appspace: &Arc<Appspace>) {
        if appspace.config.runtime != ds_sandbox::spec::Runtime::Deno || !appspace.is_running() {
            return;
        }
        let (launcher, life) = (self.launcher.clone(), self.lifecycle);
        let appspace = appspace.clone();
        tokio::spawn(async move {
            appspace.stop(life.stop_grace).await;
            if let Err(e) = appspace.start_now(&launcher, &life).await {
                tracing::warn!(appspace = %appspace.config.name, error = %e, "restarting after an allowlist change");
            }
        });
    }

    /// Every appspace served.
    pub fn all(&self) -> Vec<Arc<Appspace>> {
        self.by_domain.load().values().cloned().collect()
    }

    /// Whether the host is shutting down (requests get a 503 and start
    /// nothing).
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// The start of shutdown: from now on nothing starts, and requests
    /// get a 503.
    pub fn begin_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Shutdown: [`Host::begin_stopping`], then every appspace is retired
    /// and its sandbox stopped (all at once, each with its grace); returns
    /// when all have.
    pub async fn stop_all(&self) {
        self.begin_stopping();
        let mut stops = tokio::task::JoinSet::new();
        for appspace in self.all() {
            let grace = self.lifecycle.stop_grace;
            stops.spawn(async move { appspace.retire(grace).await });
        }
        while stops.join_next().await.is_some() {}
    }

    /// After [`Host::stop_all`]: waits, up to `within` for all of them
    /// together, for appspaces' last egress attempts to be recorded;
    /// returns the names of those still under way.
    pub async fn settle_egress(&self, within: Duration) -> Vec<String> {
        let settle_by = tokio::time::Instant::now() + within;
        let mut unsettled = Vec::new();
        for appspace in self.all() {
            let left = settle_by.saturating_duration_since(tokio::time::Instant::now());
            if !appspace.egress().settled(left).await {
                unsettled.push(appspace.config.name.clone());
            }
        }
        unsettled
    }
}
