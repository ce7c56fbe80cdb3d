//! Backups to a remote target: Debian's OpenSSH server, started by the
//! test on loopback with keys the test makes, serves the repository over
//! SFTP; ds reaches it only with the key and host keys it was given.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::Failed;

use super::{ensure, install, package, visits_in, DevHost};

/// An `sshd` on 127.0.0.1 that lets in the holder of `client_key`; killed
/// on drop.
struct Sshd {
    child: Child,
    port: u16,
    dir: PathBuf,
}

fn keygen(path: &Path) -> Result<(), Failed> {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ds-test", "-f"])
        .arg(path)
        .output()?;
    ensure(
        out.status.success(),
        format!("ssh-keygen: {}", String::from_utf8_lossy(&out.stderr)),
    )
}

impl Sshd {
    fn start(dir: &Path) -> Result<Self, Failed> {
        let sshd = Path::new("/usr/sbin/sshd");
        ensure(
            sshd.exists(),
            "/usr/sbin/sshd is missing: packaging/dev/setup.sh installs openssh-server",
        )?;
        std::fs::create_dir_all(dir)?;
        for key in ["host_key", "client_key"] {
            keygen(&dir.join(key))?;
        }
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys"))?;
        // sshd's privilege separation directory (the package's unit makes
        // it; the test runs sshd by hand).
        std::fs::create_dir_all("/run/sshd")?;
        let user = String::from_utf8(Command::new("id").arg("-un").output()?.stdout)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n\
                 AuthorizedKeysFile {d}/authorized_keys\nAllowUsers {user}\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nUsePAM no\n\
                 # the keys are in a temporary directory under /tmp\n\
                 StrictModes no\nSubsystem sftp internal-sftp\n\
                 PidFile {d}/sshd.pid\n",
                d = dir.display(),
                user = user.trim(),
            ),
        )?;
        let child = Command::new(sshd)
            .arg("-D")
            .arg("-f")
            .arg(&config)
            .arg("-E")
            .arg(dir.join("sshd.log"))
            .stdin(Stdio::null())
            .spawn()?;
        let server = Self {
            child,
            port,
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            ensure(
                Instant::now() < deadline,
                format!("sshd did not listen: {}", server.log()),
            )?;
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    fn key(&self) -> PathBuf {
        self.dir.join("client_key")
    }

    /// A known_hosts file naming this server with `host_key`'s public half.
    fn known_hosts(&self, name: &str, host_key: &Path) -> Result<PathBuf, Failed> {
        let public = std::fs::read_to_string(host_key.with_extension("pub"))?;
        let file = self.dir.join(name);
        std::fs::write(&file, format!("[127.0.0.1]:{} {public}", self.port))?;
        Ok(file)
    }

    fn url(&self, path: &Path) -> Result<String, Failed> {
        let user = String::from_utf8(Command::new("id").arg("-un").output()?.stdout)?;
        Ok(format!(
            "sftp://{}@127.0.0.1:{}{}",
            user.trim(),
            self.port,
            path.display()
        ))
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn restore_over_sftp(
    state: &Path,
    url: &str,
    ssh: (&Path, &Path),
    key: &Path,
) -> Result<std::process::Output, Failed> {
    Ok(Command::new(super::bin_dir().join("ds-host"))
        .args(["--dev", "--state-dir"])
        .arg(state)
        .args(["--restore-from", url, "--key-file"])
        .arg(key)
        .arg("--backup-ssh-key")
        .arg(ssh.0)
        .arg("--backup-known-hosts")
        .arg(ssh.1)
        .output()?)
}

pub(super) fn backups_go_to_an_sftp_server_and_a_new_machine_restores_from_them(
) -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let server = Sshd::start(&dir.path().join("sshd"))?;
    // The server's disk: a directory only the server side touches.
    let remote = dir.path().join("server-disk/ds");
    let url = server.url(&remote)?;
    let key = server.key();
    let known = server.known_hosts("known_hosts", &server.dir.join("host_key"))?;
    let (key_arg, known_arg) = (key.to_str().ok_or("path")?, known.to_str().ok_or("path")?);
    let remote_args = [
        "--backup-repository",
        &url,
        "--backup-ssh-key",
        key_arg,
        "--backup-known-hosts",
        known_arg,
    ];
    // An SFTP target without its SSH access is refused at start.
    let state = dir.path().join("state");
    let out = Command::new(super::bin_dir().join("ds-host"))
        .args(["--dev", "--port", "0", "--tls-port", "0", "--state-dir"])
        .arg(&state)
        .args(["--backup-repository", &url])
        .output()?;
    let said = String::from_utf8_lossy(&out.stderr);
    ensure(
        !out.status.success() && said.contains("needs an SSH key"),
        format!("started without ssh access: {said}"),
    )?;
    let host = DevHost::start_with(&state, &remote_args, None)?;
    install(&host, &package(dir.path(), "notes", "1.0.0")?)?;
    host.json(&[
        "appspace",
        "create",
        "--app",
        "notes",
        "--domain",
        "notes.localhost",
    ])?;
    for _ in 0..2 {
        let (code, _) = host.get("notes.localhost", "/")?;
        ensure(code == 200, format!("status {code}"))?;
    }
    let taken = host.json(&["backup", "create", "notes.localhost"])?;
    ensure(
        taken["repository"] == url.as_str(),
        format!("repository: {taken}"),
    )?;
    host.json(&["backup", "host"])?;
    let listed = host.json(&["backup", "list", "notes.localhost"])?;
    ensure(
        listed.as_array().map(Vec::len) == Some(1),
        format!("{listed}"),
    )?;
    ensure(
        host.json(&["backup", "verify"])?["backups"] == 1,
        "verify over sftp",
    )?;
    let repo_key = dir.path().join("key-on-paper");
    std::fs::write(
        &repo_key,
        host.json(&["backup", "key"])?["key"]
            .as_str()
            .unwrap_or_default(),
    )?;
    // On the server it is a plain restic repository: stock restic, run
    // there, lists the backup (nothing of ds needed to read it).
    ensure(
        remote.join("config").is_file(),
        "no repository on the server",
    )?;
    let out = Command::new("restic")
        .arg("-r")
        .arg(&remote)
        .arg("--password-file")
        .arg(&repo_key)
        .args(["--no-cache", "snapshots", "--json"])
        .output()?;
    let snaps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    ensure(
        out.status.success()
            && snaps.as_array().is_some_and(|s| {
                s.iter().any(|s| {
                    s["tags"]
                        .as_array()
                        .is_some_and(|t| t.iter().any(|t| t == "appspace=notes"))
                })
            }),
        format!(
            "stock restic on the server: {snaps} {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    )?;
    host.stop()?;
    // The machine dies. A new one, given the repository's key, the SSH key
    // and the server's host key, restores from the server. A server whose
    // host key is not the one the admin gave is refused first.
    std::fs::remove_dir_all(&state)?;
    let fresh = dir.path().join("new-machine");
    keygen(&dir.path().join("impostor"))?;
    let wrong = server.known_hosts("wrong_known_hosts", &dir.path().join("impostor"))?;
    let out = restore_over_sftp(&fresh, &url, (&key, &wrong), &repo_key)?;
    let said = String::from_utf8_lossy(&out.stderr);
    ensure(
        // ssh's own words, which restic may lose when ssh exits first:
        // the host asks ssh itself.
        !out.status.success() && said.contains("ssh: Host key verification failed"),
        format!("restore from an unverified server: {said}"),
    )?;
    ensure(
        !fresh.join("state.db").exists(),
        "a refused restore left a state.db",
    )?;
    let out = restore_over_sftp(&fresh, &url, (&key, &known), &repo_key)?;
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure(
        out.status.success() && said.contains("appspace notes: data of backup"),
        format!("restore: {said}{}", String::from_utf8_lossy(&out.stderr)),
    )?;
    let host = DevHost::start_with(&fresh, &remote_args, None)?;
    let (code, _) = host.get("notes.localhost", "/")?;
    let data = fresh.join("appspaces/notes/data");
    ensure(
        code == 200 && visits_in(&data) == Some(3),
        format!("restored visits: {code}, {:?}", visits_in(&data)),
    )?;
    host.json(&["backup", "create", "notes.localhost"])?;
    ensure(
        host.json(&["backup", "list", "notes.localhost"])?
            .as_array()
            .map(Vec::len)
            == Some(2),
        "the new machine's backup is not beside the old one",
    )?;
    // The server goes away: listing says so, and is not an empty list.
    drop(server);
    let err = host.fails(&["backup", "list", "notes.localhost"], "restic")?;
    ensure(
        err.contains("Connection refused") || err.contains("connect"),
        format!("listing with the server down: {err}"),
    )?;
    host.stop()
}
