//! `ds-host`: the daemon. `--dev` runs a complete host with no
//! configuration; `--config FILE` is the production entry point.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use ds_host::admin::peer::{AccessPolicy, AdminGroup};
use ds_host::admin::Admin;
use ds_host::appspace::{Appspace, AppspaceConfig, Launcher, Lifecycle};
use ds_host::cli::Cli;
use ds_host::config::HostConfig;
use ds_host::disk::{Disks, BROKEN as DISK_BROKEN};
use ds_host::egress::log_writer::EgressLogWriter;
use ds_host::egress::resolver::Resolver;
use ds_host::front_door::serve::ConnLimits;
use ds_host::front_link::messages::{Init, ListenerRole};
use ds_host::host::Host;
use ds_host::package::PackageLimits;
use ds_host::supervisor::front_door::{FrontDoor, Phase};

/// mimalloc instead of glibc's malloc: glibc returns freed memory at the
/// top of a heap to the kernel (trim threshold), so a proxy that allocates
/// and frees a frame-sized buffer per write keeps faulting fresh, zeroed
/// pages in. mimalloc keeps per-thread pages warm. The channel benchmark's
/// one-stream throughput went from 0.34x to 0.74-0.85x socketpair with this
/// alone (docs/performance.md). Built without transparent huge pages
/// (`no_thp`, see docs/dependencies.md) to keep small processes small.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Memory of an appspace whose manifest asks for none.
const DEFAULT_MEMORY: u64 = 256 << 20;

