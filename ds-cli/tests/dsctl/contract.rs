//! The app-author contract through dsctl: the manifest's `command` and
//! `[env]` reach the app as written (placeholders filled in by the host,
//! nothing else), egress it asks for is shown and granted only when the
//! admin says so, and `app check` / `app pack` refuse exactly what install
//! refuses.

use std::path::{Path, PathBuf};

use libtest_mimic::Failed;

use super::{bin_dir, ensure, DevHost};

/// hello-native packaged as `notes` `version` with `manifest_tail` after
/// its name, version and runtime lines.
fn notes(dir: &Path, version: &str, manifest_tail: &str) -> Result<PathBuf, Failed> {
    let pkg = dir.join(format!("notes-{version}"));
    std::fs::create_dir_all(pkg.join("bin"))?;
    std::fs::copy(bin_dir().join("hello-native"), pkg.join("bin/notes"))?;
    std::fs::write(
        pkg.join("ds-app.toml"),
        format!("name = \"notes\"\nversion = \"{version}\"\nruntime = \"native\"\n{manifest_tail}"),
    )?;
    Ok(pkg)
}

const V1: &str = r#"command = ["bin/notes", "serve", "--port=${PORT}", "${DATA}/files", "${APP}", "cost: $5", "$${PORT}", "two words"]
[env]
GREETING = "hello there"
NOTES_MODE = "strict"
[requests]
egress = [{ host = "api.example.com", reason = "checks for new versions" }, "*.cdn.example.org:443"]
memory = "96M"
disk = "64M"
"#;

fn lines(body: &str) -> Vec<&str> {
    body.lines().collect()
}

