//! Descriptors: nothing crosses into the sandbox but stdio and the ones a
//! stage names.

use std::io;
use std::os::fd::RawFd;

/// Closes every descriptor >= 3 except `keep`.
pub fn close_all_except(keep: &[RawFd]) -> io::Result<()> {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|&fd| fd >= 3).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut first: u32 = 3;
    for fd in keep {
        let fd = fd as u32;
        if fd > first {
            close_range(first, fd - 1)?;
        }
        first = fd + 1;
    }
    close_range(first, u32::MAX)
}

fn close_range(first: u32, last: u32) -> io::Result<()> {
    // Every descriptor a live object owns is in `keep` (callers' contract).
    crate::sys::close_range(first, last)
}
