//! End to end: egress from apps in real sandboxes under a real
//! `ds-host --dev`, with upstream servers on 127.0.0.1 allowed by explicit
//! address. The native app is `tests/hostile/workload.c` (its
//! `/egress/...` pages drive the proxy by hand); the Deno app is the
//! bundled example, whose `fetch` uses `$HTTP_PROXY` unchanged. Needs root,
//! the workspace's binaries and gcc (Deno for the Deno test); a test whose
//! requirement is missing is reported ignored with a "SKIPPED ..." line.

mod common;
#[path = "../../tests/support/workload.rs"]
mod workload;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ensure, missing_requirement, DevHost, TestFn};
use libtest_mimic::{Arguments, Failed};
use serde_json::Value;

fn main() {
    let args = Arguments::from_args();
    let skip = missing_requirement().or_else(|| {
        let gcc = Command::new("gcc").arg("--version").output();
        (!gcc.is_ok_and(|o| o.status.success())).then(|| "gcc is not installed".to_owned())
    });
    let mut trials = common::trials(
        vec![
            (
                "native_app_reaches_an_allowed_upstream",
                native_app_reaches_an_allowed_upstream as TestFn,
            ),
            (
                "unlisted_destinations_and_ssrf_tricks_are_denied",
                unlisted_destinations_and_ssrf_tricks_are_denied,
            ),
            ("the_proxy_cannot_be_bypassed", the_proxy_cannot_be_bypassed),
            (
                "connection_limit_holds_under_a_flood",
                connection_limit_holds_under_a_flood,
            ),
            (
                "allowlist_changes_apply_at_once_and_are_audited",
                allowlist_changes_apply_at_once_and_are_audited,
            ),
            (
                "a_connection_open_when_the_host_stops_is_recorded",
                a_connection_open_when_the_host_stops_is_recorded,
            ),
        ],
        skip.clone(),
    );
    trials.extend(common::trials(
        vec![(
            "stock_curl_inside_the_sandbox_uses_the_proxy",
            stock_curl_inside_the_sandbox_uses_the_proxy as TestFn,
        )],
        skip.clone().or_else(|| {
            (!Path::new("/usr/bin/curl").is_file()).then(|| {
                "/usr/bin/curl is not installed (packaging/dev/setup.sh installs it)".to_owned()
            })
        }),
    ));
    trials.extend(common::trials(
        vec![(
            "deno_example_fetches_through_the_proxy",
            deno_example_fetches_through_the_proxy as TestFn,
        )],
        skip.or_else(|| common::deno().err()),
    ));
    libtest_mimic::run(&args, trials).exit();
}

/// A plain HTTP server on 127.0.0.1: `/hello` answers "upstream says hi",
/// `/big/N` sends N bytes; every connection is served on its own thread,
/// and held open until the client closes when the request is `/hold`.
struct Upstream {
    port: u16,
    /// `/hold` requests received so far.
    held: Arc<AtomicUsize>,
}

impl Upstream {
    fn start() -> Result<Self, Failed> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let held = Arc::new(AtomicUsize::new(0));
        let counter = held.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let counter = counter.clone();
                std::thread::spawn(move || serve_upstream(conn, &counter));
            }
        });
        Ok(Self { port, held })
    }
}

fn serve_upstream(mut conn: TcpStream, held: &AtomicUsize) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    if path == "/hold" {
        held.fetch_add(1, Ordering::SeqCst);
        let _ = conn.read_to_end(&mut Vec::new());
        return;
    }
    let body: Vec<u8> = if let Some(n) = path.strip_prefix("/big/") {
        vec![b'z'; n.parse().unwrap_or(0)]
    } else {
        format!("upstream says hi to {path}").into_bytes()
    };
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(&body);
}

/// A package of workload.c serving HTTP, under `name`.
fn workload_package(dir: &Path, name: &str) -> Result<PathBuf, Failed> {
    Ok(workload::package(dir, name, "http")?)
}

/// A dev host serving the workload app `wl` (and the examples).
fn host_with_workload(dir: &Path, deno: Option<&Path>) -> Result<DevHost, Failed> {
    let pkg = workload_package(dir, "wl")?;
    DevHost::start_with(
        &dir.join("state"),
        &["--app", pkg.to_str().ok_or("path")?],
        deno,
    )
}

