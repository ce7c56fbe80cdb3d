//! The sandbox suite: a hostile app attacks its sandbox, resource bombs
//! hit their limits, and ordinary programs (static, glibc-dynamic,
//! musl-static Rust, Deno) keep working. Runs `ds-sandbox exec` for real.
//!
//! Needs root, user namespaces, Landlock, cgroups and gcc. A test whose
//! requirement is missing is reported as ignored with the reason printed
//! as "SKIPPED ...", never as passed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use libtest_mimic::{Arguments, Failed, Trial};

/// The `ds-sandbox` under test: `$DS_SANDBOX` when set (the test script
/// points it at the static build that ships), else Cargo's build of it.
fn sandbox() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::var("DS_SANDBOX").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ds-sandbox").into())
    })
}

fn main() {
    let args = Arguments::from_args();
    eprintln!("sandbox suite: testing {}", sandbox());
    let blocker = missing_requirement();
    let deno = deno_binary();
    let musl = musl_available();
    let mut trials = Vec::new();
    let mut add = |name: &str, needs: Option<String>, f: fn() -> Result<(), Failed>| {
        let skip = blocker.clone().or(needs);
        if let Some(why) = &skip {
            eprintln!("SKIPPED {name}: {why}");
        }
        trials.push(Trial::test(name, f).with_ignored_flag(skip.is_some()));
    };
    add(
        "hostile_app_blocks_every_attack",
        None,
        hostile_app_blocks_every_attack,
    );
    add(
        "hostile_app_blocks_every_attack_at_debian12_landlock_abi_2",
        None,
        || hostile_run(Some(2)),
    );
    add("functional_static_glibc", None, || functional("workload"));
    add("functional_dynamic_glibc", None, || {
        functional("workload-dynamic")
    });
    add(
        "functional_static_musl_rust",
        musl.err(),
        functional_musl_rust,
    );
    add(
        "deno_program_runs",
        deno.as_ref().err().cloned(),
        deno_program_runs,
    );
    add(
        "a_host_at_a_lowered_priority_still_starts_sandboxes",
        None,
        a_host_at_a_lowered_priority_still_starts_sandboxes,
    );
    add(
        "exit_status_passes_through",
        None,
        exit_status_passes_through,
    );
    add(
        "fork_bomb_stops_at_pids_limit",
        None,
        fork_bomb_stops_at_pids_limit,
    );
    add(
        "memory_bomb_is_oom_killed_and_reported",
        None,
        memory_bomb_is_oom_killed_and_reported,
    );
    add(
        "cpu_spinner_is_held_to_its_quota",
        None,
        cpu_spinner_is_held_to_its_quota,
    );
    add(
        "data_survives_between_runs",
        None,
        data_survives_between_runs,
    );
    add(
        "data_directory_is_handed_over_without_following_links",
        None,
        data_directory_is_handed_over_without_following_links,
    );
    add("nothing_is_left_behind", None, nothing_is_left_behind);
    add(
        "bad_arguments_are_refused_cleanly",
        None,
        bad_arguments_are_refused_cleanly,
    );
    add(
        "killed_launcher_takes_the_sandbox_with_it",
        None,
        killed_launcher_takes_the_sandbox_with_it,
    );
    add(
        "agent_serves_http_over_the_channel",
        None,
        agent_serves_http_over_the_channel,
    );
    add(
        "spare_launcher_runs_what_it_is_handed",
        None,
        spare_launcher_runs_what_it_is_handed,
    );
    libtest_mimic::run(&args, trials).exit();
}

/// Why the suite cannot run here, if it cannot.
fn missing_requirement() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("needs root (cgroups, a dedicated host uid)".into());
    }
    let userns = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap_or_default();
    if userns.trim() == "0" {
        return Some("user namespaces are disabled (user.max_user_namespaces = 0)".into());
    }
    if ds_sandbox::landlock_policy::kernel_abi() < 1 {
        return Some("the kernel has no Landlock".into());
    }
    if let Err(e) = ds_sandbox::cgroup::CgroupVersion::detect() {
        return Some(e.to_string());
    }
    if prebuilt().is_none() && Command::new("gcc").arg("--version").output().is_err() {
        return Some("gcc is not installed (run packaging/dev/setup.sh)".into());
    }
    None
}

/// `$DS_SUITE_PREBUILT`: a directory with the test programs already built
/// (hostile, workload, workload-dynamic, musl-app), for a machine without
/// compilers: the Debian VM suite (tests/vm) runs this suite that way.
fn prebuilt() -> Option<PathBuf> {
    std::env::var_os("DS_SUITE_PREBUILT").map(PathBuf::from)
}

fn deno_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("DS_DENO") {
        return Ok(PathBuf::from(p));
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ds-tools/bin/deno");
    if local.exists() {
        return Ok(local);
    }
    Err("no Deno binary (set DS_DENO or run packaging/dev/setup.sh)".into())
}

