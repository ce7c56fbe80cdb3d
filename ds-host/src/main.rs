//! `ds-host`: the daemon. Serving lands with the host issue; until then
//! the binary says so instead of pretending to run.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "ds-host {}: the daemon is not built yet (see the host issue); \
         `ds-sandbox exec` is the runnable part of ds today",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(2)
}