/// A dev host serving `wl`, an upstream, and the upstream's `IP:port`,
/// which `wl.localhost` is allowed to reach (the directory holds the
/// host's state).
fn workload_allowed_to_upstream() -> Result<(tempfile::TempDir, Upstream, DevHost, String), Failed>
{
    let dir = tempfile::tempdir()?;
    let up = Upstream::start()?;
    let host = host_with_workload(dir.path(), None)?;
    let allowed = format!("127.0.0.1:{}", up.port);
    host.json(&["appspace", "egress", "allow", "wl.localhost", &allowed])?;
    Ok((dir, up, host, allowed))
}

/// The body of `GET path` on appspace `host`.
fn page(host: &DevHost, appspace: &str, path: &str) -> Result<String, Failed> {
    let (status, body) = host.get(appspace, path)?;
    ensure(
        status == 200,
        format!("{appspace}{path}: status {status}: {body}"),
    )?;
    Ok(body)
}

fn log_text(host: &DevHost, appspace: &str) -> Result<String, Failed> {
    Ok(String::from_utf8_lossy(
        &host
            .dsctl(&["appspace", "logs", appspace, "--lines", "1000"])?
            .stdout,
    )
    .into_owned())
}

/// The egress log once `ready` holds for it (polled for up to 5 s: the
/// host writes attempts in batches), or as it is then.
fn egress_log_when(
    host: &DevHost,
    appspace: &str,
    ready: impl Fn(&[Value]) -> bool,
) -> Result<Vec<Value>, Failed> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let log = egress_log(host, appspace)?;
        if ready(&log) || std::time::Instant::now() > deadline {
            return Ok(log);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn egress_log(host: &DevHost, appspace: &str) -> Result<Vec<Value>, Failed> {
    Ok(host
        .json(&["appspace", "egress", "log", appspace, "--lines", "1000"])?
        .as_array()
        .cloned()
        .unwrap_or_default())
}

fn a_connection_open_when_the_host_stops_is_recorded() -> Result<(), Failed> {
    let (dir, up, host, allowed) = workload_allowed_to_upstream()?;
    // The app asks for a page the upstream never finishes.
    let port = host.port;
    let path = format!("/egress/get?url=http://{allowed}/hold");
    std::thread::spawn(move || {
        if let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = write!(
                conn,
                "GET {path} HTTP/1.1\r\nHost: wl.localhost\r\nConnection: close\r\n\r\n"
            );
            let _ = conn.read_to_end(&mut Vec::new());
        }
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    while up.held.load(Ordering::SeqCst) == 0 {
        ensure(
            Instant::now() < deadline,
            "the upstream never saw the request",
        )?;
        std::thread::sleep(Duration::from_millis(20));
    }
    // The host stops with the connection open; the attempt ends with the
    // appspace's stop and must still reach the log.
    host.stop()?;
    let host = host_with_workload(dir.path(), None)?;
    let log = egress_log(&host, "wl.localhost")?;
    ensure(
        log.iter()
            .any(|e| e["destination"] == allowed.as_str() && e["outcome"] == "allowed"),
        format!("no record of the open connection: {log:?}"),
    )?;
    host.stop()
}

fn native_app_reaches_an_allowed_upstream() -> Result<(), Failed> {
    let (_dir, _up, host, allowed) = workload_allowed_to_upstream()?;
    // Absolute-form through HTTP_PROXY.
    let body = page(
        &host,
        "wl.localhost",
        &format!("/egress/get?url=http://{allowed}/hello"),
    )?;
    ensure(
        body.starts_with("HTTP/1.1 200") && body.contains("upstream says hi to /hello"),
        body,
    )?;
    // A CONNECT tunnel.
    let body = page(
        &host,
        "wl.localhost",
        &format!("/egress/connect?to={allowed}&path=/tunnel"),
    )?;
    ensure(
        body.starts_with("HTTP/1.1 200 Connection established")
            && body.contains("upstream says hi to /tunnel"),
        body,
    )?;
    // A large download streams through.
    let body = page(
        &host,
        "wl.localhost",
        &format!("/egress/get?url=http://{allowed}/big/40000"),
    )?;
    ensure(
        body.matches('z').count() == 40000,
        format!("{} bytes of z", body.matches('z').count()),
    )?;
    // Recorded with the address, the outcome and the bytes each way.
    let log = egress_log_when(&host, "wl.localhost", |log| {
        log.iter().filter(|e| e["outcome"] == "allowed").count() >= 3
    })?;
    let allowed_entries: Vec<&Value> = log.iter().filter(|e| e["outcome"] == "allowed").collect();
    ensure(allowed_entries.len() == 3, format!("{log:?}"))?;
    for e in &allowed_entries {
        ensure(
            e["address"] == allowed.as_str()
                && e["bytes_up"].as_u64() > Some(0)
                && e["bytes_down"].as_u64() > Some(0),
            format!("{e}"),
        )?;
    }
    ensure(
        log_text(&host, "wl.localhost")?
            .contains(&format!("egress allowed: {allowed} via {allowed}")),
        "app log",
    )?;
    host.stop()
}

/// A common native client, unchanged: Debian's curl, copied into the app
/// package (its libraries come from the sandbox's /usr/lib), run by the
/// app with the sandbox's environment, finds the proxy in `http_proxy`.
fn stock_curl_inside_the_sandbox_uses_the_proxy() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let up = Upstream::start()?;
    let pkg = workload_package(dir.path(), "wl")?;
    std::fs::copy("/usr/bin/curl", pkg.join("curl"))?;
    let host = DevHost::start_with(
        &dir.path().join("state"),
        &["--app", pkg.to_str().ok_or("path")?],
        None,
    )?;
    let allowed = format!("127.0.0.1:{}", up.port);
    host.json(&["appspace", "egress", "allow", "wl.localhost", &allowed])?;
    let body = page(
        &host,
        "wl.localhost",
        &format!("/egress/curl?url=http://{allowed}/from-curl"),
    )?;
    ensure(
        body.starts_with("curl exit 0") && body.contains("upstream says hi to /from-curl"),
        body,
    )?;
    let body = page(
        &host,
        "wl.localhost",
        &format!("/egress/curl?url=http://127.0.0.1:{}/no", up.port + 1),
    )?;
    ensure(
        body.contains("not on this appspace's egress allowlist"),
        body,
    )?;
    let log = egress_log_when(&host, "wl.localhost", |log| {
        log.iter()
            .any(|e| e["outcome"] == "allowed" && e["destination"] == allowed.as_str())
    })?;
    ensure(
        log.iter()
            .any(|e| e["outcome"] == "allowed" && e["destination"] == allowed.as_str()),
        format!("{log:?}"),
    )?;
    host.stop()
}

fn deno_example_fetches_through_the_proxy() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let up = Upstream::start()?;
    let deno = common::deno()?;
    let host = DevHost::start_with(&dir.path().join("state"), &[], Some(&deno))?;
    // Running before the allowlist changes: Deno's own permissions were
    // fixed when it started, so the change restarts it.
    page(&host, "hello-deno.localhost", "/")?;
    let allowed = format!("127.0.0.1:{}", up.port);
    host.json(&[
        "appspace",
        "egress",
        "allow",
        "hello-deno.localhost",
        &allowed,
    ])?;
    let fetch = format!("/fetch?url=http://{allowed}/from-deno");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let body = loop {
        let (status, body) = host.get("hello-deno.localhost", &fetch)?;
        if status == 200 || std::time::Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    ensure(
        body.contains(": 200") && body.contains("upstream says hi to /from-deno"),
        body,
    )?;
    // An unlisted destination is refused by Deno's own permissions first
    // (they name only the allowlist); the host's check behind them is
    // what the native tests exercise.
    let (_, body) = host.get(
        "hello-deno.localhost",
        &format!("/fetch?url=http://127.0.0.1:{}/x", up.port + 1),
    )?;
    ensure(
        body.contains("NotCapable") && body.contains(&format!("127.0.0.1:{}", up.port + 1)),
        body,
    )?;
    host.stop()
}

fn unlisted_destinations_and_ssrf_tricks_are_denied() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let up = Upstream::start()?;
    let host = host_with_workload(dir.path(), None)?;
    let p = up.port;
    host.json(&[
        "appspace",
        "egress",
        "allow",
        "wl.localhost",
        &format!("127.0.0.1:{p}"),
        &format!("localhost:{p}"),
        "allowed.example",
    ])?;
    let tricks: Vec<(String, &str)> = vec![
        (format!("2130706433:{p}"), "canonical"),
        (format!("0x7f000001:{p}"), "canonical"),
        (format!("0177.0.0.1:{p}"), "canonical"),
        (format!("0x7f.0.0.1:{p}"), "canonical"),
        (format!("127.1:{p}"), "canonical"),
        (format!("[::ffff:127.0.0.1]:{p}"), "mapped"),
        (format!("localhost.:{p}"), "trailing dot"),
        (format!("LocalHost:{p}"), "loopback"),
        (format!("localhost:{p}"), "loopback"),
        (format!("127.0.0.1:{}", p + 1), "not on"),
        (format!("127.0.0.2:{p}"), "not on"),
        (format!("[::1]:{p}"), "not on"),
        ("169.254.169.254:80".into(), "not on"),
        ("unlisted.example:80".into(), "not on"),
    ];
    for (to, why) in &tricks {
        for how in ["get", "connect"] {
            let path = match how {
                "get" => format!("/egress/get?url=http://{to}/secret"),
                _ => format!("/egress/connect?to={to}&path=/secret"),
            };
            let body = page(&host, "wl.localhost", &path)?;
            ensure(
                body.starts_with("HTTP/1.1 403"),
                format!("{how} {to} was not refused: {body}"),
            )?;
            ensure(
                body.contains(why),
                format!("{how} {to}: {body:?} does not say {why:?}"),
            )?;
            ensure(
                !body.contains("upstream says hi"),
                format!("{how} {to} reached upstream"),
            )?;
        }
    }
    // Userinfo tricks are refused by the agent before the host is asked.
    for path in [
        format!("/egress/get?url=http://127.0.0.1:{p}@evil.example/"),
        "/egress/get?url=http://allowed.example@evil.example/".to_string(),
        "/egress/connect?to=allowed.example@evil.example:443".to_string(),
    ] {
        let body = page(&host, "wl.localhost", &path)?;
        ensure(
            body.starts_with("HTTP/1.1 400") && body.contains("user information"),
            format!("{path}: {body}"),
        )?;
    }
    // The egress log and the app's log say the same.
    let log = egress_log_when(&host, "wl.localhost", |log| log.len() >= tricks.len() * 2)?;
    ensure(
        log.iter().all(|e| e["outcome"] == "denied"),
        format!("{log:?}"),
    )?;
    ensure(
        log.len() == tricks.len() * 2,
        format!("{} entries for {} tricks", log.len(), tricks.len() * 2),
    )?;
    let app_log = log_text(&host, "wl.localhost")?;
    for e in &log {
        let line = format!(
            "egress denied: {}: {}",
            e["destination"].as_str().unwrap_or(""),
            e["reason"].as_str().unwrap_or("")
        );
        ensure(app_log.contains(&line), format!("app log lacks {line:?}"))?;
    }
    host.stop()
}

