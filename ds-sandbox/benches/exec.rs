//! `ds-sandbox exec` of a static no-op against a bare exec and against
//! `bwrap --unshare-all` of the same program, in one run.
//!
//! `cargo bench -p ds-sandbox --bench exec` (as root, with bubblewrap
//! installed) prints a table and rewrites its section of
//! docs/performance.md.

#[path = "../../tests/support/perf_doc.rs"]
mod perf_doc;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 200;
const WARMUP: usize = 10;

fn time_one(cmd: &mut dyn FnMut() -> Command) -> Duration {
    let t = Instant::now();
    let status = cmd()
        .stdin(Stdio::null())
        .status()
        .expect("running the command");
    assert!(status.success(), "benchmark command failed: {status}");
    t.elapsed()
}

/// Runs the commands in turn, RUNS rounds, so that the machine's drift
/// (other tenants, frequency) weighs on each of them alike; returns each
/// one's sorted samples.
fn time_interleaved<const N: usize>(
    mut cmds: [&mut dyn FnMut() -> Command; N],
) -> [Vec<Duration>; N] {
    for cmd in cmds.iter_mut() {
        for _ in 0..WARMUP {
            time_one(*cmd);
        }
    }
    let mut samples: [Vec<Duration>; N] = std::array::from_fn(|_| Vec::with_capacity(RUNS));
    for _ in 0..RUNS {
        for (cmd, s) in cmds.iter_mut().zip(samples.iter_mut()) {
            s.push(time_one(*cmd));
        }
    }
    for s in samples.iter_mut() {
        s.sort();
    }
    samples
}

fn pct(s: &[Duration], p: usize) -> Duration {
    s[(s.len() * p / 100).min(s.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: the exec benchmark needs root (cgroups, id maps)");
        return;
    }
    if Command::new("bwrap").arg("--version").output().is_err() {
        eprintln!("SKIPPED: bubblewrap (bwrap) is not installed; run packaging/dev/setup.sh");
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("exec-bench");
    let app = dir.join("app");
    let data = dir.join("data");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    let src = dir.join("noop.c");
    std::fs::write(&src, "int main(void) { return 0; }\n").unwrap();
    let noop = app.join("noop");
    let ok = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&noop)
        .arg(&src)
        .status()
        .unwrap();
    assert!(ok.success(), "compiling the no-op");
    // `$DS_SANDBOX` is the static build the bench script makes (what
    // ships); Cargo's own build of the binary otherwise.
    let sandbox = std::env::var_os("DS_SANDBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ds-sandbox")));
    let linking = if has_interpreter(&sandbox) {
        "dynamically linked"
    } else {
        "static"
    };
    println!("ds-sandbox under test: {} ({linking})", sandbox.display());

    let mut bare = || Command::new(&noop);
    let mut bwrap = || {
        let mut c = Command::new("bwrap");
        c.args(["--unshare-all", "--ro-bind"]).arg(&app).args([
            "/app",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "/app/noop",
        ]);
        c
    };
    let mut ds = || {
        let mut c = Command::new(&sandbox);
        c.args(["exec", "--app"])
            .arg(&app)
            .arg("--data")
            .arg(&data)
            .args(["--", "/app/noop"]);
        c
    };
    let [bare, bwrap, ds] = time_interleaved([&mut bare, &mut bwrap, &mut ds]);

    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    let table = format!(
        "| what ({RUNS} runs) | p50 | p90 | p50 vs bwrap |\n|---|---|---|---|\n\
         | bare exec of the no-op | {} | {} | {:.2}x |\n\
         | `bwrap --unshare-all` (ro /app, /dev, /proc) | {} | {} | 1.00x |\n\
         | `ds-sandbox exec` (all layers + cgroup) | {} | {} | **{:.2}x** |\n",
        ms(pct(&bare, 50)),
        ms(pct(&bare, 90)),
        ratio(pct(&bare, 50), pct(&bwrap, 50)),
        ms(pct(&bwrap, 50)),
        ms(pct(&bwrap, 90)),
        ms(pct(&ds, 50)),
        ms(pct(&ds, 90)),
        ratio(pct(&ds, 50), pct(&bwrap, 50)),
    );
    println!("{table}");
    let verdict = if ratio(pct(&ds, 50), pct(&bwrap, 50)) <= 1.5 {
        "met"
    } else {
        "NOT met"
    };
    println!("target (<= 1.5x bwrap at p50): {verdict}");
    let cgroup = ds_sandbox::cgroup::CgroupVersion::detect()
        .map(|v| format!("{v:?}"))
        .unwrap_or_default();
    write_docs(&format!(
        "_Latest run: `packaging/dev/bench.sh` (`cargo bench -p ds-sandbox --bench exec`), {linking} ds-sandbox, cgroup {cgroup}, Landlock ABI {}._\n\n{table}\n\
         Target (<= 1.5x bwrap at p50): **{verdict}**.\n",
        ds_sandbox::landlock_policy::kernel_abi()
    ));
}

/// Whether an ELF executable names a program interpreter (PT_INTERP),
/// i.e. is dynamically linked.
fn has_interpreter(path: &std::path::Path) -> bool {
    let elf = std::fs::read(path).expect("reading ds-sandbox");
    let word = |at: usize, n: usize| {
        elf[at..at + n]
            .iter()
            .rev()
            .fold(0usize, |acc, b| acc << 8 | usize::from(*b))
    };
    let (phoff, phentsize, phnum) = (word(0x20, 8), word(0x36, 2), word(0x38, 2));
    (0..phnum).any(|i| word(phoff + i * phentsize, 4) == 3)
}

/// Replaces this benchmark's section of docs/performance.md.
fn write_docs(section: &str) {
    perf_doc::rewrite("sandbox-exec-bench", section);
}
