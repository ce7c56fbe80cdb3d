//! `ds-sandbox`: run a command in exactly the sandbox an appspace gets.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ds_sandbox::spec::{self, Limits, Runtime, SandboxSpec};
use ds_sandbox::{agent, cgroup, landlock_policy, launcher, mounts};

/// mimalloc instead of glibc's malloc: glibc returns freed memory at the
/// top of a heap to the kernel (trim threshold), so a proxy that allocates
/// and frees a frame-sized buffer per write keeps faulting fresh, zeroed
/// pages in. mimalloc keeps per-thread pages warm. The channel benchmark's
/// one-stream throughput went from 0.34x to 0.74-0.85x socketpair with this
/// alone (docs/performance.md). Built without transparent huge pages
/// (`no_thp`, see docs/dependencies.md): an idle agent stays ~600 KiB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "ds-sandbox",
    version,
    about = "Run a command in a ds appspace sandbox"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run CMD inside the sandbox an appspace gets; exits with CMD's status
    /// (128+N when killed by signal N, 125 when the sandbox failed).
    Exec(Box<ExecArgs>),
    /// Print what this kernel offers (Landlock ABI, cgroup version, ...).
    Probe,
    #[command(name = "__agent", hide = true)]
    Agent,
    /// A launcher started ahead of need (what ds-host keeps one of): it
    /// waits for an `exec` command line on stdin (the arguments after
    /// `exec`, each ended by a NUL byte, then end of input) and runs it as
    /// `ds-sandbox exec` would; end of input with nothing read is a clean
    /// exit. A cold start then skips this binary's exec and start-up
    /// (~0.8 ms on the build machine).
    #[command(name = "__spare", hide = true)]
    Spare,
}

#[derive(Debug, clap::Args)]
struct ExecArgs {
    /// The app's files, mounted read-only at /app.
    #[arg(long, value_name = "DIR")]
    app: PathBuf,
    /// The appspace's data, mounted read-write at /data (created if missing).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Runtime files to provide.
    #[arg(long, value_name = "native|deno", default_value = "native")]
    runtime: Runtime,
    /// Memory limit (swap off), e.g. 64M or 1G.
    #[arg(long, value_parser = ds_api::limits::parse_memory, default_value = "256M")]
    memory: u64,
    /// Most processes and threads at once.
    #[arg(long, default_value_t = 64, value_parser = ds_api::limits::parse_pids)]
    pids: u64,
    /// CPU share in cores, e.g. 0.5.
    #[arg(long, value_parser = ds_api::limits::parse_cpus, default_value = "1")]
    cpu: f64,
    /// Size of the /tmp tmpfs.
    #[arg(long = "tmp-size", value_parser = ds_api::limits::parse_tmp, default_value = "64M")]
    tmp_size: u64,
    /// The app's $PORT.
    #[arg(long, default_value_t = spec::DEFAULT_APP_PORT)]
    port: u16,
    /// Host uid (and gid) for the appspace when running as root; ds-host
    /// always passes the one it allocated (default: derived from the data
    /// directory's path, in a range of its own).
    #[arg(long, value_name = "UID", value_parser = clap::value_parser!(u32).range(1..))]
    host_uid: Option<u32>,
    /// The parent of the sandbox's cgroup, a path inside each cgroup
    /// hierarchy (ds-host passes its delegated subtree; default `ds` at
    /// the hierarchy's root).
    #[arg(long, value_name = "PATH", default_value = ds_sandbox::cgroup::FALLBACK_PARENT, value_parser = parse_cgroup_path)]
    cgroup_parent: String,
    /// The sandbox cgroup's own name (ds-host names it by appspace;
    /// default `exec-<launcher pid>`).
    #[arg(long, value_name = "NAME", value_parser = parse_cgroup_name)]
    cgroup_name: Option<String>,
    /// The Deno binary on the host (default: $DS_DENO, then PATH).
    #[arg(long, value_name = "PATH")]
    deno: Option<PathBuf>,
    /// Extra environment for the app.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Run even if the kernel has no Landlock.
    #[arg(long)]
    allow_no_landlock: bool,
    /// Use Landlock as if the kernel offered no ABI above N (1-7), the way
    /// an older kernel would run the sandbox (Debian 12's 6.1 has ABI 2:
    /// binds are then mediated by the agent): for testing those paths.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..=7))]
    landlock_abi: Option<i32>,
    /// Print the layers applied to stderr.
    #[arg(long)]
    report: bool,
    /// An inherited Unix socket on which the agent speaks ds-proto to a host
    /// (what ds-host passes; also used by tests).
    #[arg(long, value_name = "FD", value_parser = clap::value_parser!(i32).range(3..))]
    channel_fd: Option<i32>,
    /// An inherited Unix seqpacket socket on which the host passes connected
    /// egress sockets to the agent (with --channel-fd; what ds-host passes).
    #[arg(long, value_name = "FD", value_parser = clap::value_parser!(i32).range(3..), requires = "channel_fd")]
    handoff_fd: Option<i32>,
    /// An inherited pipe on which the launcher writes the sandbox's final
    /// resource usage as it ends (one line: `cpu_ms=N memory_peak_bytes=N
    /// oom_kills=N`), read from its cgroup before the cgroup goes: what
    /// ds-host accounts across stops. The app never holds it, so it cannot
    /// forge it (its output goes to stdout and stderr).
    #[arg(long, value_name = "FD", value_parser = clap::value_parser!(i32).range(3..))]
    report_fd: Option<i32>,
    /// The command and its arguments (paths as seen inside).
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

fn parse_cgroup_path(s: &str) -> Result<String, String> {
    if ds_sandbox::cgroup::valid_cgroup_path(s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a relative cgroup path of plain components"
        ))
    }
}