/// A binary next to ours (Cargo puts the workspace's binaries together),
/// else `$env`, else the PATH.
fn find_binary(name: &str, env: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let beside = std::env::current_exe().ok()?.parent()?.join(name);
    if beside.is_file() {
        return Some(beside);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn find_deno() -> Option<PathBuf> {
    find_binary("deno", "DS_DENO").or_else(|| {
        let local = PathBuf::from(".ds-tools/bin/deno");
        local.is_file().then(|| local.canonicalize().ok()).flatten()
    })
}

fn find_sandbox() -> anyhow::Result<PathBuf> {
    find_binary("ds-sandbox", "DS_SANDBOX")
        .context("ds-sandbox not found next to ds-host, in $DS_SANDBOX or on the PATH")
}

/// Where sandbox cgroups go: the delegated subtree under systemd (the host
/// moves itself into its `supervisor` leaf), else `ds/` at the root of
/// each hierarchy; a host that is not root has no say (the sandbox needs
/// a cgroup it may write to either way).
fn cgroup_placement() -> anyhow::Result<ds_sandbox::cgroup::Placement> {
    use ds_sandbox::cgroup::Placement;
    if !rustix::process::geteuid().is_root() {
        return Ok(Placement::fallback());
    }
    let placed = match Placement::detect() {
        Ok(placed) if placed.supervisor.is_none() => {
            Placement::fallback_for_host(std::process::id())
                .context("making this host's cgroup subtree")?
        }
        Ok(placed) => placed,
        // Without cgroups no sandbox starts; the host still serves its
        // error pages and admin API, and each start says why.
        Err(e @ ds_sandbox::cgroup::CgroupError::Unavailable) => {
            tracing::warn!(error = %e, "sandboxes cannot start");
            Placement::fallback()
        }
        Err(e) => return Err(e).context("placing sandbox cgroups in the delegated subtree"),
    };
    match &placed.supervisor {
        Some(leaf) => tracing::info!(
            supervisor = %leaf,
            appspaces = %placed.parent,
            "cgroups: in the delegated subtree"
        ),
        None => {
            tracing::debug!(parent = %placed.parent, "cgroups: no delegated subtree; under ds/host-<pid> at the hierarchy root")
        }
    }
    Ok(placed)
}

fn main() -> anyhow::Result<()> {
    // The front door's self-test confines the process for good, so it runs
    // before the runtime makes any thread (and is not a documented option).
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__front-selftest") {
        std::process::exit(ds_host::front_door::selftest::run(&args[2..]));
    }
    // The front door, started by the supervisor: it confines itself
    // before it makes any thread, too.
    if args.get(1).map(String::as_str) == Some("__front-door") {
        init_logging("ds-front");
        if let Err(e) = ds_host::front_door::process::run(&args[2..]) {
            tracing::error!(error = %e, "the front door stopped");
            eprintln!("ds-host: front door: {e}");
            std::process::exit(1);
        }
        std::process::exit(0);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(async_main())
}

async fn async_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging("ds-host");
    // Before anything is printed or served: a SIGTERM that arrives while
    // we start must stop us cleanly, not kill us.
    let stop = StopSignals::install()?;
    if let Some(file) = &cli.check_config {
        return check_config(file);
    }
    if let Some(dir) = &cli.self_signed_certificate {
        let cert = ds_host::front_door::tls::write_self_signed(dir, &cli.names)?;
        println!("ds-host: wrote {} and its key", cert.display());
        return Ok(());
    }
    if let (Some(repository), Some(key)) = (&cli.restore_from, &cli.key_file) {
        let (state_dir, disk_quota, disk_bytes, config_ssh) = match (&cli.config, cli.dev) {
            (Some(config), _) => {
                let c = HostConfig::load(config)?;
                let ssh = c.backups.ssh();
                (
                    c.state_dir,
                    c.appspaces.disk_quota,
                    c.appspaces.disk_bytes,
                    ssh,
                )
            }
            (None, true) => (
                std::path::absolute(&cli.state_dir).context("resolving --state-dir")?,
                cli.disk_quota,
                cli.disk_limit,
                None,
            ),
            (None, false) => bail!("--restore-from needs --config FILE or --dev --state-dir DIR"),
        };
        let disks = Disks::detect(disk_quota, &state_dir.join("appspaces"), disk_bytes)?;
        let ssh = cli_ssh(&cli).or(config_ssh);
        return restore_from(repository, ssh, key, &state_dir, &disks).await;
    }
    match (&cli.config, cli.dev) {
        (Some(config), _) => production(config, stop).await,
        (None, true) => dev(cli, stop).await,
        (None, false) => bail!("nothing to do: pass --dev, or --config FILE"),
    }
}

/// Logs go to the journal, with each span's fields as journal fields
/// (`APPSPACE`, and `METHOD`/`PATH` of a request at debug level), when
/// systemd connected our stderr to it; plain lines otherwise.
fn init_logging(identifier: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter =
        || tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if stderr_is_the_journal() {
        match tracing_journald::layer() {
            Ok(journal) => {
                tracing_subscriber::registry()
                    .with(filter())
                    .with(
                        journal
                            .with_field_prefix(None)
                            .with_syslog_identifier(identifier.into()),
                    )
                    .init();
                return;
            }
            Err(e) => eprintln!("ds-host: the journal's socket: {e}; logging plain lines"),
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .fmt_fields(ds_host::log_fields::LogFields)
        .init();
}

/// systemd's `JOURNAL_STREAM` (`device:inode`) names our stderr: the
/// service's output goes to the journal (not when a user redirected it).
fn stderr_is_the_journal() -> bool {
    let Some(stream) = std::env::var("JOURNAL_STREAM").ok() else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    let Ok(stat) = rustix::fs::fstat(std::io::stderr()) else {
        return false;
    };
    dev.parse() == Ok(stat.st_dev) && ino.parse() == Ok(stat.st_ino)
}

/// Tells systemd (`Type=notify`) something; a no-op outside systemd.
fn notify_systemd(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "notifying systemd");
    }
}

/// `--check-config`: everything `--config` reads before it changes
/// anything (the file, the certificate and key, the admin group, the
/// binaries it names), checked, and nothing started or written.
fn check_config(file: &Path) -> anyhow::Result<()> {
    let config = HostConfig::load(file)?;
    ds_host::front_door::tls::read_pem(&config.https.certificate, &config.https.private_key)?;
    if let Some(group) = config.admin.group.as_deref() {
        AdminGroup::lookup(group)?;
    }
    for (key, path) in [
        ("sandbox.binary", &config.sandbox.binary),
        ("sandbox.deno", &config.sandbox.deno),
    ] {
        if let Some(path) = path {
            if !path.is_file() {
                bail!(
                    "{}: {key}: {} is not a file",
                    file.display(),
                    path.display()
                );
            }
        }
    }
    println!(
        "ds-host: {} is valid (serving *.{} on {} and {}, state in {})",
        file.display(),
        config.base_domain,
        config.https.listen,
        config.http.listen,
        config.state_dir.display()
    );
    Ok(())
}

/// The host over `configs`.
fn host(
    configs: Vec<AppspaceConfig>,
    launcher: Launcher,
    base_domain: &str,
    lifecycle: Lifecycle,
) -> anyhow::Result<Arc<Host>> {
    // The first cold start finds a launcher waiting too.
    launcher.prepare_spare();
    let host = Arc::new(Host::new(launcher, base_domain.to_owned(), lifecycle));
    for config in configs {
        let name = config.name.clone();
        let appspace = Appspace::new(config, &lifecycle)
            .with_context(|| format!("opening the log of appspace {name}"))?;
        host.add(Arc::new(appspace));
    }
    Ok(host)
}

/// SIGTERM and SIGINT, caught from the start.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }
}

