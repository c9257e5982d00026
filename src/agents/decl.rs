//! Agent declarations: the `[agents.NAME]` tables of an agents.d file or of
//! a user's `profile.toml`, validated while they are parsed so every error
//! carries the file, line and key.

use std::collections::BTreeMap;
use std::ops::Range;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::config::parse_duration;

/// The built-in agents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builtin {
    /// Inbox files to memories.
    Ingest,
    /// The search index.
    Index,
    /// Tags new memories with the user's model.
    Organize,
}

impl Builtin {
    /// The name written in declarations.
    pub fn as_str(self) -> &'static str {
        match self {
            Builtin::Ingest => "ingest",
            Builtin::Index => "index",
            Builtin::Organize => "organize",
        }
    }
}

/// What a run executes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Code in the daemon.
    Builtin(Builtin),
    /// A program run as the user: argv[0] and its arguments (with `shell`,
    /// `/bin/sh -c TEXT`).
    Command(Vec<String>),
}

/// When cycles start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// At every multiple of this interval since the Unix epoch, so every
    /// daemon sharing a lock directory picks the same slots.
    Every(Duration),
    /// At the times a cron expression (UTC) names.
    Cron(String),
}

/// One agent as declared and validated (an admin's or a user's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// What runs.
    pub action: Action,
    /// When cycles start; `None`: on triggers and on demand only.
    pub schedule: Option<Schedule>,
    /// Globs over paths relative to the profile (`memory/inbox/**`).
    pub on_change: Vec<String>,
    /// A run's limit; `None`: `[agents] default_timeout`.
    pub timeout: Option<Duration>,
    /// The providers whose keys the run may see.
    pub credentials: Vec<String>,
    /// Environment variable to provider, for agents that want the key in
    /// the environment.
    pub env: BTreeMap<String, String>,
    /// Admins only: users cannot switch it off.
    pub required: bool,
    /// A line for `profilectl agent list`.
    pub description: Option<String>,
}

/// An `[agents.NAME]` table: a declaration, or (in a user's profile.toml)
/// `enabled = false` switching an admin's agent off for that user.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawSpec")]
pub enum Entry {
    /// An agent.
    Agent(Box<Spec>),
    /// Only `enabled`: an override of an admin's agent of the same name.
    Enabled(bool),
}

/// The command: argv, or a shell line with `shell = true`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawCommand {
    Line(String),
    Argv(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    builtin: Option<String>,
    command: Option<RawCommand>,
    #[serde(default)]
    shell: bool,
    every: Option<String>,
    cron: Option<String>,
    #[serde(default)]
    on_change: Vec<String>,
    timeout: Option<String>,
    #[serde(default)]
    credentials: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    required: bool,
    enabled: Option<bool>,
    description: Option<String>,
}

/// Variables the daemon sets itself; a declaration may not override them.
const RESERVED_ENV: &[&str] = &[
    "HOME",
    "USER",
    "LOGNAME",
    "PATH",
    "SHELL",
    "PROFILE_DIR",
    "CREDENTIALS_DIRECTORY",
];

impl TryFrom<RawSpec> for Entry {
    type Error = String;

    fn try_from(r: RawSpec) -> Result<Entry, String> {
        let action = match (r.builtin, r.command) {
            (None, None) => {
                return match r.enabled {
                    Some(on) if r.every.is_none() && r.cron.is_none() && r.on_change.is_empty() => {
                        Ok(Entry::Enabled(on))
                    }
                    _ => Err("give `builtin = \"ingest\"|\"index\"|\"organize\"` or `command = [\"program\", \"arg\"]`".into()),
                };
            }
            (Some(_), Some(_)) => {
                return Err("give either `builtin` or `command`, not both".into());
            }
            (Some(b), None) => Action::Builtin(match b.as_str() {
                "ingest" => Builtin::Ingest,
                "index" => Builtin::Index,
                "organize" => Builtin::Organize,
                other => {
                    return Err(format!(
                        "builtin {other:?} does not exist; write \"ingest\", \"index\" or \"organize\""
                    ));
                }
            }),
            (None, Some(RawCommand::Line(line))) if r.shell => {
                if line.trim().is_empty() {
                    return Err("command is empty".into());
                }
                Action::Command(vec!["/bin/sh".into(), "-c".into(), line])
            }
            (None, Some(RawCommand::Line(_))) => {
                return Err("command is a string: write it as an argv list (`command = [\"/usr/bin/prog\", \"arg\"]`) or add `shell = true` to run it with /bin/sh -c".into());
            }
            (None, Some(RawCommand::Argv(argv))) => {
                if r.shell {
                    return Err("with `shell = true`, write the command as one string".into());
                }
                match argv.first() {
                    None => return Err("command is empty; name a program".into()),
                    Some(p) if p.is_empty() => return Err("command's program is empty".into()),
                    Some(_) => {}
                }
                if argv.iter().any(|a| a.contains('\0')) {
                    return Err("command contains a NUL byte".into());
                }
                Action::Command(argv)
            }
        };
        if r.enabled == Some(false) {
            return Err("`enabled = false` belongs in a user's override; remove the agent's table to stop it".into());
        }
        let schedule = match (r.every, r.cron) {
            (Some(_), Some(_)) => {
                return Err("cron = ..: give either `every` or `cron`, not both".into());
            }
            (Some(every), None) => Some(Schedule::Every(parse_duration(&every).ok_or_else(
                || {
                    format!(
                        "every = {every:?} is not a duration; write e.g. \"90s\", \"15m\", \"8h\""
                    )
                },
            )?)),
            (None, Some(cron)) => {
                croner::Cron::from_str(&cron).map_err(|e| {
                    format!(
                        "cron = {cron:?} is not a cron expression ({e}); write e.g. \"*/5 * * * *\""
                    )
                })?;
                Some(Schedule::Cron(cron))
            }
            (None, None) => None,
        };
        for glob in &r.on_change {
            globset::Glob::new(glob)
                .map_err(|e| format!("on_change = [.., {glob:?}]: not a glob: {e}"))?;
        }
        let timeout = match r.timeout {
            Some(t) => Some(parse_duration(&t).ok_or_else(|| {
                format!("timeout = {t:?} is not a duration; write e.g. \"30s\", \"10m\"")
            })?),
            None => None,
        };
        for p in &r.credentials {
            if !is_provider_name(p) {
                return Err(format!(
                    "credentials = [.., {p:?}]: not a provider name (letters, digits, - and _)"
                ));
            }
        }
        for (var, provider) in &r.env {
            if !is_env_name(var)
                || RESERVED_ENV.contains(&var.as_str())
                || var.starts_with("PROFILED_")
            {
                return Err(format!(
                    "env = {{ {var} = .. }}: {var} cannot be set by a declaration; pick another variable name"
                ));
            }
            if !r.credentials.contains(provider) {
                return Err(format!(
                    "env = {{ {var} = {provider:?} }}: add {provider:?} to `credentials` first (env only maps keys the agent may see)"
                ));
            }
        }
        Ok(Entry::Agent(Box::new(Spec {
            action,
            schedule,
            on_change: r.on_change,
            timeout,
            credentials: r.credentials,
            env: r.env,
            required: r.required,
            description: r.description,
        })))
    }
}