fn parse_cgroup_name(s: &str) -> Result<String, String> {
    if ds_sandbox::cgroup::valid_cgroup_name(s) {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} is not a plain cgroup name"))
    }
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("invalid variable name {k:?}"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// A stable host uid for a data directory when `exec` is run by hand as
/// root without `--host-uid` (an author trying an app): from the range
/// kept for that ([`ds_api::ids::STANDALONE_IDS`]), apart from the ids
/// ds-host allocates to appspaces, which it always passes explicitly.
fn derived_host_uid(data: &std::path::Path) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data.as_os_str().as_encoded_bytes() {
        h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
    }
    let range = ds_api::ids::STANDALONE_IDS;
    range.start() + h % (range.end() - range.start() + 1)
}

fn find_deno(explicit: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(p) = explicit.or_else(|| std::env::var_os("DS_DENO").map(PathBuf::from)) {
        return std::fs::canonicalize(&p).map_err(|e| format!("Deno binary {}: {e}", p.display()));
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("deno"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "--runtime deno needs the Deno binary: pass --deno PATH or set DS_DENO".to_owned()
        })
}

fn exec(args: ExecArgs) -> Result<i32, String> {
    let app_dir = std::fs::canonicalize(&args.app)
        .map_err(|e| format!("--app {}: {e}", args.app.display()))?;
    if !app_dir.is_dir() {
        return Err(format!("--app {}: not a directory", args.app.display()));
    }
    std::fs::create_dir_all(&args.data)
        .map_err(|e| format!("--data {}: {e}", args.data.display()))?;
    let data_dir = std::fs::canonicalize(&args.data)
        .map_err(|e| format!("--data {}: {e}", args.data.display()))?;
    if data_dir.starts_with(&app_dir) || app_dir.starts_with(&data_dir) {
        return Err("--app and --data must not contain each other".into());
    }
    let deno_binary = match args.runtime {
        Runtime::Deno => Some(find_deno(args.deno)?),
        Runtime::Native => None,
    };
    let root = rustix::process::geteuid().is_root();
    let (host_uid, host_gid) = if root {
        let id = args.host_uid.unwrap_or_else(|| derived_host_uid(&data_dir));
        (id, id)
    } else if args.host_uid.is_some() {
        return Err("--host-uid needs root; without it the sandbox maps to your own uid".into());
    } else {
        (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        )
    };
    let spec = SandboxSpec {
        name: "exec".into(),
        cgroup_parent: args.cgroup_parent,
        cgroup_name: args.cgroup_name,
        app_dir,
        data_dir,
        runtime: args.runtime,
        deno_binary,
        limits: Limits {
            memory_bytes: args.memory,
            pids: args.pids,
            cpus: args.cpu,
            tmp_bytes: args.tmp_size,
            ..Limits::default()
        },
        host_uid,
        host_gid,
        dedicated_host_uid: root,
        app_port: args.port,
        proxy_port: if args.port == spec::DEFAULT_PROXY_PORT {
            spec::DEFAULT_APP_PORT
        } else {
            spec::DEFAULT_PROXY_PORT
        },
        allow_missing_landlock: args.allow_no_landlock,
        landlock_abi_cap: args.landlock_abi,
        command: args.command,
        extra_env: args.env,
        report: args.report,
        channel: args.channel_fd.is_some(),
        handoff: args.handoff_fd.is_some(),
        sources: Vec::new(),
    };
    let spec = SandboxSpec {
        sources: mounts::plan(&spec.app_dir, &spec.data_dir, spec.deno_binary.as_deref()),
        ..spec
    };
    let channel = match args.channel_fd {
        Some(fd) => {
            Some(ds_sandbox::sys::adopt_fd(fd).map_err(|e| format!("--channel-fd {fd}: {e}"))?)
        }
        None => None,
    };
    let handoff = match args.handoff_fd {
        Some(fd) => {
            Some(ds_sandbox::sys::adopt_fd(fd).map_err(|e| format!("--handoff-fd {fd}: {e}"))?)
        }
        None => None,
    };
    let report = match args.report_fd {
        Some(fd) => Some(std::fs::File::from(
            ds_sandbox::sys::adopt_fd(fd).map_err(|e| format!("--report-fd {fd}: {e}"))?,
        )),
        None => None,
    };
    launcher::run(&spec, channel, handoff, report).map_err(|e| e.to_string())
}

