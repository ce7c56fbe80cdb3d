//! `dsctl app install PATH`: the package is read here, with the caller's
//! own permissions, and uploaded as `.tar.gz` bytes; the host never opens
//! a path an admin names (which would let a member of the admin group
//! install files only root may read).

use std::path::Path;

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
}
