//! `profiled`: the daemon, and offline maintenance that needs no daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use profiled::config::Config;

/// How long a stopping daemon waits for blocking tasks still running once
/// its own shutdown is done (the agent scheduler bounded its wait already).
const RUNTIME_STOP: std::time::Duration = std::time::Duration::from_secs(5);

// Every API answer allocates and frees many small buffers on the async
// threads; mimalloc's per-thread free lists make that cheaper than glibc's
// arenas (docs/BENCHMARKS.md, "Requests").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Per-account AI-assistant profiles on a shared Linux host.
#[derive(Parser)]
#[command(
    version,
    long_about = "profiled gives every eligible Linux account a profile directory, \
        profiles/<user>/ (0700, owned by the account), and serves a local HTTP API on a \
        Unix socket (the kernel says who is calling) and on loopback TCP (PAM logins, \
        bearer tokens). It runs agents over every profile as each user. It runs as root \
        under systemd (profiled.service); profilectl(1) is its client.",
    after_long_help = "Files: /etc/profiled/profiled.toml (profiled.toml(5)), \
        /etc/profiled/agents.d/*.toml, /etc/pam.d/profiled, /var/lib/profiled (state and \
        profiles), /run/profiled/api.sock.\n\
        Signals: SIGTERM and SIGINT stop, SIGHUP reloads the config.\n\
        Logs: standard error, or the journal (journalctl -u profiled); PROFILED_LOG sets \
        the filter.\n\
        More: /usr/share/doc/profiled/ (OPERATIONS.md, CONFIG.md, API.md, AUTH.md)."
)]
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
    /// Write profiled(8) and a page per subcommand into DIR, for packaging.
    #[command(hide = true)]
    ManPages {
        /// Where to write them.
        dir: PathBuf,
    },
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
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                // The admins' agent declarations too: the daemon would only
                // log a broken one, keeping that file's previous agents.
                let problems = profiled::agents::catalog::check_dir(&c.paths.agents_dir);
                for problem in &problems {
                    eprintln!("profiled: {problem}");
                }
                if !problems.is_empty() {
                    return ExitCode::FAILURE;
                }
                println!("{source}: ok");
                println!("{}: ok", c.paths.agents_dir.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("profiled: {e}");
                ExitCode::FAILURE
            }
        },
        Command::ManPages { dir } => match profiled::manpages::write(Args::command(), "8", &dir) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!(
                    "profiled: cannot write the manual pages into {}: {e}",
                    dir.display()
                );
                ExitCode::FAILURE
            }
        },
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
            let result = runtime.block_on(profiled::daemon::run(args.config));
            // Dropping the runtime would wait for every blocking task
            // without limit; the daemon has already waited for its runs
            // as long as it should.
            runtime.shutdown_timeout(RUNTIME_STOP);
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("profiled: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
