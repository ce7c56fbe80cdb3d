//! End to end: a real `ds-host --dev` in a temporary directory, driven over
//! HTTP. Needs root (sandboxes), the workspace's binaries built
//! (`cargo build --workspace --bins`), and Deno for the Deno example; a
//! test whose requirement is missing is reported ignored with a
//! "SKIPPED ..." line, never passed.

#[path = "../../tests/support/sandboxes.rs"]
mod sandboxes;
#[path = "../../tests/support/workload.rs"]
mod workload;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};

const HOST: &str = env!("CARGO_BIN_EXE_ds-host");

fn main() {
    let args = Arguments::from_args();
    let base = missing_requirement();
    let deno = deno().err();
    let mut trials = Vec::new();
    let mut add = |name: &str, extra: Option<String>, f: fn() -> Result<(), Failed>| {
        let skip = base.clone().or(extra);
        if let Some(why) = &skip {
            eprintln!("SKIPPED {name}: {why}");
        }
        trials.push(Trial::test(name, f).with_ignored_flag(skip.is_some()));
    };
    add(
        "native_example_is_served_and_keeps_its_data",
        None,
        native_example_is_served_and_keeps_its_data,
    );
    add(
        "deno_example_is_served",
        deno.clone(),
        deno_example_is_served,
    );
    add("unknown_hosts_get_404", None, unknown_hosts_get_404);
    add(
        "oom_killed_app_is_reported_in_its_log",
        None,
        oom_killed_app_is_reported_in_its_log,
    );
    add(
        "the_front_door_is_its_own_confined_process_and_restarts",
        None,
        the_front_door_is_its_own_confined_process_and_restarts,
    );
    add(
        "egress_names_are_resolved_by_the_front_door",
        None,
        egress_names_are_resolved_by_the_front_door,
    );
    add(
        "front_door_selftest_refuses_everything_once_confined",
        (!rustix::process::geteuid().is_root())
            .then(|| "needs root (the front door's uid change)".to_owned()),
        front_door_selftest_refuses_everything_once_confined,
    );
    add(
        "systemd_hears_ready_watchdog_and_stopping",
        None,
        systemd_hears_ready_watchdog_and_stopping,
    );
    add(
        "the_front_door_outranks_the_apps_it_serves",
        None,
        the_front_door_outranks_the_apps_it_serves,
    );
    add(
        "a_dead_spare_launcher_costs_nothing",
        None,
        a_dead_spare_launcher_costs_nothing,
    );
    add(
        "sigterm_right_after_start_is_a_clean_stop",
        None,
        sigterm_right_after_start_is_a_clean_stop,
    );
    add(
        "crashing_app_gets_503_with_the_reason_logged",
        None,
        crashing_app_gets_503_with_the_reason_logged,
    );
    add(
        "never_ready_app_gets_503_after_the_start_timeout",
        None,
        never_ready_app_gets_503_after_the_start_timeout,
    );
    add(
        "flooding_app_keeps_serving_with_a_capped_log",
        None,
        flooding_app_keeps_serving_with_a_capped_log,
    );
    add(
        "idle_appspace_stops_and_restarts_with_its_data",
        None,
        idle_appspace_stops_and_restarts_with_its_data,
    );
    add(
        "gigabyte_bodies_stream_both_ways",
        None,
        gigabyte_bodies_stream_both_ways,
    );
    add(
        "protocol_upgrades_pass_through",
        None,
        protocol_upgrades_pass_through,
    );
    add("https_is_served_with_hsts", None, https_is_served_with_hsts);
    add(
        "production_mode_serves_https_and_redirects_http",
        None,
        production_mode_serves_https_and_redirects_http,
    );
    add(
        "bad_config_is_refused_with_the_key_named",
        None,
        bad_config_is_refused_with_the_key_named,
    );
    add(
        "oversized_and_slow_request_heads_are_refused",
        None,
        oversized_and_slow_request_heads_are_refused,
    );
    add(
        "host_killed_mid_request_restarts_cleanly",
        None,
        host_killed_mid_request_restarts_cleanly,
    );
    add(
        "slow_apps_and_stalled_bodies_are_cut_off",
        None,
        slow_apps_and_stalled_bodies_are_cut_off,
    );
    add(
        "admin_answers_at_once_during_a_slow_cold_start",
        None,
        admin_answers_at_once_during_a_slow_cold_start,
    );
    add(
        "a_stopping_host_answers_503_and_starts_nothing",
        None,
        a_stopping_host_answers_503_and_starts_nothing,
    );
    add(
        "out_of_descriptors_the_host_backs_off_and_recovers",
        None,
        out_of_descriptors_the_host_backs_off_and_recovers,
    );
    add(
        "deno_refuses_what_the_sandbox_would_refuse",
        deno.clone(),
        deno_refuses_what_the_sandbox_would_refuse,
    );
    add(
        "websocket_echo_end_to_end",
        deno.clone(),
        websocket_echo_end_to_end,
    );
    libtest_mimic::run(&args, trials).exit();
}

fn bin_dir() -> PathBuf {
    Path::new(HOST)
        .parent()
        .expect("binary directory")
        .to_owned()
}

fn missing_requirement() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("needs root (sandboxes need cgroups)".into());
    }
    for bin in ["ds-sandbox", "hello-native", "dsctl"] {
        if !bin_dir().join(bin).is_file() {
            return Some(format!(
                "{bin} is not built (run cargo build --workspace --bins)"
            ));
        }
    }
    None
}

fn deno() -> Result<PathBuf, String> {
    std::env::var_os("DS_DENO")
        .map(PathBuf::from)
        .or_else(|| {
            let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ds-tools/bin/deno");
            local.exists().then_some(local)
        })
        .ok_or_else(|| "no Deno binary (set DS_DENO or run packaging/dev/setup.sh)".into())
}

/// A running dev host; killed (SIGTERM, then waited) on drop.
struct DevHost {
    child: Child,
    port: u16,
    tls_port: u16,
    /// ds-host's stderr, quoted when it misbehaves.
    stderr: tempfile::NamedTempFile,
}

