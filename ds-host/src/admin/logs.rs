//! Reading an appspace's log for `dsctl appspace logs`: the last lines
//! (reaching into the newest rotated file when the current one is short),
//! and following new lines as they are written, across rotations.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

/// How often a followed log is checked for new lines.
const POLL: Duration = Duration::from_millis(200);
/// Most bytes read back from one file for the last lines.
const TAIL_WINDOW: u64 = 4 << 20;

fn current(dir: &Path) -> PathBuf {
    dir.join("app.log")
}

/// The last `n` lines of the log in `dir`, and the current file's length
/// (where following starts).
pub fn last_lines(dir: &Path, n: usize) -> std::io::Result<(String, u64)> {
    let (text, len) = match read_tail(&current(dir)) {
        Ok(pair) => pair,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), 0),
        Err(e) => return Err(e),
    };
    let mut lines: Vec<&str> = text.lines().collect();
    let older;
    if lines.len() < n {
        // The newest rotated file holds what came just before.
        if let Ok((text, _)) = read_tail(&dir.join("app.log.1")) {
            older = text;
            let mut before: Vec<&str> = older.lines().collect();
            before.append(&mut lines);
            lines = before;
        }
    }
    let start = lines.len().saturating_sub(n);
    let mut out = lines[start..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    Ok((out, len))
}

/// The last [`TAIL_WINDOW`] bytes of `path` (from a line start) and its
/// length.
fn read_tail(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let from = len.saturating_sub(TAIL_WINDOW);
    f.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    f.take(len - from).read_to_end(&mut buf)?;
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    if from > 0 {
        // Drop the partial first line.
        text = text
            .split_once('\n')
            .map(|(_, r)| r.to_owned())
            .unwrap_or_default();
    }
    Ok((text, len))
}

/// Sends what is appended to the log in `dir` after `offset` until the
/// receiver goes away. A rotation (the file shrinks or is replaced) is
/// followed into the new file from its start.
pub fn follow(dir: PathBuf, mut offset: u64, tx: mpsc::Sender<Result<Bytes, std::io::Error>>) {
    tokio::spawn(async move {
        let path = current(&dir);
        let mut inode = std::fs::metadata(&path).map(|m| inode_of(&m)).ok();
        loop {
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = tx.closed() => return,
            }
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if inode != Some(inode_of(&meta)) || meta.len() < offset {
                inode = Some(inode_of(&meta));
                offset = 0;
            }
            if meta.len() == offset {
                continue;
            }
            let chunk = (|| {
                let mut f = std::fs::File::open(&path)?;
                f.seek(SeekFrom::Start(offset))?;
                let mut buf = Vec::new();
                f.take(TAIL_WINDOW).read_to_end(&mut buf)?;
                Ok::<_, std::io::Error>(buf)
            })();
            match chunk {
                Ok(buf) if buf.is_empty() => {}
                Ok(buf) => {
                    offset += buf.len() as u64;
                    if tx.send(Ok(Bytes::from(buf))).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
}

fn inode_of(m: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_reach_into_the_rotated_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.log.1"), "a\nb\nc\n").unwrap();
        std::fs::write(dir.path().join("app.log"), "d\ne\n").unwrap();
        assert_eq!(last_lines(dir.path(), 1).unwrap().0, "e\n");
        assert_eq!(last_lines(dir.path(), 4).unwrap().0, "b\nc\nd\ne\n");
        assert_eq!(
            last_lines(dir.path(), 100).unwrap(),
            ("a\nb\nc\nd\ne\n".into(), 4)
        );
    }

    #[test]
    fn a_missing_log_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(last_lines(dir.path(), 10).unwrap(), (String::new(), 0));
    }

    #[tokio::test]
    async fn following_sees_appends_and_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        std::fs::write(&log, "old\n").unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        follow(dir.path().to_owned(), 4, tx);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"new\n"))
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert_eq!(got.unwrap().unwrap().unwrap(), Bytes::from_static(b"new\n"));
        std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
        std::fs::write(&log, "rotated\n").unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert_eq!(
            got.unwrap().unwrap().unwrap(),
            Bytes::from_static(b"rotated\n")
        );
    }
}
