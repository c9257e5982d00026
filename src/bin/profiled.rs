//! `profiled`: the daemon, and offline maintenance that needs no daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use profiled::config::Config;

// Every API answer allocates and frees many small buffers on the async
// threads; mimalloc's per-thread free lists make that cheaper than glibc's
// arenas (docs/BENCHMARKS.md, "Requests").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Per-account AI-assistant profiles on a shared Linux host.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The system config (default /etc/profiled/profiled.toml, or the
    /// built-in defaults when that file does not exist).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground (the default).
    Run,
    /// Validate the config and exit 0 (valid) or 1 (invalid, with file:line).
    CheckConfig,
    /// Re-encrypt credentials under new daemon identities; the old ones are
    /// removed once the new files are safely written. Needs root, not the
    /// daemon.
    RotateKeys {
        /// Only this account's identity (default: every identity, the host's too).
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    /// Print the profiled(8) manual page (roff), for packaging.
    #[command(hide = true)]
    ManPage,
    /// Started by the daemon itself: kills the agents' process groups
    /// still running when the daemon dies (see src/agents/guard.rs).
    #[command(hide = true)]
    AgentGuard,
}

fn main() -> ExitCode {
    let args = Args::parse();
    profiled::logging::init();
    match args.command.unwrap_or(Command::Run) {
        Command::CheckConfig => match Config::load_or_default(args.config.as_deref()) {
            Ok(c) => {
                let source = c
                    .source
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                println!("{source}: ok");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("profiled: {e}");
                ExitCode::FAILURE
            }
        },
        Command::ManPage => {
            let mut out = Vec::new();
            let rendered = clap_mangen::Man::new(Args::command())
                .section("8")
                .render(&mut out)
                .and_then(|()| std::io::Write::write_all(&mut std::io::stdout(), &out));
            match rendered {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("profiled: cannot write the manual page: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::AgentGuard => {
            profiled::agents::guard::run_guard();
            ExitCode::SUCCESS
        }
        Command::RotateKeys { user } => {
            profiled::creds::rotate_keys_cli(args.config.as_deref(), user.as_deref())
        }
        Command::Run => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("profiled: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(profiled::daemon::run(args.config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("profiled: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