/// The last lines of what ds-host wrote to `stderr`.
fn tail_of(stderr: &tempfile::NamedTempFile) -> String {
    let text = std::fs::read_to_string(stderr.path()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

impl DevHost {
    fn start(state: &Path) -> Result<Self, Failed> {
        Self::start_with(state, &[])
    }

    fn start_with(state: &Path, extra: &[String]) -> Result<Self, Failed> {
        Self::start_with_env(state, extra, &[])
    }

    fn start_with_env(
        state: &Path,
        extra: &[String],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Result<Self, Failed> {
        let stderr = tempfile::NamedTempFile::new()?;
        let mut cmd = Command::new(HOST);
        cmd.args(["--dev", "--port", "0", "--tls-port", "0", "--state-dir"])
            .arg(state)
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr.reopen()?);
        match deno() {
            Ok(d) => cmd.env("DS_DENO", d),
            Err(_) => cmd.env_remove("DS_DENO"),
        };
        let mut child = cmd.spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut ports = None;
        // "ds-host (dev): serving http://NAME.localhost:PORT/ and https://NAME.localhost:PORT/"
        let port_after = |text: &str| -> Option<u16> {
            text.split(':').nth(1)?.trim_end_matches('/').parse().ok()
        };
        for line in lines.by_ref() {
            let line = line?;
            if let Some(rest) = line.split("serving ").nth(1) {
                let mut urls = rest
                    .split(" and ")
                    .map(|u| u.rsplit_once("localhost").map(|(_, p)| p));
                let http = urls.next().flatten().and_then(port_after);
                let https = urls.next().flatten().and_then(port_after);
                ports = http.zip(https);
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        let Some((port, tls_port)) = ports else {
            return Err(
                format!("ds-host printed no URL; its stderr:\n{}", tail_of(&stderr)).into(),
            );
        };
        Ok(Self {
            child,
            port,
            tls_port,
            stderr,
        })
    }

    fn get(&self, host: &str, path: &str) -> Result<(u16, String, String), Failed> {
        let mut conn = TcpStream::connect(("127.0.0.1", self.port))?;
        conn.set_read_timeout(Some(Duration::from_secs(20)))?;
        write!(
            conn,
            "GET {path} HTTP/1.1\r\nHost: {host}:{}\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut raw = String::new();
        conn.read_to_string(&mut raw)?;
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("no response head in {raw:?}"))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or("no status")?;
        Ok((status, head.to_ascii_lowercase(), body.to_owned()))
    }

    fn stop(mut self) -> Result<(), Failed> {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).ok_or("bad pid")?;
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "ds-host exited {status}; its stderr:\n{}",
                        tail_of(&self.stderr)
                    )
                    .into())
                };
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "ds-host did not stop on SIGTERM; its stderr:\n{}",
                    tail_of(&self.stderr)
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for DevHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ensure(cond: bool, msg: impl Into<String>) -> Result<(), Failed> {
    if cond {
        Ok(())
    } else {
        Err(msg.into().into())
    }
}

fn visits(body: &str) -> Option<u64> {
    let cell = body.split("visits (kept in /data)</th><td>").nth(1)?;
    cell.split('<').next()?.parse().ok()
}

/// Sandboxes still running for appspaces under `state`.
fn sandboxes_of(state: &Path) -> usize {
    sandboxes::using(state)
}

fn native_example_is_served_and_keeps_its_data() -> Result<(), Failed> {
    let state = tempfile::tempdir()?;
    let host = DevHost::start(state.path())?;
    let (status, head, body) = host.get("hello-native.localhost", "/")?;
    ensure(status == 200, format!("status {status}: {body}"))?;
    ensure(
        body.contains("hello from a ds sandbox (native)"),
        body.clone(),
    )?;
    ensure(
        body.contains("appspace") && body.contains("Seccomp:\t2"),
        "the page shows the sandbox",
    )?;
    for h in [
        "content-security-policy: default-src 'self'",
        "x-content-type-options: nosniff",
        "referrer-policy",
    ] {
        ensure(head.contains(h), format!("missing {h} in {head}"))?;
    }
    let first = visits(&body).ok_or("no visit count")?;
    let (_, _, body) = host.get("hello-native.localhost", "/")?;
    ensure(
        visits(&body) == Some(first + 1),
        format!("second visit: {:?}", visits(&body)),
    )?;
    let (status, _, _) = host.get("hello-native.localhost", "/nope")?;
    ensure(
        status == 404,
        format!("app's own 404 came back as {status}"),
    )?;
    host.stop()?;
    ensure(
        sandboxes_of(state.path()) == 0,
        "a sandbox outlived the host",
    )?;
    // The data survives a host restart.
    let host = DevHost::start(state.path())?;
    let (_, _, body) = host.get("hello-native.localhost", "/")?;
    ensure(
        visits(&body) == Some(first + 2),
        format!("after restart: {:?}", visits(&body)),
    )?;
    host.stop()
}

fn deno_example_is_served() -> Result<(), Failed> {
    let state = tempfile::tempdir()?;
    let host = DevHost::start(state.path())?;
    let (status, _, body) = host.get("hello-deno.localhost", "/")?;
    ensure(status == 200, format!("status {status}: {body}"))?;
    ensure(
        body.contains("hello from a ds sandbox (Deno)"),
        body.clone(),
    )?;
    ensure(
        visits(&body) == Some(1),
        format!("visits {:?}", visits(&body)),
    )?;
    host.stop()
}

fn unknown_hosts_get_404() -> Result<(), Failed> {
    let state = tempfile::tempdir()?;
    let host = DevHost::start(state.path())?;
    for name in ["nope.localhost", "localhost", "hello-native.example.com"] {
        let (status, _, _) = host.get(name, "/")?;
        ensure(status == 404, format!("{name}: {status}"))?;
    }
    host.stop()
}

/// A field of /proc/`path`/stat, counted from 3 (the state) as in proc(5).
fn stat_field(path: &str, field: usize) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{path}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(field - 3)?.parse().ok()
}

/// Whether `pid` descends from `ancestor`.
/// The front door process the supervisor `pid` started.
fn front_door_of(pid: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let child: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        (stat_field(&child.to_string(), 4) == Some(pid as i64)
            && cmdline.split(|b| *b == 0).any(|a| a == b"__front-door"))
        .then_some(child)
    })
}

fn descends_from(pid: u32, ancestor: u32) -> bool {
    let mut at = pid;
    while let Some(parent) = stat_field(&at.to_string(), 4) {
        if parent as u32 == ancestor {
            return true;
        }
        if parent <= 1 {
            return false;
        }
        at = parent as u32;
    }
    false
}

/// The host's connection workers run at a raised priority (nice -5), and
/// the sandboxes they start do not inherit it: the app runs at nice 0.
fn the_front_door_outranks_the_apps_it_serves() -> Result<(), Failed> {
    let state = tempfile::tempdir()?;
    let host = DevHost::start(state.path())?;
    // The first request starts the sandbox from a worker thread.
    let (status, _, body) = host.get("hello-native.localhost", "/hello")?;
    ensure(status == 200, format!("status {status}: {body}"))?;
    // The workers are the front door's: the supervisor's child process.
    let supervisor = host.child.id();
    let pid = front_door_of(supervisor).ok_or("no front door process")?;
    let workers: Vec<i64> = std::fs::read_dir(format!("/proc/{pid}/task"))?
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("ds-front"))
        })
        .filter_map(|t| {
            stat_field(
                &format!("{pid}/task/{}", t.file_name().to_string_lossy()),
                19,
            )
        })
        .collect();
    ensure(!workers.is_empty(), "no ds-front threads found")?;
    ensure(
        workers.iter().all(|nice| *nice == -5),
        format!("worker nice values {workers:?}"),
    )?;
    let out = Command::new("pgrep")
        .args(["-x", "hello-native"])
        .output()?;
    let apps: Vec<(u32, Option<i64>)> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|app| descends_from(*app, supervisor))
        .map(|app| (app, stat_field(&app.to_string(), 19)))
        .collect();
    ensure(apps.len() == 1, format!("this host's apps: {apps:?}"))?;
    ensure(
        apps[0].1 == Some(0),
        format!("the app runs at nice {:?}", apps[0].1),
    )?;
    host.stop()
}

/// The spare launchers (`ds-sandbox __spare`) `host_pid` has waiting.
fn spares_of(host_pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{host_pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .filter(|pid| {
            // Started as a spare, and still waiting: once it has its
            // arguments it names itself after its cgroup (`as-...`).
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).nth(1) == Some(b"__spare"))
                && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| !c.starts_with("as-"))
        })
        .collect()
}

