//! The egress benchmark, in one run: one large download and sequential
//! connections per second, made by the same program (tests/hostile/
//! workload.c) from inside a sandbox through the agent's proxy and the
//! host's egress check, and directly on the host. The upstream is an
//! in-process HTTP server on 127.0.0.1, allowed by explicit address.
//!
//! `cargo build --release --workspace --bins && cargo bench -p ds-cli --bench egress`
//! (as root, with gcc). Prints a table and rewrites its section of
//! docs/performance.md.

#[path = "../../tests/support/perf_doc.rs"]
mod perf_doc;
#[path = "../../tests/support/workload.rs"]
mod workload;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const DSCTL: &str = env!("CARGO_BIN_EXE_dsctl");
const DOWNLOAD: u64 = 1 << 30;
const CONNECTIONS: u32 = 500;
const ROUNDS: usize = 5;

fn bin(name: &str) -> PathBuf {
    Path::new(DSCTL).parent().expect("target dir").join(name)
}

/// Serves `/big/N` (N bytes) and `/hello`, a thread per connection.
fn upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let n: u64 = path
                    .strip_prefix("/big/")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(5);
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
                );
                let chunk = vec![b'z'; 256 * 1024];
                let mut left = n;
                while left > 0 {
                    let k = left.min(chunk.len() as u64) as usize;
                    if conn.write_all(&chunk[..k]).is_err() {
                        return;
                    }
                    left -= k as u64;
                }
            });
        }
    });
    port
}

fn get(port: u16, host: &str, path: &str) -> String {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(600)))
        .unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).expect("read");
    raw.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or(raw)
}

fn field(body: &str, key: &str) -> f64 {
    body.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {body:?}"))
}

fn best(samples: impl Iterator<Item = f64>) -> f64 {
    samples.fold(f64::MAX, f64::min)
}

fn main() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED egress benchmark: needs root (sandboxes)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pkg = workload::package(dir.path(), "wl", "http").expect("building workload.c");
    let up = upstream();
    let to = format!("127.0.0.1:{up}");

    // The reference: the same program on the host, connecting directly.
    let direct_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut direct: Child = Command::new(pkg.join("workload"))
        .env_clear()
        .env("PORT", direct_port.to_string())
        .stdout(Stdio::null())
        .spawn()
        .expect("workload");
    std::thread::sleep(Duration::from_millis(200));

    let state = dir.path().join("state");
    let mut host = Command::new(bin("ds-host"))
        .args([
            "--dev",
            "--port",
            "0",
            "--tls-port",
            "0",
            "--egress-rate",
            "100000",
            "--egress-max-connections",
            "1024",
            "--state-dir",
        ])
        .arg(&state)
        .arg("--app")
        .arg(&pkg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ds-host");
    let mut lines = BufReader::new(host.stdout.take().unwrap()).lines();
    let mut port = 0u16;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.split("serving http://").nth(1) {
            port = rest
                .split(['/', ' '])
                .next()
                .and_then(|hp| hp.rsplit_once(':'))
                .and_then(|(_, p)| p.parse().ok())
                .expect("port");
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let allowed = Command::new(DSCTL)
        .arg("--socket")
        .arg(state.join("admin.sock"))
        .args(["appspace", "egress", "allow", "wl.localhost", &to])
        .output()
        .expect("dsctl");
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    // The reference runs unconfined; give the sandbox the machine's two
    // cores too, so that the ratio measures the path and not the quota.
    let cpus = Command::new(DSCTL)
        .arg("--socket")
        .arg(state.join("admin.sock"))
        .args(["appspace", "limits", "wl.localhost", "--cpu", "2"])
        .output()
        .expect("dsctl");
    assert!(
        cpus.status.success(),
        "{}",
        String::from_utf8_lossy(&cpus.stderr)
    );

    let download = |via: &str, port: u16, host: &str| {
        let body = get(
            port,
            host,
            &format!("/egress/download?to={to}&bytes={DOWNLOAD}&via={via}"),
        );
        assert!(field(&body, "bytes") as u64 >= DOWNLOAD, "{body}");
        field(&body, "secs")
    };
    let connrate = |via: &str, port: u16, host: &str| {
        let body = get(
            port,
            host,
            &format!("/egress/connrate?to={to}&n={CONNECTIONS}&via={via}"),
        );
        assert_eq!(field(&body, "n") as u32, CONNECTIONS, "{body}");
        field(&body, "secs")
    };
    // Warm the appspace up first.
    get(port, "wl.localhost", "/");
    // Rounds alternate between the two paths, so that the machine's drift
    // (other tenants, frequency) weighs on both alike; best of each.
    let mut samples = [(); 4].map(|()| Vec::with_capacity(ROUNDS));
    for _ in 0..ROUNDS {
        samples[0].push(download("direct", direct_port, "direct"));
        samples[1].push(download("proxy", port, "wl.localhost"));
    }
    for _ in 0..ROUNDS {
        samples[2].push(connrate("direct", direct_port, "direct"));
        samples[3].push(connrate("proxy", port, "wl.localhost"));
    }
    let [dl_direct, dl_proxy, cr_direct, cr_proxy] = samples.map(|s| best(s.into_iter()));
    let _ = direct.kill();
    let _ = direct.wait();
    let pid = rustix::process::Pid::from_raw(host.id() as i32).unwrap();
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let _ = host.wait();

    // The download includes the response head; close enough for MiB/s.
    let mibs = |secs: f64| DOWNLOAD as f64 / secs / (1u64 << 20) as f64;
    let per_sec = |secs: f64| CONNECTIONS as f64 / secs;
    let table = format!(
        "| measure | through the proxy | direct on the host | ratio | target |\n|---|---|---|---|---|\n\
         | one {} MiB download | {:.0} MiB/s | {:.0} MiB/s | {:.2}x | >= 0.7x |\n\
         | connections per second (sequential CONNECT + GET) | {:.0}/s | {:.0}/s | {:.2}x | |\n",
        DOWNLOAD >> 20,
        mibs(dl_proxy),
        mibs(dl_direct),
        dl_direct / dl_proxy,
        per_sec(cr_proxy),
        per_sec(cr_direct),
        cr_direct / cr_proxy,
    );
    print!("{table}");
    write_docs(&table);
}

/// Replaces this benchmark's section of docs/performance.md.
fn write_docs(table: &str) {
    perf_doc::rewrite(
        "egress-bench",
        &format!(
            "_Latest run: `cargo bench -p ds-cli --bench egress`; best of {ROUNDS}._\n\n{table}"
        ),
    );
}