/// How long the first front door has to be confined and serving.
const FRONT_DOOR_START: Duration = Duration::from_secs(30);

/// What the front door serves: listening sockets, each with its role,
/// the certificate, and its limits.
struct Serving {
    listeners: Vec<(std::net::TcpListener, ListenerRole)>,
    certificate: ds_host::front_door::tls::PemPair,
    limits: ConnLimits,
}

/// The keeper of the front door over `serving`.
fn front_door(host: &Arc<Host>, serving: Serving) -> anyhow::Result<Arc<FrontDoor>> {
    let life = &host.lifecycle;
    let ms = |d: Duration| d.as_millis() as u64;
    let init = Init {
        ids: ds_host::supervisor::front_ids::front_ids(),
        supervisor_pid: std::process::id(),
        listeners: serving.listeners.iter().map(|(_, role)| *role).collect(),
        certificate_pem: serving.certificate.certificate,
        private_key_pem: serving.certificate.private_key,
        header_read_timeout_ms: ms(serving.limits.header_read_timeout),
        max_header_bytes: serving.limits.max_header_bytes,
        tls_handshake_timeout_ms: ms(serving.limits.tls_handshake_timeout),
        response_timeout_ms: ms(life.response_timeout),
        body_idle_timeout_ms: ms(life.body_idle_timeout),
        idle_timeout_ms: ms(life.idle_timeout),
        // A start answers within its timeout, after waiting at most that
        // long again behind a stop of the same appspace.
        start_answer_timeout_ms: ms(life.start_timeout * 2
            + life.stop_grace
            + Duration::from_secs(10)),
    };
    // The binary this supervisor runs, even after a package upgrade
    // replaced the file: a restarted front door always speaks its protocol.
    let exe = PathBuf::from("/proc/self/exe");
    let listeners = serving
        .listeners
        .into_iter()
        .map(|(l, _)| std::os::fd::OwnedFd::from(l))
        .collect();
    Ok(FrontDoor::new(host.clone(), exe, init, listeners))
}