/// The host keeps one launcher waiting; one that died (killed by an
/// admin, say) is simply replaced: the next start does not fail for it.
fn a_dead_spare_launcher_costs_nothing() -> Result<(), Failed> {
    let state = tempfile::tempdir()?;
    let host = DevHost::start(state.path())?;
    let spares = spares_of(host.child.id());
    ensure(
        spares.len() == 1,
        format!("one spare launcher expected, found {spares:?}"),
    )?;
    let spare = rustix::process::Pid::from_raw(spares[0] as i32).ok_or("bad pid")?;
    rustix::process::kill_process(spare, rustix::process::Signal::KILL)?;
    let (status, _, body) = host.get("hello-native.localhost", "/hello")?;
    ensure(status == 200, format!("status {status}: {body}"))?;
    // A new spare replaces the one the start would have used.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = spares_of(host.child.id());
        if now.len() == 1 && now[0] != spares[0] {
            break;
        }
        ensure(
            Instant::now() < deadline,
            format!("no new spare launcher; found {now:?}"),
        )?;
        std::thread::sleep(Duration::from_millis(20));
    }
    host.stop()
}

/// A SIGTERM that arrives as soon as the URLs are printed stops the host
/// cleanly (exit 0), not by the signal's default action.
fn sigterm_right_after_start_is_a_clean_stop() -> Result<(), Failed> {
    let state = tempfile::tempdir()?;
    for _ in 0..5 {
        DevHost::start(state.path())?.stop()?;
    }
    Ok(())
}

/// A package of `tests/hostile/workload.c` built to run `mode` by default.
fn workload_package(dir: &Path, name: &str, mode: &str) -> Result<String, Failed> {
    Ok(workload::package(dir, name, mode)?
        .to_string_lossy()
        .into_owned())
}

/// Whether `name`'s log comes to contain `needle` within 5 s (the host
/// writes logs from a queue).
fn log_has(state: &Path, name: &str, needle: &str) -> bool {
    wait_for(Duration::from_secs(5), || {
        log_of(state, name).contains(needle)
    })
}

fn log_of(state: &Path, name: &str) -> String {
    let dir = state.join("appspaces").join(name).join("log");
    let mut text = String::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            text.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    text
}

/// An app the OOM killer ends while it starts: the appspace's log says so
/// (the launcher's last report is let through before it is reaped).
fn oom_killed_app_is_reported_in_its_log() -> Result<(), Failed> {
    let state = tempfile::tempdir()?;
    let pkg = workload_package(state.path(), "membomb", "membomb")?;
    let host = DevHost::start_with(state.path(), &["--app".into(), pkg])?;
    let (status, _, body) = host.get("membomb.localhost", "/")?;
    ensure(status == 503, format!("status {status}: {body}"))?;
    ensure(
        log_has(state.path(), "membomb", "killed: out of memory"),
        format!(
            "no OOM report in the log:\n{}",
            log_of(state.path(), "membomb")
        ),
    )?;
    host.stop()
}

fn crashing_app_gets_503_with_the_reason_logged() -> Result<(), Failed> {
    let state = tempfile::tempdir()?;
    let pkg = workload_package(state.path(), "crasher", "crash")?;
    let host = DevHost::start_with(state.path(), &["--app".into(), pkg])?;
    let (status, _, body) = host.get("crasher.localhost", "/")?;
    ensure(status == 503, format!("status {status}: {body}"))?;
    ensure(body.contains("could not be started"), body.clone())?;
    // Right after, the host does not hammer it: it waits (backoff).
    let (status, _, body) = host.get("crasher.localhost", "/")?;
    ensure(
        status == 503 && body.contains("next start"),
        format!("{status}: {body}"),
    )?;
    for needle in ["stderr: crashing on purpose", "failed to start"] {
        ensure(
            log_has(state.path(), "crasher", needle),
            format!(
                "{needle:?} not in the log: {}",
                log_of(state.path(), "crasher")
            ),
        )?;
    }
    // Other appspaces are unaffected.
    let (status, _, _) = host.get("hello-native.localhost", "/")?;
    ensure(status == 200, format!("hello-native: {status}"))?;
    host.stop()
}

fn never_ready_app_gets_503_after_the_start_timeout() -> Result<(), Failed> {
    let state = tempfile::tempdir()?;
    let pkg = workload_package(state.path(), "sleeper", "never-ready")?;
    let host = DevHost::start_with(
        state.path(),
        &["--app".into(), pkg, "--start-timeout".into(), "2".into()],
    )?;
    let started = Instant::now();
    let (status, _, body) = host.get("sleeper.localhost", "/")?;
    ensure(status == 503, format!("status {status}: {body}"))?;
    ensure(
        body.contains("did not become ready within 2s"),
        body.clone(),
    )?;
    ensure(
        started.elapsed() < Duration::from_secs(6),
        format!("took {:?}", started.elapsed()),
    )?;
    ensure(
        sandboxes_of(state.path()) == 0,
        "the never-ready sandbox was left running",
    )?;
    host.stop()
}

fn flooding_app_keeps_serving_with_a_capped_log() -> Result<(), Failed> {
    let state = tempfile::tempdir()?;
    let pkg = workload_package(state.path(), "flooder", "flood")?;
    let host = DevHost::start_with(state.path(), &["--app".into(), pkg])?;
    let (status, _, body) = host.get("flooder.localhost", "/")?;
    ensure(status == 200, format!("status {status}: {body}"))?;
    std::thread::sleep(Duration::from_secs(2));
    for _ in 0..5 {
        let (status, _, _) = host.get("flooder.localhost", "/")?;
        ensure(status == 200, format!("while flooding: {status}"))?;
    }
    let dir = state.path().join("appspaces/flooder/log");
    let total: u64 = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum();
    ensure(
        total < 5 << 20,
        format!("{total} bytes of log after a flood"),
    )?;
    ensure(
        log_has(state.path(), "flooder", "flood line"),
        "nothing of the flood was kept",
    )?;
    ensure(
        log_has(state.path(), "flooder", "rate limit: dropped"),
        "the drop was not recorded",
    )?;
    host.stop()
}

fn idle_appspace_stops_and_restarts_with_its_data() -> Result<(), Failed> {
    let state = tempfile::tempdir()?;
    let host = DevHost::start_with(state.path(), &["--idle-timeout".into(), "1".into()])?;
    let (_, _, body) = host.get("hello-native.localhost", "/")?;
    let first = visits(&body).ok_or("no visits")?;
    ensure(
        sandboxes_of(state.path()) == 1,
        "the sandbox is not running",
    )?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while sandboxes_of(state.path()) != 0 {
        ensure(
            Instant::now() < deadline,
            "the idle appspace was not stopped",
        )?;
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, _, body) = host.get("hello-native.localhost", "/")?;
    ensure(
        status == 200 && visits(&body) == Some(first + 1),
        format!("after idle stop: {status} {:?}", visits(&body)),
    )?;
    ensure(
        log_has(state.path(), "hello-native", "without requests"),
        "idle stop not logged",
    )?;
    host.stop()
}

