//! `dsctl`: talks to ds-host's admin socket. The admin API lands with the
//! dsctl issue; until then the binary says so instead of pretending.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "dsctl {}: the admin API is not built yet (see the dsctl issue)",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(2)
}