fn musl_available() -> Result<(), String> {
    if let Some(dir) = prebuilt() {
        return if dir.join("musl-app").is_file() {
            Ok(())
        } else {
            Err(format!("no musl-app in {}", dir.display()))
        };
    }
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match out {
        Ok(o) if String::from_utf8_lossy(&o.stdout).contains("x86_64-unknown-linux-musl") => Ok(()),
        _ => Err("the x86_64-unknown-linux-musl target is not installed".into()),
    }
}

/// A scratch directory for this run (under the target directory).
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // `$DS_SUITE_SCRATCH` where the build's directory is not there or
        // not writable (the VM suite runs this under the unit's
        // ProtectSystem=strict).
        let base = std::env::var_os("DS_SUITE_SCRATCH")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
        let d = base.join(format!("sandbox-suite-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

/// The app directory with the compiled test programs.
fn app_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let app = scratch().join("app");
        std::fs::create_dir_all(&app).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/hostile");
        let programs = [
            ("hostile", "hostile.c", vec!["-static", "-pthread"]),
            ("workload", "workload.c", vec!["-static", "-pthread"]),
            ("workload-dynamic", "workload.c", vec!["-pthread"]),
        ];
        for (out, file, extra) in programs {
            if let Some(dir) = prebuilt() {
                std::fs::copy(dir.join(out), app.join(out)).unwrap();
                continue;
            }
            let status = Command::new("gcc")
                .args(["-O2", "-o"])
                .arg(app.join(out))
                .arg(src.join(file))
                .args(extra)
                .status()
                .unwrap();
            assert!(status.success(), "compiling {file}");
        }
        std::fs::write(app.join("app-file.txt"), "hello from the app\n").unwrap();
        // World-readable, as an installed app version would be.
        Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&app)
            .status()
            .unwrap();
        app
    })
}

