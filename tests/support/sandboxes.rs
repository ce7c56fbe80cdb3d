//! Finds running sandboxes by what they mount, not by command line (a
//! launcher started ahead of need keeps the command line it was started
//! with): the sandboxes using `dir` are the mount namespaces in which
//! something under `dir` is mounted (an appspace's data at `/data`).
//! Shared by the host suite and the host benchmark through `#[path]`.

use std::collections::BTreeSet;
use std::path::Path;

/// How many sandboxes have something under `dir` mounted.
pub fn using(dir: &Path) -> usize {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    let dir = dir.to_string_lossy().into_owned();
    let ours = std::fs::read_link("/proc/self/ns/mnt").ok();
    let mut namespaces = BTreeSet::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for entry in procs.flatten() {
        let path = entry.path();
        let Some(ns) = std::fs::read_link(path.join("ns/mnt")).ok() else {
            continue;
        };
        if Some(&ns) == ours.as_ref() || namespaces.contains(&ns) {
            continue;
        }
        let Ok(info) = std::fs::read_to_string(path.join("mountinfo")) else {
            continue;
        };
        // Field 4 is the mount's root within its filesystem: for a bind
        // mount of a host directory, that directory's path (on the root
        // filesystem; the test's state lives there).
        let mounts_it = info.lines().any(|l| {
            l.split_whitespace()
                .nth(3)
                .is_some_and(|root| root == dir || root.starts_with(&format!("{dir}/")))
        });
        if mounts_it {
            namespaces.insert(ns);
        }
    }
    namespaces.len()
}