fn the_proxy_cannot_be_bypassed() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let up = Upstream::start()?;
    let host = host_with_workload(dir.path(), None)?;
    host.json(&[
        "appspace",
        "egress",
        "allow",
        "wl.localhost",
        &format!("127.0.0.1:{}", up.port),
    ])?;
    for to in [
        format!("127.0.0.1:{}", up.port),
        "1.1.1.1:80".into(),
        "10.0.0.1:80".into(),
    ] {
        let body = page(&host, "wl.localhost", &format!("/egress/direct?to={to}"))?;
        ensure(body.starts_with("direct: failed"), format!("{to}: {body}"))?;
    }
    host.stop()
}

fn connection_limit_holds_under_a_flood() -> Result<(), Failed> {
    let (_dir, _up, host, allowed) = workload_allowed_to_upstream()?;
    // Another appspace keeps serving while the flood runs.
    let port = host.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || -> Result<u32, String> {
            let mut served = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut conn =
                    TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
                conn.set_read_timeout(Some(Duration::from_secs(5)))
                    .map_err(|e| e.to_string())?;
                write!(
                    conn,
                    "GET / HTTP/1.1\r\nHost: hello-native.localhost\r\nConnection: close\r\n\r\n"
                )
                .map_err(|e| e.to_string())?;
                let mut first = String::new();
                BufReader::new(conn)
                    .read_line(&mut first)
                    .map_err(|e| e.to_string())?;
                if !first.contains(" 200 ") {
                    return Err(format!("hello-native answered {first:?} during the flood"));
                }
                served += 1;
            }
            Ok(served)
        })
    };
    let started = Instant::now();
    let body = page(
        &host,
        "wl.localhost",
        &format!("/egress/flood?to={allowed}&n=100"),
    )?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let served = watcher.join().map_err(|_| "watcher panicked")??;
    let count = |key: &str| -> Option<u32> {
        body.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
    };
    let (accepted, refused) = (
        count("accepted").ok_or(body.clone())?,
        count("refused").ok_or(body.clone())?,
    );
    ensure(
        (1..=32).contains(&accepted),
        format!("{body}: the limit is 32 at once"),
    )?;
    ensure(accepted + refused == 100, body.clone())?;
    ensure(
        served >= 1,
        format!(
            "hello-native served {served} requests in {:?}",
            started.elapsed()
        ),
    )?;
    let limit_denials = |log: &[Value]| {
        log.iter()
            .filter(|e| {
                e["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("limit reached"))
            })
            .count()
    };
    let log = egress_log_when(&host, "wl.localhost", |log| {
        limit_denials(log) as u32 >= refused
    })?;
    let limited = log
        .iter()
        .filter(|e| {
            e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("limit reached"))
        })
        .count();
    ensure(
        limited as u32 == refused,
        format!("{limited} limit denials logged for {refused} refused"),
    )?;
    host.stop()
}