fn fresh_data(name: &str) -> PathBuf {
    let d = scratch().join("data").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn exec(app: &Path, data: &Path, opts: &[&str], cmd: &[&str]) -> Output {
    exec_with(Command::new(sandbox()), app, data, opts, cmd)
}

/// `exec` of `cmd` (the test app, no options) started at nice `nice`, as
/// a host thread at that priority would start it.
fn exec_at_nice(nice: i32, data: &Path, cmd: &[&str]) -> Output {
    let mut niced = Command::new("nice");
    niced.arg("-n").arg(nice.to_string()).arg(sandbox());
    exec_with(niced, app_dir(), data, &[], cmd)
}

/// `exec` as started by `launcher` (`ds-sandbox` itself, or a wrapper).
fn exec_with(
    mut launcher: Command,
    app: &Path,
    data: &Path,
    opts: &[&str],
    cmd: &[&str],
) -> Output {
    launcher
        .arg("exec")
        .arg("--app")
        .arg(app)
        .arg("--data")
        .arg(data)
        .args(opts)
        .arg("--")
        .args(cmd)
        .stdin(Stdio::null())
        .output()
        .expect("running ds-sandbox")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ensure(cond: bool, msg: impl Into<String>) -> Result<(), Failed> {
    if cond {
        Ok(())
    } else {
        Err(msg.into().into())
    }
}

fn hostile_app_blocks_every_attack() -> Result<(), Failed> {
    hostile_run(None)
}

/// The hostile app against a sandbox on this kernel's Landlock, or on the
/// `landlock_abi` an older kernel offers (2: Debian 12's 6.1, which has no
/// TCP rules, so the agent mediates binds).
fn hostile_run(landlock_abi: Option<u8>) -> Result<(), Failed> {
    let app = app_dir();
    // Where this suite may not make a uts namespace (under ds-host's unit,
    // whose bounding set has no CAP_SYS_ADMIN), the machine's hostname is
    // made the canary before the suite starts and named here.
    let hostname_canary = std::env::var("DS_SUITE_HOSTNAME_IS_CANARY").ok();
    let canary = hostname_canary
        .clone()
        .unwrap_or_else(|| format!("DS-CANARY-{}-{}", std::process::id(), rand_suffix()));
    // Host secrets and another appspace's data, each holding the canary.
    // The two runs go in parallel: each has its own files.
    let run = landlock_abi.map_or("native".to_owned(), |n| format!("abi{n}"));
    let secret_dir = scratch().join(format!("host-secret-{run}"));
    std::fs::create_dir_all(&secret_dir)?;
    let secret = secret_dir.join("secret.txt");
    std::fs::write(&secret, &canary)?;
    let other = fresh_data(&format!("other-appspace-{run}"));
    std::fs::write(other.join("private.txt"), &canary)?;
    // Host services the app must not reach.
    let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = tcp.local_addr()?.port().to_string();
    let unix_path = scratch().join(format!("host-{run}.sock"));
    let _ = std::fs::remove_file(&unix_path);
    let _unix = std::os::unix::net::UnixListener::bind(&unix_path)?;
    let abstract_name = format!("ds-suite-{run}-{canary}");
    let addr =
        <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
            abstract_name.as_bytes(),
        )?;
    let _abstract = std::os::unix::net::UnixListener::bind_addr(&addr)?;
    let shm = Command::new("ipcmk").args(["-M", "4096"]).output()?;
    let shm_id = text(&shm.stdout)
        .split_whitespace()
        .last()
        .unwrap_or("0")
        .to_owned();
    // Without a real host segment the SysV attack would pass vacuously.
    ensure(
        shm.status.success(),
        format!("ipcmk failed: {}", text(&shm.stderr)),
    )?;
    let shm_key = shm_key_of(&shm_id)
        .filter(|&k| k != 0)
        .ok_or_else(|| format!("no key for host segment {shm_id}"))?
        .to_string();
    let mut victim = Command::new("sleep").arg("60").spawn()?;
    let victim_pid = victim.id().to_string();

    // The canary as the host's hostname (in a throwaway uts namespace) and
    // in ds-sandbox's own environment.
    let data = fresh_data(&format!("hostile-{run}"));
    // Run with descriptors leaked by the caller (not close-on-exec), at a
    // low number, at the agent's channel number (unused: this run has no
    // channel) and at a high one: none may reach the app.
    let set_hostname = if hostname_canary.is_some() {
        "true"
    } else {
        "hostname \"$0\""
    };
    let script = format!(
        "exec 5</etc/hostname 8</etc/hostname 150</etc/hostname; {set_hostname} && exec \"$@\""
    );
    let mut wrapper = if hostname_canary.is_some() {
        Command::new("bash")
    } else {
        let mut unshare = Command::new("unshare");
        unshare.args(["--uts", "bash"]);
        unshare
    };
    let out = wrapper
        .args([
            "-c",
            &script,
            &canary,
            sandbox(),
            "exec",
            "--report",
            "--app",
        ])
        .arg(app)
        .arg("--data")
        .arg(&data)
        .args(landlock_abi.map(|n| format!("--landlock-abi={n}")))
        .args(["--", "/app/hostile"])
        .arg(&secret)
        .arg(other.join("private.txt"))
        .args([&canary, &port])
        .arg(&unix_path)
        .args([&abstract_name, &shm_key, &victim_pid])
        .env("DS_SUITE_CANARY", &canary)
        .stdin(Stdio::null())
        .output()?;
    let victim_alive = victim.try_wait()?.is_none();
    let _ = victim.kill();
    let _ = victim.wait();
    let _ = Command::new("ipcrm").args(["-m", &shm_id]).status();

    let stdout = text(&out.stdout);
    print!("{stdout}");
    let escaped: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("ESCAPED"))
        .collect();
    ensure(
        escaped.is_empty(),
        format!("attacks succeeded:\n{}", escaped.join("\n")),
    )?;
    let attacks = stdout.lines().filter(|l| l.starts_with("BLOCKED")).count();
    ensure(
        attacks >= 60,
        format!("only {attacks} attacks ran; stderr: {}", text(&out.stderr)),
    )?;
    ensure(
        stdout.contains(&format!("SUMMARY attacks={attacks} escaped=0")),
        "no summary line",
    )?;
    ensure(
        out.status.code() == Some(0),
        format!("hostile exited {:?}", out.status),
    )?;
    ensure(
        victim_alive,
        "the host process the app tried to kill is dead",
    )?;
    let stderr = text(&out.stderr);
    if let Some(n) = landlock_abi {
        ensure(
            stderr.contains(&format!("landlock ABI {n} ")) && stderr.contains("binds mediated"),
            format!("the sandbox did not run at ABI {n} with binds mediated: {stderr}"),
        )?;
    }
    seccomp_counted_the_attacks(&stderr)
}

/// The agent's report counts what seccomp refused, by call: the hostile
/// app's filter-level attacks must all show up.
fn seccomp_counted_the_attacks(stderr: &str) -> Result<(), Failed> {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("ds-sandbox: seccomp: "))
        .ok_or_else(|| format!("no seccomp report in stderr: {stderr}"))?;
    println!("seccomp report: {line}");
    let total: u64 = line
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("unreadable seccomp report: {line}"))?;
    ensure(total >= 30, format!("only {total} denials counted: {line}"))?;
    for call in [
        "mount ",
        "ptrace ",
        "keyctl ",
        "bpf ",
        "perf_event_open ",
        "userfaultfd ",
        "io_uring_setup ",
        "kexec_load ",
        "unshare ",
        "setns ",
        "socket (family) ",
        "personality ",
        "ioctl (terminal) ",
        "clone (namespace flags) ",
        "signal to the agent ",
        "bind/listen (port) ",
    ] {
        ensure(
            line.contains(call),
            format!("seccomp report does not count {call}: {line}"),
        )?;
    }
    Ok(())
}

