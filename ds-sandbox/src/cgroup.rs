//! One cgroup per sandbox: memory (swap off), pids and cpu limits, usage
//! accounting, and killing everything on stop. cgroup v2 is preferred
//! (Debian's default); v1 controllers are used where that is what the
//! machine has.
//!
//! Where the cgroups go ([`Placement`]): under systemd with `Delegate=yes`
//! (cgroup v2, all Debian's systemd uses) the host owns its service's
//! cgroup: it moves itself into a `supervisor` leaf (so the delegated
//! cgroup has no processes of its own, as v2 requires of a cgroup with
//! children) and makes every appspace's cgroup under `appspaces/`, named
//! by appspace, never at the hierarchy's root. Without a delegated cgroup
//! (dev mode in a shell, no systemd, cgroup v1 as on the build machine)
//! they go under `ds/` at the root of each hierarchy: the documented
//! fallback.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::spec::Limits;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
/// Our subtree under each hierarchy when nothing was delegated to us.
pub const FALLBACK_PARENT: &str = "ds";
/// v1 controllers we use (cpuacct for usage).
const V1_CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "cpuacct"];
const CPU_PERIOD_US: u64 = 100_000;

/// Errors from cgroup setup, naming the file involved.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Neither a cgroup2 mount nor the v1 controllers we need were found.
    #[error("no usable cgroup hierarchy at {CGROUP_ROOT} (need cgroup v2, or v1 memory, pids, cpu and cpuacct controllers)")]
    Unavailable,
    /// A cgroup file or directory could not be written.
    #[error("cgroup: {what} {path}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// On which file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CgroupError {
    let path = path.to_owned();
    move |source| CgroupError::Io { what, path, source }
}

/// Which cgroup interface this machine offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    /// The unified hierarchy.
    V2,
    /// Per-controller hierarchies.
    V1,
}

impl CgroupVersion {
    /// Looks at what is mounted at `/sys/fs/cgroup`.
    pub fn detect() -> Result<Self, CgroupError> {
        if let Ok(fs) = rustix::fs::statfs(CGROUP_ROOT) {
            if fs.f_type == CGROUP2_SUPER_MAGIC {
                return Ok(Self::V2);
            }
        }
        if V1_CONTROLLERS
            .iter()
            .all(|c| Path::new(CGROUP_ROOT).join(c).join("cgroup.procs").exists())
        {
            return Ok(Self::V1);
        }
        Err(CgroupError::Unavailable)
    }
}

/// Resource usage read from a sandbox's cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Memory in use now, bytes.
    pub memory_current: u64,
    /// Highest memory use, bytes.
    pub memory_peak: u64,
    /// CPU time used, nanoseconds.
    pub cpu_ns: u64,
    /// Tasks now.
    pub pids_current: u64,
    /// Times the OOM killer killed a task of the sandbox.
    pub oom_kills: u64,
}