fn allowlist_changes_apply_at_once_and_are_audited() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let up = Upstream::start()?;
    let host = host_with_workload(dir.path(), None)?;
    let allowed = format!("127.0.0.1:{}", up.port);
    let get = format!("/egress/get?url=http://{allowed}/x");
    ensure(
        page(&host, "wl.localhost", &get)?.starts_with("HTTP/1.1 403"),
        "allowed before being allowed",
    )?;
    let list = host.json(&[
        "appspace",
        "egress",
        "allow",
        "wl.localhost",
        &allowed,
        "*.example.com:8443",
    ])?;
    ensure(
        list["allow"] == serde_json::json!([allowed, "*.example.com:8443"]),
        format!("{list}"),
    )?;
    ensure(
        page(&host, "wl.localhost", &get)?.starts_with("HTTP/1.1 200"),
        "not allowed after allow",
    )?;
    host.json(&["appspace", "egress", "deny", "wl.localhost", &allowed])?;
    ensure(
        page(&host, "wl.localhost", &get)?.starts_with("HTTP/1.1 403"),
        "still allowed after deny",
    )?;
    // Bad entries and removing what is not there change nothing.
    for bad in [
        "2130706433",
        "Example.com",
        "[::ffff:127.0.0.1]",
        "10.0.0.1/8",
        "a.*.example.com",
        "x.example.com:0",
    ] {
        host.fails(
            &[
                "appspace",
                "egress",
                "allow",
                "wl.localhost",
                "good.example",
                bad,
            ],
            "egress entry",
        )?;
    }
    host.fails(
        &[
            "appspace",
            "egress",
            "deny",
            "wl.localhost",
            "never.example",
        ],
        "not on the egress allowlist",
    )?;
    let list = host.json(&["appspace", "egress", "list", "wl.localhost"])?;
    ensure(
        list["allow"] == serde_json::json!(["*.example.com:8443"]),
        format!("{list}"),
    )?;
    // Kept across a restart.
    host.stop()?;
    let pkg = dir.path().join("wl");
    let host = DevHost::start_with(
        &dir.path().join("state"),
        &["--app", pkg.to_str().ok_or("path")?],
        None,
    )?;
    let list = host.json(&["appspace", "egress", "list", "wl.localhost"])?;
    ensure(
        list["allow"] == serde_json::json!(["*.example.com:8443"]),
        format!("after restart: {list}"),
    )?;
    let audit = host.json(&["audit"])?;
    let actions: Vec<(String, bool)> = audit
        .as_array()
        .ok_or("audit")?
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or("").to_owned(),
                e["ok"] == true,
            )
        })
        .collect();
    for want in [
        ("appspace.egress.allow", true),
        ("appspace.egress.deny", true),
        ("appspace.egress.allow", false),
        ("appspace.egress.deny", false),
    ] {
        ensure(
            actions.iter().any(|(a, ok)| a == want.0 && *ok == want.1),
            format!("{want:?} not audited: {actions:?}"),
        )?;
    }
    host.stop()
}