/// Runs the front door and the admin API until SIGTERM or Ctrl-C, then
/// stops every sandbox.
async fn run_until_signal(
    mut stop: StopSignals,
    host: &Host,
    admin: (tokio::net::UnixListener, Arc<Admin>),
    front: Arc<FrontDoor>,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (phase, phase_rx) = tokio::sync::watch::channel(Phase::Serving);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let keeper = tokio::spawn(front.clone().keep(phase_rx, ready_tx));
    let mut tasks = tokio::task::JoinSet::new();
    let mut rx = stop_rx.clone();
    let (admin_listener, admin) = admin;
    let usage = admin.usage.clone();
    let sampling = tokio::spawn(usage.clone().run());
    tasks.spawn(ds_host::admin::serve(admin_listener, admin, async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }));
    // Ready once the front door is confined and serving (the listeners,
    // the state and the admin socket are up before it starts).
    let stopped_early = tokio::select! {
        started = tokio::time::timeout(FRONT_DOOR_START, ready_rx) => {
            if !matches!(started, Ok(Ok(()))) {
                let why = front.status().last_exit.unwrap_or_else(|| "no answer".into());
                let _ = phase.send(Phase::Closing);
                let _ = keeper.await;
                bail!("the front door did not start within {FRONT_DOOR_START:?} (last: {why})");
            }
            false
        }
        _ = stop.int.recv() => true,
        _ = stop.term.recv() => true,
    };
    // With a watchdog (`WatchdogSec=`), the runtime pings it at half the
    // period, so a wedged runtime gets the host restarted.
    notify_systemd(&[sd_notify::NotifyState::Ready]);
    let watchdog = sd_notify::watchdog_enabled().map(|period| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period / 2);
            loop {
                tick.tick().await;
                notify_systemd(&[sd_notify::NotifyState::Watchdog]);
            }
        })
    });
    if !stopped_early {
        tokio::select! {
            _ = stop.int.recv() => {}
            _ = stop.term.recv() => {}
        }
    }
    notify_systemd(&[sd_notify::NotifyState::Stopping]);
    // Stopping takes at most the stop timeout: systemd's own clock
    // (TimeoutStopSec) is in charge now.
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    // Nothing starts from here on, and requests still arriving on open
    // keep-alive connections get a 503; the front door stops accepting.
    let _ = phase.send(Phase::Stopping);
    host.begin_stopping();
    let _ = stop_tx.send(true);
    host.stop_all().await;
    sampling.abort();
    usage.last_sample(USAGE_SETTLE).await;
    let _ = phase.send(Phase::Closing);
    let _ = keeper.await;
    host.launcher.cgroups().remove_own();
    while tasks.join_next().await.is_some() {}
    // Their last egress connections ended with them: let those reach the
    // egress log before the caller drains its writer (one wait for all).
    for name in host.settle_egress(EGRESS_SETTLE).await {
        tracing::warn!(appspace = %name, "egress attempts still under way at the stop were not recorded");
    }
    // The appspaces' last log lines (their stops) reach the files.
    tokio::task::spawn_blocking(ds_host::appspace::flush_logs)
        .await
        .context("flushing the app logs")?;
    Ok(())
}

/// How long a stopping host waits for its appspaces' last egress attempts
/// (all of them together).
const EGRESS_SETTLE: Duration = Duration::from_secs(2);

/// How long a stopping host waits for its sandboxes' last usage reports.
const USAGE_SETTLE: Duration = Duration::from_secs(2);

fn bind(
    addr: impl std::net::ToSocketAddrs + std::fmt::Debug + Copy,
) -> anyhow::Result<std::net::TcpListener> {
    std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr:?}"))
}