fn gigabyte_bodies_stream_both_ways() -> Result<(), Failed> {
    const GIB: u64 = 1 << 30;
    let state = tempfile::tempdir()?;
    let pkg = workload_package(state.path(), "streamer", "http")?;
    let host = DevHost::start_with(state.path(), &["--app".into(), pkg])?;
    // Download.
    let mut conn = TcpStream::connect(("127.0.0.1", host.port))?;
    write!(
        conn,
        "GET /big/{GIB} HTTP/1.1\r\nHost: streamer.localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let got = std::io::copy(&mut reader, &mut std::io::sink())?;
    ensure(got == GIB, format!("downloaded {got} bytes"))?;
    // Upload, streamed in 1 MiB writes.
    let mut conn = TcpStream::connect(("127.0.0.1", host.port))?;
    write!(conn, "POST /upload HTTP/1.1\r\nHost: streamer.localhost\r\nContent-Length: {GIB}\r\nConnection: close\r\n\r\n")?;
    let chunk = vec![b'u'; 1 << 20];
    for _ in 0..1024 {
        conn.write_all(&chunk)?;
    }
    let mut response = String::new();
    conn.read_to_string(&mut response)?;
    ensure(
        response.ends_with(&format!("got {GIB} bytes")),
        format!("upload answer: {response:?}"),
    )?;
    // Neither direction sat in the host's memory.
    let status = std::fs::read_to_string(format!("/proc/{}/status", host.child.id()))?;
    let hwm_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .ok_or("no VmHWM")?;
    ensure(
        hwm_kb < 200 * 1024,
        format!("ds-host peaked at {hwm_kb} KiB"),
    )?;
    host.stop()
}

/// Sends `head`, returns the response head and the still-open connection.
fn upgrade(port: u16, head: &str) -> Result<(String, TcpStream), Failed> {
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(Duration::from_secs(20)))?;
    conn.write_all(head.as_bytes())?;
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        ensure(
            conn.read(&mut byte)? == 1,
            "connection closed before the response head",
        )?;
        got.push(byte[0]);
    }
    Ok((String::from_utf8_lossy(&got).to_ascii_lowercase(), conn))
}

fn protocol_upgrades_pass_through() -> Result<(), Failed> {
    let state = tempfile::tempdir()?;
    let pkg = workload_package(state.path(), "echoer", "http")?;
    let host = DevHost::start_with(state.path(), &["--app".into(), pkg])?;
    let (head, mut conn) = upgrade(
        host.port,
        "GET /echo HTTP/1.1\r\nHost: echoer.localhost\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )?;
    ensure(head.starts_with("http/1.1 101"), format!("head: {head}"))?;
    ensure(head.contains("upgrade: echo"), format!("head: {head}"))?;
    for msg in ["ping-1", "a longer second message"] {
        conn.write_all(msg.as_bytes())?;
        let mut back = vec![0u8; msg.len()];
        conn.read_exact(&mut back)?;
        ensure(
            back == msg.as_bytes(),
            format!("echoed {:?}", String::from_utf8_lossy(&back)),
        )?;
    }
    host.stop()
}

fn websocket_echo_end_to_end() -> Result<(), Failed> {
    let state = tempfile::tempdir()?;
    let host = DevHost::start(state.path())?;
    let (head, mut conn) = upgrade(
        host.port,
        "GET /ws HTTP/1.1\r\nHost: hello-deno.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )?;
    ensure(head.starts_with("http/1.1 101"), format!("head: {head}"))?;
    // RFC 6455's sample key and its accept value.
    ensure(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        format!("head: {head}"),
    )?;
    // One masked text frame "hi" (mask 0x01020304).
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | 2];
    frame.extend_from_slice(&mask);
    frame.extend(b"hi".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    conn.write_all(&frame)?;
    let mut hdr = [0u8; 2];
    conn.read_exact(&mut hdr)?;
    ensure(hdr[0] == 0x81, format!("frame type {:#x}", hdr[0]))?;
    let mut payload = vec![0u8; usize::from(hdr[1] & 0x7f)];
    conn.read_exact(&mut payload)?;
    ensure(
        payload == b"echo: hi",
        format!("payload {:?}", String::from_utf8_lossy(&payload)),
    )?;
    host.stop()
}

fn host_killed_mid_request_restarts_cleanly() -> Result<(), Failed> {
    let state = tempfile::tempdir()?;
    let pkg = workload_package(state.path(), "streamer", "http")?;
    let mut host = DevHost::start_with(state.path(), &["--app".into(), pkg.clone()])?;
    let mut conn = TcpStream::connect(("127.0.0.1", host.port))?;
    write!(
        conn,
        "GET /big/{} HTTP/1.1\r\nHost: streamer.localhost\r\nConnection: close\r\n\r\n",
        4u64 << 30
    )?;
    let mut buf = vec![0u8; 1 << 20];
    conn.read_exact(&mut buf)?; // the download is under way
    host.child.kill()?; // SIGKILL: no cleanup of its own
    host.child.wait()?;
    // The sandbox notices its channel is gone and ends itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sandboxes_of(state.path()) != 0 {
        ensure(
            Instant::now() < deadline,
            "a sandbox outlived the killed host",
        )?;
        std::thread::sleep(Duration::from_millis(50));
    }
    // The cut download ends (it must not hang).
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
    // A new host on the same state serves again.
    let host = DevHost::start_with(state.path(), &["--app".into(), pkg])?;
    let (status, _, body) = host.get("streamer.localhost", "/")?;
    ensure(
        status == 200 && body == "hello from the sandbox",
        format!("{status}: {body}"),
    )?;
    let (status, _, _) = host.get("hello-native.localhost", "/")?;
    ensure(
        status == 200,
        format!("hello-native after restart: {status}"),
    )?;
    host.stop()
}

/// GET / over TLS from `port`, trusting only `cert`; the raw response.
fn https_get(cert: &Path, port: u16, host: &str) -> Result<String, Failed> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(cert)? {
        roots.add(cert?)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())?;
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name)?;
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    // A peer closing without close_notify is fine once the body is in.
    let _ = tls.read_to_end(&mut raw);
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

fn https_is_served_with_hsts() -> Result<(), Failed> {
    let state = tempfile::tempdir()?;
    let host = DevHost::start(state.path())?;
    let raw = https_get(
        &state.path().join("tls/cert.pem"),
        host.tls_port,
        "hello-native.localhost",
    )?;
    let text = raw.to_ascii_lowercase();
    ensure(
        text.starts_with("http/1.1 200"),
        format!("response: {text:.200}"),
    )?;
    ensure(
        text.contains("strict-transport-security: max-age="),
        "no HSTS over HTTPS",
    )?;
    ensure(
        text.contains("hello from a ds sandbox"),
        "no page over HTTPS",
    )?;
    let (_, head, _) = host.get("hello-native.localhost", "/")?;
    ensure(
        !head.contains("strict-transport-security"),
        "HSTS over plain HTTP",
    )?;
    host.stop()
}

fn oversized_and_slow_request_heads_are_refused() -> Result<(), Failed> {
    let state = tempfile::tempdir()?;
    let host = DevHost::start_with(state.path(), &["--header-timeout".into(), "1".into()])?;
    // A 300 KiB header (the 64 KiB limit is checked between reads).
    let mut conn = TcpStream::connect(("127.0.0.1", host.port))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let big = "a".repeat(300 * 1024);
    let _ = write!(
        conn,
        "GET / HTTP/1.1\r\nHost: hello-native.localhost\r\nX-Big: {big}\r\n\r\n"
    );
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    ensure(
        answer.starts_with("HTTP/1.1 431"),
        format!("oversized head got {:.80}", answer),
    )?;
    // A head that never finishes.
    let mut conn = TcpStream::connect(("127.0.0.1", host.port))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(conn, "GET / HTTP/1.1\r\nHost: hello-native.localhost\r\n")?;
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    ensure(
        started.elapsed() < Duration::from_secs(5),
        format!("a slow head held the connection {:?}", started.elapsed()),
    )?;
    ensure(
        !String::from_utf8_lossy(&answer).contains("200 OK"),
        "a slow head was served",
    )?;
    // The host still serves.
    let (status, _, _) = host.get("hello-native.localhost", "/")?;
    ensure(status == 200, format!("after the abuse: {status}"))?;
    host.stop()
}

