//! `profilectl completions SHELL` and the hidden `profilectl man-pages DIR`:
//! both are generated from the clap definitions in args.rs, so they cannot
//! drift from the commands. packaging/build-deb writes them into the
//! package.

use std::path::Path;

use clap::CommandFactory;

use crate::Failure;
use crate::args::Args;

/// Prints the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Args::command(), "profilectl", &mut out);
    write_stdout(&out)
}

/// Writes profilectl(1) and a page per subcommand into `dir`.
pub fn man_pages(dir: &Path) -> Result<(), Failure> {
    profiled::manpages::write(Args::command(), "1", dir)
        .map(drop)
        .map_err(|e| {
            Failure::Failed(format!(
                "cannot write the manual pages into {}: {e}",
                dir.display()
            ))
        })
}

fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
    use std::io::Write;
    std::io::stdout()
        .write_all(bytes)
        .map_err(|e| Failure::Failed(format!("cannot write to standard output: {e}")))
}
