//! Real third-party apps, unchanged, the way a person would run them:
//! fetched from their registries by `tests/apps/third-party/fetch.sh`
//! (once per target directory; none of their code is in this repository),
//! packaged here, installed through dsctl and used through the front door.
//!
//! - dufs (crates.io), a native file server, configured only by the
//!   manifest's `command`: upload, list, download, delete, a long upload,
//!   files kept across a stop and a host restart.
//! - Express 4 (npm) under Deno with its `node_modules` vendored: a form
//!   posted and stored in `/data`, kept across a stop.
//! - ws (npm) under Deno: WebSockets through the front door, a message
//!   broadcast to every client, the history kept in `/data`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use libtest_mimic::Failed;
use serde_json::Value;

use super::{ensure, DevHost, DSCTL};

/// Where fetch.sh put the apps (building or fetching what is missing).
fn third_party() -> Result<PathBuf, Failed> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/apps/third-party/fetch.sh");
    let out = Command::new("bash").arg(&script).output()?;
    ensure(
        out.status.success(),
        format!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        ),
    )?;
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// `cp -a FROM TO` (node_modules keeps its links and modes).
fn copy_tree(from: &Path, to: &Path) -> Result<(), Failed> {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status()?;
    ensure(status.success(), format!("cp -a {}", from.display()))
}

/// Packs `pkg` with `dsctl app pack` (as an author ships it), installs the
/// archive and creates an appspace of it at `domain`; returns the
/// appspace as `appspace show` has it.
fn install(host: &DevHost, pkg: &Path, domain: &str) -> Result<Value, Failed> {
    let archive = pkg.with_extension("tar.gz");
    let out = Command::new(DSCTL)
        .args(["app", "pack"])
        .arg(pkg)
        .arg("-o")
        .arg(&archive)
        .output()?;
    ensure(
        out.status.success(),
        format!("app pack: {}", String::from_utf8_lossy(&out.stderr)),
    )?;
    let installed = host.json(&["app", "install", archive.to_str().ok_or("path")?])?;
    let app = installed["name"]
        .as_str()
        .ok_or_else(|| format!("no app name in {installed}"))?
        .to_owned();
    host.json(&["appspace", "create", "--app", &app, "--domain", domain])?;
    host.json(&["appspace", "show", domain])
}

/// Deterministic incompressible bytes (xorshift), `len` of them.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

const DUFS_MANIFEST: &str = r#"name = "dufs"
version = "0.47.0"
runtime = "native"
command = ["bin/dufs", "${DATA}", "--bind", "127.0.0.1", "--port", "${PORT}", "--allow-upload", "--allow-delete"]
"#;