/// The front door's confinement (the code path the real front door will
/// use, docs/privsep.md), checked by its self-test against a running dev
/// host's own state database and admin socket.
fn front_door_selftest_refuses_everything_once_confined() -> Result<(), Failed> {
    let state = tempfile::tempdir()?;
    let host = DevHost::start(state.path())?;
    let out = Command::new(HOST)
        .arg("__front-selftest")
        .arg("--state-db")
        .arg(state.path().join("state.db"))
        .arg("--admin-socket")
        .arg(state.path().join("admin.sock"))
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let result = (|| {
        ensure(
            out.status.success() && !stdout.contains("ESCAPED"),
            format!(
                "selftest {}: {stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
        )?;
        let blocked = stdout.lines().filter(|l| l.starts_with("BLOCKED")).count();
        ensure(blocked >= 16, format!("only {blocked} attempts: {stdout}"))?;
        let status = |key: &str| -> Vec<String> {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix("STATUS ")?.strip_prefix(key))
                .map(|v| v.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        for cap in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
            ensure(
                status(cap) == ["0000000000000000"],
                format!("{cap} {:?}", status(cap)),
            )?;
        }
        ensure(status("NoNewPrivs:") == ["1"], "no_new_privs is not set")?;
        ensure(status("Seccomp:") == ["2"], "no seccomp filter")?;
        let uids = status("Uid:");
        ensure(
            uids.len() == 4 && uids.iter().all(|u| u != "0"),
            format!("still root: Uid {uids:?}"),
        )?;
        ensure(
            stdout.contains("landlock_full=true"),
            format!("Landlock not fully enforced: {stdout}"),
        )
    })();
    host.stop()?;
    result
}

/// `Type=notify`: READY=1 once the host serves (not before), watchdog
/// pings when systemd asks for them, STOPPING=1 at SIGTERM; the protocol
/// is a datagram socket named by `NOTIFY_SOCKET`, played here by the test.
fn systemd_hears_ready_watchdog_and_stopping() -> Result<(), Failed> {
    let state = tempfile::tempdir()?;
    let socket_path = state.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path)?;
    socket.set_read_timeout(Some(Duration::from_secs(20)))?;
    let watchdog_usec = "400000";
    let host = DevHost::start_with_env(
        state.path(),
        &[],
        &[
            ("NOTIFY_SOCKET", socket_path.as_os_str()),
            ("WATCHDOG_USEC", watchdog_usec.as_ref()),
            // sd_notify checks the watchdog is meant for this process: no
            // WATCHDOG_PID means "whoever reads it".
        ],
    )?;
    let mut buf = [0u8; 512];
    let mut next = || -> Result<String, Failed> {
        let n = socket.recv(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    let first = next()?;
    ensure(
        first.contains("READY=1"),
        format!("first message: {first:?}"),
    )?;
    // Ready means serving: the front door answers at once.
    let (status, _, _) = host.get("nothing.localhost", "/")?;
    ensure(status == 404, format!("after READY=1: {status}"))?;
    let mut pings = 0;
    while pings < 3 {
        let msg = next()?;
        ensure(
            msg.contains("WATCHDOG=1"),
            format!("expected a ping: {msg:?}"),
        )?;
        pings += 1;
    }
    let pid = rustix::process::Pid::from_raw(host.child.id() as i32).ok_or("bad pid")?;
    rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
    loop {
        let msg = next()?;
        if msg.contains("STOPPING=1") {
            break;
        }
        ensure(msg.contains("WATCHDOG=1"), format!("unexpected: {msg:?}"))?;
    }
    host.stop()
}

fn production_mode_serves_https_and_redirects_http() -> Result<(), Failed> {
    let tmp = tempfile::tempdir()?;
    let state_dir = tmp.path().join("state");
    let pkg = workload_package(tmp.path(), "echoer", "http")?;
    // An app installed and an appspace created, as dsctl will do.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let state = ds_host::state::State::open(&state_dir).await?;
        let v = state
            .install(Path::new(&pkg), &ds_host::package::PackageLimits::default())
            .await?;
        let data = state_dir.join("appspaces/echoer/data");
        state
            .create_appspace(
                "echoer",
                "echoer.test.example",
                "echoer",
                &v.manifest.version,
                64 << 20,
                ds_host::state::Storage {
                    data_dir: &data,
                    disk: (ds_host::state::DiskKind::None, 0),
                    pending: None,
                },
            )
            .await?;
        Ok::<_, Failed>(())
    })?;
    let (_, cert) = ds_host::front_door::tls::dev_certificate(
        &tmp.path().join("tls"),
        &["echoer.test.example".into()],
    )?;
    let config = tmp.path().join("ds.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\nbase_domain = \"test.example\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [https]\nlisten = \"127.0.0.1:0\"\ncertificate = \"{}\"\nprivate_key = \"{}\"\n\
             [admin]\nsocket = \"{}\"\n",
            state_dir.display(),
            cert.display(),
            tmp.path().join("tls/key.pem").display(),
            tmp.path().join("admin.sock").display()
        ),
    )?;
    // --check-config accepts it and touches nothing.
    let checked = Command::new(HOST)
        .arg("--check-config")
        .arg(&config)
        .output()?;
    ensure(
        checked.status.success() && String::from_utf8_lossy(&checked.stdout).contains("is valid"),
        format!(
            "--check-config refused a good config: {}",
            String::from_utf8_lossy(&checked.stderr)
        ),
    )?;
    ensure(
        !tmp.path().join("admin.sock").exists(),
        "--check-config created the admin socket",
    )?;
    // A certificate it cannot read is found by --check-config too.
    let broken = tmp.path().join("broken.toml");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&config)?
            .replace(&cert.display().to_string(), "/nonexistent/cert.pem"),
    )?;
    let refused = Command::new(HOST)
        .arg("--check-config")
        .arg(&broken)
        .output()?;
    ensure(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains("/nonexistent/cert.pem"),
        format!(
            "--check-config with a missing certificate: {}",
            String::from_utf8_lossy(&refused.stderr)
        ),
    )?;
    let mut child = Command::new(HOST)
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    // "ds-host: serving https://*.test.example:P/ on 127.0.0.1:P (plain HTTP on 127.0.0.1:Q redirects)"
    // (log lines, which go to stdout under systemd, may come first)
    let line = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.starts_with("ds-host: serving https://"))
        .ok_or("ds-host printed no banner")?;
    let ports: Vec<u16> = line
        .split("127.0.0.1:")
        .skip(1)
        .filter_map(|p| p.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .collect();
    std::thread::spawn(move || for _ in lines {});
    let (https_port, http_port) = match ports[..] {
        [a, b] => (a, b),
        _ => return Err(format!("unexpected banner {line:?}").into()),
    };
    let result = (|| {
        let raw = https_get(&cert, https_port, "echoer.test.example")?;
        ensure(
            raw.starts_with("HTTP/1.1 200"),
            format!("https: {raw:.120}"),
        )?;
        ensure(
            raw.ends_with("hello from the sandbox"),
            format!("https body: {raw:.300}"),
        )?;
        let mut conn = TcpStream::connect(("127.0.0.1", http_port))?;
        write!(
            conn,
            "GET /some/path?q=1 HTTP/1.1\r\nHost: echoer.test.example\r\nConnection: close\r\n\r\n"
        )?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer)?;
        ensure(
            answer.starts_with("HTTP/1.1 308"),
            format!("http: {answer:.120}"),
        )?;
        let want = format!("location: https://echoer.test.example:{https_port}/some/path?q=1");
        ensure(
            answer.to_ascii_lowercase().contains(&want),
            format!("redirect: {answer}"),
        )?;
        // dsctl finds the admin socket through the config file.
        let out = Command::new(bin_dir().join("dsctl"))
            .arg("--config")
            .arg(&config)
            .args(["appspace", "list"])
            .env_remove("DS_ADMIN_SOCKET")
            .output()?;
        let table = String::from_utf8_lossy(&out.stdout);
        ensure(
            out.status.success() && table.contains("echoer.test.example"),
            format!("dsctl: {table} {}", String::from_utf8_lossy(&out.stderr)),
        )
    })();
    let pid = rustix::process::Pid::from_raw(child.id() as i32).ok_or("bad pid")?;
    rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
    let status = child.wait()?;
    result?;
    ensure(status.success(), format!("ds-host exited {status}"))
}