async fn dev(cli: Cli, stop: StopSignals) -> anyhow::Result<()> {
    let state = std::path::absolute(&cli.state_dir).context("resolving --state-dir")?;
    ds_host::dev::check_apart(&state, &cli.apps)?;
    let deno = find_deno();
    let rate = std::num::NonZeroU32::new(cli.egress_rate).context("--egress-rate")?;
    let lifecycle = Lifecycle {
        start_timeout: Duration::from_secs(cli.start_timeout),
        idle_timeout: Duration::from_secs(cli.idle_timeout),
        response_timeout: Duration::from_secs(cli.response_timeout),
        body_idle_timeout: Duration::from_secs(cli.body_idle_timeout),
        egress: ds_host::egress::EgressLimits {
            max_connections: cli.egress_max_connections as usize,
            per_second: rate,
            burst: rate.saturating_mul(std::num::NonZeroU32::new(2).expect("two")),
            ..Default::default()
        },
        ..Lifecycle::default()
    };
    let disks = Arc::new(Disks::detect(
        cli.disk_quota,
        &state.join("appspaces"),
        cli.disk_limit,
    )?);
    let (state_db, _) = ds_host::dev::prepare(&state, deno.as_deref(), &cli.apps, &disks).await?;
    let state_db = Arc::new(state_db);
    let backups = Arc::new(
        ds_host::backup::Backups::new(
            &state,
            ds_host::backup::Schedule {
                every: (cli.backup_every > 0).then(|| Duration::from_secs(cli.backup_every)),
                ..Default::default()
            },
        )
        .with_repository(cli.backup_repository.clone(), cli_ssh(&cli))
        .context("--backup-repository")?
        .with_host_state(state_db.clone(), Vec::new())
        .with_notify(cli.notify_command.clone()),
    );
    // Leftovers of a killed host (a migration still running, say) are
    // killed with its cgroups first: nothing writes while we roll back.
    let placement = cgroup_placement()?;
    attach_disks(&state_db, &disks).await?;
    let (configs, recovered) = recover(&state_db, &backups, &disks).await?;
    let resolver = Resolver::system(&cli.nameservers);
    let (egress_sink, egress_log) = EgressLogWriter::start(state_db.clone());
    let door = host(
        configs,
        Launcher::new(find_sandbox()?, deno)
            .with_egress_sink(egress_sink)
            .with_resolver(resolver.clone())
            .with_cgroups(placement),
        "localhost",
        lifecycle,
    )?;

    let http = bind(("127.0.0.1", cli.port))?;
    let https = bind(("127.0.0.1", cli.tls_port))?;
    let mut names: Vec<String> = door.all().iter().map(|a| a.config.domain.clone()).collect();
    names.sort();
    let (certificate, cert) = ds_host::front_door::tls::dev_certificate(
        &state.join("tls"),
        &[vec!["localhost".into()], names.clone()].concat(),
    )?;
    let (port, tls_port) = (http.local_addr()?.port(), https.local_addr()?.port());
    let socket = state.join("admin.sock");
    let admin_listener = ds_host::admin::bind(&socket, None)?;
    let front = front_door(
        &door,
        Serving {
            listeners: vec![(http, ListenerRole::Http), (https, ListenerRole::Https)],
            certificate,
            limits: ConnLimits {
                header_read_timeout: Duration::from_secs(cli.header_timeout),
                ..ConnLimits::default()
            },
        },
    )?;
    log_recovered(&door, recovered);
    backups.clone().spawn_scheduler(door.clone());
    resolver.attach(&front);
    let admin = Arc::new(Admin {
        state: state_db.clone(),
        host: door.clone(),
        front: front.clone(),
        backups: backups.clone(),
        state_dir: state.clone(),
        mode: "dev",
        started: Instant::now(),
        package_limits: PackageLimits::default(),
        policy: AccessPolicy {
            owner_uid: rustix::process::geteuid().as_raw(),
            group: None,
        },
        default_memory: DEFAULT_MEMORY,
        disks: disks.clone(),
        usage: ds_host::usage::Sampler::new(state_db.clone(), door.clone(), front.clone()),
    });
    println!("ds-host (dev): state in {}", state.display());
    println!("ds-host (dev): disk limits: {}", disks.describe());
    println!(
        "ds-host (dev): admin socket at {} (dsctl --socket {} status)",
        socket.display(),
        socket.display()
    );
    println!(
        "ds-host (dev): HTTPS with a self-signed certificate: {}",
        cert.display()
    );
    for name in &names {
        println!("ds-host (dev): serving http://{name}:{port}/ and https://{name}:{tls_port}/");
    }
    if cli.watch {
        for dir in &cli.apps {
            ds_host::dev::watch::spawn(
                std::path::absolute(dir).unwrap_or_else(|_| dir.clone()),
                state_db.clone(),
                door.clone(),
            )?;
        }
    }
    let served = run_until_signal(stop, &door, (admin_listener, admin.clone()), front).await;
    egress_log.finish().await;
    detach_disks(&admin.state, &disks).await;
    served
}

