//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Where `--help` lists the options every command takes, apart from the
/// command's own.
const GLOBAL: &str = "Global options";

/// The top-level `--help`'s examples.
const EXAMPLES: &str = "\
Examples:
  profilectl status --check                  who you are; exit 1 if a file needs fixing
  profilectl capture -t work \"Met Bob about the migration\"
  echo \"a longer note\" | profilectl capture -
  profilectl remember 'migration AND bob'    search memories and tasks
  profilectl task add \"Write the report\" --due 2026-12-24
  profilectl task list --status todo
  profilectl task start ID                   also: done, cancel, edit, rm
  profilectl events | head -5                live changes of your profile
  profilectl --json memories --limit 5       JSON for scripts

Exit status: 0 ok, 1 the daemon refused or the command failed, 2 usage,
3 the daemon could not be reached (docs/OPERATIONS.md, \"profilectl\").";

/// profilectl: your profiled profile from the shell. The daemon knows who
/// you are from the socket; no password is needed.
#[derive(Parser)]
// The package's name is profiled; the command's is not.
#[command(name = "profilectl", version, after_help = EXAMPLES)]
pub struct Args {
    /// The daemon's socket.
    #[arg(long, global = true, env = "PROFILED_SOCKET", default_value = profiled::client::DEFAULT_SOCKET, help_heading = GLOBAL)]
    pub socket: PathBuf,
    /// Act on another account's profile (admins only).
    #[arg(long, global = true, value_name = "NAME", help_heading = GLOBAL)]
    pub user: Option<String>,
    /// Print JSON instead of text (errors too, on standard error).
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Who you are, your profile, and any files in it that need fixing.
    Status {
        /// Exit 1 when a file needs fixing (for scripts and monitoring).
        #[arg(long)]
        check: bool,
    },
    /// Capture a memory: TEXT, or `-` to read it from standard input.
    Capture {
        /// The text, or `-` for standard input.
        text: String,
        /// A tag (repeatable).
        #[arg(long = "tag", short)]
        tags: Vec<String>,
    },
    /// List memories, newest first (also `memory list`).
    Memories(MemoryPage),
    /// Search your memories and tasks: ranked hits with snippets. QUERY
    /// takes words, "quoted phrases", AND/OR/NOT and tags:NAME.
    Remember {
        /// What to look for.
        query: String,
        /// How many hits.
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// List memories, show or remove one.
    #[command(subcommand)]
    Memory(MemoryCommand),
    /// Tasks.
    #[command(subcommand)]
    Task(TaskCommand),
    /// The assistant's persona: shows it, or `persona set KEY VALUE`.
    Persona {
        #[command(subcommand)]
        command: Option<PersonaCommand>,
    },
    /// Profiles on this host (admins).
    #[command(subcommand)]
    Profile(ProfileCommand),
    /// Your provider API keys, encrypted with age in credentials.age.
    #[command(subcommand)]
    Creds(crate::creds::CredsCommand),
    /// Agents: list them, run one now, read its run log.
    #[command(subcommand)]
    Agent(crate::agent::AgentCommand),
    /// Personal tokens for scripts on loopback TCP, and your sessions.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The team's shared knowledge: add, list, show, remove entries.
    #[command(subcommand)]
    Knowledge(crate::knowledge::KnowledgeCommand),
    /// The settings in force (the last valid profile.toml) and, when the
    /// file is broken, where and why.
    Settings,
    /// Print your profile's changes as they happen (`--json`: one JSON
    /// object per line); reconnects and catches up by itself.
    Events {
        /// Start after this event id (what a previous run printed last).
        #[arg(long, value_name = "ID")]
        last_event_id: Option<u64>,
    },
    /// Print the completion script for SHELL (bash, zsh, fish, elvish,
    /// powershell), e.g. `source <(profilectl completions bash)`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write profilectl(1) and a page per subcommand into DIR, for
    /// packaging.
    #[command(hide = true)]
    ManPages {
        /// Where to write them.
        dir: PathBuf,
    },
    /// Send a raw request, e.g. `profilectl api GET /v1/me`; prints the body,
    /// exits 1 on an error status.
    Api {
        /// GET, POST, PUT, PATCH or DELETE.
        #[arg(value_parser = ["GET", "POST", "PUT", "PATCH", "DELETE", "get", "post", "put", "patch", "delete"])]
        method: String,
        /// The path and query, e.g. /v1/tasks?status=todo.
        path: String,
        /// A JSON body.
        body: Option<String>,
    },
}

/// Which page of memories.
#[derive(clap::Args)]
pub struct MemoryPage {
    /// How many.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Start after this id (the `next` of a previous page).
    #[arg(long)]
    pub before: Option<String>,
}

#[derive(Subcommand)]
pub enum MemoryCommand {
    /// List memories, newest first (as `memories`).
    List(MemoryPage),
    /// Show a memory.
    Show {
        /// Its id.
        id: String,
    },
    /// Delete a memory.
    Rm {
        /// Its id.
        id: String,
    },
}

#[derive(Subcommand)]
pub enum TaskCommand {
    /// Add a task.
    Add {
        /// A one-line title.
        title: String,
        /// Due date, e.g. 2026-12-01.
        #[arg(long)]
        due: Option<String>,
        /// A tag (repeatable).
        #[arg(long = "tag", short)]
        tags: Vec<String>,
    },
    /// List tasks, newest first.
    List {
        /// Only tasks in this status.
        #[arg(long, value_enum)]
        status: Option<TaskStatusArg>,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Start after this id (the `next` of a previous page).
        #[arg(long)]
        before: Option<String>,
    },
    /// Mark a task in progress.
    Start {
        /// Its id.
        id: String,
    },
    /// Mark a task done.
    Done {
        /// Its id.
        id: String,
    },
    /// Mark a task cancelled (kept, unlike `rm`).
    Cancel {
        /// Its id.
        id: String,
    },
    /// Change a task's title, notes, due date or tags; what is not given
    /// stays as it is.
    Edit {
        /// Its id.
        id: String,
        /// A new one-line title.
        #[arg(long)]
        title: Option<String>,
        /// New notes (replacing the old).
        #[arg(long)]
        notes: Option<String>,
        /// A new due date, e.g. 2026-12-01; "" removes it.
        #[arg(long)]
        due: Option<String>,
        /// The tags (repeatable; replaces them all).
        #[arg(long = "tag", short)]
        tags: Option<Vec<String>>,
    },
    /// Delete a task.
    Rm {
        /// Its id.
        id: String,
    },
}

#[derive(Subcommand)]
pub enum PersonaCommand {
    /// Show the persona.
    Show,
    /// Set one key: name, pronouns, identity, tone, language, or values
    /// (comma-separated).
    Set {
        /// The key.
        key: String,
        /// The value; empty removes it.
        value: String,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token (printed once: store it now).
    Create {
        /// What it is for.
        name: String,
        /// Lifetime in days (default: auth.token_max_lifetime).
        #[arg(long)]
        days: Option<u64>,
    },
    /// List your sessions and tokens (never the secrets).
    List,
    /// Revoke a session or token by id, or all of them.
    Revoke {
        /// Its id (from `token list`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Revoke every session and token.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
pub enum ProfileCommand {
    /// List the profiles directory with each entry's state.
    List,
    /// Create a profile for an eligible account.
    Create {
        /// The account.
        name: String,
    },
    /// Hand a conflicting profile to the current account of that name.
    Adopt {
        /// The account.
        name: String,
    },
}

/// A task status as the command line takes it (the API's names).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TaskStatusArg {
    /// Not started.
    Todo,
    /// Being worked on.
    #[value(name = "in_progress")]
    InProgress,
    /// Finished.
    Done,
    /// Dropped.
    Cancelled,
}

impl From<TaskStatusArg> for profiled::store::TaskStatus {
    fn from(s: TaskStatusArg) -> Self {
        match s {
            TaskStatusArg::Todo => Self::Todo,
            TaskStatusArg::InProgress => Self::InProgress,
            TaskStatusArg::Done => Self::Done,
            TaskStatusArg::Cancelled => Self::Cancelled,
        }
    }
}
