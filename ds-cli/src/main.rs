//! `dsctl`: the admin command line for ds-host. It talks HTTP/JSON to the
//! host's admin socket; `--json` prints the API's answers as they are,
//! otherwise tables. Exit status 0 on success; on failure a one-line
//! reason on stderr and status 1 (2 for bad arguments).

use ds_cli::cli;
mod client;
mod commands;
mod package;
mod table;

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Parser;

use crate::cli::Cli;
use crate::client::ClientError;

/// The admin socket: `--socket`, `$DS_ADMIN_SOCKET`, the config file's
/// `[admin] socket`, or the default.
fn socket_path(cli: &Cli) -> PathBuf {
    if let Some(s) = &cli.socket {
        return s.clone();
    }
    if let Some(s) = std::env::var_os("DS_ADMIN_SOCKET") {
        return PathBuf::from(s);
    }
    configured_socket(&cli.config).unwrap_or_else(|| PathBuf::from(ds_api::DEFAULT_ADMIN_SOCKET))
}

/// `[admin] socket` in the host's config file, if it is readable and set.
fn configured_socket(config: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(config).ok()?;
    let value: toml::Table = toml::from_str(&text).ok()?;
    let socket = value.get("admin")?.get("socket")?.as_str()?;
    Some(PathBuf::from(socket))
}

fn main() {
    let cli = Cli::parse();
    let socket = socket_path(&cli);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dsctl: starting: {e}");
            std::process::exit(1);
        }
    };
    let json = cli.json;
    match runtime.block_on(commands::run(cli, &socket)) {
        Ok(()) => {}
        Err(e) => {
            if json {
                let code = match &e {
                    ClientError::Api(body) => {
                        serde_json::to_value(body.error.code).unwrap_or_default()
                    }
                    ClientError::NotRunning(_) => "not_running".into(),
                    ClientError::Denied(_) => "forbidden".into(),
                    _ => "client".into(),
                };
                let body = serde_json::json!({"error": {"code": code, "message": e.to_string()}});
                println!("{body}");
            }
            let _ = std::io::stdout().flush();
            eprintln!("dsctl: {e}");
            std::process::exit(1);
        }
    }
}