pub(super) fn the_manifest_command_env_and_egress_requests_reach_the_app_as_the_admin_decides(
) -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let host = DevHost::start(&dir.path().join("state"))?;
    let v1 = notes(dir.path(), "1.0.0", V1)?;
    let v1_arg = v1.to_str().ok_or("path")?;
    // check says what the package asks for and changes nothing.
    let checked = host.dsctl(&["app", "check", v1_arg])?;
    let said = String::from_utf8_lossy(&checked.stdout).into_owned();
    ensure(
        checked.status.success()
            && said.contains("notes 1.0.0 (native) is a valid package")
            && said.contains("asks for egress to api.example.com (checks for new versions)")
            && said.contains("asks for egress to *.cdn.example.org:443"),
        format!("check: {said}{}", String::from_utf8_lossy(&checked.stderr)),
    )?;
    let apps = host.json(&["app", "list"])?;
    ensure(
        !apps.to_string().contains("notes"),
        format!("check installed something: {apps}"),
    )?;
    // pack writes a file install takes; installing it shows the requests.
    let packed = dir.path().join("notes-1.0.0.tar.gz");
    let out = host.json(&["app", "pack", v1_arg, "-o", packed.to_str().ok_or("path")?])?;
    ensure(
        out["command"][2] == "--port=${PORT}" && out["env"]["GREETING"] == "hello there",
        format!("pack: {out}"),
    )?;
    let installed = host.dsctl(&["app", "install", packed.to_str().ok_or("path")?])?;
    let said = String::from_utf8_lossy(&installed.stdout).into_owned();
    ensure(
        installed.status.success()
            && said.contains("asks for egress to api.example.com (checks for new versions)")
            && said.contains("egress is not granted")
            && said.contains("asks for 96 MiB of memory")
            && said.contains("asks for 64 MiB of disk"),
        format!(
            "install: {said}{}",
            String::from_utf8_lossy(&installed.stderr)
        ),
    )?;
    // Created without --grant-egress: nothing granted, both shown as asked.
    let plain = host.json(&[
        "appspace",
        "create",
        "--app",
        "notes",
        "--domain",
        "plain.localhost",
    ])?;
    ensure(
        plain["egress_not_granted"].as_array().map(Vec::len) == Some(2)
            && plain["egress_not_granted"][0]["reason"] == "checks for new versions"
            && plain["limits"]["memory_bytes"] == 96u64 << 20,
        format!("created: {plain}"),
    )?;
    let egress = host.json(&["appspace", "egress", "list", "plain.localhost"])?;
    ensure(
        egress["allow"].as_array().is_some_and(Vec::is_empty),
        format!("egress granted without being asked: {egress}"),
    )?;
    let shown = host.dsctl(&["appspace", "show", "plain.localhost"])?;
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    ensure(
        shown.contains("egress not granted")
            && shown.contains("dsctl appspace egress allow plain.localhost api.example.com"),
        format!("show: {shown}"),
    )?;
    // The app gets exactly its command, the host's values filled in.
    let (code, argv) = host.get("plain.localhost", "/argv")?;
    ensure(
        code == 200
            && lines(&argv)
                == [
                    "serve",
                    "--port=8000",
                    "/data/files",
                    "/app",
                    "cost: $5",
                    "${PORT}",
                    "two words",
                ],
        format!("argv: {code} {argv:?}"),
    )?;
    let (_, env) = host.get("plain.localhost", "/env")?;
    for want in [
        "GREETING=hello there",
        "NOTES_MODE=strict",
        "PORT=8000",
        "HOME=/data",
    ] {
        ensure(
            lines(&env).contains(&want),
            format!("{want} not in {env:?}"),
        )?;
    }
    // Only the host's variables and the manifest's: nothing of ds-host's.
    let names: Vec<&str> = lines(&env)
        .iter()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    let known = [
        "PATH",
        "HOME",
        "TMPDIR",
        "LANG",
        "USER",
        "PORT",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "GREETING",
        "NOTES_MODE",
    ];
    ensure(
        names.iter().all(|n| known.contains(n)),
        format!("unexpected variables: {names:?}"),
    )?;
    // With --grant-egress the requests become its allowlist.
    let granted = host.json(&[
        "appspace",
        "create",
        "--app",
        "notes",
        "--domain",
        "granted.localhost",
        "--grant-egress",
    ])?;
    ensure(
        granted["egress_not_granted"]
            .as_array()
            .is_some_and(Vec::is_empty),
        format!("{granted}"),
    )?;
    let egress = host.json(&["appspace", "egress", "list", "granted.localhost"])?;
    ensure(
        egress["allow"].as_array().map(Vec::len) == Some(2),
        format!("granted: {egress}"),
    )?;
    // An upgrade to a version that asks for more grants none of it.
    let v2 = notes(
        dir.path(),
        "2.0.0",
        &V1.replace(
            "egress = [",
            "egress = [{ host = \"telemetry.example.net\", reason = \"usage statistics\" }, ",
        ),
    )?;
    host.json(&["app", "install", v2.to_str().ok_or("path")?])?;
    host.json(&[
        "appspace",
        "upgrade",
        "granted.localhost",
        "--version",
        "2.0.0",
    ])?;
    let after = host.json(&["appspace", "show", "granted.localhost"])?;
    ensure(
        after["version"] == "2.0.0"
            && after["egress_not_granted"].as_array().map(Vec::len) == Some(1)
            && after["egress_not_granted"][0]["host"] == "telemetry.example.net",
        format!("after the upgrade: {after}"),
    )?;
    let egress = host.json(&["appspace", "egress", "list", "granted.localhost"])?;
    ensure(
        egress["allow"].as_array().map(Vec::len) == Some(2)
            && !egress["allow"].to_string().contains("telemetry"),
        format!("an upgrade granted egress: {egress}"),
    )?;
    // What would switch a layer off is refused by check, pack and install
    // alike, with the reason, and nothing is installed or written.
    for (version, tail, needle) in [
        (
            "3.0.0",
            "entrypoint = \"bin/notes\"\n[env]\nLD_PRELOAD = \"/data/evil.so\"\n",
            "LD_PRELOAD: refused",
        ),
        (
            "3.0.1",
            "entrypoint = \"bin/notes\"\n[env]\nPORT = \"9\"\n",
            "PORT: set by the host",
        ),
        (
            "3.0.2",
            "command = [\"bin/notes\", \"${SECRET}\"]\n",
            "unknown ${SECRET}",
        ),
        (
            "3.0.3",
            "command = [\"/bin/sh\", \"-c\", \"id\"]\n",
            "relative path inside the package",
        ),
    ] {
        let bad = notes(dir.path(), version, tail)?;
        let bad_arg = bad.to_str().ok_or("path")?;
        for cmd in [
            vec!["app", "check", bad_arg],
            vec!["app", "install", bad_arg],
        ] {
            let err = host.fails(&cmd, needle)?;
            ensure(
                err.lines().count() == 1,
                format!("{cmd:?}: not one line: {err}"),
            )?;
        }
        let out = dir.path().join(format!("bad-{version}.tar.gz"));
        host.fails(
            &["app", "pack", bad_arg, "-o", out.to_str().ok_or("path")?],
            needle,
        )?;
        ensure(!out.exists(), format!("pack wrote {}", out.display()))?;
    }
    let apps = host.json(&["app", "show", "notes"])?;
    ensure(
        apps["versions"].as_array().map(Vec::len) == Some(2),
        format!("a refused package was installed: {apps}"),
    )?;
    host.stop()
}

/// Polls `what` every 100 ms for up to `secs` seconds until it is true.
fn eventually(secs: u64, mut what: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if what() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}

