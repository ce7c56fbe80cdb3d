//! The backup benchmark, in one run: a backup and a restore of a 1 GiB
//! appspace through ds's restic driver against `tar | zstd` and `zstd -d |
//! tar` of the same directory, and what 24 hourly backups add to the
//! repository when 1 MiB of the data changes each hour, for three ways of
//! changing it (a new file, an append to one file, scattered 4 KiB page
//! writes inside a database-like file).
//!
//! `cargo bench -p ds-host --bench backup` (restic, zstd and tar
//! installed; packaging/dev/bench.sh installs them). Prints a table and
//! rewrites its section of docs/performance.md.

#[path = "../../tests/support/perf_doc.rs"]
mod perf_doc;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use ds_host::backup::restic::Restic;
use ds_host::backup::Labels;

const MIB: u64 = 1 << 20;
/// The appspace: 1 GiB in 1 MiB files, 70% incompressible (photos,
/// archives), 30% text-like.
const FILES: u64 = 1024;
const HOURS: u32 = 24;

/// A fast deterministic generator (xorshift), so runs compare.
struct Bytes(u64);

impl Bytes {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let b = self.0.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
    }

    fn random(&mut self, len: u64) -> Vec<u8> {
        let mut v = vec![0; len as usize];
        self.fill(&mut v);
        v
    }

    fn text(&mut self, len: u64) -> Vec<u8> {
        const WORDS: &[&str] = &[
            "the", "appspace", "note", "data", "backup", "restore", "of", "and", "a", "sandbox",
            "user", "version", "schema", "row", "value", "request", "answer", "host",
        ];
        let mut out = Vec::with_capacity(len as usize);
        while (out.len() as u64) < len {
            let mut r = [0u8; 8];
            self.fill(&mut r);
            let w = WORDS[r[0] as usize % WORDS.len()];
            out.extend_from_slice(w.as_bytes());
            out.push(if r[1] % 12 == 0 { b'\n' } else { b' ' });
        }
        out.truncate(len as usize);
        out
    }
}

fn make_appspace(dir: &Path, gen: &mut Bytes) {
    std::fs::create_dir_all(dir).expect("data dir");
    for i in 0..FILES {
        let sub = dir.join(format!("d{:02}", i % 32));
        std::fs::create_dir_all(&sub).expect("sub dir");
        let bytes = if i % 10 < 7 {
            gen.random(MIB)
        } else {
            gen.text(MIB)
        };
        std::fs::write(sub.join(format!("f{i:04}")), bytes).expect("file");
    }
}

fn du(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_dir() {
        std::fs::read_dir(path)
            .map(|d| d.flatten().map(|e| du(&e.path())).sum())
            .unwrap_or(0)
    } else {
        meta.len()
    }
}

