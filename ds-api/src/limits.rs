//! Resource limits: the one definition of each bound, and the parsers
//! that enforce them. `ds-sandbox`'s flags, the manifest's requests, the
//! admin API and `dsctl` all check through these, so a value one accepts
//! the others accept too.

use std::ops::RangeInclusive;

/// Memory an appspace may be given, in bytes: below 16 MiB nothing useful
/// starts; 1 TiB is more than the machines ds targets have.
pub const MEMORY: RangeInclusive<u64> = (16 << 20)..=(1 << 40);
/// CPU share, in cores.
pub const CPUS: RangeInclusive<f64> = 0.01..=1024.0;
/// Tasks (processes and threads) at once.
pub const PIDS: RangeInclusive<u64> = 1..=1_000_000;
/// Disk space for an appspace's data, in bytes: a file system of its own
/// needs a few MiB for itself; 64 TiB is past any disk ds targets.
pub const DISK: RangeInclusive<u64> = (16 << 20)..=(64 << 40);
/// Size of the sandbox's `/tmp`, in bytes.
pub const TMP: RangeInclusive<u64> = (1 << 20)..=(64 << 30);

/// Parses sizes like `64M`, `1G`, `512k`, `100MiB`, `1048576` (bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "invalid size {text:?}: expected a number with an optional K/M/G/T suffix"
        ));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid size {text:?}: number too large"))?;
    let shift = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => {
            return Err(format!(
                "invalid size {text:?}: unknown unit {unit:?} (use K, M, G or T)"
            ))
        }
    };
    n.checked_mul(1u64 << shift)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("invalid size {text:?}: must be between 1 byte and 16 EiB"))
}

fn mib_or_gib(bytes: u64) -> String {
    if bytes >= 1 << 40 && bytes % (1 << 40) == 0 {
        format!("{}T", bytes >> 40)
    } else if bytes >= 1 << 30 && bytes % (1 << 30) == 0 {
        format!("{}G", bytes >> 30)
    } else {
        format!("{}M", bytes >> 20)
    }
}

fn within_size(what: &str, bytes: u64, range: &RangeInclusive<u64>) -> Result<u64, String> {
    if range.contains(&bytes) {
        Ok(bytes)
    } else {
        Err(format!(
            "{what} of {bytes} bytes: must be between {} and {}",
            mib_or_gib(*range.start()),
            mib_or_gib(*range.end())
        ))
    }
}

/// Checks a memory limit in bytes.
pub fn check_memory(bytes: u64) -> Result<u64, String> {
    within_size("memory", bytes, &MEMORY)
}

/// Checks a disk limit in bytes.
pub fn check_disk(bytes: u64) -> Result<u64, String> {
    within_size("disk", bytes, &DISK)
}

/// Parses and checks a disk limit (`512M`, `20G`).
pub fn parse_disk(text: &str) -> Result<u64, String> {
    check_disk(parse_size(text)?)
}

/// Parses and checks a memory limit (`256M`, `1G`).
pub fn parse_memory(text: &str) -> Result<u64, String> {
    check_memory(parse_size(text)?)
}

/// Parses and checks a `/tmp` size.
pub fn parse_tmp(text: &str) -> Result<u64, String> {
    within_size("/tmp", parse_size(text)?, &TMP)
}

/// Checks a CPU share.
pub fn check_cpus(cpus: f64) -> Result<f64, String> {
    if CPUS.contains(&cpus) {
        Ok(cpus)
    } else {
        Err(format!(
            "CPU share {cpus}: must be between {} and {}",
            CPUS.start(),
            CPUS.end()
        ))
    }
}

/// Parses and checks a CPU share like `0.5` or `2`.
pub fn parse_cpus(text: &str) -> Result<f64, String> {
    let v: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("invalid CPU share {text:?}: expected a number like 0.5"))?;
    check_cpus(v)
}

/// Checks a task limit.
pub fn check_pids(pids: u64) -> Result<u64, String> {
    if PIDS.contains(&pids) {
        Ok(pids)
    } else {
        Err(format!(
            "pids {pids}: must be between {} and {}",
            PIDS.start(),
            PIDS.end()
        ))
    }
}

/// Parses and checks a task limit.
pub fn parse_pids(text: &str) -> Result<u64, String> {
    let v: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("invalid task limit {text:?}: expected a whole number"))?;
    check_pids(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("100MiB"), Ok(100 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        for bad in [
            "",
            "M",
            "-1M",
            "1.5G",
            "10P",
            "0",
            "99999999999999999999G",
            "64 M",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bounds_are_enforced() {
        assert_eq!(parse_memory("16M"), Ok(16 << 20));
        assert_eq!(parse_memory("1024G"), Ok(1 << 40));
        let low = parse_memory("15M").unwrap_err();
        assert!(low.contains("between 16M and 1T"), "{low}");
        assert!(parse_memory("1025G").is_err());
        assert_eq!(parse_cpus("0.5"), Ok(0.5));
        for bad in ["", "0", "-1", "abc", "1e9", "NaN", "0.001"] {
            assert!(parse_cpus(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_pids("64"), Ok(64));
        for bad in ["0", "1000001", "-1", "x"] {
            assert!(parse_pids(bad).is_err(), "{bad:?}");
        }
        assert!(parse_tmp("512K").is_err());
        assert_eq!(parse_disk("64T"), Ok(64 << 40));
        assert!(parse_disk("15M").is_err());
        assert_eq!(parse_tmp("64M"), Ok(64 << 20));
    }
}