/// A sandbox's cgroup (one directory in v2, one per controller in v1).
#[derive(Debug)]
pub struct Cgroup {
    version: CgroupVersion,
    /// v2: the leaf. v1: memory, pids, cpu, cpuacct leaves (deduplicated).
    dirs: Vec<PathBuf>,
    /// v1: which of `dirs` serves each controller.
    v1_index: Vec<(&'static str, usize)>,
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(io_err("writing", path))
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat-keyed file like `memory.events`.
fn read_key(path: &Path, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Where a sandbox's cgroup will be, worked out once: the launcher needs
/// the join paths before it clones the child, and creates the cgroup after.
#[derive(Debug)]
pub struct CgroupPlan(Cgroup);

impl CgroupPlan {
    /// Locates the cgroup `name` (unique among running sandboxes) under
    /// `parent` (a path inside the hierarchy, [`Placement::parent`])
    /// without touching it.
    pub fn new(parent: &str, name: &str) -> Result<Self, CgroupError> {
        Cgroup::locate(parent, name).map(Self)
    }

    /// For each hierarchy, the file through which a single-threaded process
    /// moves itself (and its future children) into the cgroup by writing
    /// "0": `tasks` on v1, `cgroup.procs` on v2.
    ///
    /// Why the process moves itself: writing another process's pid takes
    /// the kernel's global threadgroup lock, whose write side waits for an
    /// RCU grace period (7-25 ms measured here, most of a sandbox's start).
    /// On v1, a thread moving only itself skips that lock; for the
    /// single-threaded cloned child that is the whole process.
    pub fn self_join_paths(&self) -> Vec<PathBuf> {
        self.0.self_join_paths()
    }

    /// The interface the cgroup will use.
    pub fn version(&self) -> CgroupVersion {
        self.0.version
    }

    /// Creates the cgroup with `limits` applied.
    pub fn create(self, limits: &Limits) -> Result<Cgroup, CgroupError> {
        let cg = self.0;
        match cg.version {
            CgroupVersion::V2 => cg.create_v2()?,
            CgroupVersion::V1 => cg.create_v1()?,
        }
        // Apply limits before any process joins.
        if let Err(e) = cg.set_limits(limits) {
            cg.remove();
            return Err(e);
        }
        Ok(cg)
    }
}

impl Cgroup {
    fn create_v2(&self) -> Result<(), CgroupError> {
        let leaf = &self.dirs[0];
        let parent = leaf.parent().unwrap_or(Path::new(CGROUP_ROOT));
        // Controllers must be enabled on every level above the leaf: the
        // fallback's `ds` is made here; a delegated parent was prepared by
        // the host ([`Placement::prepare`]), and its own parent is
        // systemd's to manage.
        if parent == Path::new(CGROUP_ROOT).join(FALLBACK_PARENT) {
            enable_v2_controllers(Path::new(CGROUP_ROOT))?;
            match fs::create_dir(parent) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("creating", parent)(e)),
            }
            enable_v2_controllers(parent)?;
        }
        clear_leftover(leaf, CgroupVersion::V2);
        fs::create_dir(leaf).map_err(io_err("creating", leaf))
    }

    fn create_v1(&self) -> Result<(), CgroupError> {
        for leaf in &self.dirs {
            clear_leftover(leaf, CgroupVersion::V1);
        }
        for (i, leaf) in self.dirs.iter().enumerate() {
            if let Err(e) = fs::create_dir_all(leaf) {
                for made in &self.dirs[..i] {
                    let _ = fs::remove_dir(made);
                }
                return Err(io_err("creating", leaf)(e));
            }
        }
        Ok(())
    }

    /// Where the cgroup `name` under `parent` lives (one directory in v2,
    /// one per distinct v1 hierarchy), without touching it.
    fn locate(parent: &str, name: &str) -> Result<Self, CgroupError> {
        let version = CgroupVersion::detect()?;
        let mut cg = Self {
            version,
            dirs: Vec::new(),
            v1_index: Vec::new(),
        };
        match version {
            CgroupVersion::V2 => cg.dirs.push(Path::new(CGROUP_ROOT).join(parent).join(name)),
            CgroupVersion::V1 => {
                let mut seen: Vec<PathBuf> = Vec::new();
                for controller in V1_CONTROLLERS {
                    let mount = Path::new(CGROUP_ROOT).join(controller);
                    // cpu and cpuacct are often one hierarchy under two names.
                    let real = fs::canonicalize(&mount).map_err(io_err("resolving", &mount))?;
                    if let Some(i) = seen.iter().position(|r| r == &real) {
                        cg.v1_index.push((controller, i));
                        continue;
                    }
                    seen.push(real);
                    cg.v1_index.push((controller, cg.dirs.len()));
                    cg.dirs.push(mount.join(parent).join(name));
                }
            }
        }
        Ok(cg)
    }

    /// The existing cgroup `name` under `parent` (made by a running
    /// launcher), to read its usage or change its limits from outside.
    /// Fails if it does not exist.
    pub fn open(parent: &str, name: &str) -> Result<Self, CgroupError> {
        let cg = Self::locate(parent, name)?;
        for d in &cg.dirs {
            if !d.join("cgroup.procs").exists() {
                return Err(io_err("opening", d)(io::ErrorKind::NotFound.into()));
            }
        }
        Ok(cg)
    }

    /// Removes cgroups under `parent` named `<prefix>-<pid>` whose launcher
    /// (`pid`) is gone: what a launcher killed with SIGKILL could not
    /// clean up. Their processes died with the launcher (the agent has a
    /// parent-death signal); any survivor is killed here.
    pub fn remove_stale(parent: &str, prefix: &str) {
        let Ok(version) = CgroupVersion::detect() else {
            return;
        };
        let parents: Vec<PathBuf> = match version {
            CgroupVersion::V2 => vec![Path::new(CGROUP_ROOT).join(parent)],
            CgroupVersion::V1 => V1_CONTROLLERS
                .iter()
                .map(|c| Path::new(CGROUP_ROOT).join(c).join(parent))
                .collect(),
        };
        for parent in parents {
            let Ok(entries) = fs::read_dir(&parent) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(pid) = name
                    .to_str()
                    .and_then(|n| n.strip_prefix(prefix))
                    .and_then(|r| r.strip_prefix('-'))
                else {
                    continue;
                };
                if pid.parse::<u32>().is_err() || Path::new("/proc").join(pid).exists() {
                    continue;
                }
                Self {
                    version,
                    dirs: vec![entry.path()],
                    v1_index: Vec::new(),
                }
                .remove();
            }
        }
    }

