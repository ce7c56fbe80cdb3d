//! Reading `/proc/self/mountinfo`: which mount holds a path, and with
//! which file system options.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// One line of mountinfo, as far as we need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    /// `major:minor` of the file system.
    pub dev: (u32, u32),
    /// Where it is mounted.
    pub point: String,
    /// Its type (`ext4`, `xfs`...).
    pub fstype: String,
    /// Its source (`/dev/sda1`, `/dev/loop3`).
    pub source: String,
    /// The file system's own options (`rw,prjquota`).
    pub super_options: Vec<String>,
}

/// Parses mountinfo text (see proc(5)); lines it cannot read are skipped.
pub(crate) fn parse(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            let (major, minor) = left.get(2)?.split_once(':')?;
            Some(Mount {
                dev: (major.parse().ok()?, minor.parse().ok()?),
                point: unescape(left.get(4)?),
                fstype: right.first()?.to_string(),
                source: unescape(right.get(1)?),
                super_options: right.get(2)?.split(',').map(str::to_owned).collect(),
            })
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount holding `path` (by its device number).
pub(crate) fn holding(path: &Path) -> Result<Mount, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let dev = meta.dev();
    let want = (rustix::fs::major(dev), rustix::fs::minor(dev));
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    parse(&text)
        .into_iter()
        .rev()
        .find(|m| m.dev == want)
        .ok_or_else(|| format!("no mount holds {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_with_their_options_and_escapes() {
        let text =
            "36 35 98:0 / /mnt/my\\040disk rw,noatime master:1 - ext4 /dev/loop3 rw,prjquota\n\
                    garbage\n\
                    37 35 0:5 / /proc rw - proc proc rw\n";
        let m = parse(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].dev, (98, 0));
        assert_eq!(m[0].point, "/mnt/my disk");
        assert_eq!(m[0].fstype, "ext4");
        assert_eq!(m[0].source, "/dev/loop3");
        assert!(m[0].super_options.iter().any(|o| o == "prjquota"));
        assert_eq!(m[1].fstype, "proc");
    }
}