fn shm_key_of(id: &str) -> Option<i64> {
    let table = std::fs::read_to_string("/proc/sysvipc/shm").ok()?;
    table.lines().skip(1).find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        (cols.get(1) == Some(&id))
            .then(|| cols[0].parse().ok())
            .flatten()
    })
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn functional(program: &str) -> Result<(), Failed> {
    let data = fresh_data(program);
    // Started at a raised priority, as from one of ds-host's front-door
    // threads: the app must still run at the default (check "nice-0").
    let out = exec_at_nice(-5, &data, &[&format!("/app/{program}"), "functional"]);
    let stdout = text(&out.stdout);
    print!("{stdout}");
    ensure(
        out.status.success(),
        format!("exit {:?}; stderr: {}", out.status, text(&out.stderr)),
    )?;
    ensure(!stdout.contains("FAIL"), "a functional check failed")?;
    ensure(
        stdout.lines().filter(|l| l.starts_with("OK")).count() >= 14,
        "checks missing",
    )?;
    // What the app wrote is on the host, in the data directory.
    let note = std::fs::read_to_string(data.join("note.txt"))?;
    ensure(
        note.contains("written in the sandbox"),
        "note.txt not on the host",
    )
}

fn functional_musl_rust() -> Result<(), Failed> {
    let app = scratch().join("app-musl");
    std::fs::create_dir_all(&app)?;
    if let Some(dir) = prebuilt() {
        std::fs::copy(dir.join("musl-app"), app.join("musl-app"))?;
    } else {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/hostile/musl_app.rs");
        let status = Command::new("rustc")
            .args([
                "--edition",
                "2021",
                "-O",
                "--target",
                "x86_64-unknown-linux-musl",
                "-o",
            ])
            .arg(app.join("musl-app"))
            .arg(&src)
            .status()?;
        ensure(status.success(), "compiling the musl program")?;
    }
    std::fs::write(app.join("app-file.txt"), "hello from the app\n")?;
    Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&app)
        .status()?;
    let out = exec(&app, &fresh_data("musl"), &[], &["/app/musl-app"]);
    let stdout = text(&out.stdout);
    ensure(
        stdout.contains("musl ok: hello from the app rust was here 42"),
        format!("stdout {stdout:?}, stderr {:?}", text(&out.stderr)),
    )
}

fn deno_program_runs() -> Result<(), Failed> {
    let deno = deno_binary().map_err(Failed::from)?;
    let app = scratch().join("app-deno");
    std::fs::create_dir_all(&app)?;
    std::fs::write(
        app.join("main.ts"),
        r#"const text = await Deno.readTextFile("/app/hello.txt");
await Deno.writeTextFile("/data/deno.txt", "deno was here");
const back = await Deno.readTextFile("/data/deno.txt");
const port = Number(Deno.env.get("PORT"));
const listener = Deno.listen({ hostname: "127.0.0.1", port });
listener.close();
console.log(`deno ok: ${text.trim()} ${back} ${port}`);
"#,
    )?;
    std::fs::write(app.join("hello.txt"), "hello from the app\n")?;
    Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&app)
        .status()?;
    let deno_arg = deno.to_string_lossy().into_owned();
    let out = exec(
        &app,
        &fresh_data("deno"),
        &["--runtime", "deno", "--deno", &deno_arg, "--memory", "512M"],
        &[
            "deno",
            "run",
            "--allow-read",
            "--allow-write",
            "--allow-env",
            "--allow-net",
            "/app/main.ts",
        ],
    );
    let stdout = text(&out.stdout);
    ensure(
        stdout.contains("deno ok: hello from the app deno was here 8000"),
        format!("stdout {stdout:?}, stderr {:?}", text(&out.stderr)),
    )
}

/// Only a raised priority is reset: a host an admin runs at nice 5 keeps
/// its sandboxes there (resetting to 0 would need the capability the
/// sandbox has already dropped, and fail the start).
fn a_host_at_a_lowered_priority_still_starts_sandboxes() -> Result<(), Failed> {
    let data = fresh_data("nice5");
    let out = exec_at_nice(5, &data, &["/app/workload", "exit", "7"]);
    ensure(
        out.status.code() == Some(7),
        format!(
            "exit 7 came back as {:?}; stderr: {}",
            out.status,
            text(&out.stderr)
        ),
    )
}

fn exit_status_passes_through() -> Result<(), Failed> {
    let data = fresh_data("exit");
    let out = exec(app_dir(), &data, &[], &["/app/workload", "exit", "7"]);
    ensure(
        out.status.code() == Some(7),
        format!("exit 7 came back as {:?}", out.status),
    )?;
    let out = exec(app_dir(), &data, &[], &["/app/workload", "signal", "15"]);
    ensure(
        out.status.code() == Some(128 + 15),
        format!("SIGTERM came back as {:?}", out.status),
    )?;
    let out = exec(app_dir(), &data, &[], &["/app/does-not-exist"]);
    ensure(
        out.status.code() == Some(127),
        format!("missing command came back as {:?}", out.status),
    )?;
    ensure(
        text(&out.stderr).contains("cannot execute /app/does-not-exist"),
        text(&out.stderr),
    )
}