/// The `exec` arguments a spare launcher receives on stdin, or `None` when
/// the input ends empty (its host went away or no longer needs it).
fn spare_args() -> Result<Option<Vec<std::ffi::OsString>>, String> {
    use std::io::Read as _;
    use std::os::unix::ffi::OsStringExt as _;
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .map_err(|e| format!("reading the spare's arguments: {e}"))?;
    if input.is_empty() {
        return Ok(None);
    }
    let Some(body) = input.strip_suffix(&[0]) else {
        return Err("the spare's arguments must each end with a NUL byte".into());
    };
    let args = body
        .split(|b| *b == 0)
        .map(|a| std::ffi::OsString::from_vec(a.to_vec()));
    Ok(Some(
        ["ds-sandbox", "exec"]
            .into_iter()
            .map(Into::into)
            .chain(args)
            .collect(),
    ))
}

/// Shows which appspace a spare now serves. Its name (`comm`, what `ps`
/// and `top` show, 15 bytes) becomes its cgroup's name (`as-<appspace>`
/// from ds-host). Where the kernel lets it (`CAP_SYS_RESOURCE`), its full
/// command line (`ps -f`, `pgrep -f`) becomes the `exec` line it was
/// handed (see [`ds_sandbox::sys::set_command_line`]); where not (this
/// build machine's container lacks that capability), the command line
/// stays `ds-sandbox __spare`: our own memory is not rewritten through
/// `/proc/self/mem` to fake it. Best effort either way.
fn show_command_line(argv: &[std::ffi::OsString]) {
    use std::os::unix::ffi::OsStrExt as _;
    let name = argv
        .iter()
        .skip_while(|a| a.as_bytes() != b"--cgroup-name")
        .nth(1)
        .map_or_else(|| b"ds-exec".to_vec(), |n| n.as_bytes().to_vec());
    let mut comm: Vec<u8> = name.into_iter().filter(|b| *b != 0).take(15).collect();
    comm.push(0);
    if let Ok(comm) = std::ffi::CStr::from_bytes_with_nul(&comm) {
        let _ = rustix::thread::set_name(comm);
    }
    let mut text = Vec::new();
    for arg in argv {
        text.extend_from_slice(arg.as_bytes());
        text.push(0);
    }
    let _ = ds_sandbox::sys::set_command_line(text);
}

/// Runs a spare launcher (see [`Command::Spare`]).
fn spare() -> i32 {
    let argv = match spare_args() {
        Ok(Some(argv)) => argv,
        Ok(None) => return 0,
        Err(e) => {
            eprintln!("ds-sandbox: {e}");
            return launcher::SETUP_FAILED;
        }
    };
    show_command_line(&argv);
    let args = match Cli::try_parse_from(argv) {
        Ok(Cli {
            command: Command::Exec(args),
        }) => args,
        Ok(_) => {
            eprintln!("ds-sandbox: a spare only runs exec");
            return launcher::SETUP_FAILED;
        }
        Err(e) => {
            eprintln!("ds-sandbox: the spare's arguments: {e}");
            return launcher::SETUP_FAILED;
        }
    };
    match exec(*args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ds-sandbox: {e}");
            launcher::SETUP_FAILED
        }
    }
}

fn probe() {
    let abi = landlock_policy::kernel_abi();
    let cg = cgroup::CgroupVersion::detect()
        .map(|v| format!("{v:?}"))
        .unwrap_or_else(|e| e.to_string());
    let userns = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap_or_default();
    println!("landlock_abi: {abi}");
    println!("cgroup: {cg}");
    println!("max_user_namespaces: {}", userns.trim());
    println!("running_as_root: {}", rustix::process::geteuid().is_root());
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Exec(args) => match exec(*args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("ds-sandbox: {e}");
                launcher::SETUP_FAILED
            }
        },
        Command::Probe => {
            probe();
            0
        }
        Command::Agent => agent::run(),
        Command::Spare => spare(),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(255))
}
