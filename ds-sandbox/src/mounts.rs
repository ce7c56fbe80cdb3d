//! The filesystem view: a fresh tmpfs root holding only `/app` (read-only),
//! `/data` (read-write, nodev nosuid noexec), a capped `/tmp` (noexec), a
//! minimal `/dev`, `/proc` of the sandbox's pid namespace, a generated
//! `/etc`, and the runtime's read-only files. The host's root is detached.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{symlink, DirBuilderExt};
use std::path::{Path, PathBuf};

use rustix::fs::StatVfsMountFlags;
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};

use crate::spec::{SandboxSpec, HOSTNAME, INSIDE_ID};

/// Where the new root is assembled (inside our private mount namespace, so
/// the host's `/tmp` is not touched).
const NEW_ROOT: &str = "/tmp";
const DEVICES: [&str; 5] = ["null", "zero", "full", "random", "urandom"];
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Errors building the filesystem view, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A mount, file or directory operation failed.
    #[error("{what} {path}: {source}")]
    Op {
        /// What we were doing.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

fn op<P: AsRef<Path>>(what: &'static str, path: P) -> impl FnOnce(io::Error) -> MountError {
    let path = path.as_ref().to_owned();
    move |source| MountError::Op { what, path, source }
}

fn rx<T>(r: rustix::io::Result<T>) -> io::Result<T> {
    r.map_err(io::Error::from)
}

/// What a host file or directory is used for in the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SourceKind {
    /// The app's files, at `/app`.
    App,
    /// The appspace's data, at `/data`.
    Data,
    /// The Deno binary, at `/usr/local/bin/deno`.
    Deno,
    /// A system library directory, at the same path.
    System,
    /// The CA certificate bundle, at the same path.
    CaBundle,
}

/// One host file the view is made of.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Source {
    /// Its use.
    pub kind: SourceKind,
    /// Where it is on the host.
    pub host_path: PathBuf,
    /// Whether the sandbox fails without it.
    pub required: bool,
}

/// System library directories a dynamically linked program needs; on a
/// merged-/usr system `/lib` and `/lib64` are symlinks and only their
/// targets are mounted.
fn system_dirs() -> Vec<PathBuf> {
    ["/usr/lib", "/usr/lib64", "/lib", "/lib64"]
        .iter()
        .map(PathBuf::from)
        .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()))
        .collect()
}

/// The descriptor number the i-th source arrives at in the agent.
pub const SOURCE_FD_BASE: i32 = 10;

/// The host files a spec's view is made of, in the order their descriptors
/// are passed ([`SOURCE_FD_BASE`] + index).
pub fn plan(app_dir: &Path, data_dir: &Path, deno: Option<&Path>) -> Vec<Source> {
    let mut plan = vec![
        Source {
            kind: SourceKind::App,
            host_path: app_dir.to_owned(),
            required: true,
        },
        Source {
            kind: SourceKind::Data,
            host_path: data_dir.to_owned(),
            required: true,
        },
    ];
    if let Some(deno) = deno {
        plan.push(Source {
            kind: SourceKind::Deno,
            host_path: deno.to_owned(),
            required: true,
        });
    }
    plan.extend(system_dirs().into_iter().map(|host_path| Source {
        kind: SourceKind::System,
        host_path,
        required: true,
    }));
    plan.push(Source {
        kind: SourceKind::CaBundle,
        host_path: CA_BUNDLE.into(),
        required: false,
    });
    plan
}

/// The view's sources as open `O_PATH` descriptors. They were opened by
/// the launcher's child right after the mount namespace was created and
/// before it dropped to the inside uid, so their host paths need not be
/// traversable by the appspace's uid, and they belong to our mount
/// namespace (bind mounts from another namespace's paths are refused).
#[derive(Debug)]
pub struct Sources {
    fds: Vec<(Source, OwnedFd)>,
}

impl Sources {
    /// Takes the descriptors passed at [`SOURCE_FD_BASE`] for `plan`. An
    /// optional source that could not be opened is simply absent.
    pub fn adopt(plan: &[Source]) -> Result<Self, MountError> {
        let mut fds = Vec::with_capacity(plan.len());
        for (i, source) in plan.iter().enumerate() {
            match crate::sys::adopt_fd(SOURCE_FD_BASE + i as i32) {
                Ok(fd) => fds.push((source.clone(), fd)),
                Err(_) if !source.required => {}
                Err(e) => return Err(op("receiving the descriptor of", &source.host_path)(e)),
            }
        }
        Ok(Self { fds })
    }

    fn of(&self, kind: SourceKind) -> impl Iterator<Item = &(Source, OwnedFd)> {
        self.fds.iter().filter(move |(s, _)| s.kind == kind)
    }

