//! Shell completions and man pages, generated from the same clap definitions as `--help`
//! so they cannot drift from it.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::cli::Cli;

/// Print the completion script for `shell` to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "lakestream", out);
}

/// Write `lakestream.1` and `lakestream-<command>.1` for every command into `dir`;
/// returns the files written.
pub fn man_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let cmd = Cli::command();
    let mut written = vec![render(&cmd, dir, "lakestream")?];
    for sub in cmd.get_subcommands() {
        let name = format!("lakestream-{}", sub.get_name());
        let sub = sub.clone().name(name.clone());
        written.push(render(&sub, dir, &name)?);
    }
    Ok(written)
}

fn render(cmd: &clap::Command, dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, page)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_and_man_pages_cover_every_command() {
        let mut script = Vec::new();
        completions(clap_complete::Shell::Bash, &mut script);
        let script = String::from_utf8(script).expect("utf-8");
        let dir = tempfile::tempdir().expect("tempdir");
        let pages = man_pages(dir.path()).expect("man pages");
        for sub in Cli::command().get_subcommands() {
            assert!(
                script.contains(sub.get_name()),
                "{} not completed",
                sub.get_name()
            );
            let page = dir.path().join(format!("lakestream-{}.1", sub.get_name()));
            assert!(pages.contains(&page), "no page for {}", sub.get_name());
        }
        let main = std::fs::read_to_string(dir.path().join("lakestream.1")).expect("page");
        assert!(main.contains(".TH lakestream") && main.contains("\\-\\-config"));
    }
}
