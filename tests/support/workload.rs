//! An app package of `tests/hostile/workload.c`, compiled statically with
//! gcc to run `mode` by default. Shared by the host, dsctl and egress
//! suites and the egress benchmark through `#[path]`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds the package `name` (version 1.0.0, native) under `dir`.
pub fn package(dir: &Path, name: &str, mode: &str) -> std::io::Result<PathBuf> {
    let pkg = dir.join(name);
    std::fs::create_dir_all(&pkg)?;
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/hostile/workload.c");
    let status = Command::new("gcc")
        .args([
            "-static",
            "-O2",
            "-pthread",
            &format!("-DDEFAULT_MODE=\"{mode}\""),
            "-o",
        ])
        .arg(pkg.join("workload"))
        .arg(src)
        .status()?;
    if !status.success() {
        return Err(std::io::Error::other(format!(
            "compiling workload.c: gcc {status}"
        )));
    }
    std::fs::write(
        pkg.join("ds-app.toml"),
        format!("name = \"{name}\"\nversion = \"1.0.0\"\nruntime = \"native\"\nentrypoint = \"workload\"\n"),
    )?;
    Ok(pkg)
}