    fn one(&self, kind: SourceKind) -> Option<&OwnedFd> {
        self.of(kind).next().map(|(_, fd)| fd)
    }
}

/// The path through which the kernel resolves an open descriptor.
fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Flags of the mount holding `fd` that a user namespace may not clear
/// (the kernel locks them), so every remount must repeat them.
fn locked_flags(fd: &OwnedFd) -> MountFlags {
    let Ok(st) = rustix::fs::fstatvfs(fd) else {
        return MountFlags::empty();
    };
    let mut flags = MountFlags::empty();
    for (vfs, mnt) in [
        (StatVfsMountFlags::RDONLY, MountFlags::RDONLY),
        (StatVfsMountFlags::NOSUID, MountFlags::NOSUID),
        (StatVfsMountFlags::NODEV, MountFlags::NODEV),
        (StatVfsMountFlags::NOEXEC, MountFlags::NOEXEC),
        (StatVfsMountFlags::NOATIME, MountFlags::NOATIME),
        (StatVfsMountFlags::NODIRATIME, MountFlags::NODIRATIME),
        (StatVfsMountFlags::RELATIME, MountFlags::RELATIME),
    ] {
        if st.f_flag.contains(vfs) {
            flags |= mnt;
        }
    }
    flags
}

/// Binds `src` onto `target` and remounts it with `flags` (plus the
/// source's locked flags). The bind is recursive, as bubblewrap's are: in a
/// user namespace the kernel refuses (EINVAL) a plain bind of a tree with
/// locked mounts below it, which would uncover what they hide. systemd's
/// ProtectKernelModules= mounts an inaccessible node over /usr/lib/modules,
/// for one: the sandbox keeps it there. Landlock, not the mount flags,
/// holds any writable mount below a read-only tree to read-only.
fn bind(src: &OwnedFd, target: &Path, flags: MountFlags) -> Result<(), MountError> {
    rx(rustix::mount::mount_bind_recursive(fd_path(src), target))
        .map_err(op("bind-mounting onto", target))?;
    let flags = flags | locked_flags(src) | MountFlags::BIND;
    rx(rustix::mount::mount_remount(target, flags, "")).map_err(op("remounting", target))
}

fn tmpfs(target: &Path, flags: MountFlags, options: &str) -> Result<(), MountError> {
    let options = CString::new(options).map_err(|e| op("mount options for", target)(e.into()))?;
    rx(rustix::mount::mount(
        "tmpfs",
        target,
        "tmpfs",
        flags,
        options.as_c_str(),
    ))
    .map_err(op("mounting tmpfs on", target))
}

fn mkdir(path: &Path, mode: u32) -> Result<(), MountError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(op("creating", path))
}

fn touch(path: &Path) -> Result<(), MountError> {
    fs::File::create(path)
        .map(drop)
        .map_err(op("creating", path))
}

fn write_file(path: &Path, text: &str) -> Result<(), MountError> {
    fs::write(path, text).map_err(op("writing", path))
}

/// Builds the view under a tmpfs in our private mount namespace. `/proc`
/// and the switch of root follow in [`mount_proc_and_enter_root`].
pub fn build_tree(spec: &SandboxSpec, src: &Sources) -> Result<(), MountError> {
    // Nothing we mount may propagate back to the host.
    rx(rustix::mount::mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    ))
    .map_err(op("making mounts private under", "/"))?;

    let root = Path::new(NEW_ROOT);
    tmpfs(
        root,
        MountFlags::NOSUID | MountFlags::NODEV,
        "mode=0755,size=1m",
    )?;
    let at = |p: &str| root.join(p);

    let missing = |what: &str| op("finding the source for", what)(io::ErrorKind::NotFound.into());
    mkdir(&at("app"), 0o755)?;
    let app = src.one(SourceKind::App).ok_or_else(|| missing("/app"))?;
    bind(
        app,
        &at("app"),
        MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV,
    )?;

    mkdir(&at("data"), 0o755)?;
    let data = src.one(SourceKind::Data).ok_or_else(|| missing("/data"))?;
    bind(
        data,
        &at("data"),
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
    )?;

    mkdir(&at("tmp"), 0o1777)?;
    tmpfs(
        &at("tmp"),
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        &format!("mode=1777,size={}", spec.limits.tmp_bytes),
    )?;

    build_dev(&at("dev"))?;
    build_etc(&at("etc"), src)?;

    for (source, fd) in src.of(SourceKind::System) {
        let path = &source.host_path;
        let target = root.join(path.strip_prefix("/").unwrap_or(path));
        mkdir(&target, 0o755)?;
        bind(
            fd,
            &target,
            MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV,
        )?;
    }
    // Merged /usr: /lib -> usr/lib and /lib64 -> usr/lib64 as on the host.
    for link in ["lib", "lib64", "bin"] {
        if let Ok(target) = fs::read_link(Path::new("/").join(link)) {
            if !at(link).exists() {
                symlink(&target, at(link)).map_err(op("creating symlink", at(link)))?;
            }
        }
    }
    if let Some(deno) = src.one(SourceKind::Deno) {
        let target = at("usr/local/bin/deno");
        mkdir(&at("usr/local/bin"), 0o755)?;
        touch(&target)?;
        bind(
            deno,
            &target,
            MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV,
        )?;
    }
    mkdir(&at("proc"), 0o555)?;
    mkdir(&at(".old-root"), 0o700)
}