fn bad_config_is_refused_with_the_key_named() -> Result<(), Failed> {
    let tmp = tempfile::tempdir()?;
    let config = tmp.path().join("ds.toml");
    std::fs::write(
        &config,
        "base_domain = \"a.example\"\nlisten_everywhere = true\n",
    )?;
    for flag in ["--config", "--check-config"] {
        let out = Command::new(HOST).arg(flag).arg(&config).output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure(
            !out.status.success(),
            format!("{flag}: a bad config was accepted"),
        )?;
        ensure(
            stderr.contains("listen_everywhere"),
            format!("{flag}: stderr: {stderr}"),
        )?;
    }
    let out = Command::new(HOST)
        .arg("--config")
        .arg(tmp.path().join("missing.toml"))
        .output()?;
    ensure(
        String::from_utf8_lossy(&out.stderr).contains("missing.toml"),
        "a missing config was not named",
    )
}

fn slow_apps_and_stalled_bodies_are_cut_off() -> Result<(), Failed> {
    let state = tempfile::tempdir()?;
    let pkg = workload_package(state.path(), "slowpoke", "http")?;
    let host = DevHost::start_with(
        state.path(),
        &[
            "--app".into(),
            pkg,
            "--response-timeout".into(),
            "1".into(),
            "--body-idle-timeout".into(),
            "1".into(),
        ],
    )?;
    let (status, _, _) = host.get("slowpoke.localhost", "/")?;
    ensure(status == 200, format!("warm-up: {status}"))?;
    // An answer that does not start in time is a 504.
    let started = Instant::now();
    let (status, _, body) = host.get("slowpoke.localhost", "/slow/5")?;
    ensure(status == 504, format!("slow answer: {status} {body}"))?;
    ensure(
        started.elapsed() < Duration::from_secs(4),
        format!("took {:?}", started.elapsed()),
    )?;
    // A response body that stops moving is cut off.
    let started = Instant::now();
    let mut conn = TcpStream::connect(("127.0.0.1", host.port))?;
    conn.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        conn,
        "GET /stall HTTP/1.1\r\nHost: slowpoke.localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    let _ = conn.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    ensure(
        text.starts_with("HTTP/1.1 200") && text.ends_with("0123456789"),
        format!("{text:?}"),
    )?;
    ensure(
        started.elapsed() < Duration::from_secs(5),
        format!("stalled body held {:?}", started.elapsed()),
    )?;
    // An upload that stops moving is cut off too.
    let started = Instant::now();
    let mut conn = TcpStream::connect(("127.0.0.1", host.port))?;
    conn.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(conn, "POST /upload HTTP/1.1\r\nHost: slowpoke.localhost\r\nContent-Length: 1000\r\n\r\n0123456789")?;
    let mut raw = Vec::new();
    let _ = conn.read_to_end(&mut raw);
    ensure(
        started.elapsed() < Duration::from_secs(5),
        format!("stalled upload held {:?}", started.elapsed()),
    )?;
    let text = String::from_utf8_lossy(&raw);
    ensure(!text.contains("got 1000 bytes"), format!("{text:?}"))?;
    // And the appspace still serves.
    let (status, _, body) = host.get("slowpoke.localhost", "/")?;
    let log = std::fs::read_to_string(state.path().join("appspaces/slowpoke/log/app.log"))
        .unwrap_or_default();
    ensure(
        status == 200,
        format!("afterwards: {status} {body}\nappspace log:\n{log}"),
    )?;
    host.stop()
}

/// `dsctl --socket STATE/admin.sock ARGS`, with how long it took.
fn dsctl(state: &Path, args: &[&str]) -> Result<(String, Duration), Failed> {
    let started = Instant::now();
    let out = Command::new(bin_dir().join("dsctl"))
        .arg("--socket")
        .arg(state.join("admin.sock"))
        .args(args)
        .output()?;
    let took = started.elapsed();
    ensure(
        out.status.success(),
        format!("dsctl {args:?}: {}", String::from_utf8_lossy(&out.stderr)),
    )?;
    Ok((String::from_utf8_lossy(&out.stdout).into_owned(), took))
}