    /// The interface in use.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// The files a process writes "0" into to move itself in
    /// ([`CgroupPlan::self_join_paths`]).
    pub fn self_join_paths(&self) -> Vec<PathBuf> {
        let file = match self.version {
            CgroupVersion::V1 => "tasks",
            CgroupVersion::V2 => "cgroup.procs",
        };
        self.dirs.iter().map(|d| d.join(file)).collect()
    }

    /// The cgroup's directories (for logs and tests).
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    fn v1_dir(&self, controller: &str) -> Option<&Path> {
        let (_, i) = self.v1_index.iter().find(|(c, _)| *c == controller)?;
        self.dirs.get(*i).map(PathBuf::as_path)
    }

    /// Applies (or changes) the limits; takes effect at once.
    pub fn set_limits(&self, limits: &Limits) -> Result<(), CgroupError> {
        let quota = ((limits.cpus * CPU_PERIOD_US as f64).round() as u64).max(1000);
        match self.version {
            CgroupVersion::V2 => {
                let d = &self.dirs[0];
                write(&d.join("memory.max"), &limits.memory_bytes.to_string())?;
                write(&d.join("memory.swap.max"), "0")?;
                write(&d.join("pids.max"), &limits.pids.to_string())?;
                write(&d.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
            }
            CgroupVersion::V1 => {
                let mem = self.v1_dir("memory").ok_or(CgroupError::Unavailable)?;
                let memsw = mem.join("memory.memsw.limit_in_bytes");
                // memsw must stay >= the plain limit: order the writes so it does.
                let current_memsw = read_u64(&memsw);
                if current_memsw.is_some_and(|c| c < limits.memory_bytes) {
                    write(&memsw, &limits.memory_bytes.to_string())?;
                }
                write(
                    &mem.join("memory.limit_in_bytes"),
                    &limits.memory_bytes.to_string(),
                )?;
                if current_memsw.is_some() {
                    // Swap accounting is on: memory+swap = memory means no swap.
                    write(&memsw, &limits.memory_bytes.to_string())?;
                }
                // Without swap accounting, at least keep the kernel from swapping us.
                let _ = fs::write(mem.join("memory.swappiness"), "0");
                let pids = self.v1_dir("pids").ok_or(CgroupError::Unavailable)?;
                write(&pids.join("pids.max"), &limits.pids.to_string())?;
                let cpu = self.v1_dir("cpu").ok_or(CgroupError::Unavailable)?;
                write(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                write(&cpu.join("cpu.cfs_quota_us"), &quota.to_string())?;
            }
        }
        Ok(())
    }

    /// Reads current usage; missing files read as zero.
    pub fn usage(&self) -> Usage {
        match self.version {
            CgroupVersion::V2 => {
                let d = &self.dirs[0];
                Usage {
                    memory_current: read_u64(&d.join("memory.current")).unwrap_or(0),
                    memory_peak: read_u64(&d.join("memory.peak")).unwrap_or(0),
                    cpu_ns: read_key(&d.join("cpu.stat"), "usage_usec").unwrap_or(0) * 1000,
                    pids_current: read_u64(&d.join("pids.current")).unwrap_or(0),
                    oom_kills: read_key(&d.join("memory.events"), "oom_kill").unwrap_or(0),
                }
            }
            CgroupVersion::V1 => {
                let file = |ctrl: &str, name: &str| self.v1_dir(ctrl).map(|d| d.join(name));
                let num = |ctrl: &str, name: &str| {
                    file(ctrl, name).and_then(|p| read_u64(&p)).unwrap_or(0)
                };
                Usage {
                    memory_current: num("memory", "memory.usage_in_bytes"),
                    memory_peak: num("memory", "memory.max_usage_in_bytes"),
                    cpu_ns: num("cpuacct", "cpuacct.usage"),
                    pids_current: num("pids", "pids.current"),
                    oom_kills: file("memory", "memory.oom_control")
                        .and_then(|p| read_key(&p, "oom_kill"))
                        .unwrap_or(0),
                }
            }
        }
    }

    fn procs(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for d in &self.dirs {
            if let Ok(text) = fs::read_to_string(d.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Freezes (`true`) or thaws the cgroup's tasks and waits until the
    /// kernel says they are: cgroup v2's `cgroup.freeze`. Returns whether
    /// it could (v1 has no freezer among the controllers ds uses: `false`,
    /// nothing done).
    pub fn freeze(&self, frozen: bool) -> Result<bool, CgroupError> {
        if self.version != CgroupVersion::V2 {
            return Ok(false);
        }
        let d = &self.dirs[0];
        write(&d.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
        let want = if frozen { 1 } else { 0 };
        for _ in 0..400 {
            if read_key(&d.join("cgroup.events"), "frozen") == Some(want) {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Err(io_err("waiting for the freezer of", d)(io::Error::new(
            io::ErrorKind::TimedOut,
            "not settled within 2 s",
        )))
    }

    /// Kills every process in the cgroup and waits (briefly) until it is
    /// empty. Returns whether it is empty.
    pub fn kill_all(&self) -> bool {
        if self.version == CgroupVersion::V2 {
            let _ = fs::write(self.dirs[0].join("cgroup.kill"), "1");
        }
        for _ in 0..200 {
            let pids = self.procs();
            if pids.is_empty() {
                return true;
            }
            for pid in pids {
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.procs().is_empty()
    }

    /// Kills what is left and removes the cgroup's directories.
    pub fn remove(self) {
        self.kill_all();
        for d in &self.dirs {
            for _ in 0..100 {
                match fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    // EBUSY while the last tasks finish exiting.
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }
    }
}

/// Removes `ds/host-<pid>` subtrees of hosts that are gone, killing what
/// is left in them.
fn remove_gone_hosts(ds: &Path, version: CgroupVersion) {
    let Ok(entries) = fs::read_dir(ds) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("host-")) else {
            continue;
        };
        if pid.parse::<u32>().is_err() || Path::new("/proc").join(pid).exists() {
            continue;
        }
        if let Ok(children) = fs::read_dir(entry.path()) {
            for child in children.flatten().filter(|c| c.path().is_dir()) {
                clear_leftover(&child.path(), version);
            }
        }
        let _ = fs::remove_dir(entry.path());
    }
}

/// A cgroup of the same name left by an earlier run of the same appspace
/// whose launcher was killed: its processes are killed and it goes, so
/// the new run starts clean.
fn clear_leftover(leaf: &Path, version: CgroupVersion) {
    if leaf.join("cgroup.procs").exists() {
        Cgroup {
            version,
            dirs: vec![leaf.to_owned()],
            v1_index: Vec::new(),
        }
        .remove();
    }
}

/// Whether `path` is a cgroup path we accept from a caller: relative, of
/// plain components (letters, digits, `.`, `_`, `-`, `@`, `:`, `\\x`
/// escapes as systemd writes them), never `.` or `..`.
pub fn valid_cgroup_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 4096
        && path.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "._-@:\\".contains(ch))
        })
}

/// Whether `name` may name a sandbox's cgroup: one component. The caller
/// gives it a prefix the kernel's own files never start with (ds-host uses
/// `as-`), so that no name collides with `cgroup.procs`, `memory.max` and
/// the like.
pub fn valid_cgroup_name(name: &str) -> bool {
    valid_cgroup_path(name) && !name.contains('/') && name.len() <= 200
}

/// Where this host's sandbox cgroups go, decided once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The sandboxes' parent, as a path inside the hierarchy (no leading
    /// slash): `ds` in the fallback, `<service cgroup>/appspaces` when
    /// delegated.
    pub parent: String,
    /// The host's own leaf when delegated (it moved itself there).
    pub supervisor: Option<String>,
}

impl Placement {
    /// The fallback: `ds/` at the root of each hierarchy (what `exec` run
    /// by hand uses).
    pub fn fallback() -> Self {
        Self {
            parent: FALLBACK_PARENT.into(),
            supervisor: None,
        }
    }

    /// The fallback for a host: `ds/host-<pid>` at the root of each
    /// hierarchy, made now (with controllers enabled on v2), so that two
    /// hosts on one machine (dev hosts, tests) never share an appspace's
    /// cgroup name. Those of hosts that are gone are removed first, with
    /// anything left in them.
    pub fn fallback_for_host(pid: u32) -> Result<Self, CgroupError> {
        let version = CgroupVersion::detect()?;
        let hierarchies: Vec<PathBuf> = match version {
            CgroupVersion::V2 => vec![PathBuf::from(CGROUP_ROOT)],
            CgroupVersion::V1 => V1_CONTROLLERS
                .iter()
                .map(|c| Path::new(CGROUP_ROOT).join(c))
                .collect(),
        };
        let parent = format!("{FALLBACK_PARENT}/host-{pid}");
        for root in &hierarchies {
            let ds = root.join(FALLBACK_PARENT);
            if version == CgroupVersion::V2 {
                enable_v2_controllers(root)?;
            }
            match fs::create_dir(&ds) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("creating", &ds)(e)),
            }
            if version == CgroupVersion::V2 {
                enable_v2_controllers(&ds)?;
            }
            remove_gone_hosts(&ds, version);
            let ours = root.join(&parent);
            match fs::create_dir(&ours) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("creating", &ours)(e)),
            }
            if version == CgroupVersion::V2 {
                enable_v2_controllers(&ours)?;
            }
        }
        Ok(Self {
            parent,
            supervisor: None,
        })
    }