pub(super) fn dev_watch_reinstalls_a_changed_package_and_keeps_serving_a_broken_one(
) -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let pkg = notes(
        dir.path(),
        "0.1.0",
        "command = [\"bin/notes\", \"first\"]\n[requests]\negress = [\"api.example.com\"]\n",
    )?;
    // Run from inside the package, the default state (./.ds-dev) would be
    // in it: refused before anything is written.
    let out = std::process::Command::new(bin_dir().join("ds-host"))
        .args([
            "--dev",
            "--port",
            "0",
            "--tls-port",
            "0",
            "--app",
            ".",
            "--watch",
        ])
        .current_dir(&pkg)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure(
        !out.status.success() && err.contains("is inside the package"),
        format!("state inside the package: {}: {err}", out.status),
    )?;
    ensure(
        !pkg.join(".ds-dev").exists(),
        "a state directory was made in the package",
    )?;
    let host = DevHost::start_with(
        &dir.path().join("state"),
        &["--app", pkg.to_str().ok_or("path")?, "--watch"],
        None,
    )?;
    let argv = |host: &DevHost| host.get("notes.localhost", "/argv").map(|(_, b)| b);
    ensure(argv(&host)? == "first\n", "the first command")?;
    // Dev mode's --app grants no egress the manifest asks for.
    let egress = host.json(&["appspace", "egress", "list", "notes.localhost"])?;
    ensure(
        egress["allow"].as_array().is_some_and(Vec::is_empty),
        format!("--app granted egress: {egress}"),
    )?;
    let shown = host.json(&["appspace", "show", "notes.localhost"])?;
    ensure(
        shown["egress_not_granted"][0]["host"] == "api.example.com",
        format!("the request not shown: {shown}"),
    )?;
    let (code, _) = host.get("notes.localhost", "/")?;
    ensure(code == 200, format!("visit: {code}"))?;
    // The app's output reaches the terminal.
    ensure(
        eventually(10, || {
            host.output()
                .iter()
                .any(|l| l.starts_with("[notes] ") && l.contains("hello-native listening"))
        }),
        format!("no app output on the terminal: {:?}", host.output()),
    )?;
    // A changed manifest: reinstalled over 0.1.0 and restarted.
    let manifest = pkg.join("ds-app.toml");
    let text = std::fs::read_to_string(&manifest)?;
    std::fs::write(&manifest, text.replace("\"first\"", "\"second\""))?;
    ensure(
        eventually(20, || argv(&host).is_ok_and(|b| b == "second\n")),
        format!("not reinstalled: {:?}", host.output()),
    )?;
    let shown = host.json(&["appspace", "show", "notes.localhost"])?;
    ensure(shown["version"] == "0.1.0", format!("{shown}"))?;
    // Its data stayed: the count goes on.
    let (_, page) = host.get("notes.localhost", "/")?;
    ensure(
        page.contains("visits (kept in /data)</th><td>2<"),
        format!("visits: {page}"),
    )?;
    // A broken package is reported and the previous files keep serving.
    std::fs::write(&manifest, text.replace("\"first\"", "\"${NOPE}\""))?;
    ensure(
        eventually(20, || {
            host.output()
                .iter()
                .any(|l| l.contains("not reinstalled") && l.contains("unknown ${NOPE}"))
        }),
        format!("a broken package not reported: {:?}", host.output()),
    )?;
    ensure(
        argv(&host)? == "second\n",
        "the previous files stopped serving",
    )?;
    // Fixed again: served again.
    std::fs::write(&manifest, text.replace("\"first\"", "\"third\""))?;
    ensure(
        eventually(20, || argv(&host).is_ok_and(|b| b == "third\n")),
        format!("not reinstalled after the fix: {:?}", host.output()),
    )?;
    // A new version is installed beside, not run: an upgrade moves to it.
    std::fs::write(
        &manifest,
        text.replace("\"first\"", "\"fourth\"")
            .replace("version = \"0.1.0\"", "version = \"0.2.0\""),
    )?;
    ensure(
        eventually(20, || {
            host.output()
                .iter()
                .any(|l| l.contains("installed notes 0.2.0 beside 0.1.0"))
        }),
        format!("a new version not reported: {:?}", host.output()),
    )?;
    ensure(
        argv(&host)? == "third\n",
        "a new version was run without an upgrade",
    )?;
    host.json(&[
        "appspace",
        "upgrade",
        "notes.localhost",
        "--version",
        "0.2.0",
    ])?;
    ensure(argv(&host)? == "fourth\n", "the upgrade to the new version")?;
    host.stop()
}