/// Polls `cond` every 20 ms until it holds or `within` passes.
fn wait_for(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn admin_answers_at_once_during_a_slow_cold_start() -> Result<(), Failed> {
    let state = tempfile::tempdir()?;
    let pkg = workload_package(state.path(), "slow", "slow-start")?;
    let host = DevHost::start_with(state.path(), &["--app".into(), pkg])?;
    let port = host.port;
    let first = std::thread::spawn(move || -> Result<u16, String> {
        let mut conn = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        write!(
            conn,
            "GET / HTTP/1.1\r\nHost: slow.localhost\r\nConnection: close\r\n\r\n"
        )
        .map_err(|e| e.to_string())?;
        let mut raw = String::new();
        conn.read_to_string(&mut raw).map_err(|e| e.to_string())?;
        raw.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or(raw)
    });
    // The start is under way (the app sleeps 8 s before it listens).
    let starting = wait_for(Duration::from_secs(5), || {
        dsctl(state.path(), &["appspace", "show", "slow.localhost"])
            .is_ok_and(|(out, _)| out.contains("starting"))
    });
    ensure(starting, "the appspace never showed as starting")?;
    for args in [
        &["status"][..],
        &["appspace", "list"],
        &["appspace", "show", "slow.localhost"],
        &["--json", "appspace", "list"],
    ] {
        let (out, took) = dsctl(state.path(), args)?;
        ensure(
            took < Duration::from_secs(2),
            format!("dsctl {args:?} took {took:?} during a cold start"),
        )?;
        if args.contains(&"show") {
            ensure(out.contains("starting"), out.clone())?;
        }
    }
    let status = first.join().map_err(|_| "request thread panicked")??;
    ensure(status == 200, format!("the slow app answered {status}"))?;
    host.stop()
}

fn a_stopping_host_answers_503_and_starts_nothing() -> Result<(), Failed> {
    let state = tempfile::tempdir()?;
    let pkg = workload_package(state.path(), "slow", "slow-start")?;
    let host = DevHost::start_with(state.path(), &["--app".into(), pkg])?;
    // A keep-alive connection to hello-native, whose sandbox is then
    // stopped by the admin.
    let mut conn = TcpStream::connect(("127.0.0.1", host.port))?;
    conn.set_read_timeout(Some(Duration::from_secs(20)))?;
    let ask = |conn: &mut TcpStream| -> Result<String, Failed> {
        write!(
            conn,
            "GET / HTTP/1.1\r\nHost: hello-native.localhost\r\n\r\n"
        )?;
        let mut buf = vec![0u8; 64 * 1024];
        let n = conn.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    let first = ask(&mut conn)?;
    ensure(first.starts_with("HTTP/1.1 200"), first.clone())?;
    dsctl(
        state.path(),
        &["appspace", "stop", "hello-native.localhost"],
    )?;
    let starts = || {
        log_of(state.path(), "hello-native")
            .matches("starting the sandbox")
            .count()
    };
    let starts_before = starts();
    // The slow appspace starting keeps the stopping host busy for seconds.
    let port = host.port;
    std::thread::spawn(move || {
        if let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = write!(c, "GET / HTTP/1.1\r\nHost: slow.localhost\r\n\r\n");
            let _ = c.read(&mut [0u8; 64]);
        }
    });
    ensure(
        log_has(state.path(), "slow", "starting the sandbox"),
        "the slow appspace did not start",
    )?;
    let pid = rustix::process::Pid::from_raw(host.child.id() as i32).ok_or("bad pid")?;
    rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
    std::thread::sleep(Duration::from_millis(300));
    let second = ask(&mut conn)?;
    ensure(
        second.starts_with("HTTP/1.1 503") && second.contains("Shutting down"),
        format!("after SIGTERM: {second:?}"),
    )?;
    ensure(
        second.to_ascii_lowercase().contains("connection: close"),
        format!("the connection is not closed: {second:?}"),
    )?;
    ensure(
        starts() == starts_before,
        "a stopping host started a sandbox",
    )?;
    host.stop()
}

fn deno_refuses_what_the_sandbox_would_refuse() -> Result<(), Failed> {
    let state = tempfile::tempdir()?;
    let host = DevHost::start(state.path())?;
    let (status, _, body) = host.get("hello-deno.localhost", "/probe")?;
    ensure(status == 200, format!("{status}: {body}"))?;
    // Deno itself refuses (NotCapable), before the sandbox would.
    for key in ["read_etc_passwd", "connect_unlisted", "write_app", "run"] {
        ensure(
            body.contains(&format!("\"{key}\":\"NotCapable\"")),
            format!("{key}: {body}"),
        )?;
    }
    // What the app may do still works.
    ensure(body.contains("\"write_data\":\"ok\""), body.clone())?;
    host.stop()
}

/// CPU time (user + system) of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    // utime and stime are the 14th and 15th fields (11 and 12 after the
    // command name and state).
    fields
        .get(11)
        .and_then(|u| u.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
}

fn out_of_descriptors_the_host_backs_off_and_recovers() -> Result<(), Failed> {
    let state = tempfile::tempdir()?;
    // A host with few descriptors (prlimit applies the limit before exec).
    let stderr = tempfile::NamedTempFile::new()?;
    let mut child = Command::new("prlimit")
        .arg("--nofile=256:256")
        .arg(HOST)
        .args(["--dev", "--port", "0", "--tls-port", "0", "--state-dir"])
        .arg(state.path())
        .stdout(Stdio::piped())
        .stderr(stderr.reopen()?)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let port = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            let rest = l.split("serving http://").nth(1)?;
            rest.split(':')
                .nth(1)?
                .split('/')
                .next()?
                .parse::<u16>()
                .ok()
        })
        .ok_or_else(|| format!("no URL printed; stderr:\n{}", tail_of(&stderr)))?;
    let printed = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = printed.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let mut all = sink.lock().unwrap_or_else(|p| p.into_inner());
            all.push_str(&line);
            all.push('\n');
        }
    });
    let host_pid = child.id();
    // Hold more connections than it has descriptors: its accept fails
    // with EMFILE while they stay open.
    let mut held = Vec::new();
    for _ in 0..400 {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(c) => held.push(c),
            Err(_) => break,
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(host_pid);
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_ticks(host_pid) - before;
    let ticks_per_sec = 100; // USER_HZ on Linux
    let result = (|| {
        ensure(
            spent < ticks_per_sec / 2,
            format!(
                "the host spent {spent} ticks in 2 s with its descriptors exhausted (spinning?)"
            ),
        )?;
        let log = printed.lock().unwrap_or_else(|p| p.into_inner()).clone();
        ensure(
            log.contains("backing off"),
            format!("no back-off warning in its log:\n{log}"),
        )?;
        // Once the connections go, it serves again.
        drop(std::mem::take(&mut held));
        let served = wait_for(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port))
                .and_then(|mut c| {
                    c.set_read_timeout(Some(Duration::from_secs(5)))?;
                    write!(
                        c,
                        "GET / HTTP/1.1\r\nHost: nothing.localhost\r\nConnection: close\r\n\r\n"
                    )?;
                    let mut raw = String::new();
                    c.read_to_string(&mut raw)?;
                    Ok(raw.starts_with("HTTP/1.1 404"))
                })
                .unwrap_or(false)
        });
        ensure(
            served,
            "the host did not serve again after the connections closed",
        )
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// The field `name` of `/proc/PID/status`.
fn status_field(pid: u32, name: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|r| r.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    })
}