/// Narrows `span` (what the TOML parser blames: for a declaration's own
/// checks, its whole table) to the line of the key `message` starts with,
/// so errors name the line of `every = …`, not of `[agents.x]`.
pub fn narrow_span(text: &str, span: Range<usize>, message: &str) -> Range<usize> {
    let key: String = message
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if key.is_empty() {
        return span;
    }
    // The table runs from the blamed place to the next header.
    let line_start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let mut offset = line_start;
    for (i, line) in text[line_start..].split_inclusive('\n').enumerate() {
        let trimmed = line.trim_start();
        if i > 0 && trimmed.starts_with('[') {
            break;
        }
        if let Some(rest) = trimmed.strip_prefix(key.as_str())
            && rest.trim_start().starts_with('=')
        {
            let at = offset + (line.len() - trimmed.len());
            return at..at;
        }
        offset += line.len();
    }
    span
}

/// Whether `name` may name an agent: it is part of lock and log file names.
pub fn is_agent_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn is_provider_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// An `[agents]` table: entries by agent name, names checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table(pub BTreeMap<String, Entry>);

impl<'de> Deserialize<'de> for Table {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, Entry>::deserialize(d)?;
        check_names(map.keys()).map_err(serde::de::Error::custom)?;
        Ok(Table(map))
    }
}

/// Checks the names of a `[agents]` table (the keys are not seen by
/// [`Entry`]'s parser): an error for the first bad one.
fn check_names<'a>(names: impl IntoIterator<Item = &'a String>) -> Result<(), String> {
    for name in names {
        if !is_agent_name(name) {
            return Err(format!(
                "agents.{name}: {name:?} is not an agent name; use lowercase letters, digits, - and _ (at most 64)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug)]
    struct File {
        agents: BTreeMap<String, Entry>,
    }

    fn parse(text: &str) -> Result<File, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn declarations_parse_and_mistakes_are_named() -> Result<(), String> {
        let f = parse(
            "[agents.sync]\ncommand = [\"/bin/true\"]\nevery = \"15m\"\non_change = [\"memory/inbox/**\"]\ncredentials = [\"openai\"]\nenv = { OPENAI_API_KEY = \"openai\" }\n[agents.tidy]\nbuiltin = \"organize\"\ncron = \"*/5 * * * *\"\n[agents.off]\nenabled = false\n",
        )?;
        assert_eq!(f.agents.len(), 3);
        assert_eq!(f.agents.get("off"), Some(&Entry::Enabled(false)));
        let Some(Entry::Agent(sync)) = f.agents.get("sync") else {
            return Err("sync is an agent".into());
        };
        assert_eq!(
            sync.schedule,
            Some(Schedule::Every(Duration::from_secs(900)))
        );
        for (text, needle) in [
            ("[agents.x]\ncommand = \"echo hi\"\n", "shell = true"),
            ("[agents.x]\nbuiltin = \"nope\"\n", "does not exist"),
            (
                "[agents.x]\ncommand = [\"/bin/true\"]\nevery = \"soon\"\n",
                "not a duration",
            ),
            (
                "[agents.x]\ncommand = [\"/bin/true\"]\ncron = \"61 * * * *\"\n",
                "cron",
            ),
            (
                "[agents.x]\ncommand = [\"/bin/true\"]\nenv = { K = \"openai\" }\n",
                "credentials",
            ),
            (
                "[agents.x]\ncommand = [\"/bin/true\"]\nenv = { PATH = \"a\" }\ncredentials=[\"a\"]\n",
                "PATH",
            ),
            (
                "[agents.x]\ncommand = [\"/bin/true\"]\ncolour = 1\n",
                "colour",
            ),
        ] {
            let err = parse(text).err().unwrap_or_default();
            assert!(err.contains(needle), "{text}: {err}");
            assert!(err.contains("at line "), "{err}");
        }
        assert!(check_names([&"Bad Name".to_owned()]).is_err());
        Ok(())
    }
}