pub(super) fn dufs_from_crates_io_uploads_lists_downloads_deletes_and_keeps_files_across_restarts(
) -> Result<(), Failed> {
    let tp = third_party()?;
    let dir = tempfile::tempdir()?;
    let pkg = dir.path().join("dufs");
    std::fs::create_dir_all(pkg.join("bin"))?;
    std::fs::copy(tp.join("dufs/bin/dufs"), pkg.join("bin/dufs"))?;
    std::fs::write(pkg.join("ds-app.toml"), DUFS_MANIFEST)?;
    let state = dir.path().join("state");
    let host = DevHost::start(&state)?;
    let d = "files.localhost";
    let shown = install(&host, &pkg, d)?;
    let data = PathBuf::from(shown["data_dir"].as_str().ok_or("no data_dir")?);

    let put = |host: &DevHost, path: &str, body: &[u8]| -> Result<(), Failed> {
        let (code, _, said) = host.request(d, "PUT", path, &[], body)?;
        ensure(
            code == 201,
            format!("PUT {path}: {code} {}", String::from_utf8_lossy(&said)),
        )
    };
    let get = |host: &DevHost, path: &str| -> Result<(u16, Vec<u8>), Failed> {
        host.request(d, "GET", path, &[], b"")
            .map(|(c, _, b)| (c, b))
    };
    let names = |host: &DevHost, path: &str| -> Result<Vec<String>, Failed> {
        let (code, body) = get(host, &format!("{path}?json"))?;
        ensure(code == 200, format!("list {path}: {code}"))?;
        let listed: Value = serde_json::from_slice(&body)?;
        Ok(listed["paths"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect())
    };

    // Upload: a small file into a new folder, and a long upload (48 MiB,
    // streamed through the front door and the channel).
    let notes = b"minutes of the meeting\n".to_vec();
    put(&host, "/notes/today.txt", &notes)?;
    put(&host, "/notes/later.txt", b"to do\n")?;
    let big = noise(48 << 20, 0x5eed);
    put(&host, "/big.bin", &big)?;
    // List.
    let mut top = names(&host, "/")?;
    top.sort();
    ensure(top == ["big.bin", "notes"], format!("listed: {top:?}"))?;
    let mut inner = names(&host, "/notes/")?;
    inner.sort();
    ensure(
        inner == ["later.txt", "today.txt"],
        format!("listed: {inner:?}"),
    )?;
    // Download, byte for byte.
    let (code, body) = get(&host, "/notes/today.txt")?;
    ensure(code == 200 && body == notes, format!("today.txt: {code}"))?;
    let (code, body) = get(&host, "/big.bin")?;
    ensure(
        code == 200 && body == big,
        format!("big.bin: {code}, {} bytes", body.len()),
    )?;
    // Delete.
    let (code, _, _) = host.request(d, "DELETE", "/notes/later.txt", &[], b"")?;
    ensure(code == 204, format!("DELETE: {code}"))?;
    let (code, _) = get(&host, "/notes/later.txt")?;
    ensure(code == 404, format!("deleted, then GET: {code}"))?;
    // The files are the appspace's data, where the host keeps it (and
    // backs it up).
    ensure(
        std::fs::read(data.join("notes/today.txt"))? == notes,
        "today.txt is not in the appspace's data directory",
    )?;

    // Kept across a stop (the next request starts it again) ...
    host.json(&["appspace", "stop", d])?;
    let (code, body) = get(&host, "/notes/today.txt")?;
    ensure(
        code == 200 && body == notes,
        format!("after a stop: {code}"),
    )?;
    // ... and a host restart.
    host.stop()?;
    let host = DevHost::start(&state)?;
    let (code, body) = get(&host, "/big.bin")?;
    ensure(
        code == 200 && body == big,
        format!("after a host restart: {code}, {} bytes", body.len()),
    )?;
    let inner = names(&host, "/notes/")?;
    ensure(
        inner == ["today.txt"],
        format!("after a restart: {inner:?}"),
    )?;
    host.stop()
}

/// The Deno app `name` at `dir`: `main.mjs` over the npm packages in
/// `npm` (its package.json and node_modules vendored).
fn deno_package(dir: &Path, name: &str, npm: &Path, main: &str) -> Result<PathBuf, Failed> {
    let pkg = dir.join(name);
    std::fs::create_dir_all(&pkg)?;
    copy_tree(&npm.join("node_modules"), &pkg)?;
    std::fs::copy(npm.join("package.json"), pkg.join("package.json"))?;
    std::fs::write(pkg.join("main.mjs"), main)?;
    std::fs::write(
        pkg.join("ds-app.toml"),
        format!("name = \"{name}\"\nversion = \"1.0.0\"\nruntime = \"deno\"\nentrypoint = \"main.mjs\"\n"),
    )?;
    Ok(pkg)
}

/// A guest book on Express 4 as its documentation writes one:
/// `app.listen(port)` on all addresses, a urlencoded form, the entries in
/// a JSON file in /data written then renamed.
const GUESTBOOK: &str = r#"import express from "express";
import fs from "node:fs";

const file = "/data/guestbook.json";
const read = () => {
  try { return JSON.parse(fs.readFileSync(file, "utf8")); } catch { return []; }
};
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

const app = express();
app.use(express.urlencoded({ extended: false }));
app.get("/", (req, res) => {
  const items = read().map((e) => `<li>${esc(e.name)}: ${esc(e.message)}</li>`).join("");
  res.type("html").send(`<form method="post" action="/sign"><input name="name"><textarea name="message"></textarea><button>Sign</button></form><ul>${items}</ul>`);
});
app.post("/sign", (req, res) => {
  if (!req.body.name || !req.body.message) return res.status(400).send("name and message, please");
  const entries = read();
  entries.push({ name: req.body.name, message: req.body.message });
  fs.writeFileSync(file + ".new", JSON.stringify(entries));
  fs.renameSync(file + ".new", file);
  res.redirect(303, "/");
});
app.listen(Number(process.env.PORT), () => console.log(`guestbook listening on ${process.env.PORT}`));
"#;

pub(super) fn express_from_npm_under_deno_stores_a_posted_form_in_data() -> Result<(), Failed> {
    let tp = third_party()?;
    let deno = super::common::deno()?;
    let dir = tempfile::tempdir()?;
    let pkg = deno_package(dir.path(), "guestbook", &tp.join("npm/express"), GUESTBOOK)?;
    let state = dir.path().join("state");
    let host = DevHost::start_with(&state, &[], Some(&deno))?;
    let d = "guestbook.localhost";
    let shown = install(&host, &pkg, d)?;
    let data = PathBuf::from(shown["data_dir"].as_str().ok_or("no data_dir")?);
    let form = [("content-type", "application/x-www-form-urlencoded")];

    let (code, _, page) = host.request(d, "GET", "/", &[], b"")?;
    let page = String::from_utf8_lossy(&page);
    ensure(
        code == 200 && page.contains("<form method=\"post\""),
        format!("the form: {code} {page}"),
    )?;
    let (code, head, _) = host.request(
        d,
        "POST",
        "/sign",
        &form,
        b"name=Ada&message=Hello+%3Cthere%3E+%26+welcome",
    )?;
    ensure(
        code == 303 && head.contains("\r\nlocation: /"),
        format!("posting: {code} {head}"),
    )?;
    let (code, _, _) = host.request(d, "POST", "/sign", &form, b"name=&message=")?;
    ensure(code == 400, format!("an empty form: {code}"))?;
    let entry = "<li>Ada: Hello &lt;there&gt; &amp; welcome</li>";
    let (_, _, page) = host.request(d, "GET", "/", &[], b"")?;
    ensure(
        String::from_utf8_lossy(&page).contains(entry),
        format!("not listed: {}", String::from_utf8_lossy(&page)),
    )?;
    // Stored in /data, the appspace's data directory.
    let stored: Value = serde_json::from_slice(&std::fs::read(data.join("guestbook.json"))?)?;
    ensure(
        stored == serde_json::json!([{ "name": "Ada", "message": "Hello <there> & welcome" }]),
        format!("stored: {stored}"),
    )?;
    // Kept across a stop; the next request starts it again.
    host.json(&["appspace", "stop", d])?;
    let (code, _, page) = host.request(d, "GET", "/", &[], b"")?;
    ensure(
        code == 200 && String::from_utf8_lossy(&page).contains(entry),
        format!("after a stop: {code}"),
    )?;
    host.stop()
}

/// A chat room on ws: every message is appended to /data/chat.log and
/// sent to every client; a new client first gets the history.
const CHAT: &str = r#"import http from "node:http";
import fs from "node:fs";
import { WebSocketServer } from "ws";

const log = "/data/chat.log";
const server = http.createServer((req, res) => res.end("chat: connect with a WebSocket\n"));
const wss = new WebSocketServer({ server });
wss.on("connection", (ws) => {
  const history = fs.existsSync(log) ? fs.readFileSync(log, "utf8").split("\n").filter(Boolean) : [];
  for (const line of history) ws.send("was: " + line);
  ws.send("ready");
  ws.on("message", (m) => {
    fs.appendFileSync(log, m.toString() + "\n");
    for (const c of wss.clients) c.send("said: " + m.toString());
  });
});
server.listen(Number(process.env.PORT), () => console.log("chat listening"));
"#;

/// A WebSocket client: the upgrade through the front door at `port` for
/// `host`.
struct Socket(TcpStream);

impl Socket {
    fn connect(port: u16, host: &str) -> Result<Self, Failed> {
        let mut conn = TcpStream::connect(("127.0.0.1", port))?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            conn,
            "GET /room HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )?;
        // The response head, byte by byte: the frames follow it at once.
        let mut head = Vec::new();
        let mut byte = [0u8];
        while !head.ends_with(b"\r\n\r\n") {
            conn.read_exact(&mut byte)?;
            head.push(byte[0]);
            ensure(head.len() < 8192, "an endless response head")?;
        }
        let head = String::from_utf8_lossy(&head).to_lowercase();
        ensure(
            head.starts_with("http/1.1 101")
                // RFC 6455's own example key and its answer.
                && head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            format!("no upgrade: {head}"),
        )?;
        Ok(Self(conn))
    }

    /// Sends a text frame (masked, as a client must).
    fn send(&mut self, text: &str) -> Result<(), Failed> {
        let payload = text.as_bytes();
        ensure(payload.len() < 126, "a short message")?;
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut frame = vec![0x81, 0x80 | payload.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.0.write_all(&frame)?;
        Ok(())
    }

    /// The next text frame's text.
    fn recv(&mut self) -> Result<String, Failed> {
        let mut two = [0u8; 2];
        self.0.read_exact(&mut two)?;
        ensure(
            two[0] == 0x81,
            format!("not a final text frame: {:#x}", two[0]),
        )?;
        ensure(two[1] & 0x80 == 0, "a masked frame from the server")?;
        let len = match two[1] & 0x7f {
            126 => {
                let mut n = [0u8; 2];
                self.0.read_exact(&mut n)?;
                u16::from_be_bytes(n) as usize
            }
            127 => return Err("an enormous frame".into()),
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        self.0.read_exact(&mut payload)?;
        Ok(String::from_utf8(payload)?)
    }

    /// Frames until `ready` (the history before it).
    fn history(&mut self) -> Result<Vec<String>, Failed> {
        let mut was = Vec::new();
        loop {
            match self.recv()? {
                r if r == "ready" => return Ok(was),
                line => was.push(line),
            }
        }
    }
}

pub(super) fn websockets_on_npm_ws_under_deno_broadcast_and_keep_their_history(
) -> Result<(), Failed> {
    let tp = third_party()?;
    let deno = super::common::deno()?;
    let dir = tempfile::tempdir()?;
    let pkg = deno_package(dir.path(), "chat", &tp.join("npm/ws"), CHAT)?;
    let state = dir.path().join("state");
    let host = DevHost::start_with(&state, &[], Some(&deno))?;
    let d = "chat.localhost";
    let shown = install(&host, &pkg, d)?;
    let data = PathBuf::from(shown["data_dir"].as_str().ok_or("no data_dir")?);
    // Plain HTTP still works beside the upgrades.
    let (code, _) = host.get(d, "/")?;
    ensure(code == 200, format!("GET /: {code}"))?;

    let mut ada = Socket::connect(host.port, d)?;
    ensure(
        ada.history()?.is_empty(),
        "history before anything was said",
    )?;
    let mut bob = Socket::connect(host.port, d)?;
    ensure(
        bob.history()?.is_empty(),
        "history before anything was said",
    )?;
    ada.send("hello from ada")?;
    ensure(ada.recv()? == "said: hello from ada", "ada's own echo")?;
    ensure(
        bob.recv()? == "said: hello from ada",
        "bob did not hear ada",
    )?;
    bob.send("hi ada")?;
    ensure(ada.recv()? == "said: hi ada", "ada did not hear bob")?;
    ensure(bob.recv()? == "said: hi ada", "bob's own echo")?;
    ensure(
        std::fs::read_to_string(data.join("chat.log"))? == "hello from ada\nhi ada\n",
        "chat.log in the data directory",
    )?;

    // A stop closes the connections; after it, a new client gets the
    // history from /data.
    host.json(&["appspace", "stop", d])?;
    let mut byte = [0u8];
    ensure(
        !matches!(ada.0.read(&mut byte), Ok(n) if n > 0),
        "a connection outlived its sandbox",
    )?;
    let mut carol = Socket::connect(host.port, d)?;
    ensure(
        carol.history()? == ["was: hello from ada", "was: hi ada"],
        "the history after a restart",
    )?;
    host.stop()
}