fn fork_bomb_stops_at_pids_limit() -> Result<(), Failed> {
    let out = exec(
        app_dir(),
        &fresh_data("forkbomb"),
        &["--pids", "16"],
        &["/app/workload", "forkbomb"],
    );
    let stdout = text(&out.stdout);
    let forks: u32 = stdout
        .split("forks=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no fork count in {stdout:?} / {:?}", text(&out.stderr)))?;
    ensure(
        forks > 0 && forks < 16,
        format!("{forks} forks with a limit of 16"),
    )?;
    // The host still spawns processes.
    ensure(
        Command::new("true").status()?.success(),
        "the host cannot fork any more",
    )
}

fn memory_bomb_is_oom_killed_and_reported() -> Result<(), Failed> {
    let out = exec(
        app_dir(),
        &fresh_data("membomb"),
        &["--memory", "32M"],
        &["/app/workload", "membomb"],
    );
    let stderr = text(&out.stderr);
    ensure(
        out.status.code() == Some(128 + 9),
        format!("membomb exited {:?}", out.status),
    )?;
    ensure(
        stderr.contains("killed: out of memory"),
        format!("no OOM report: {stderr:?}"),
    )
}

fn cpu_spinner_is_held_to_its_quota() -> Result<(), Failed> {
    // Two threads spin for 1.5 s of wall time: unlimited, that is ~3 s of
    // CPU on two cores; held to 0.2 cores, ~0.3 s.
    let out = exec(
        app_dir(),
        &fresh_data("spin"),
        &["--cpu", "0.2", "--report"],
        &["/app/workload", "spin", "1.5"],
    );
    let stderr = text(&out.stderr);
    let cpu_ms: u64 = stderr
        .split("cpu_ms=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no usage report in {stderr:?}"))?;
    ensure(
        out.status.success(),
        format!("spinner exited {:?}", out.status),
    )?;
    ensure(
        cpu_ms > 100,
        format!("only {cpu_ms} ms of CPU: did it spin at all?"),
    )?;
    ensure(
        cpu_ms < 700,
        format!("{cpu_ms} ms of CPU in 1.5 s at a 0.2-core quota"),
    )?;
    // On cgroup v2 the child is born in its cgroup (clone3 with
    // CLONE_INTO_CGROUP); v1 has no such clone.
    let v2 = ds_sandbox::cgroup::CgroupVersion::detect()
        .is_ok_and(|v| v == ds_sandbox::cgroup::CgroupVersion::V2);
    let born = stderr.contains("born inside: clone3 into the cgroup");
    ensure(
        born == v2,
        format!("cgroup v2: {v2}, but the report says: {stderr}"),
    )
}

fn data_survives_between_runs() -> Result<(), Failed> {
    let data = fresh_data("persist");
    let out = exec(
        app_dir(),
        &data,
        &[],
        &["/app/workload", "persist-write", "kept"],
    );
    ensure(
        out.status.success(),
        format!("write run: {:?}", text(&out.stderr)),
    )?;
    let out = exec(app_dir(), &data, &[], &["/app/workload", "persist-read"]);
    ensure(
        text(&out.stdout).trim() == "kept",
        format!("read back {:?}", text(&out.stdout)),
    )?;
    // The data directory now belongs to a uid of the range kept for
    // sandboxes started by hand (never one ds-host allocates).
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&data)?);
    ensure(
        ds_api::ids::STANDALONE_IDS.contains(&uid),
        format!("data directory owned by uid {uid}"),
    )
}

/// A data tree the app could have left: deeper than PATH_MAX, with links
/// out of it, a FIFO, and files owned by someone else. Handing it to the
/// appspace's uid changes everything inside, follows no link, blocks on
/// nothing, and changes nothing outside.
fn data_directory_is_handed_over_without_following_links() -> Result<(), Failed> {
    use std::os::unix::fs::MetadataExt;
    let data = fresh_data("handover");
    let outside = scratch().join("outside-the-data");
    std::fs::write(&outside, "not the app's")?;
    std::os::unix::fs::chown(&outside, Some(0), Some(0))?;
    std::os::unix::fs::symlink(&outside, data.join("link-out"))?;
    std::os::unix::fs::symlink("/etc", data.join("etc-link"))?;
    let fifo = data.join("fifo");
    ensure(
        Command::new("mkfifo").arg(&fifo).status()?.success(),
        "mkfifo",
    )?;
    // 60 levels of 100-character names: ~6,000 bytes, past PATH_MAX, made
    // one level at a time (relative to the previous one).
    let deep_name = "d".repeat(100);
    {
        use rustix::fs::{Mode, OFlags};
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let mut at = rustix::fs::open(&data, flags, Mode::empty())?;
        for _ in 0..60 {
            rustix::fs::mkdirat(&at, deep_name.as_str(), Mode::from_raw_mode(0o755))?;
            at = rustix::fs::openat(&at, deep_name.as_str(), flags, Mode::empty())?;
        }
        let bottom = rustix::fs::openat(
            &at,
            "bottom",
            OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )?;
        rustix::io::write(&bottom, b"deep\n")?;
    }
    let chowned = Command::new("chown")
        .args(["-R", "-h", "12345:12345"])
        .arg(&data)
        .status()?;
    ensure(chowned.success(), "chown -R")?;
    let uid: u32 = 0x7000_0042;
    let out = exec(
        app_dir(),
        &data,
        &["--host-uid", &uid.to_string()],
        &["/app/workload", "persist-write", "ok"],
    );
    ensure(
        out.status.success(),
        format!("run: {:?} {}", out.status, text(&out.stderr)),
    )?;
    // Everything inside is the appspace's (find -xdev walks by itself,
    // with relative steps, so the depth is no problem for it).
    let foreign = Command::new("find")
        .arg(&data)
        .args(["-not", "-uid", &uid.to_string(), "-print", "-quit"])
        .output()?;
    ensure(
        foreign.status.success() && text(&foreign.stdout).trim().is_empty(),
        format!("not handed over: {}", text(&foreign.stdout)),
    )?;
    let deepest = Command::new("find")
        .arg(&data)
        .args(["-name", "bottom", "-uid", &uid.to_string()])
        .output()?;
    ensure(
        text(&deepest.stdout).contains("bottom"),
        "the deepest file was not reached",
    )?;
    // Links were changed themselves, never followed.
    let target = std::fs::metadata(&outside)?;
    ensure(
        target.uid() == 0,
        format!("the link's target changed owner to {}", target.uid()),
    )?;
    ensure(std::fs::metadata("/etc")?.uid() == 0, "/etc changed owner")?;
    ensure(
        std::fs::symlink_metadata(data.join("link-out"))?.uid() == uid,
        "the link itself was not handed over",
    )?;
    Ok(())
}