/// `--backup-ssh-key` and `--backup-known-hosts`, if given.
fn cli_ssh(cli: &Cli) -> Option<ds_host::backup::SshAccess> {
    Some(ds_host::backup::SshAccess {
        key: std::path::absolute(cli.backup_ssh_key.as_ref()?).ok()?,
        known_hosts: std::path::absolute(cli.backup_known_hosts.as_ref()?).ok()?,
    })
}

/// `--restore-from`: a host restored from its backups, into an empty
/// state directory; says what it did.
async fn restore_from(
    repository: &ds_host::backup::Target,
    ssh: Option<ds_host::backup::SshAccess>,
    key: &Path,
    state_dir: &Path,
    disks: &Disks,
) -> anyhow::Result<()> {
    let binary = std::env::var_os("DS_RESTIC")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("restic"));
    let done = ds_host::backup::restore_host(binary, repository, ssh, key, state_dir, disks)
        .await
        .with_context(|| format!("restoring a host into {}", state_dir.display()))?;
    println!(
        "ds-host: restored the host's state from backup {} (taken {}) into {}",
        done.snapshot,
        done.taken,
        state_dir.display()
    );
    for (name, id) in &done.appspaces {
        println!("ds-host: appspace {name}: data of backup {id}");
    }
    for name in &done.without_data {
        println!("ds-host: appspace {name}: no backup of its data; it starts empty");
    }
    for file in &done.files {
        println!(
            "ds-host: {} was restored there; move it into place if this machine needs it",
            file.display()
        );
    }
    Ok(())
}

/// Undoes what a killed host left half done (before anything serves),
/// then reads the appspaces as they are now.
async fn recover(
    state: &ds_host::state::State,
    backups: &ds_host::backup::Backups,
    disks: &Disks,
) -> anyhow::Result<(Vec<AppspaceConfig>, Vec<(String, String)>)> {
    let recovered = ds_host::upgrade::recover(state, backups, disks)
        .await
        .context("rolling back interrupted changes")?;
    let configs = state
        .appspaces()
        .await?
        .into_iter()
        .map(AppspaceConfig::from_record)
        .collect();
    Ok((configs, recovered))
}

/// Makes every appspace's disk ready (images mounted, quotas set) before
/// anything reads or writes its data: recovery may restore into it.
async fn attach_disks(state: &ds_host::state::State, disks: &Disks) -> anyhow::Result<()> {
    for rec in state.appspaces().await? {
        let earlier = rec
            .broken
            .as_deref()
            .is_some_and(|b| b.starts_with(DISK_BROKEN));
        if let Err(e) = disks.tidy_finished_move(&rec) {
            tracing::warn!(appspace = %rec.name, error = %e, "tidying after a move onto a disk image");
        }
        match disks.attach(&rec).await {
            Ok(()) if earlier => {
                tracing::info!(appspace = %rec.name, "its disk is ready again");
                state.set_broken(&rec.name, None).await?;
            }
            Ok(()) => {}
            Err(e) => {
                tracing::error!(appspace = %rec.name, error = %e, "its disk could not be made ready");
                if rec.broken.is_none() || earlier {
                    state
                        .set_broken(&rec.name, Some(&format!("{DISK_BROKEN}{e}")))
                        .await?;
                }
            }
        }
    }
    Ok(())
}

/// Unmounts the appspaces' disk images (the sandboxes are stopped).
async fn detach_disks(state: &ds_host::state::State, disks: &Disks) {
    let Ok(all) = state.appspaces().await else {
        return;
    };
    for rec in all {
        if let Err(e) = disks.detach(&rec).await {
            tracing::warn!(appspace = %rec.name, error = %e, "unmounting its disk");
        }
    }
}

/// Says in each rolled-back appspace's log what happened to it.
fn log_recovered(host: &ds_host::host::Host, recovered: Vec<(String, String)>) {
    for (name, what) in recovered {
        if let Some(a) = host.get(&name) {
            a.log_host(&what);
        }
    }
}