    /// Removes this host's fallback subtree (at exit, once its sandboxes
    /// are gone; best effort).
    pub fn remove_own(&self) {
        if self.supervisor.is_some() {
            return;
        }
        let Ok(version) = CgroupVersion::detect() else {
            return;
        };
        let roots: Vec<PathBuf> = match version {
            CgroupVersion::V2 => vec![PathBuf::from(CGROUP_ROOT)],
            CgroupVersion::V1 => V1_CONTROLLERS
                .iter()
                .map(|c| Path::new(CGROUP_ROOT).join(c))
                .collect(),
        };
        for root in roots {
            let _ = fs::remove_dir(root.join(&self.parent));
        }
    }

    /// Decides, and prepares a delegated subtree: on cgroup v2, when our
    /// own cgroup was delegated to us (systemd marks it with the
    /// `trusted.delegate` or `user.delegate` attribute under
    /// `Delegate=yes`), moves this process into `<own>/supervisor` and
    /// makes `<own>/appspaces` with the memory, pids and cpu controllers
    /// enabled; otherwise the fallback.
    pub fn detect() -> Result<Self, CgroupError> {
        if CgroupVersion::detect()? != CgroupVersion::V2 {
            return Ok(Self::fallback());
        }
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let Some(own) = own_v2_cgroup(&own) else {
            return Ok(Self::fallback());
        };
        let root = Path::new(CGROUP_ROOT);
        if own.is_empty() || !is_delegated(&root.join(&own)) {
            return Ok(Self::fallback());
        }
        Self::prepare(root, &own, std::process::id())
    }

