//! `ds-docgen OUT`: the man pages (`OUT/man/*.8`) and shell completions
//! (`OUT/completions/`, bash, zsh and fish) of `dsctl` and `ds-host`,
//! generated from the same clap definitions the binaries parse, so they
//! cannot drift from them. `dsctl`'s subcommands get a page each
//! (`dsctl-appspace.8`, ...), as git's do.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> anyhow::Result<()> {
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .context("usage: ds-docgen OUT_DIR")?;
    let man = out.join("man");
    let completions = out.join("completions");
    for dir in [&man, &completions] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    for mut cmd in [ds_cli::cli::Cli::command(), ds_host::cli::Cli::command()] {
        let name = cmd.get_name().to_owned();
        cmd.build();
        write_pages(&cmd, &name, &man)?;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            clap_complete::generate_to(shell, &mut cmd, &name, &completions)
                .with_context(|| format!("writing {name}'s {shell} completion"))?;
        }
    }
    Ok(())
}

/// `NAME.8`, and one page per subcommand (`NAME-SUB.8`), recursively.
fn write_pages(cmd: &clap::Command, name: &str, dir: &Path) -> anyhow::Result<()> {
    let path = dir.join(format!("{name}.8"));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone().name(name.to_owned()))
        .section("8")
        .manual("ds")
        .render(&mut page)
        .with_context(|| format!("rendering {name}'s man page"))?;
    std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(())
}
