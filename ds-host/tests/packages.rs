//! Installing packages: good ones land read-only and complete; bad ones
//! are refused with a clear error and leave nothing behind.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ds_host::package::{AppStore, InstallError, PackageLimits};

const MANIFEST: &str =
    "name = \"notes\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"bin/notes\"\n";

fn store(tmp: &Path) -> AppStore {
    AppStore::open(tmp.join("apps")).unwrap()
}

/// The store holds nothing but what `expected` lists (no staging left).
fn store_contents(tmp: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in walk(&tmp.join("apps")) {
        out.push(
            e.strip_prefix(tmp.join("apps"))
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        );
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            out.push(e.path());
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&e.path()));
            }
        }
    }
    out
}

fn good_dir(tmp: &Path) -> PathBuf {
    let dir = tmp.join("src");
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::write(dir.join("ds-app.toml"), MANIFEST).unwrap();
    fs::write(dir.join("bin/notes"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(dir.join("bin/notes"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(dir.join("index.html"), "<h1>notes</h1>").unwrap();
    std::os::unix::fs::symlink("index.html", dir.join("home.html")).unwrap();
    dir
}

/// A raw tar entry, written byte by byte so that hostile names survive
/// (the tar crate's builder refuses them, rightly).
fn raw_entry(out: &mut Vec<u8>, name: &str, kind: u8, body: &[u8], link: &str, mode: u32) {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
        let s = format!("{:0width$o}\0", v, width = len - 1);
        h[at..at + len].copy_from_slice(s.as_bytes());
    };
    octal(&mut h, 100, 8, u64::from(mode));
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    octal(&mut h, 124, 12, body.len() as u64);
    octal(&mut h, 136, 12, 0);
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    octal(&mut h, 148, 7, u64::from(sum));
    h[155] = b' ';
    out.extend_from_slice(&h);
    out.extend_from_slice(body);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// One raw tar entry: name, type flag, body, link target, mode.
type RawEntry<'a> = (&'a str, u8, &'a [u8], &'a str, u32);

fn tar_gz(tmp: &Path, name: &str, entries: &[RawEntry]) -> PathBuf {
    let mut tar = Vec::new();
    raw_entry(
        &mut tar,
        "ds-app.toml",
        b'0',
        MANIFEST.as_bytes(),
        "",
        0o644,
    );
    raw_entry(&mut tar, "bin/notes", b'0', b"#!/bin/sh\n", "", 0o755);
    for &(n, kind, body, link, mode) in entries {
        raw_entry(&mut tar, n, kind, body, link, mode);
    }
    tar.extend_from_slice(&[0u8; 1024]);
    let path = tmp.join(name);
    let mut gz = flate2::write::GzEncoder::new(
        fs::File::create(&path).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap();
    path
}

#[test]
fn directory_package_installs_read_only() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store(tmp.path());
    let v = store
        .install(&good_dir(tmp.path()), &PackageLimits::default())
        .unwrap();
    assert_eq!(v.manifest.name, "notes");
    assert_eq!(v.dir, tmp.path().join("apps/notes/1.0.0"));
    assert_eq!(
        fs::read_to_string(v.dir.join("home.html")).unwrap(),
        "<h1>notes</h1>"
    );
    let mode = fs::metadata(v.dir.join("index.html"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o222, 0, "installed files must be read-only");
    assert_eq!(
        fs::metadata(&v.dir).unwrap().permissions().mode() & 0o222,
        0
    );
    // Removal works despite the read-only bits.
    store.remove("notes", &v.manifest.version).unwrap();
    assert!(store_contents(tmp.path()).is_empty());
}

/// The host runs with UMask=0077 under systemd: an installed version must
/// still be readable (and its directories searchable) by every appspace
/// uid, or its sandbox cannot exec the app.
#[test]
fn installed_versions_are_world_readable_whatever_the_umask() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store(tmp.path());
    let pkg = tar_gz(
        tmp.path(),
        "deep.tar.gz",
        &[
            ("lib", b'5', b"", "", 0o700),
            ("lib/deep", b'5', b"", "", 0o700),
            ("lib/deep/data.txt", b'0', b"x", "", 0o600),
            ("lib/deep/tool", b'0', b"#!/bin/sh\n", "", 0o700),
        ],
    );
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let installed = store.install(&pkg, &PackageLimits::default());
    rustix::process::umask(old);
    let v = installed.unwrap();
    for path in walk(&v.dir) {
        let meta = fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        let want = if meta.is_dir() || mode & 0o100 != 0 {
            0o555
        } else {
            0o444
        };
        assert_eq!(mode, want, "{}", path.display());
    }
    assert_eq!(
        fs::metadata(&v.dir).unwrap().permissions().mode() & 0o777,
        0o555
    );
}

#[test]
fn tar_gz_package_installs() {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tar_gz(
        tmp.path(),
        "notes.tar.gz",
        &[
            ("static/app.js", b'0', b"console.log(1)", "", 0o644),
            ("docs", b'5', b"", "", 0o755),
        ],
    );
    let v = store(tmp.path())
        .install(&pkg, &PackageLimits::default())
        .unwrap();
    assert_eq!(
        fs::read_to_string(v.dir.join("static/app.js")).unwrap(),
        "console.log(1)"
    );
    assert!(v.dir.join("docs").is_dir());
}

/// Installs `pkg` expecting refusal; the store must stay empty.
fn refused(tmp: &Path, pkg: &Path, limits: &PackageLimits) -> InstallError {
    let err = store(tmp).install(pkg, limits).unwrap_err();
    assert!(
        store_contents(tmp).is_empty(),
        "partial state left behind: {:?}",
        store_contents(tmp)
    );
    err
}

#[test]
fn hostile_archives_are_refused() {
    let cases: Vec<(&str, RawEntry, &str)> = vec![
        (
            "traversal",
            ("../../evil", b'0', b"x", "", 0o644),
            "escapes the package",
        ),
        (
            "nested-traversal",
            ("static/../../evil", b'0', b"x", "", 0o644),
            "escapes the package",
        ),
        (
            "absolute",
            ("/etc/evil", b'0', b"x", "", 0o644),
            "escapes the package",
        ),
        (
            "absolute-link",
            ("link", b'2', b"", "/etc/shadow", 0o777),
            "leads outside",
        ),
        (
            "climbing-link",
            ("static/link", b'2', b"", "../../etc/shadow", 0o777),
            "leads outside",
        ),
        (
            "hard-link",
            ("hard", b'1', b"", "/etc/shadow", 0o644),
            "hard links",
        ),
        ("char-device", ("dev", b'3', b"", "", 0o666), "device files"),
        (
            "block-device",
            ("disk", b'4', b"", "", 0o666),
            "device files",
        ),
        ("fifo", ("pipe", b'6', b"", "", 0o666), "FIFOs"),
    ];
    for (name, entry, needle) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let pkg = tar_gz(tmp.path(), &format!("{name}.tar.gz"), &[entry]);
        let err = refused(tmp.path(), &pkg, &PackageLimits::default()).to_string();
        assert!(err.contains(needle), "{name}: {err}");
    }
}

#[test]
fn links_are_judged_as_the_kernel_resolves_them() {
    // Each link is harmless on its own reading (`.`, and `s/s/../..` looks
    // like it ends at the package root); together `t` resolves to the
    // version directory's parent on the host.
    let tmp = tempfile::tempdir().unwrap();
    let pkg = good_dir(tmp.path());
    std::os::unix::fs::symlink(".", pkg.join("s")).unwrap();
    std::os::unix::fs::symlink("s/s/../..", pkg.join("t")).unwrap();
    let err = refused(tmp.path(), &pkg, &PackageLimits::default());
    assert!(
        matches!(&err, InstallError::LinkUnresolvable { path, .. } if path == "t"),
        "{err}"
    );
    // A loop is refused too; a link inside the package still installs.
    let tmp = tempfile::tempdir().unwrap();
    let pkg = good_dir(tmp.path());
    std::os::unix::fs::symlink("b", pkg.join("a")).unwrap();
    std::os::unix::fs::symlink("a", pkg.join("b")).unwrap();
    let err = refused(tmp.path(), &pkg, &PackageLimits::default());
    assert!(err.to_string().contains("loops"), "{err}");
    let tmp = tempfile::tempdir().unwrap();
    let pkg = good_dir(tmp.path());
    std::os::unix::fs::symlink(".", pkg.join("s")).unwrap();
    std::os::unix::fs::symlink("s/s/index.html", pkg.join("deep")).unwrap();
    store(tmp.path())
        .install(&pkg, &PackageLimits::default())
        .unwrap();
}

#[test]
fn entries_below_a_symlink_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tar_gz(
        tmp.path(),
        "below-link.tar.gz",
        &[
            ("up", b'2', b"", ".", 0o777),
            ("up/x", b'0', b"x", "", 0o644),
        ],
    );
    let err = refused(tmp.path(), &pkg, &PackageLimits::default());
    assert!(matches!(err, InstallError::UnsafePath(_)), "{err}");
}

#[test]
fn manifest_problems_are_refused() {
    for (manifest, needle) in [
        (None, "has no ds-app.toml"),
        (Some("name = \"notes\"\n"), "missing field"),
        (Some("name = \"notes\"\nversion = \"one\"\nruntime = \"native\"\nentrypoint = \"bin/notes\"\n"), "version"),
        (Some("name = \"notes\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"bin/missing\"\n"), "does not exist"),
        (Some("name = \"notes\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"index.html\"\n"), "not executable"),
        (Some("name = \"notes\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"bin\"\n"), "not a regular file"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = good_dir(tmp.path());
        match manifest {
            Some(m) => fs::write(dir.join("ds-app.toml"), m).unwrap(),
            None => fs::remove_file(dir.join("ds-app.toml")).unwrap(),
        }
        let err = refused(tmp.path(), &dir, &PackageLimits::default()).to_string();
        assert!(err.contains(needle), "{manifest:?}: {err}");
    }
}

#[test]
fn duplicate_version_is_refused_and_the_first_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store(tmp.path());
    let dir = good_dir(tmp.path());
    store.install(&dir, &PackageLimits::default()).unwrap();
    let before = store_contents(tmp.path());
    let err = store.install(&dir, &PackageLimits::default()).unwrap_err();
    assert!(
        matches!(err, InstallError::DuplicateVersion { .. }),
        "{err}"
    );
    assert_eq!(err.to_string(), "notes 1.0.0 is already installed");
    assert_eq!(store_contents(tmp.path()), before);
}

#[test]
fn size_caps_hold_even_against_a_compression_bomb() {
    let tmp = tempfile::tempdir().unwrap();
    let zeros = vec![0u8; 4 << 20]; // compresses to almost nothing
    let pkg = tar_gz(
        tmp.path(),
        "bomb.tar.gz",
        &[("zeros", b'0', &zeros, "", 0o644)],
    );
    let limits = PackageLimits {
        max_total_bytes: 1 << 20,
        ..PackageLimits::default()
    };
    let err = refused(tmp.path(), &pkg, &limits);
    assert!(matches!(err, InstallError::TooLarge { .. }), "{err}");
    let limits = PackageLimits {
        max_entries: 2,
        ..PackageLimits::default()
    };
    let err = refused(tmp.path(), &good_dir(tmp.path()), &limits);
    assert!(matches!(err, InstallError::TooLarge { .. }), "{err}");
}

#[test]
fn corrupt_and_unknown_sources_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let garbage = tmp.path().join("broken.tar.gz");
    fs::write(&garbage, b"\x1f\x8b\x08\x00not really gzip").unwrap();
    let err = refused(tmp.path(), &garbage, &PackageLimits::default());
    assert!(matches!(err, InstallError::Io { .. }), "{err}");
    let zip = tmp.path().join("app.zip");
    fs::write(&zip, b"PK").unwrap();
    let err = refused(tmp.path(), &zip, &PackageLimits::default());
    assert!(matches!(err, InstallError::UnknownSource(_)), "{err}");
    let missing = refused(
        tmp.path(),
        &tmp.path().join("nope"),
        &PackageLimits::default(),
    );
    assert!(missing.to_string().contains("nope"), "{missing}");
}

#[test]
fn special_files_in_a_directory_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = good_dir(tmp.path());
    let status = std::process::Command::new("mkfifo")
        .arg(dir.join("pipe"))
        .status()
        .unwrap();
    assert!(status.success());
    let err = refused(tmp.path(), &dir, &PackageLimits::default()).to_string();
    assert!(err.contains("FIFOs"), "{err}");
}

#[test]
fn crashed_installs_are_cleaned_up_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("apps/.staging-1-0/half")).unwrap();
    let _ = store(tmp.path());
    assert!(store_contents(tmp.path()).is_empty());
}
