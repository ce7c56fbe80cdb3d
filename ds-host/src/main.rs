//! `ds-host`: the daemon.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use ds_host::appspace::{Appspace, Launcher, Lifecycle};
use ds_host::proxy::{self, FrontDoor};
use ds_host::serve::{self, ConnLimits};

#[derive(Debug, Parser)]
#[command(
    name = "ds-host",
    version,
    about = "Run untrusted web apps in sandboxes"
)]
struct Cli {
    /// Start a complete development host with no configuration.
    #[arg(long, conflicts_with = "config")]
    dev: bool,
    /// Where dev mode keeps its state.
    #[arg(long, value_name = "DIR", default_value = ".ds-dev", requires = "dev")]
    state_dir: PathBuf,
    /// The loopback port dev mode serves HTTP on (0 picks a free one).
    #[arg(long, default_value_t = 7080, requires = "dev")]
    port: u16,
    /// The loopback port dev mode serves HTTPS on (0 picks a free one).
    #[arg(long, default_value_t = 7443, requires = "dev")]
    tls_port: u16,
    /// Seconds a client has to send a complete request head.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout: u64,
    /// Also install and serve this package (a directory or .tar.gz) in dev
    /// mode; repeatable.
    #[arg(long = "app", value_name = "PATH", requires = "dev")]
    apps: Vec<PathBuf>,
    /// Stop an appspace after this many seconds without requests.
    #[arg(long, value_name = "SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
    /// How long an app has to start accepting connections.
    #[arg(long, value_name = "SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    start_timeout: u64,
    /// The production configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    if let Some(config) = cli.config {
        bail!(
            "--config {}: production mode (config file, TLS, SQLite state) is not built yet; use --dev",
            config.display()
        );
    }
    if !cli.dev {
        bail!("nothing to do: pass --dev (or, later, --config FILE)");
    }
    let state = std::path::absolute(&cli.state_dir).context("resolving --state-dir")?;
    std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
    let deno = find_deno();
    let sandbox_bin = find_binary("ds-sandbox", "DS_SANDBOX")
        .context("ds-sandbox not found next to ds-host, in $DS_SANDBOX or on the PATH")?;
    let lifecycle = Lifecycle {
        start_timeout: Duration::from_secs(cli.start_timeout),
        idle_timeout: Duration::from_secs(cli.idle_timeout),
        ..Lifecycle::default()
    };
    let (_state_db, configs) = ds_host::dev::prepare(&state, deno.as_deref(), &cli.apps).await?;
    let mut appspaces = HashMap::new();
    for config in configs {
        let name = config.name.clone();
        let appspace = Appspace::new(config, lifecycle.log_limits)
            .with_context(|| format!("opening the log of appspace {name}"))?;
        appspaces.insert(name, Arc::new(appspace));
    }
    let door = Arc::new(FrontDoor {
        appspaces,
        launcher: Launcher::new(sandbox_bin, deno),
        base_domain: "localhost".into(),
        lifecycle,
    });
    // Scale to zero: stop appspaces nobody has used for the idle timeout.
    let reaper = door.clone();
    tokio::spawn(async move {
        let period = (reaper.lifecycle.idle_timeout / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            tokio::time::sleep(period).await;
            for appspace in reaper.appspaces.values() {
                appspace.stop_if_idle(&reaper.lifecycle).await;
            }
        }
    });

    let bind = |port: u16| async move {
        tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("binding 127.0.0.1:{port}"))
    };
    let http = bind(cli.port).await?;
    let https = bind(cli.tls_port).await?;
    let mut tls_names: Vec<String> = door
        .appspaces
        .keys()
        .map(|n| format!("{n}.localhost"))
        .collect();
    tls_names.sort();
    tls_names.insert(0, "localhost".into());
    let (tls, cert) = ds_host::tls::dev_certificate(&state.join("tls"), &tls_names)?;
    let (port, tls_port) = (http.local_addr()?.port(), https.local_addr()?.port());
    println!("ds-host (dev): state in {}", state.display());
    println!(
        "ds-host (dev): HTTPS with a self-signed certificate: {}",
        cert.display()
    );
    let mut names: Vec<&String> = door.appspaces.keys().collect();
    names.sort();
    for name in names {
        println!("ds-host (dev): serving http://{name}.localhost:{port}/ and https://{name}.localhost:{tls_port}/");
    }

    let app = axum::Router::new()
        .fallback(proxy::handle)
        .with_state(door.clone());
    let limits = ConnLimits {
        header_read_timeout: Duration::from_secs(cli.header_timeout),
        ..ConnLimits::default()
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let plain = tokio::spawn(serve::serve(
        http,
        None,
        app.clone(),
        limits,
        stopped(stop_rx.clone()),
    ));
    let secure = tokio::spawn(serve::serve(
        https,
        Some(tls),
        app,
        limits,
        stopped(stop_rx),
    ));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let _ = stop_tx.send(true);
    let _ = tokio::join!(plain, secure);
    // Stop every sandbox before leaving: nothing may outlive the host.
    let mut stops = tokio::task::JoinSet::new();
    for appspace in door.appspaces.values() {
        let appspace = Arc::clone(appspace);
        let grace = door.lifecycle.stop_grace;
        stops.spawn(async move { appspace.stop(grace).await });
    }
    while stops.join_next().await.is_some() {}
    Ok(())
}