async fn production(config_path: &Path, stop: StopSignals) -> anyhow::Result<()> {
    let config = HostConfig::load(config_path)?;
    let state = Arc::new(ds_host::state::State::open(&config.state_dir).await?);
    let backups = Arc::new(
        ds_host::backup::Backups::new(&config.state_dir, config.backups.schedule())
            .with_repository(config.backups.repository.clone(), config.backups.ssh())
            .context("[backups] repository")?
            .with_host_state(
                state.clone(),
                [
                    std::path::absolute(config_path).unwrap_or_else(|_| config_path.to_owned()),
                    config.https.certificate.clone(),
                    config.https.private_key.clone(),
                ]
                .into_iter()
                .chain(config.backups.ssh_key.clone())
                .chain(config.backups.ssh_known_hosts.clone())
                .collect(),
            )
            .with_notify(config.notify.command.clone()),
    );
    // Leftovers of a killed host (a migration still running, say) are
    // killed with its cgroups first: nothing writes while we roll back.
    let placement = cgroup_placement()?;
    let disks = Arc::new(Disks::detect(
        config.appspaces.disk_quota,
        &config.state_dir.join("appspaces"),
        config.appspaces.disk_bytes,
    )?);
    tracing::info!(disk_limits = %disks.describe(), "appspaces' disks");
    attach_disks(&state, &disks).await?;
    let (configs, recovered) = recover(&state, &backups, &disks).await?;
    let sandbox = match &config.sandbox.binary {
        Some(b) => b.clone(),
        None => find_sandbox()?,
    };
    let deno = config.sandbox.deno.clone().or_else(find_deno);
    let (egress_sink, egress_log) = EgressLogWriter::start(state.clone());
    let resolver = Resolver::system(&[]);
    let door = host(
        configs,
        Launcher::new(sandbox, deno)
            .with_egress_sink(egress_sink)
            .with_resolver(resolver.clone())
            .with_cgroups(placement),
        &config.base_domain,
        config.lifecycle(),
    )?;
    let certificate =
        ds_host::front_door::tls::read_pem(&config.https.certificate, &config.https.private_key)?;
    let group = config
        .admin
        .group
        .as_deref()
        .map(AdminGroup::lookup)
        .transpose()?;
    let admin_listener = ds_host::admin::bind(&config.admin.socket, group.as_ref().map(|g| g.gid))?;
    let http = bind(config.http.listen)?;
    let https = bind(config.https.listen)?;
    let https_port = https.local_addr()?.port();
    println!(
        "ds-host: serving https://*.{}:{https_port}/ on {} (plain HTTP on {} redirects)",
        config.base_domain,
        https.local_addr()?,
        http.local_addr()?
    );
    let front = front_door(
        &door,
        Serving {
            listeners: vec![
                (http, ListenerRole::Redirect { https_port }),
                (https, ListenerRole::Https),
            ],
            certificate,
            limits: config.conn_limits(),
        },
    )?;
    log_recovered(&door, recovered);
    backups.clone().spawn_scheduler(door.clone());
    resolver.attach(&front);
    let admin = Arc::new(Admin {
        state: state.clone(),
        host: door.clone(),
        front: front.clone(),
        backups: backups.clone(),
        state_dir: config.state_dir.clone(),
        mode: "production",
        started: Instant::now(),
        package_limits: PackageLimits::default(),
        policy: AccessPolicy {
            owner_uid: rustix::process::geteuid().as_raw(),
            group,
        },
        default_memory: DEFAULT_MEMORY,
        disks: disks.clone(),
        usage: ds_host::usage::Sampler::new(state.clone(), door.clone(), front.clone()),
    });
    println!("ds-host: admin socket at {}", config.admin.socket.display());
    let served = run_until_signal(stop, &door, (admin_listener, admin.clone()), front).await;
    egress_log.finish().await;
    detach_disks(&admin.state, &disks).await;
    served
}
