//! Manual pages from the clap definitions (clap_mangen): one page for the
//! program and one for each visible subcommand (`profilectl-capture(1)`),
//! so they cannot drift from the commands. packaging/build-deb asks each
//! binary for them through its hidden `man-pages DIR` subcommand.

use std::path::{Path, PathBuf};

/// Writes the pages of `cmd` and its visible subcommands, in manual
/// `section`, into `dir`; the files written.
pub fn write(cmd: clap::Command, section: &str, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut cmd = cmd.disable_help_subcommand(true);
    // Gives each subcommand its display name ("profilectl-capture").
    cmd.build();
    let mut written = Vec::new();
    write_tree(cmd, section, dir, &mut written)?;
    Ok(written)
}

fn write_tree(
    cmd: clap::Command,
    section: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
        write_tree(sub, section, dir, written)?;
    }
    written.push(
        clap_mangen::Man::new(cmd)
            .section(section)
            .generate_to(dir)?,
    );
    Ok(())
}
