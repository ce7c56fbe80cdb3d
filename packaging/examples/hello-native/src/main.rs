//! Example ds app: a plain HTTP/1.1 server on `127.0.0.1:$PORT` that shows
//! what it sees from inside its sandbox. Each visit of `/` is counted in
//! `/data/visits`, so the count survives restarts; `/hello` is a tiny fixed
//! answer for benchmarks; `/boom` answers 500 (a version whose health
//! path it is never works). `hello-native migrate FROM TO` is its data
//! migration (docs/upgrades.md): it converts `/data` from schema FROM to
//! TO, recorded in `/data/schema`; `hello-native migrate-fail FROM TO`
//! spoils the data and fails, as a broken migration would,
//! `migrate-hang` spoils it and never ends, and `migrate-slow` waits 4 s
//! before migrating. `/argv` and `/env` list the
//! arguments and environment it was started with. Standard
//! library only.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("migrate") if args.len() == 4 => return migrate(&args[2], &args[3]),
        Some("migrate-slow") if args.len() == 4 => {
            // A migration that takes a while (an admin acts meanwhile).
            std::thread::sleep(std::time::Duration::from_secs(4));
            return migrate(&args[2], &args[3]);
        }
        Some("migrate-fail") => {
            std::fs::write("/data/visits", "spoilt by a failed migration")?;
            eprintln!("hello-native: migration failed on purpose");
            std::process::exit(1);
        }
        Some("migrate-hang") => {
            // Half done, then stuck: what a host killed mid-migration leaves.
            std::fs::write("/data/visits", "half migrated")?;
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        _ => {}
    }
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8000);
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    eprintln!("hello-native listening on 127.0.0.1:{port}");
    for conn in listener.incoming() {
        match conn {
            Ok(conn) => {
                // Out of threads (the sandbox's pids limit): this
                // connection is closed, the app keeps serving the others.
                let spawned = std::thread::Builder::new().spawn(move || {
                    if let Err(e) = serve(conn) {
                        eprintln!("hello-native: {e}");
                    }
                });
                if let Err(e) = spawned {
                    eprintln!("hello-native: no thread for a connection, closed it: {e}");
                }
            }
            Err(e) => eprintln!("hello-native: accept: {e}"),
        }
    }
    Ok(())
}

/// Answers requests on one connection until the client closes it or asks
/// to (HTTP/1.1 keep-alive). Request bodies are not expected (GET only).
fn serve(conn: TcpStream) -> std::io::Result<()> {
    conn.set_nodelay(true)?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut conn = conn;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(()); // closed (or a bare connect: the agent's readiness probe)
        }
        let mut close = request_line.ends_with("HTTP/1.0\r\n");
        let mut header = String::new();
        loop {
            header.clear();
            if reader.read_line(&mut header)? <= 2 {
                break;
            }
            let lower = header.to_ascii_lowercase();
            if lower.starts_with("connection:") {
                close = lower.contains("close");
            }
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_owned();
        let (status, body) = match path.as_str() {
            "/" => ("200 OK", page()),
            "/hello" => ("200 OK", "hello\n".to_owned()),
            // What the host started it with (the manifest's `command` and
            // `[env]` as the app receives them), one per line.
            "/argv" => ("200 OK", lines(std::env::args().skip(1))),
            "/env" => {
                let mut vars: Vec<String> =
                    std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
                vars.sort();
                ("200 OK", lines(vars.into_iter()))
            }
            "/boom" => (
                "500 Internal Server Error",
                "broken on purpose\n".to_owned(),
            ),
            p if p.starts_with("/write/") => write_mib(&p["/write/".len()..]),
            p if p.starts_with("/spin/") => spin(&p["/spin/".len()..]),
            _ => ("404 Not Found", format!("no page at {}\n", escape(&path))),
        };
        // One write per response: several small ones would meet Nagle's
        // algorithm and the peer's delayed ACK (40 ms stalls).
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{body}",
            body.len(),
            if close { "close" } else { "keep-alive" }
        );
        conn.write_all(response.as_bytes())?;
        if close {
            return Ok(());
        }
    }
}