fn drop_caches() {
    // Fair starts for both sides: cold caches where we may drop them.
    let _ = Command::new("sync").status();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

fn sh(script: &str) -> Duration {
    drop_caches();
    let t = Instant::now();
    let status = Command::new("sh")
        .args(["-c", script])
        .stdout(Stdio::null())
        .status()
        .expect("sh");
    assert!(status.success(), "{script} failed");
    t.elapsed()
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

/// One way the data changes by 1 MiB an hour.
#[derive(Clone, Copy)]
enum Change {
    NewFile,
    Append,
    ScatteredPages,
}

impl Change {
    fn name(self) -> &'static str {
        match self {
            Change::NewFile => "a new 1 MiB file",
            Change::Append => "1 MiB appended to one file",
            Change::ScatteredPages => "256 scattered 4 KiB pages rewritten in a 64 MiB file",
        }
    }

    fn apply(self, data: &Path, hour: u32, gen: &mut Bytes) {
        use std::os::unix::fs::FileExt;
        match self {
            Change::NewFile => {
                std::fs::write(data.join(format!("upload-{hour:02}")), gen.random(MIB))
                    .expect("new file");
            }
            Change::Append => {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(data.join("journal.log"))
                    .expect("append");
                f.write_all(&gen.text(MIB)).expect("append");
            }
            Change::ScatteredPages => {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(data.join("pages.db"))
                    .expect("pages");
                for _ in 0..256 {
                    let mut r = [0u8; 8];
                    gen.fill(&mut r);
                    let page = u64::from_le_bytes(r) % (64 * MIB / 4096);
                    f.write_at(&gen.random(4096), page * 4096).expect("page");
                }
            }
        }
    }
}

fn labels() -> Labels<'static> {
    Labels {
        appspace: "bench",
        app: "bench",
        version: "1.0.0",
        reason: None,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let restic_bin =
        PathBuf::from(std::env::var_os("DS_RESTIC").unwrap_or_else(|| "restic".into()));
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("backup-bench");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("bench dir");
    let data = root.join("appspaces/bench/data");
    let mut gen = Bytes(0x9e37_79b9_7f4a_7c15);
    eprintln!(
        "backup bench: writing a 1 GiB appspace under {}",
        root.display()
    );
    make_appspace(&data, &mut gen);
    let size = du(&data);

    // The reference: tar | zstd (default level, all cores) and back.
    let archive = root.join("data.tar.zst");
    let tar_time = sh(&format!(
        "tar -C {} -cf - . | zstd -q -T0 -o {}",
        data.display(),
        archive.display()
    ));
    let tar_size = du(&archive);
    let untar_dir = root.join("untarred");
    std::fs::create_dir_all(&untar_dir).expect("untar dir");
    let untar_time = sh(&format!(
        "zstd -q -d -c {} | tar -C {} -xf -",
        archive.display(),
        untar_dir.display()
    ));
    let _ = std::fs::remove_dir_all(&untar_dir);
    let _ = std::fs::remove_file(&archive);

    // ds: the first backup (everything new) and a restore of it.
    let restic = Restic::new(restic_bin.clone(), root.join("backups"), None, None);
    restic.ensure_repository().await.expect("repository");
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    drop_caches();
    let t = Instant::now();
    let first = restic
        .backup_at(&labels(), &data, Some(start))
        .await
        .expect("backup");
    let backup_time = t.elapsed();
    let repo = restic
        .repository()
        .local()
        .expect("a local repository")
        .to_owned();
    let repo_size = du(&repo);
    drop_caches();
    let t = Instant::now();
    let staged = restic.restore_beside(&first, &data).await.expect("restore");
    let restore_time = t.elapsed();
    assert_eq!(du(&staged), size, "the restore is not the size of the data");
    let _ = std::fs::remove_dir_all(data.parent().expect("parent").join(".restoring"));
    // An unchanged appspace backed up again: what the hourly run costs.
    drop_caches();
    let t = Instant::now();
    restic
        .backup_at(&labels(), &data, Some(start + Duration::from_secs(60)))
        .await
        .expect("backup");
    let unchanged_time = t.elapsed();

    // Growth: 24 hourly backups, 1 MiB changed before each.
    let mut growth = Vec::new();
    let pages = data.join("pages.db");
    std::fs::write(&pages, gen.random(64 * MIB)).expect("pages");
    restic
        .backup_at(&labels(), &data, Some(start + Duration::from_secs(120)))
        .await
        .expect("backup");
    let base_size = du(&data);
    for change in [Change::NewFile, Change::Append, Change::ScatteredPages] {
        let before = du(&repo);
        for hour in 1..=HOURS {
            change.apply(&data, hour, &mut gen);
            let at = start + Duration::from_secs(3600 * u64::from(hour));
            restic
                .backup_at(&labels(), &data, Some(at))
                .await
                .expect("hourly backup");
        }
        let added = du(&repo) - before;
        growth.push((change, added));
        eprintln!(
            "backup bench: {}: {:.1} MiB a day ({:.2}% of the data)",
            change.name(),
            added as f64 / MIB as f64,
            added as f64 * 100.0 / base_size as f64
        );
    }

    let rows = [
        format!(
            "| back up 1 GiB (first backup) | {:.1} s, {:.0} MiB/s | {:.1} s, {:.0} MiB/s (tar \\| zstd) | {:.2}x |",
            backup_time.as_secs_f64(),
            mib_s(size, backup_time),
            tar_time.as_secs_f64(),
            mib_s(size, tar_time),
            tar_time.as_secs_f64() / backup_time.as_secs_f64()
        ),
        format!(
            "| restore 1 GiB | {:.1} s, {:.0} MiB/s | {:.1} s, {:.0} MiB/s (zstd -d \\| tar) | {:.2}x |",
            restore_time.as_secs_f64(),
            mib_s(size, restore_time),
            untar_time.as_secs_f64(),
            mib_s(size, untar_time),
            untar_time.as_secs_f64() / restore_time.as_secs_f64()
        ),
        format!(
            "| stored size of 1 GiB | {:.0} MiB (encrypted, deduplicated, compressed) | {:.0} MiB (compressed) | {:.2}x |",
            repo_size as f64 / MIB as f64,
            tar_size as f64 / MIB as f64,
            tar_size as f64 / repo_size as f64
        ),
        format!(
            "| back up again, unchanged | {:.2} s | (a full archive again: {:.1} s) | {:.0}x |",
            unchanged_time.as_secs_f64(),
            tar_time.as_secs_f64(),
            tar_time.as_secs_f64() / unchanged_time.as_secs_f64()
        ),
    ];
    let mut body = String::from(
        "| what | ds (restic) | reference, same run | ratio (reference / ds time or size) |\n|---|---|---|---|\n",
    );
    for r in &rows {
        body.push_str(r);
        body.push('\n');
    }
    body.push_str(&format!(
        "\n24 hourly backups of the {:.2} GiB appspace, 1 MiB changed before each (budget: well under 5% of the data a day):\n\n| how the MiB changes | added to the repository in a day | of the data |\n|---|---|---|\n",
        base_size as f64 / (1u64 << 30) as f64
    ));
    for (change, added) in &growth {
        body.push_str(&format!(
            "| {} | {:.1} MiB | {:.2}% |\n",
            change.name(),
            *added as f64 / MIB as f64,
            *added as f64 * 100.0 / base_size as f64
        ));
    }
    print!("{body}");
    perf_doc::rewrite("backup", &body);
    let _ = std::fs::remove_dir_all(&root);
}