/// The front door is a process of its own: another uid (as root), no
/// capability in any set, no_new_privs, seccomp, no descriptor of the
/// state database; `dsctl status` shows both processes. Killed, it is
/// restarted and the running sandbox keeps running; the supervisor killed,
/// it dies too.
fn the_front_door_is_its_own_confined_process_and_restarts() -> Result<(), Failed> {
    let state = tempfile::tempdir()?;
    let mut host = DevHost::start(state.path())?;
    let (status, _, body) = host.get("hello-native.localhost", "/")?;
    ensure(status == 200, format!("status {status}: {body}"))?;
    let first = visits(&body).ok_or("no visit count")?;
    let supervisor = host.child.id();
    let front = front_door_of(supervisor).ok_or("no front door process")?;
    let root = rustix::process::geteuid().is_root();
    let want_uid = if root {
        ds_api::ids::FRONT_DOOR_DEV_ID.to_string()
    } else {
        rustix::process::getuid().as_raw().to_string()
    };
    let uid = status_field(front, "Uid").unwrap_or_default();
    ensure(
        uid.split_whitespace().all(|u| u == want_uid),
        format!("front door Uid: {uid} (want {want_uid})"),
    )?;
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let v = status_field(front, set).unwrap_or_default();
        // A non-root supervisor cannot empty its child's bounding set.
        if set == "CapBnd" && !root {
            continue;
        }
        ensure(v == "0000000000000000", format!("front door {set}: {v}"))?;
    }
    ensure(
        status_field(front, "NoNewPrivs").as_deref() == Some("1"),
        "front door without no_new_privs",
    )?;
    ensure(
        status_field(front, "Seccomp").as_deref() == Some("2"),
        "front door without seccomp",
    )?;
    // Both phases: the allow-list, and the tighter one on top.
    ensure(
        status_field(front, "Seccomp_filters").as_deref() == Some("2"),
        format!(
            "front door seccomp filters: {:?}",
            status_field(front, "Seccomp_filters")
        ),
    )?;
    for fd in std::fs::read_dir(format!("/proc/{front}/fd"))?.flatten() {
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        ensure(
            !target.to_string_lossy().contains("state.db"),
            format!("the front door holds {}", target.display()),
        )?;
    }
    let (out, _) = dsctl(state.path(), &["--json", "status"])?;
    let shown: serde_json::Value = serde_json::from_str(&out)?;
    ensure(
        shown["front_door"]["pid"].as_u64() == Some(u64::from(front))
            && shown["front_door"]["uid"].as_u64().map(|u| u.to_string()) == Some(want_uid.clone())
            && shown["front_door"]["seccomp_phase"].as_u64() == Some(2)
            && shown["front_door"]["landlock_abi"].as_i64() >= Some(1)
            && shown["supervisor"]["pid"].as_u64() == Some(u64::from(supervisor)),
        format!("status: {shown}"),
    )?;
    // Killed: a new one serves, and the sandbox it served kept running
    // (its count goes on rather than the app starting over).
    let sandboxes_before = sandboxes_of(state.path());
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(front as i32).ok_or("pid")?,
        rustix::process::Signal::KILL,
    )?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let second = loop {
        if let Some(p) = front_door_of(supervisor).filter(|p| *p != front) {
            if status_field(p, "Seccomp").as_deref() == Some("2") {
                break p;
            }
        }
        ensure(Instant::now() < deadline, "no new front door")?;
        std::thread::sleep(Duration::from_millis(50));
    };
    let served = loop {
        if let Ok((200, _, body)) = host.get("hello-native.localhost", "/") {
            break body;
        }
        ensure(Instant::now() < deadline, "not served after the restart")?;
        std::thread::sleep(Duration::from_millis(100));
    };
    ensure(
        visits(&served) == Some(first + 1),
        format!("after the restart: {:?} (before {first})", visits(&served)),
    )?;
    ensure(
        sandboxes_before == 1 && sandboxes_of(state.path()) == 1,
        "the sandbox did not survive the front door's restart",
    )?;
    let (out, _) = dsctl(state.path(), &["--json", "status"])?;
    let shown: serde_json::Value = serde_json::from_str(&out)?;
    ensure(
        shown["front_door_restarts"].as_u64() == Some(1)
            && shown["front_door"]["pid"].as_u64() == Some(u64::from(second)),
        format!("status after the restart: {shown}"),
    )?;
    // The supervisor killed: the front door goes with it.
    host.child.kill()?;
    host.child.wait()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{second}")).exists()
        && status_field(second, "State").is_some_and(|s| !s.starts_with('Z'))
    {
        ensure(
            Instant::now() < deadline,
            "the front door outlived the supervisor",
        )?;
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A nameserver for the test: `up.test` has the address 127.0.0.1 (no
/// IPv6 one), anything else does not exist. Returns its address and the
/// questions it was asked.
/// The questions a fake nameserver was asked.
type Asked = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

fn fake_nameserver() -> Result<(std::net::SocketAddr, Asked), Failed> {
    use hickory_proto::op::{Message, OpCode, ResponseCode};
    use hickory_proto::rr::{rdata::A, RData, Record, RecordType};
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let addr = socket.local_addr()?;
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = asked.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let Some(query) = q.queries.first().cloned() else {
                continue;
            };
            seen.lock()
                .unwrap()
                .push(format!("{} {}", query.name(), query.query_type()));
            let mut answer = Message::response(q.metadata.id, OpCode::Query);
            answer.add_query(query.clone());
            if query.name().to_ascii() == "long.test." {
                // Too long for a datagram: truncated, whole over TCP.
                answer.metadata.truncation = true;
            } else if query.name().to_ascii() == "up.test." {
                if query.query_type() == RecordType::A {
                    answer.add_answer(Record::from_rdata(
                        query.name().clone(),
                        60,
                        RData::A(A(std::net::Ipv4Addr::LOCALHOST)),
                    ));
                }
            } else {
                answer.metadata.response_code = ResponseCode::NXDomain;
            }
            // A stray answer with the wrong id first, saying the name does
            // not exist: it must be ignored.
            let mut stray = Message::response(q.metadata.id.wrapping_add(1), OpCode::Query);
            stray.add_query(query.clone());
            stray.metadata.response_code = ResponseCode::NXDomain;
            if let (Ok(stray), Ok(answer)) = (stray.to_vec(), answer.to_vec()) {
                let _ = socket.send_to(&stray, from);
                let _ = socket.send_to(&answer, from);
            }
        }
    });
    // The same port over TCP (RFC 7766): `long.test` has the address
    // 127.0.0.2 there; each message after its two-byte length.
    let tcp = std::net::TcpListener::bind(addr)?;
    let seen = asked.clone();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for conn in tcp.incoming() {
            let Ok(mut conn) = conn else { continue };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut len = [0u8; 2];
                while conn.read_exact(&mut len).is_ok() {
                    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
                    if conn.read_exact(&mut buf).is_err() {
                        return;
                    }
                    let Ok(q) = Message::from_vec(&buf) else {
                        return;
                    };
                    let Some(query) = q.queries.first().cloned() else {
                        return;
                    };
                    seen.lock().unwrap().push(format!(
                        "tcp {} {}",
                        query.name(),
                        query.query_type()
                    ));
                    let mut answer = Message::response(q.metadata.id, OpCode::Query);
                    answer.add_query(query.clone());
                    if query.name().to_ascii() == "long.test."
                        && query.query_type() == RecordType::A
                    {
                        answer.add_answer(Record::from_rdata(
                            query.name().clone(),
                            60,
                            RData::A(A(std::net::Ipv4Addr::new(127, 0, 0, 2))),
                        ));
                    }
                    let Ok(bytes) = answer.to_vec() else { return };
                    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&bytes);
                    if conn.write_all(&framed).is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok((addr, asked))
}

/// An egress name goes to the nameserver through the front door (the
/// supervisor parses no DNS answer): its answer decides, and the rules
/// still apply to what it says (a name leading to loopback is refused).
fn egress_names_are_resolved_by_the_front_door() -> Result<(), Failed> {
    let state = tempfile::tempdir()?;
    let (nameserver, asked) = fake_nameserver()?;
    let pkg = workload_package(state.path(), "wl", "http")?;
    let host = DevHost::start_with(
        state.path(),
        &[
            "--app".into(),
            pkg,
            "--nameserver".into(),
            nameserver.to_string(),
        ],
    )?;
    dsctl(
        state.path(),
        &["appspace", "egress", "allow", "wl.localhost", "up.test:80"],
    )?;
    dsctl(
        state.path(),
        &[
            "appspace",
            "egress",
            "allow",
            "wl.localhost",
            "gone.test:80",
        ],
    )?;
    let _ = host.get("wl.localhost", "/egress/get?url=http://up.test/")?;
    ensure(
        log_has(
            state.path(),
            "wl",
            "up.test resolves to 127.0.0.1, a loopback address",
        ),
        format!("the answer did not decide: {}", log_of(state.path(), "wl")),
    )?;
    let _ = host.get("wl.localhost", "/egress/get?url=http://gone.test/")?;
    ensure(
        log_has(state.path(), "wl", "gone.test.: no such name"),
        format!("NXDOMAIN not reported: {}", log_of(state.path(), "wl")),
    )?;
    // A truncated answer is asked again over TCP, whose answer decides.
    dsctl(
        state.path(),
        &[
            "appspace",
            "egress",
            "allow",
            "wl.localhost",
            "long.test:80",
        ],
    )?;
    let _ = host.get("wl.localhost", "/egress/get?url=http://long.test/")?;
    ensure(
        log_has(
            state.path(),
            "wl",
            "long.test resolves to 127.0.0.2, a loopback address",
        ),
        format!("not asked over TCP: {}", log_of(state.path(), "wl")),
    )?;
    ensure(
        asked
            .lock()
            .unwrap()
            .iter()
            .any(|q| q == "tcp long.test. A"),
        "no TCP question",
    )?;
    let asked = asked.lock().unwrap().clone();
    ensure(
        asked.contains(&"up.test. A".to_owned()) && asked.contains(&"up.test. AAAA".to_owned()),
        format!("questions asked: {asked:?}"),
    )?;
    host.stop()
}