/// A tmpfs `/dev` with only null, zero, full, random and urandom (bound
/// from the host, since a user namespace cannot create device nodes).
fn build_dev(dev: &Path) -> Result<(), MountError> {
    mkdir(dev, 0o755)?;
    tmpfs(
        dev,
        MountFlags::NOSUID | MountFlags::NOEXEC,
        "mode=0755,size=64k",
    )?;
    for name in DEVICES {
        let target = dev.join(name);
        touch(&target)?;
        let host = Path::new("/dev").join(name);
        rx(rustix::mount::mount_bind(&host, &target)).map_err(op("bind-mounting onto", &target))?;
    }
    for (name, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(to, dev.join(name)).map_err(op("creating symlink", dev.join(name)))?;
    }
    rx(rustix::mount::mount_remount(
        dev,
        MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NOEXEC,
        "mode=0755,size=64k",
    ))
    .map_err(op("remounting read-only", dev))
}

/// A generated `/etc`: just enough for libc to know who the app is, that
/// localhost is loopback, and that there is no DNS inside.
fn build_etc(etc: &Path, src: &Sources) -> Result<(), MountError> {
    mkdir(etc, 0o755)?;
    tmpfs(
        etc,
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        "mode=0755,size=256k",
    )?;
    let files = [
        (
            "passwd",
            format!(
                "app:x:{INSIDE_ID}:{INSIDE_ID}:app:/data:/usr/sbin/nologin\n\
                 nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            ),
        ),
        ("group", format!("app:x:{INSIDE_ID}:\nnogroup:x:65534:\n")),
        (
            "hosts",
            format!("127.0.0.1\tlocalhost {HOSTNAME}\n::1\tlocalhost ip6-localhost\n"),
        ),
        ("hostname", format!("{HOSTNAME}\n")),
        (
            "nsswitch.conf",
            "passwd: files\ngroup: files\nhosts: files\n".to_owned(),
        ),
        (
            "resolv.conf",
            "# No DNS inside a ds sandbox: outbound HTTP(S) goes through $HTTP_PROXY.\n".to_owned(),
        ),
    ];
    for (name, text) in files {
        write_file(&etc.join(name), &text)?;
    }
    if let Some(ca) = src.one(SourceKind::CaBundle) {
        let target = etc.join("ssl/certs/ca-certificates.crt");
        mkdir(&etc.join("ssl/certs"), 0o755)?;
        touch(&target)?;
        bind(
            ca,
            &target,
            MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        )?;
    }
    rx(rustix::mount::mount_remount(
        etc,
        MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        "mode=0755,size=256k",
    ))
    .map_err(op("remounting read-only", etc))
}

/// Mounts `/proc` for the sandbox's own pid namespace and switches root to
/// the view, detaching the host's tree.
///
/// Must run in a process inside the new pid namespace (the agent), and
/// before the host's tree is detached: the kernel mounts a new procfs in a
/// user namespace only while a fully visible procfs exists in the same
/// mount namespace.
pub fn mount_proc_and_enter_root() -> Result<(), MountError> {
    let root = Path::new(NEW_ROOT);
    let proc = root.join("proc");
    rx(rustix::mount::mount(
        "proc",
        &proc,
        "proc",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        None,
    ))
    .map_err(op("mounting", &proc))?;

    let old = root.join(".old-root");
    rx(rustix::process::pivot_root(root, &old)).map_err(op("pivot_root into", root))?;
    rx(rustix::process::chdir("/")).map_err(op("changing directory to", "/"))?;
    rx(rustix::mount::unmount("/.old-root", UnmountFlags::DETACH))
        .map_err(op("detaching", "/.old-root"))?;
    fs::remove_dir("/.old-root").map_err(op("removing", "/.old-root"))?;
    // The root itself is read-only from here on.
    rx(rustix::mount::mount_remount(
        "/",
        MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV,
        c"mode=0755,size=1m",
    ))
    .map_err(op("remounting read-only", "/"))
}
