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

const SANDBOX: &str = env!("CARGO_BIN_EXE_ds-sandbox");

fn main() {
    let args = Arguments::from_args();
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
    add("nothing_is_left_behind", None, nothing_is_left_behind);
    add(
        "bad_arguments_are_refused_cleanly",
        None,
        bad_arguments_are_refused_cleanly,
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
    if Command::new("gcc").arg("--version").output().is_err() {
        return Some("gcc is not installed (run packaging/dev/setup.sh)".into());
    }
    None
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
        let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("sandbox-suite-{}", std::process::id()));
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
        for (out, file, extra) in [
            ("hostile", "hostile.c", vec!["-static"]),
            ("workload", "workload.c", vec!["-static", "-pthread"]),
            ("workload-dynamic", "workload.c", vec!["-pthread"]),
        ] {
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
    Command::new(SANDBOX)
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
    let app = app_dir();
    let canary = format!("DS-CANARY-{}-{}", std::process::id(), rand_suffix());
    // Host secrets and another appspace's data, each holding the canary.
    let secret_dir = scratch().join("host-secret");
    std::fs::create_dir_all(&secret_dir)?;
    let secret = secret_dir.join("secret.txt");
    std::fs::write(&secret, &canary)?;
    let other = fresh_data("other-appspace");
    std::fs::write(other.join("private.txt"), &canary)?;
    // Host services the app must not reach.
    let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = tcp.local_addr()?.port().to_string();
    let unix_path = scratch().join("host.sock");
    let _ = std::fs::remove_file(&unix_path);
    let _unix = std::os::unix::net::UnixListener::bind(&unix_path)?;
    let abstract_name = format!("ds-suite-{canary}");
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
    let shm_key = shm_key_of(&shm_id).unwrap_or(0).to_string();
    let mut victim = Command::new("sleep").arg("60").spawn()?;
    let victim_pid = victim.id().to_string();

    // The canary as the host's hostname (in a throwaway uts namespace) and
    // in ds-sandbox's own environment.
    let data = fresh_data("hostile");
    let out = Command::new("unshare")
        .args([
            "--uts",
            "sh",
            "-c",
            "hostname \"$0\" && exec \"$@\"",
            &canary,
            SANDBOX,
            "exec",
            "--app",
        ])
        .arg(app)
        .arg("--data")
        .arg(&data)
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
    )
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
    let out = exec(
        app_dir(),
        &data,
        &[],
        &[&format!("/app/{program}"), "functional"],
    );
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
    let src = scratch().join("musl_app.rs");
    std::fs::write(
        &src,
        r#"fn main() {
    let app = std::fs::read_to_string("/app/app-file.txt").expect("read /app");
    std::fs::write("/data/musl.txt", "rust was here").expect("write /data");
    let back = std::fs::read_to_string("/data/musl.txt").expect("reread /data");
    let port: u16 = std::env::var("PORT").unwrap().parse().unwrap();
    let l = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind $PORT");
    drop(l);
    let t = std::thread::spawn(|| 40 + 2).join().unwrap();
    println!("musl ok: {} {} {}", app.trim(), back, t);
}
"#,
    )?;
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
    // The data directory now belongs to the appspace's own host uid.
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&data)?);
    ensure(
        uid >= 2_000_000,
        format!("data directory owned by uid {uid}"),
    )
}

/// Cgroups of ds-sandbox runs that belong to a process no longer alive.
fn orphaned_cgroups() -> Vec<PathBuf> {
    let mut found = Vec::new();
    for base in [
        "/sys/fs/cgroup/ds",
        "/sys/fs/cgroup/memory/ds",
        "/sys/fs/cgroup/pids/ds",
        "/sys/fs/cgroup/cpu/ds",
    ] {
        let Ok(entries) = std::fs::read_dir(base) else {
            continue;
        };
        for path in entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()) {
            // Named "<name>-<launcher pid>": a live launcher still owns it.
            let pid = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.rsplit('-').next())
                .unwrap_or("");
            if !Path::new("/proc").join(pid).exists() {
                found.push(path);
            }
        }
    }
    found
}

fn nothing_is_left_behind() -> Result<(), Failed> {
    let mounts_before = std::fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .count();
    // A command that leaves many children behind inside the sandbox.
    let out = exec(
        app_dir(),
        &fresh_data("leftovers"),
        &["--pids", "8"],
        &["/app/workload", "forkbomb"],
    );
    ensure(out.status.code().is_some(), "exec did not finish")?;
    let leftover = orphaned_cgroups();
    ensure(
        leftover.is_empty(),
        format!("cgroups left behind: {leftover:?}"),
    )?;
    let agents = Command::new("pgrep")
        .args(["-c", "-f", "^ds-agent __agent"])
        .output()?;
    let live_agents: u32 = text(&agents.stdout).trim().parse().unwrap_or(0);
    // Other tests of this suite run in parallel; their agents have live
    // launchers. Ours must be gone: no agent may outlive every launcher.
    let launchers = Command::new("pgrep")
        .args(["-c", "-f", "ds-sandbox exec"])
        .output()?;
    let live_launchers: u32 = text(&launchers.stdout).trim().parse().unwrap_or(0);
    ensure(
        live_agents <= live_launchers,
        format!("{live_agents} agents but {live_launchers} launchers"),
    )?;
    let mounts_after = std::fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .count();
    ensure(
        mounts_before == mounts_after,
        format!("host mounts changed: {mounts_before} -> {mounts_after}"),
    )
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
    let out = Command::new(SANDBOX)
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