fn nothing_is_left_behind() -> Result<(), Failed> {
    let mounts_before = mount_points()?;
    // A command that leaves many children behind inside the sandbox.
    let mut child = Command::new(sandbox())
        .args(["exec", "--pids", "8", "--app"])
        .arg(app_dir())
        .arg("--data")
        .arg(fresh_data("leftovers"))
        .args(["--", "/app/workload", "forkbomb"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()?;
    let launcher = child.id();
    child.wait()?;
    // Its cgroup is gone in every hierarchy...
    let name = format!("exec-{launcher}");
    for base in [
        "/sys/fs/cgroup/ds",
        "/sys/fs/cgroup/memory/ds",
        "/sys/fs/cgroup/pids/ds",
        "/sys/fs/cgroup/cpu/ds",
        "/sys/fs/cgroup/cpuacct/ds",
    ] {
        let dir = Path::new(base).join(&name);
        ensure(!dir.exists(), format!("{} was left behind", dir.display()))?;
    }
    // ...no process anywhere is still in it (found by cgroup membership,
    // whoever its parent is now)...
    let member = format!("/ds/{name}");
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let file_name = entry.file_name();
        let pid = file_name.to_string_lossy();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let cgroups = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        ensure(
            !cgroups
                .lines()
                .any(|l| l.ends_with(&member) || l.contains(&format!("{member}/"))),
            format!("process {pid} is still in {member}: {cgroups}"),
        )?;
    }
    // ...and the host's mount table is exactly what it was.
    let mounts_after = mount_points()?;
    ensure(
        mounts_before == mounts_after,
        format!(
            "host mounts changed: {:?}",
            mounts_after
                .symmetric_difference(&mounts_before)
                .collect::<Vec<_>>()
        ),
    )
}

/// The host's mount points with their sources, as a set.
fn mount_points() -> std::io::Result<std::collections::BTreeSet<String>> {
    Ok(std::fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .map(|l| {
            // Drop the mount id and parent id, which a remount renumbers.
            l.split_whitespace().skip(2).collect::<Vec<_>>().join(" ")
        })
        .collect())
}

fn bad_arguments_are_refused_cleanly() -> Result<(), Failed> {
    let data = fresh_data("badargs");
    let missing = scratch().join("no-such-app");
    let out = exec(&missing, &data, &[], &["/app/workload"]);
    ensure(
        out.status.code() == Some(125),
        format!("missing app dir: {:?}", out.status),
    )?;
    ensure(text(&out.stderr).contains("--app"), text(&out.stderr))?;
    for bad in [
        ["--memory", "lots"],
        ["--cpu", "0"],
        ["--pids", "0"],
        ["--memory", "10T"],
    ] {
        let out = exec(app_dir(), &data, &bad, &["/app/workload"]);
        ensure(
            out.status.code() == Some(2),
            format!("{bad:?} gave {:?}", out.status),
        )?;
        ensure(
            text(&out.stderr).contains("invalid"),
            format!("{bad:?}: {}", text(&out.stderr)),
        )?;
    }
    let out = Command::new(sandbox())
        .args(["exec", "--app"])
        .arg(app_dir())
        .args(["--data"])
        .arg(&data)
        .output()?;
    ensure(
        out.status.code() == Some(2),
        "a missing command must be a usage error",
    )?;
    Ok(())
}

fn agent_serves_http_over_the_channel() -> Result<(), Failed> {
    use ds_proto::{AgentStats, Config, ControlMessage, Role, Session};
    use std::os::fd::AsRawFd;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (host_end, sandbox_end) = std::os::unix::net::UnixStream::pair()?;
    let (handoff_host, handoff_sandbox) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    // The sandbox's ends are inherited by ds-sandbox (and only those).
    rustix::io::fcntl_setfd(&sandbox_end, rustix::io::FdFlags::empty())?;
    rustix::io::fcntl_setfd(&handoff_sandbox, rustix::io::FdFlags::empty())?;
    let fd = sandbox_end.as_raw_fd().to_string();
    let handoff_fd = handoff_sandbox.as_raw_fd().to_string();
    let mut child = Command::new(sandbox())
        .args([
            "exec",
            "--channel-fd",
            &fd,
            "--handoff-fd",
            &handoff_fd,
            "--app",
        ])
        .arg(app_dir())
        .arg("--data")
        .arg(fresh_data("channel"))
        .args(["--", "/app/workload", "http"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    drop(sandbox_end);
    drop(handoff_sandbox);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let talk = runtime.block_on(async {
        let wait = std::time::Duration::from_secs(10);
        let session = Session::connect(host_end, Role::Host, Config::default()).await?;
        let ready = tokio::time::timeout(wait, session.recv_control()).await??;
        ensure(
            ready == ControlMessage::Ready { app_port: 8000 },
            format!("first message {ready:?}"),
        )?;
        let h = session.handle();
        for _ in 0..3 {
            let mut s = h.open_http().await?;
            s.write_all(b"GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n")
                .await?;
            let mut response = String::new();
            tokio::time::timeout(wait, s.read_to_string(&mut response)).await??;
            ensure(
                response.starts_with("HTTP/1.1 200 OK"),
                format!("response {response:?}"),
            )?;
            ensure(
                response.ends_with("hello from the sandbox"),
                format!("response {response:?}"),
            )?;
        }
        // A connection to the app, asked for and handed over on the
        // handoff socket: the front door then speaks HTTP to the app itself.
        let handoff = ds_proto::Handoff::start(handoff_host)?;
        handoff.send_token(41).await?;
        let conn = handoff
            .take(41, wait)
            .await
            .ok_or("no app connection handed over")?;
        let conn = std::net::TcpStream::from(conn);
        conn.set_nonblocking(true)?;
        let mut conn = tokio::net::TcpStream::from_std(conn)?;
        conn.write_all(b"GET / HTTP/1.1\r\nHost: a.localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut response = String::new();
        tokio::time::timeout(wait, conn.read_to_string(&mut response)).await??;
        ensure(
            response.ends_with("hello from the sandbox"),
            format!("handed-over connection answered {response:?}"),
        )?;
        // A refused call: the app sees EPERM, the agent counts it.
        let mut s = h.open_http().await?;
        s.write_all(b"GET /mount HTTP/1.1\r\nHost: a.localhost\r\n\r\n")
            .await?;
        let mut response = String::new();
        tokio::time::timeout(wait, s.read_to_string(&mut response)).await??;
        ensure(
            response.ends_with("mount: -1 Operation not permitted"),
            format!("response {response:?}"),
        )?;
        h.send_control(ControlMessage::StatsRequest).await?;
        let stats = tokio::time::timeout(wait, session.recv_control()).await??;
        let ControlMessage::Stats(AgentStats {
            http_streams_total,
            seccomp_denials,
            ..
        }) = stats
        else {
            return Err(format!("expected stats, got {stats:?}").into());
        };
        ensure(
            seccomp_denials == 1,
            format!("{seccomp_denials} seccomp denials counted"),
        )?;
        ensure(
            http_streams_total == 4,
            format!("{http_streams_total} streams counted"),
        )?;
        h.send_control(ControlMessage::Stop { grace_ms: 200 })
            .await?;
        // The agent exits with the app: the channel ends.
        tokio::time::timeout(wait, h.closed()).await?;
        Ok::<_, Failed>(())
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!("the sandbox did not stop after Stop (channel: {talk:?})").into());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    talk?;
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        std::io::Read::read_to_string(&mut pipe, &mut stderr)?;
    }
    // The first refusal of a call is logged (into the appspace's log).
    ensure(
        stderr.contains("seccomp refused mount to pid"),
        format!("no refusal logged: {stderr}"),
    )?;
    // The app had no SIGTERM handler: it died of SIGTERM, passed through.
    ensure(
        status.code() == Some(128 + 15),
        format!("sandbox exited {status:?}"),
    )
}

fn killed_launcher_takes_the_sandbox_with_it() -> Result<(), Failed> {
    let data = fresh_data("killed");
    let mut child = Command::new(sandbox())
        .args(["exec", "--app"])
        .arg(app_dir())
        .arg("--data")
        .arg(&data)
        .args(["--", "/app/workload", "http"])
        .stdin(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let procs = format!("/sys/fs/cgroup/pids/ds/exec-{pid}/cgroup.procs");
    let procs_v2 = format!("/sys/fs/cgroup/ds/exec-{pid}/cgroup.procs");
    let read_procs =
        || std::fs::read_to_string(&procs).or_else(|_| std::fs::read_to_string(&procs_v2));
    // Wait until the app runs inside the cgroup.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while read_procs().map(|p| p.lines().count()).unwrap_or(0) < 2 {
        ensure(
            std::time::Instant::now() < deadline,
            "the sandbox never started",
        )?;
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill()?; // SIGKILL: the launcher cannot clean up
    child.wait()?;
    // The agent dies with its launcher, and the app with the agent's pid namespace.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !read_procs().map(|p| p.trim().is_empty()).unwrap_or(true) {
        ensure(
            std::time::Instant::now() < deadline,
            format!("processes survived: {:?}", read_procs()),
        )?;
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // The next launch removes the dead launcher's cgroup.
    let out = exec(app_dir(), &data, &[], &["/app/workload", "exit", "0"]);
    ensure(out.status.success(), text(&out.stderr))?;
    ensure(
        read_procs().is_err(),
        "the killed launcher's cgroup is still there",
    )
}

/// A spare launcher fed `args` (each ended by a NUL byte) on stdin, as
/// ds-host does.
fn spare_with(args: &[&std::ffi::OsStr]) -> std::io::Result<std::process::Child> {
    use std::io::Write as _;
    use std::os::unix::ffi::OsStrExt as _;
    let mut spare = Command::new(sandbox())
        .arg("__spare")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut input = Vec::new();
    for arg in args {
        input.extend_from_slice(arg.as_bytes());
        input.push(0);
    }
    let mut stdin = spare.stdin.take().ok_or(std::io::ErrorKind::BrokenPipe)?;
    stdin.write_all(&input)?;
    Ok(spare) // stdin dropped: end of input
}

/// `exec` arguments running `/app/workload` with `mode` on `data`.
fn workload_args<'a>(data: &'a Path, mode: &[&'static str]) -> Vec<&'a std::ffi::OsStr> {
    use std::ffi::OsStr;
    let mut args = vec![
        OsStr::new("--app"),
        app_dir().as_os_str(),
        OsStr::new("--data"),
        data.as_os_str(),
        OsStr::new("--"),
        OsStr::new("/app/workload"),
    ];
    args.extend(mode.iter().map(|m| OsStr::new(*m)));
    args
}

/// What ds-host keeps one of: a launcher waiting on stdin for its `exec`
/// arguments runs them exactly as `exec` would, shows that command line to
/// `ps` while it runs, refuses bad input like `exec`, and leaves quietly
/// when its input ends empty.
fn spare_launcher_runs_what_it_is_handed() -> Result<(), Failed> {
    use std::ffi::OsStr;
    let out = spare_with(&[])?.wait_with_output()?;
    ensure(
        out.status.success() && out.stderr.is_empty(),
        format!(
            "empty input: {:?}, stderr {:?}",
            out.status,
            text(&out.stderr)
        ),
    )?;
    let out = spare_with(&[OsStr::new("--no-such-flag")])?.wait_with_output()?;
    ensure(
        out.status.code() == Some(125) && text(&out.stderr).contains("--no-such-flag"),
        format!(
            "bad input: {:?}, stderr {:?}",
            out.status,
            text(&out.stderr)
        ),
    )?;

    let data = fresh_data("spare");
    let out = spare_with(&workload_args(&data, &["persist-write", "from a spare"]))?
        .wait_with_output()?;
    ensure(
        out.status.success(),
        format!(
            "spare run: {:?}, stderr {:?}",
            out.status,
            text(&out.stderr)
        ),
    )?;
    let out = exec(app_dir(), &data, &[], &["/app/workload", "persist-read"]);
    ensure(
        text(&out.stdout).trim() == "from a spare",
        format!("read back {:?}", text(&out.stdout)),
    )?;

    // While it runs, ps sees its cgroup's name as its name, and, where the
    // kernel lets it set that (CAP_SYS_RESOURCE), the command line it was
    // handed.
    let mut args = workload_args(&data, &["never-ready"]);
    args.splice(0..0, ["--cgroup-name".as_ref(), "as-sparetest".as_ref()]);
    let mut spare = spare_with(&args)?;
    let expected = format!(
        "ds-sandbox\0exec\0--cgroup-name\0as-sparetest\0--app\0{}\0--data\0{}\0",
        app_dir().display(),
        data.display()
    );
    let can_set_cmdline = std::fs::read_to_string("/proc/self/status")?
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 24) != 0); // CAP_SYS_RESOURCE
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (comm, shown) = loop {
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", spare.id()))?;
        let cmdline = text(&std::fs::read(format!("/proc/{}/cmdline", spare.id()))?);
        let done =
            comm.trim() == "as-sparetest" && (!can_set_cmdline || cmdline.starts_with(&expected));
        if done || std::time::Instant::now() > deadline {
            break (comm, cmdline);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let _ = spare.kill();
    let _ = spare.wait();
    ensure(
        comm.trim() == "as-sparetest",
        format!("the running spare is named {comm:?}"),
    )?;
    ensure(
        !can_set_cmdline || shown.starts_with(&expected),
        format!("the running spare shows {shown:?}"),
    )
}
