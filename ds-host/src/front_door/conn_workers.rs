//! The front door's connection workers: one thread per core, each with a
//! single-threaded tokio runtime, each serving whole client connections.
//!
//! Why: a proxied request is a chain of wake-ups (client connection, the
//! request's handler, the keep-alive connection to the app and back). On
//! a work-stealing pool they hop between threads, and every hop is a futex
//! wake-up and a cache miss; here a connection, its requests and the app
//! connections it uses (see [`super::upstream_pool`]) stay on one thread,
//! as in nginx's worker model. Measured: ~25% less CPU per proxied request
//! and ~30% more requests per second than the same code on the pool.
//!
//! The accept loops stay on the main runtime and hand each accepted socket
//! to the worker with the fewest open connections (a WebSocket splice
//! counts as one until it ends: [`count_on_this_worker`]).
//!
//! A worker never stops: tasks spawned while serving (a sandbox that a
//! request started, with its channel's driver; a WebSocket splice) live on
//! its runtime, and they must keep running while the host shuts the
//! appspaces down. The threads end with the process.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::debug;

type ServeFn = Box<dyn FnOnce(TcpStream) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// An accepted connection and what to do with it, on its way to a worker.
struct Job {
    tcp: std::net::TcpStream,
    serve: ServeFn,
}

struct Worker {
    jobs: mpsc::UnboundedSender<Job>,
    /// Connections it is serving now.
    open: Arc<AtomicUsize>,
}

/// The connection workers (see the module documentation).
pub struct ConnWorkers {
    workers: Vec<Worker>,
}

impl std::fmt::Debug for ConnWorkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnWorkers")
            .field("workers", &self.workers.len())
            .finish()
    }
}

