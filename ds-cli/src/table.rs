//! Human output: aligned tables and key/value blocks, and the units people
//! read (MiB, durations, UTC times).

use std::time::{Duration, UNIX_EPOCH};

/// Prints `rows` under `headers`, columns padded to their widest cell.
pub fn print(headers: &[&str], rows: &[Vec<String>]) {
    print!("{}", render(headers, rows));
}

fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Prints `key: value` lines with the values aligned.
pub fn print_pairs(pairs: &[(&str, String)]) {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    for (k, v) in pairs {
        println!("{:<width$} {v}", format!("{k}:"));
    }
}

/// Bytes as MiB (or KiB when small).
pub fn size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        let mib = bytes as f64 / (1u64 << 20) as f64;
        if mib.fract() == 0.0 {
            format!("{mib:.0} MiB")
        } else {
            format!("{mib:.1} MiB")
        }
    } else {
        format!("{} KiB", bytes.div_ceil(1024))
    }
}

/// Seconds as a short duration (`3h 2m`).
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// Unix seconds as a UTC time.
pub fn time(unix: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let out = render(
            &["NAME", "STATUS"],
            &[
                vec!["a".into(), "running".into()],
                vec!["longer-name".into(), "stopped".into()],
            ],
        );
        assert_eq!(
            out,
            "NAME         STATUS\na            running\nlonger-name  stopped\n"
        );
    }

    #[test]
    fn units() {
        assert_eq!(size(256 << 20), "256 MiB");
        assert_eq!(size(3 << 19), "1.5 MiB");
        assert_eq!(size(1000), "1 KiB");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(61), "1m 1s");
        assert_eq!(duration(7322), "2h 2m");
        assert_eq!(duration(90000), "1d 1h");
        assert_eq!(time(1_795_341_600), "2026-11-22T10:00:00Z");
    }
}