    /// In the hierarchy at `root`, turns the delegated cgroup `own` into
    /// `own/supervisor` (where `pid` moves) and `own/appspaces` (with
    /// controllers enabled on the way). Separate from [`Placement::detect`]
    /// so that it can be tested on a plain directory.
    pub fn prepare(root: &Path, own: &str, pid: u32) -> Result<Self, CgroupError> {
        let base = root.join(own);
        let supervisor = base.join("supervisor");
        let appspaces = base.join("appspaces");
        for dir in [&supervisor, &appspaces] {
            match fs::create_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("creating", dir)(e)),
            }
        }
        // "No internal processes": we leave `own` before its children get
        // controllers.
        write(&supervisor.join("cgroup.procs"), &pid.to_string())?;
        enable_v2_controllers(&base)?;
        enable_v2_controllers(&appspaces)?;
        Ok(Self {
            parent: format!("{own}/appspaces"),
            supervisor: Some(format!("{own}/supervisor")),
        })
    }
}

/// The cgroup v2 path (without the leading slash) in `/proc/self/cgroup`
/// text: the `0::` line.
pub fn own_v2_cgroup(proc_self_cgroup: &str) -> Option<String> {
    proc_self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().trim_start_matches('/').to_owned())
}

/// Whether systemd delegated the cgroup at `dir` (the attribute it sets
/// under `Delegate=yes` since v251; Debian 12 has 252).
fn is_delegated(dir: &Path) -> bool {
    ["trusted.delegate", "user.delegate"].iter().any(|attr| {
        let mut value = [0u8; 8];
        rustix::fs::getxattr(dir, *attr, &mut value)
            .is_ok_and(|n| n > 0 && value[..n].starts_with(b"1"))
    })
}

