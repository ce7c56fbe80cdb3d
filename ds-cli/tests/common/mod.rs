//! What the dsctl and egress suites share: a real `ds-host --dev` driven
//! through `dsctl`, and the requirement check that makes a test report
//! SKIPPED (ignored) rather than pass when it cannot run.

#![allow(dead_code)] // each suite uses a different part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};
use serde_json::Value;

pub const DSCTL: &str = env!("CARGO_BIN_EXE_dsctl");

pub type TestFn = fn() -> Result<(), Failed>;

/// The trials, ignored with a loud SKIPPED line when `skip` says why.
pub fn trials(tests: Vec<(&'static str, TestFn)>, skip: Option<String>) -> Vec<Trial> {
    tests
        .into_iter()
        .map(|(name, f)| {
            if let Some(why) = &skip {
                eprintln!("SKIPPED {name}: {why}");
            }
            Trial::test(name, f).with_ignored_flag(skip.is_some())
        })
        .collect()
}

pub fn bin_dir() -> PathBuf {
    Path::new(DSCTL)
        .parent()
        .expect("binary directory")
        .to_owned()
}

pub fn missing_requirement() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("needs root (sandboxes need cgroups)".into());
    }
    for bin in ["ds-host", "ds-sandbox", "hello-native"] {
        if !bin_dir().join(bin).is_file() {
            return Some(format!(
                "{bin} is not built (run cargo build --workspace --bins)"
            ));
        }
    }
    None
}

pub fn ensure(cond: bool, msg: impl Into<String>) -> Result<(), Failed> {
    if cond {
        Ok(())
    } else {
        Err(msg.into().into())
    }
}

/// A running dev host; killed on drop.
pub struct DevHost {
    child: Child,
    pub port: u16,
    pub socket: PathBuf,
    /// What it printed on stdout after its banner.
    output: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl DevHost {
    /// The host's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn start(state: &Path) -> Result<Self, Failed> {
        Self::start_with(state, &[], None)
    }

    /// Starts with extra arguments (e.g. `--app PKG`) and, when given, a
    /// Deno binary for Deno apps.
    pub fn start_with(state: &Path, extra: &[&str], deno: Option<&Path>) -> Result<Self, Failed> {
        let mut cmd = Command::new(bin_dir().join("ds-host"));
        cmd.args(["--dev", "--port", "0", "--tls-port", "0", "--state-dir"])
            .arg(state)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(state.with_extension("stderr.log"))?);
        match deno {
            Some(d) => cmd.env("DS_DENO", d),
            None => cmd.env_remove("DS_DENO"),
        };
        let mut child = cmd.spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut socket, mut port) = (None, None);
        for line in lines.by_ref() {
            let line = line?;
            if let Some(rest) = line.strip_prefix("ds-host (dev): admin socket at ") {
                socket = rest.split_whitespace().next().map(PathBuf::from);
            }
            if let Some(rest) = line.split("serving http://").nth(1) {
                port = rest
                    .split(['/', ' '])
                    .next()
                    .and_then(|hp| hp.rsplit_once(':'))
                    .and_then(|(_, p)| p.parse().ok());
                break;
            }
        }
        let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = output.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        Ok(Self {
            output,
            child,
            port: port.ok_or_else(|| {
                let log =
                    std::fs::read_to_string(state.with_extension("stderr.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!(
                    "ds-host printed no URL; its stderr ends:\n{}",
                    tail.join("\n")
                )
            })?,
            socket: socket.ok_or("ds-host printed no admin socket")?,
        })
    }

    /// The lines it printed on stdout after its banner, so far.
    pub fn output(&self) -> Vec<String> {
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs dsctl against this host.
    pub fn dsctl(&self, args: &[&str]) -> Result<Output, Failed> {
        Ok(Command::new(DSCTL)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()?)
    }

    /// Runs dsctl --json and expects success.
    pub fn json(&self, args: &[&str]) -> Result<Value, Failed> {
        let out = self.dsctl(&[&["--json"], args].concat())?;
        ensure(
            out.status.success(),
            format!(
                "dsctl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        )?;
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Runs dsctl and expects failure with one line on stderr containing
    /// `needle`; returns that line.
    pub fn fails(&self, args: &[&str], needle: &str) -> Result<String, Failed> {
        let out = self.dsctl(args)?;
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        ensure(!out.status.success(), format!("dsctl {args:?} succeeded"))?;
        ensure(
            err.trim_end().lines().count() == 1,
            format!("dsctl {args:?}: not one line: {err:?}"),
        )?;
        ensure(
            err.to_lowercase().contains(&needle.to_lowercase()),
            format!("dsctl {args:?}: {err:?} does not mention {needle:?}"),
        )?;
        Ok(err)
    }

    pub fn get(&self, host: &str, path: &str) -> Result<(u16, String), Failed> {
        let mut conn = TcpStream::connect(("127.0.0.1", self.port))?;
        conn.set_read_timeout(Some(Duration::from_secs(20)))?;
        write!(
            conn,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )?;
        let mut raw = String::new();
        conn.read_to_string(&mut raw)?;
        let status = raw
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no status in {raw:?}"))?;
        let body = raw
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    }

    /// One HTTP/1.1 request to the front door for `host`: `head` is extra
    /// header lines, `body` is sent with its length. Returns the status,
    /// the response's header block (lowercase names) and its body (a
    /// chunked one decoded).
    pub fn request(
        &self,
        host: &str,
        method: &str,
        path: &str,
        head: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(u16, String, Vec<u8>), Failed> {
        let mut conn = TcpStream::connect(("127.0.0.1", self.port))?;
        conn.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in head {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str("\r\n");
        conn.write_all(req.as_bytes())?;
        conn.write_all(body)?;
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw)?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| format!("no response head in {:?}", String::from_utf8_lossy(&raw)))?;
        let headers = String::from_utf8_lossy(&raw[..split]).to_lowercase();
        let status = headers
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no status in {headers:?}"))?;
        let mut body = raw[split + 4..].to_vec();
        if headers.contains("\r\ntransfer-encoding: chunked") {
            body = dechunk(&body)?;
        }
        Ok((status, headers, body))
    }

    pub fn stop(mut self) -> Result<(), Failed> {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).ok_or("bad pid")?;
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait()?.is_none() {
            ensure(Instant::now() < deadline, "ds-host did not stop on SIGTERM")?;
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for DevHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A chunked HTTP/1.1 body, decoded.
fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, Failed> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk size line without its end")?;
        let size = std::str::from_utf8(&raw[..line_end])?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        ensure(raw.len() >= size + 2, "a chunk cut short")?;
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// The Deno binary the tests use, or why there is none.
pub fn deno() -> Result<PathBuf, String> {
    std::env::var_os("DS_DENO")
        .map(PathBuf::from)
        .or_else(|| {
            let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ds-tools/bin/deno");
            local.exists().then_some(local)
        })
        .ok_or_else(|| "no Deno binary (set DS_DENO or run packaging/dev/setup.sh)".into())
}
