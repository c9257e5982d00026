//! `profilectl completions SHELL` and the hidden `profilectl man-page`:
//! both are generated from the clap definitions in args.rs, so they cannot
//! drift from the commands. packaging/build-deb writes them into the
//! package.

use clap::CommandFactory;

use crate::Failure;
use crate::args::Args;

/// Prints the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Args::command(), "profilectl", &mut out);
    write_stdout(&out)
}

/// Prints profilectl(1).
pub fn man_page() -> Result<(), Failure> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Args::command())
        .section("1")
        .render(&mut out)
        .map_err(|e| Failure::Failed(format!("cannot render the manual page: {e}")))?;
    write_stdout(&out)
}

fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
    use std::io::Write;
    std::io::stdout()
        .write_all(bytes)
        .map_err(|e| Failure::Failed(format!("cannot write to standard output: {e}")))
}
