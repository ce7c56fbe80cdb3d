//! `dsctl app install PATH`: the package is read here, with the caller's
//! own permissions, and uploaded as `.tar.gz` bytes; the host never opens
//! a path an admin names (which would let a member of the admin group
//! install files only root may read).
//!
//! `dsctl app check DIR` and `app pack DIR` run the host's own validation
//! (`ds_package`, the code `app install` runs) without a host: the
//! package is unpacked into a temporary store and checked there.

use std::path::{Path, PathBuf};

use ds_package::{AppStore, Manifest, PackageLimits, Staged};

use crate::client::ClientError;

fn local(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ClientError {
    let path = path.to_owned();
    move |source| ClientError::Local { what, path, source }
}

/// The package at `path` as `.tar.gz` bytes: a `.tar.gz`/`.tgz` file as it
/// is, a directory packed (links are packed as links, for the host to
/// judge).
pub fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    let meta = std::fs::symlink_metadata(path).map_err(local("reading", path))?;
    if meta.is_dir() {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        builder.follow_symlinks(false);
        builder
            .append_dir_all(".", path)
            .map_err(local("packing", path))?;
        let gz = builder.into_inner().map_err(local("packing", path))?;
        return gz.finish().map_err(local("packing", path));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if meta.is_file() && (name.ends_with(".tar.gz") || name.ends_with(".tgz")) {
        return std::fs::read(path).map_err(local("reading", path));
    }
    Err(ClientError::Local {
        what: "installing",
        path: path.to_owned(),
        source: std::io::Error::other("a package is a directory or a .tar.gz file"),
    })
}

/// The package at `path` (a directory or `.tar.gz`) checked exactly as
/// `app install` checks it, staged under `scratch`.
pub fn check(path: &Path, scratch: &Path) -> Result<Staged, ClientError> {
    let refused = |source| ClientError::Package {
        path: path.to_owned(),
        source,
    };
    let store = AppStore::open(scratch).map_err(refused)?;
    store
        .stage(path, &PackageLimits::default())
        .map_err(refused)
}

/// A scratch directory for [`check`], removed when dropped.
pub fn scratch() -> Result<tempfile::TempDir, ClientError> {
    tempfile::tempdir().map_err(local(
        "making a temporary directory in",
        &std::env::temp_dir(),
    ))
}

/// `app pack`: checks `dir`, then writes what it validated (regular
/// files, directories and links, in name order, with their modes; owners
/// and times left out, so the same tree packs to the same bytes) as a
/// `.tar.gz` at `output` (default
/// `NAME-VERSION.tar.gz` here), never over an existing file, and checks
/// the written archive again. Returns the file and the manifest.
pub fn pack(dir: &Path, output: Option<PathBuf>) -> Result<(PathBuf, Manifest), ClientError> {
    let work = scratch()?;
    let staged = check(dir, &work.path().join("store"))?;
    let m = staged.manifest().clone();
    // Beside the package folder by default (`app pack .` from inside it
    // included): a package file inside the folder would be packed into
    // the next version.
    let real = std::fs::canonicalize(dir).map_err(local("reading", dir))?;
    let output = output.unwrap_or_else(|| {
        real.parent()
            .unwrap_or(&real)
            .join(format!("{}-{}.tar.gz", m.name, m.version))
    });
    let beside = std::path::absolute(&output).map_err(local("writing", &output))?;
    let parent_real = beside
        .parent()
        .and_then(|p| std::fs::canonicalize(p).ok())
        .unwrap_or_else(|| beside.clone());
    if beside.starts_with(&real) || parent_real.starts_with(&real) {
        return Err(ClientError::Local {
            what: "writing",
            path: output,
            source: std::io::Error::other(format!(
                "it would be inside the package {}: write it beside the folder (the default) or elsewhere",
                dir.display()
            )),
        });
    }
    let partial = work.path().join("package.tar.gz");
    let file = std::fs::File::create(&partial).map_err(local("writing", &partial))?;
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        file,
        flate2::Compression::best(),
    ));
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Deterministic);
    append_sorted(&mut builder, staged.files(), Path::new("")).map_err(local("packing", dir))?;
    builder
        .into_inner()
        .and_then(|gz| gz.finish())
        .and_then(|f| f.sync_all())
        .map_err(local("writing", &partial))?;
    drop(staged);
    // What was written is what install will read: checked once more.
    check(&partial, &work.path().join("again"))?;
    // Into place without replacing anything: a hard link fails on an
    // existing name (and the temporary file may be on another file
    // system, so copy to a sibling first).
    let sibling = output.with_file_name(format!(
        ".{}.partial-{}",
        output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    std::fs::copy(&partial, &sibling).map_err(local("writing", &sibling))?;
    let linked = std::fs::hard_link(&sibling, &output);
    let _ = std::fs::remove_file(&sibling);
    linked.map_err(local("writing (never over an existing file)", &output))?;
    Ok((output, m))
}

fn append_sorted<W: std::io::Write>(
    builder: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(root.join(rel))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = rel.join(e.file_name());
        let path = root.join(&name);
        let kind = e.file_type()?;
        if kind.is_dir() {
            builder.append_dir(&name, &path)?;
            append_sorted(builder, root, &name)?;
        } else {
            builder.append_path_with_name(&path, &name)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_packed_and_archives_passed_through() {
        let dir = tempfile::tempdir().unwrap();
        let pkg = dir.path().join("pkg");
        std::fs::create_dir(&pkg).unwrap();
        std::fs::write(pkg.join("ds-app.toml"), "name = \"x\"\n").unwrap();
        let gz = read(&pkg).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert!(
            names.iter().any(|n| n.ends_with("ds-app.toml")),
            "{names:?}"
        );
        let file = dir.path().join("p.tar.gz");
        std::fs::write(&file, &gz).unwrap();
        assert_eq!(read(&file).unwrap(), gz);
        std::fs::write(dir.path().join("p.zip"), b"x").unwrap();
        assert!(read(&dir.path().join("p.zip")).is_err());
        assert!(read(&dir.path().join("absent")).is_err());
    }

    fn app(dir: &Path, manifest: &str) -> PathBuf {
        let pkg = dir.join("app");
        std::fs::create_dir_all(pkg.join("bin")).unwrap();
        std::fs::write(pkg.join("ds-app.toml"), manifest).unwrap();
        std::fs::write(
            pkg.join("main.ts"),
            "Deno.serve(() => new Response('hi'));\n",
        )
        .unwrap();
        std::os::unix::fs::symlink("../main.ts", pkg.join("bin/link.ts")).unwrap();
        pkg
    }

    #[test]
    fn pack_writes_what_install_accepts_and_check_refuses_what_it_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let pkg = app(
            dir.path(),
            "name = \"hi\"\nversion = \"1.0.0\"\nruntime = \"deno\"\ncommand = [\"main.ts\", \"--port\", \"${PORT}\"]\n",
        );
        let scratch = scratch().unwrap();
        assert_eq!(check(&pkg, scratch.path()).unwrap().manifest().name, "hi");
        let out = dir.path().join("hi.tar.gz");
        let (written, m) = pack(&pkg, Some(out.clone())).unwrap();
        assert_eq!((written, m.args.len()), (out.clone(), 2));
        // The archive is one install accepts, links kept as links.
        let again = check(&out, &scratch.path().join("2")).unwrap();
        let link = again.files().join("bin/link.ts");
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        // Packing twice gives the same bytes; an existing file is kept.
        let second = dir.path().join("again.tar.gz");
        pack(&pkg, Some(second.clone())).unwrap();
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(&second).unwrap()
        );
        let before = std::fs::read(&out).unwrap();
        assert!(pack(&pkg, Some(out.clone())).is_err());
        assert_eq!(std::fs::read(&out).unwrap(), before);
        // By default beside the folder; never inside it.
        let (beside, _) = pack(&pkg, None).unwrap();
        assert_eq!(
            beside,
            dir.path().canonicalize().unwrap().join("hi-1.0.0.tar.gz")
        );
        let inside = pkg.join("hi.tar.gz");
        let err = pack(&pkg, Some(inside.clone())).unwrap_err().to_string();
        assert!(err.contains("inside the package"), "{err}");
        assert!(!inside.exists());
        // What install refuses, check and pack refuse, writing nothing.
        std::fs::write(
            pkg.join("ds-app.toml"),
            "name = \"hi\"\nversion = \"1.0.0\"\nruntime = \"deno\"\nentrypoint = \"missing.ts\"\n",
        )
        .unwrap();
        let err = check(&pkg, &scratch.path().join("3"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.ts"), "{err}");
        let bad = dir.path().join("bad.tar.gz");
        assert!(pack(&pkg, Some(bad.clone())).is_err());
        assert!(!bad.exists());
        std::os::unix::fs::symlink("/etc/passwd", pkg.join("escape")).unwrap();
        std::fs::write(
            pkg.join("ds-app.toml"),
            "name = \"hi\"\nversion = \"1.0.0\"\nruntime = \"deno\"\nentrypoint = \"main.ts\"\n",
        )
        .unwrap();
        let err = check(&pkg, &scratch.path().join("4"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("escape"), "{err}");
    }
}