/// Counts as one open connection of a worker until dropped.
#[derive(Debug)]
pub struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    fn new(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self(open.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

thread_local! {
    /// On a worker's thread, that worker's open-connection count.
    static THIS_WORKER: std::cell::RefCell<Option<Arc<AtomicUsize>>> =
        const { std::cell::RefCell::new(None) };
}

/// Makes a task that outlives its connection's service (a WebSocket
/// splice after the upgrade) count as one of this worker's connections,
/// so that the least-busy choice sees it. `None` off the workers.
pub fn count_on_this_worker() -> Option<OpenGuard> {
    THIS_WORKER.with(|w| w.borrow().as_ref().map(OpenGuard::new))
}

/// The workers' scheduling priority (nice value), above the apps' 0, as
/// nginx's `worker_priority` or HAProxy's `nice` allow. Why: on a busy
/// machine each request the front door sends wakes an app process, and at
/// equal priority the woken app preempted the worker mid-batch (about one
/// involuntary switch per request here), stalling every other connection
/// of that worker; apps also must not be able to slow the door to other
/// appspaces. Measured on the 2-core machine: p99 latency roughly halved
/// and 10-30% more requests per second. Apps never inherit it: the
/// sandbox resets its priority to the default before starting them.
///
/// The supervisor sets it on the front door's first thread before the
/// front door makes any other (a thread starts at its creator's nice
/// value), so the confined front door needs no `CAP_SYS_NICE`.
pub const WORKER_NICE: i32 = -5;

/// How often a worker's runtime wakes on its own (see [`heartbeat`]).
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(1);

/// Wakes the worker every [`HEARTBEAT`], so that its timer driver always
/// has a deadline that near. Why: every request arms timers (hyper's
/// header-read timeout, the response and body-idle timeouts), and tokio
/// writes the runtime's eventfd whenever a new timer is due before the
/// driver's next planned wake-up, even from the runtime's own thread.
/// Without a nearer deadline that was one `write` per four requests (the
/// 10 s header timeout was the earliest); with it, a new timer (seconds
/// away) is never the earliest.
async fn heartbeat() {
    let mut ticks = tokio::time::interval(HEARTBEAT);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
    }
}

impl ConnWorkers {
    /// Starts `count` workers (at least one), named `ds-front-N`.
    pub fn start(count: usize) -> io::Result<Self> {
        let mut workers = Vec::new();
        for n in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
            let open = Arc::new(AtomicUsize::new(0));
            let counted = open.clone();
            std::thread::Builder::new()
                .name(format!("ds-front-{n}"))
                .spawn(move || {
                    THIS_WORKER.with(|w| *w.borrow_mut() = Some(counted));
                    runtime.block_on(async move {
                        tokio::spawn(heartbeat());
                        while let Some(job) = queue.recv().await {
                            // Registered with this runtime's reactor, so
                            // that its readiness wakes this thread only.
                            let tcp = job
                                .tcp
                                .set_nonblocking(true)
                                .and_then(|()| TcpStream::from_std(job.tcp));
                            match tcp {
                                Ok(tcp) => drop(tokio::spawn((job.serve)(tcp))),
                                Err(e) => debug!(error = %e, "could not adopt a connection"),
                            }
                        }
                        // All senders gone: the host is exiting. Tasks
                        // spawned here keep running until it has.
                        std::future::pending::<()>().await;
                    });
                })?;
            workers.push(Worker { jobs, open });
        }
        Ok(Self { workers })
    }

    /// One worker per available core.
    pub fn per_core() -> io::Result<Self> {
        Self::start(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Serves `tcp` with `serve` on the least busy worker (on this
    /// runtime if that worker's thread is gone; not at all, with a debug
    /// line, if the socket cannot be detached from this runtime's reactor).
    pub fn dispatch<F, Fut>(&self, tcp: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(worker) = self
            .workers
            .iter()
            .min_by_key(|w| w.open.load(Ordering::Relaxed))
        else {
            tokio::spawn(serve(tcp));
            return;
        };
        let std_tcp = match tcp.into_std() {
            Ok(t) => t,
            Err(e) => {
                debug!(error = %e, "could not detach an accepted connection");
                return;
            }
        };
        let guard = OpenGuard::new(&worker.open);
        let job = Job {
            tcp: std_tcp,
            serve: Box::new(move |tcp| {
                Box::pin(async move {
                    let _open = guard;
                    serve(tcp).await;
                })
            }),
        };
        if let Err(mpsc::error::SendError(job)) = worker.jobs.send(job) {
            // Its thread is gone (it cannot end on its own; a panic outside
            // a task would do it): serve here rather than drop the client.
            debug!("a connection worker is gone; serving on the main runtime");
            if let Ok(tcp) = TcpStream::from_std(job.tcp) {
                tokio::spawn((job.serve)(tcp));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn connections_are_served_on_the_workers_and_counted() {
        let workers = Arc::new(ConnWorkers::start(2).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = {
            let workers = workers.clone();
            tokio::spawn(async move {
                for _ in 0..4 {
                    let (tcp, _) = listener.accept().await.unwrap();
                    workers.dispatch(tcp, |mut tcp| async move {
                        let name = std::thread::current().name().unwrap_or("").to_owned();
                        let mut byte = [0u8; 1];
                        // Held open until the client says so.
                        tcp.read_exact(&mut byte).await.unwrap();
                        tcp.write_all(name.as_bytes()).await.unwrap();
                    });
                }
            })
        };
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(TcpStream::connect(addr).await.unwrap());
        }
        server.await.unwrap();
        // Least busy first: two open connections on each worker.
        let open: Vec<usize> = workers
            .workers
            .iter()
            .map(|w| w.open.load(Ordering::Relaxed))
            .collect();
        assert_eq!(open, [2, 2]);
        let mut names = Vec::new();
        for mut c in clients {
            c.write_all(b"x").await.unwrap();
            let mut name = String::new();
            c.read_to_string(&mut name).await.unwrap();
            names.push(name);
        }
        names.sort();
        assert_eq!(
            names,
            ["ds-front-0", "ds-front-0", "ds-front-1", "ds-front-1"]
        );
        // Finished connections are no longer counted.
        for _ in 0..100 {
            if workers
                .workers
                .iter()
                .all(|w| w.open.load(Ordering::Relaxed) == 0)
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("open counts never went back to zero");
    }

    async fn open_count(workers: &ConnWorkers, wanted: usize) -> bool {
        for _ in 0..200 {
            if workers.workers[0].open.load(Ordering::Relaxed) == wanted {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_task_that_outlives_its_connection_can_keep_counting() {
        assert!(
            count_on_this_worker().is_none(),
            "a test thread is no worker"
        );
        let workers = Arc::new(ConnWorkers::start(1).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let mut rest = Vec::new();
            c.read_to_end(&mut rest).await.unwrap();
        });
        let (tcp, _) = listener.accept().await.unwrap();
        workers.dispatch(tcp, move |tcp| async move {
            // Like an upgrade: the splice outlives the service.
            let load = count_on_this_worker().expect("on a worker");
            tokio::spawn(async move {
                let _load = load;
                let _ = released.await;
            });
            drop(tcp);
        });
        client.await.unwrap();
        assert!(
            open_count(&workers, 1).await,
            "the splice stopped counting with its connection"
        );
        release.send(()).unwrap();
        assert!(open_count(&workers, 0).await, "the count never went down");
    }
}
