//! The front door's own view of the appspaces: the route table the
//! supervisor sends (domain to appspace), and per appspace the link to its
//! running sandbox, its pool of keep-alive connections, and what it
//! counts. A warm request takes no lock: the table and each link are read
//! through atomic pointers, the counters are atomics.
//!
//! Idleness is decided here, where requests are seen: an appspace whose
//! link served nothing for the idle timeout is let go (the next request
//! asks for a start) and the supervisor is told to stop that run.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};

use super::app_link::{AppLink, LinkCounters};
use super::upstream_pool::UpstreamPool;
use crate::front_link::messages::{self, Usage};

/// Request timing the front door applies.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Time for the app to start answering.
    pub response_timeout: Duration,
    /// Longest pause in a body.
    pub body_idle_timeout: Duration,
    /// A link unused this long is let go.
    pub idle_timeout: Duration,
    /// How long the supervisor may take to answer a start.
    pub start_answer_timeout: Duration,
}

/// One appspace, as the front door sees it.
#[derive(Debug)]
pub struct Route {
    /// Its name (what the supervisor knows it by).
    pub name: String,
    /// The link to its running sandbox, if the front door holds one.
    link: ArcSwapOption<AppLink>,
    /// Serialises asking for a start (concurrent first requests share one).
    pub(crate) starting: tokio::sync::Mutex<()>,
    /// Its keep-alive connections to the app.
    pub pool: Arc<UpstreamPool>,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Milliseconds after `epoch` of the last request's start or end.
    last_used_ms: AtomicU64,
    epoch: Instant,
    counters: Arc<LinkCounters>,
    /// The parent of its requests' spans: made once, so that a request's
    /// own span formats only what differs per request.
    span: tracing::Span,
}

/// Marks a request in flight until dropped (kept by the response body, so
/// a long download counts until its last byte).
#[derive(Debug)]
pub struct RequestGuard(Arc<Route>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.touch();
    }
}

impl Route {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            link: ArcSwapOption::empty(),
            starting: tokio::sync::Mutex::new(()),
            pool: Arc::default(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            last_used_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            counters: Arc::default(),
            span: tracing::info_span!(parent: None, "appspace", appspace = name),
        }
    }

    /// Its span, the parent of its requests' spans.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_used_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Counts a request as in flight until the guard is dropped.
    pub fn begin_request(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.touch();
        RequestGuard(self.clone())
    }

    /// The link to its running sandbox, if held and the sandbox is alive.
    pub fn live_link(&self) -> Option<Arc<AppLink>> {
        self.link.load_full().filter(|l| !l.is_closed())
    }

    /// Holds a link to the sandbox run the supervisor announced.
    pub fn adopt(&self, handoff: Arc<ds_proto::Handoff>, run: u64, app_port: u16) -> Arc<AppLink> {
        let link = Arc::new(AppLink::new(handoff, app_port, run, self.counters.clone()));
        self.link.store(Some(link.clone()));
        self.touch();
        link
    }

    /// Lets go of the link if it served nothing for `idle`; returns the
    /// run let go. A request that began meanwhile keeps it.
    fn release_if_idle(&self, idle: Duration) -> Option<u64> {
        let link = self.link.load_full()?;
        if link.is_closed() {
            self.link.store(None);
            return None;
        }
        let idle_for = self.epoch.elapsed().saturating_sub(Duration::from_millis(
            self.last_used_ms.load(Ordering::Relaxed),
        ));
        if self.in_flight.load(Ordering::SeqCst) != 0 || idle_for < idle {
            return None;
        }
        self.link.store(None);
        // A request counts itself before it reads the link: one that did
        // so before the store above may hold the link; it keeps it.
        if self.in_flight.load(Ordering::SeqCst) != 0 {
            self.link.store(Some(link));
            return None;
        }
        Some(link.id())
    }

    fn usage(&self) -> Usage {
        Usage {
            name: self.name.clone(),
            requests: self.requests.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed) as u64,
            connections_handed_over: self.counters.handed_over.load(Ordering::Relaxed),
            connections_refused: self.counters.refused.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Default)]
struct Table {
    by_domain: HashMap<String, Arc<Route>>,
    by_name: HashMap<String, Arc<Route>>,
}

/// Every route the front door serves.
#[derive(Debug)]
pub struct Routes {
    table: ArcSwap<Table>,
    /// Parts of a table still arriving.
    incoming: Mutex<Vec<messages::Route>>,
    stopping: AtomicBool,
    /// Request timing.
    pub timing: Timing,
}

impl Routes {
    /// No routes yet.
    pub fn new(timing: Timing) -> Self {
        Self {
            table: ArcSwap::from_pointee(Table::default()),
            incoming: Mutex::default(),
            stopping: AtomicBool::new(false),
            timing,
        }
    }

    /// Takes part of a new table; replaces the table with the last part.
    /// An appspace that stays keeps its link, pool and counts.
    pub fn receive(&self, part: Vec<messages::Route>, last: bool) {
        let mut incoming = self.incoming.lock().unwrap_or_else(|p| p.into_inner());
        incoming.extend(part);
        if !last {
            return;
        }
        let old = self.table.load();
        let mut table = Table::default();
        for r in incoming.drain(..) {
            let route = table
                .by_name
                .entry(r.name.clone())
                .or_insert_with(|| {
                    old.by_name
                        .get(&r.name)
                        .cloned()
                        .unwrap_or_else(|| Arc::new(Route::new(&r.name)))
                })
                .clone();
            table.by_domain.insert(r.domain.to_ascii_lowercase(), route);
        }
        self.table.store(Arc::new(table));
    }

    /// The route served at `domain` (lower case, no port, no trailing dot).
    pub fn at_domain(&self, domain: &str) -> Option<Arc<Route>> {
        self.table.load().by_domain.get(domain).cloned()
    }

    /// The route of the appspace `name`.
    pub fn named(&self, name: &str) -> Option<Arc<Route>> {
        self.table.load().by_name.get(name).cloned()
    }

    /// Every route's counts.
    pub fn usage(&self) -> Vec<Usage> {
        self.table
            .load()
            .by_name
            .values()
            .map(|r| r.usage())
            .collect()
    }

    /// Lets go of every link idle for the idle timeout; returns the
    /// appspaces and runs let go.
    pub fn release_idle(&self) -> Vec<(String, u64)> {
        self.table
            .load()
            .by_name
            .values()
            .filter_map(|r| {
                r.release_if_idle(self.timing.idle_timeout)
                    .map(|run| (r.name.clone(), run))
            })
            .collect()
    }

    /// The host is stopping: requests get a 503 from now on.
    pub fn begin_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Whether the host is stopping.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}