fn enable_v2_controllers(dir: &Path) -> Result<(), CgroupError> {
    let control = dir.join("cgroup.subtree_control");
    let enabled = fs::read_to_string(&control).unwrap_or_default();
    for c in ["memory", "pids", "cpu"] {
        if !enabled.split_whitespace().any(|e| e == c) {
            write(&control, &format!("+{c}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cgroup_is_read_from_the_unified_line() {
        let text = "12:pids:/x\n0::/system.slice/ds-host.service\n";
        assert_eq!(
            own_v2_cgroup(text).as_deref(),
            Some("system.slice/ds-host.service")
        );
        assert_eq!(own_v2_cgroup("0::/\n").as_deref(), Some(""));
        assert_eq!(own_v2_cgroup("4:memory:/a\n"), None);
    }

    #[test]
    fn a_delegated_cgroup_becomes_supervisor_and_appspaces() {
        // A plain directory standing in for cgroupfs: the files the kernel
        // would provide are made by hand.
        let root = std::env::temp_dir().join(format!("ds-cg-deleg-{}", std::process::id()));
        let own = "system.slice/ds-host.service";
        let base = root.join(own);
        fs::create_dir_all(&base).unwrap();
        fs::write(base.join("cgroup.subtree_control"), "").unwrap();
        fs::create_dir_all(base.join("appspaces")).unwrap();
        fs::write(base.join("appspaces/cgroup.subtree_control"), "").unwrap();
        let placed = Placement::prepare(&root, own, 4242).unwrap();
        assert_eq!(placed.parent, "system.slice/ds-host.service/appspaces");
        assert_eq!(
            placed.supervisor.as_deref(),
            Some("system.slice/ds-host.service/supervisor")
        );
        assert_eq!(
            fs::read_to_string(base.join("supervisor/cgroup.procs")).unwrap(),
            "4242"
        );
        // Each controller was asked for (a real cgroupfs keeps them all;
        // this file keeps the last write).
        assert_eq!(
            fs::read_to_string(base.join("cgroup.subtree_control")).unwrap(),
            "+cpu"
        );
        assert!(base.join("appspaces").is_dir());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn cgroup_paths_and_names_from_callers_are_checked() {
        for good in ["ds", "system.slice/ds-host.service/appspaces", "a\\x2db"] {
            assert!(valid_cgroup_path(good), "{good}");
        }
        for bad in ["", "/ds", "ds/", "../x", "a/./b", "a b", "a\nb"] {
            assert!(!valid_cgroup_path(bad), "{bad:?}");
        }
        assert!(valid_cgroup_name("as-notes"));
        assert!(!valid_cgroup_name("a/b"));
    }

    #[test]
    fn flat_keyed_files_parse() {
        let dir = std::env::temp_dir().join(format!("ds-cg-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let f = dir.join("memory.events");
        fs::write(&f, "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n").unwrap();
        assert_eq!(read_key(&f, "oom_kill"), Some(2));
        assert_eq!(read_key(&f, "oom"), Some(1));
        assert_eq!(read_key(&f, "absent"), None);
        fs::remove_dir_all(&dir).unwrap();
    }
}