/// `/write/NAME/MIB`: writes MIB MiB into `/data/NAME` (appending), one
/// MiB at a time and synced, and says how much went in and, when the
/// disk refused, the error (a disk limit's `EDQUOT` or `ENOSPC`).
fn write_mib(spec: &str) -> (&'static str, String) {
    use std::io::Write as _;
    let Some((name, mib)) = spec.split_once('/') else {
        return ("400 Bad Request", "use /write/NAME/MIB\n".into());
    };
    let (Ok(mib), true) = (
        mib.parse::<u64>(),
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
    ) else {
        return ("400 Bad Request", "use /write/NAME/MIB\n".into());
    };
    let chunk: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut file = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(format!("/data/{name}"))
    {
        Ok(f) => f,
        Err(e) => return ("200 OK", format!("wrote 0 MiB; refused: {e}\n")),
    };
    for i in 0..mib {
        if let Err(e) = file.write_all(&chunk).and_then(|()| file.sync_data()) {
            return ("200 OK", format!("wrote {i} MiB; refused: {e}\n"));
        }
    }
    ("200 OK", format!("wrote {mib} MiB\n"))
}

/// Converts `/data` from schema `from` to `to`: checks that the data is
/// at `from` (no file: schema 0 or 1, the first versions wrote none),
/// then records `to` and appends the step to `/data/migrations`.
fn migrate(from: &str, to: &str) -> std::io::Result<()> {
    let now = std::fs::read_to_string("/data/schema")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    if !(now == from || now.is_empty() && (from == "0" || from == "1")) {
        eprintln!("hello-native: the data is at schema {now:?}, not {from}");
        std::process::exit(2);
    }
    let mut log = std::fs::read_to_string("/data/migrations").unwrap_or_default();
    log.push_str(&format!("{from}->{to}\n"));
    std::fs::write("/data/migrations", log)?;
    std::fs::write("/data/schema.new", to)?;
    std::fs::rename("/data/schema.new", "/data/schema")?;
    eprintln!("hello-native: migrated the data from schema {from} to {to}");
    Ok(())
}

fn visits() -> u64 {
    let n = std::fs::read_to_string("/data/visits")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
        + 1;
    let _ = std::fs::write("/data/visits", n.to_string());
    n
}

fn page() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or("")
            .to_owned()
    };
    let hostname = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let data: Vec<String> = std::fs::read_dir("/data")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let root: Vec<String> = std::fs::read_dir("/")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_else(|e| vec![format!("(cannot list /: {e})")]);
    let rows = [
        ("visits (kept in /data)", visits().to_string()),
        ("hostname", hostname.trim().to_owned()),
        ("uid", line("Uid:")),
        ("capabilities", line("CapEff:")),
        ("no_new_privs", line("NoNewPrivs:")),
        ("seccomp", line("Seccomp:")),
        ("PORT", std::env::var("PORT").unwrap_or_default()),
        (
            "HTTP_PROXY",
            std::env::var("HTTP_PROXY").unwrap_or_default(),
        ),
        ("/data holds", data.join(", ")),
        ("/ holds", root.join(", ")),
    ];
    let mut html = String::from("<!doctype html><title>hello-native</title><h1>hello from a ds sandbox (native)</h1><table>");
    for (k, v) in rows {
        html.push_str(&format!(
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(k),
            escape(&v)
        ));
    }
    html.push_str("</table>\n");
    html
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn lines(items: impl Iterator<Item = String>) -> String {
    items.map(|l| l + "\n").collect()
}

/// `/spin/MS`: keeps a core busy until this thread has used MS
/// milliseconds of CPU time (at most 10 s; as wall time where `/proc` does
/// not say), for the usage history's tests: a loaded machine stretches the
/// spin, never shortens what it used.
fn spin(ms: &str) -> (&'static str, String) {
    let Ok(ms) = ms.parse::<u64>() else {
        return (
            "400 Bad Request",
            "spin for how many milliseconds?\n".into(),
        );
    };
    let ms = ms.min(10_000);
    let start = std::time::Instant::now();
    let cpu_start = thread_cpu_ms();
    let used = || match (cpu_start, thread_cpu_ms()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => start.elapsed().as_millis() as u64,
    };
    let mut x = 0u64;
    while used() < ms && start.elapsed() < std::time::Duration::from_secs(60) {
        for i in 0..100_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
    }
    ("200 OK", format!("spun {ms} ms ({})\n", x % 10))
}

/// This thread's CPU time (user and system) in milliseconds, from
/// `/proc/thread-self/stat` (clock ticks of 10 ms on Linux).
fn thread_cpu_ms() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // The command name (field 2) may hold blanks: count after its ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) * 10)
}
