//! Which agents exist: the admins' (agents.d, each file's last good version
//! kept in force, rule 7) and each user's (their profile.toml).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;

use super::decl::{Entry, Spec, Table};
use crate::config;

/// Who declared an agent, and so whom it runs for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    /// An admin, in agents.d: every eligible user.
    Admin,
    /// A user, in their profile.toml: that user only.
    User(String),
}

/// A declared agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agent {
    /// Its name.
    pub name: String,
    /// Who declared it.
    pub owner: Owner,
    /// The declaration.
    pub spec: Spec,
}

impl Agent {
    /// What its lock and stamp files are named after: the name, and for a
    /// user's agent the user too (two users may pick the same name).
    pub fn key(&self) -> String {
        match &self.owner {
            Owner::Admin => self.name.clone(),
            Owner::User(user) => format!("{}@{user}", self.name),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentsFile {
    agents: Option<toml::Spanned<Table>>,
}

/// One agents.d file as last read.
struct FileState {
    seen: Option<(SystemTime, u64)>,
    /// The last version that validated (empty until one did).
    agents: BTreeMap<String, Spec>,
    problem: Option<String>,
}

/// The admins' agents.
#[derive(Default)]
pub struct AdminAgents {
    files: BTreeMap<PathBuf, FileState>,
}

impl AdminAgents {
    /// Re-reads the files of `dir` that changed since the last call; a
    /// file that no longer validates keeps its previous agents in force
    /// and its problem is reported (logged once per change). Returns
    /// whether anything changed.
    pub fn refresh(&mut self, dir: &Path) -> bool {
        let present = declaration_files(dir);
        let before = self.files.len();
        self.files.retain(|p, _| present.contains(p));
        let mut changed = before != self.files.len();
        for path in present {
            let seen = std::fs::metadata(&path)
                .ok()
                .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
            let state = self.files.entry(path.clone()).or_insert(FileState {
                seen: None,
                agents: BTreeMap::new(),
                problem: None,
            });
            if state.seen.is_some() && state.seen == seen {
                continue;
            }
            state.seen = seen;
            changed = true;
            match load_file(&path) {
                Ok(agents) => {
                    state.agents = agents;
                    state.problem = None;
                }
                Err(problem) => {
                    tracing::error!(
                        "{problem}; {} agents of this file stay as they were",
                        if state.agents.is_empty() {
                            "no"
                        } else {
                            "the last good"
                        }
                    );
                    state.problem = Some(problem);
                }
            }
        }
        changed
    }

    /// The agents in force, by name; a name declared in two files counts
    /// from the first file (by name) only.
    pub fn agents(&self) -> BTreeMap<String, Agent> {
        let mut out = BTreeMap::new();
        for (path, file) in &self.files {
            for (name, spec) in &file.agents {
                if out.contains_key(name) {
                    tracing::warn!(
                        "{}: agent {name} is declared in an earlier file too; this one is ignored",
                        path.display()
                    );
                    continue;
                }
                out.insert(
                    name.clone(),
                    Agent {
                        name: name.clone(),
                        owner: Owner::Admin,
                        spec: spec.clone(),
                    },
                );
            }
        }
        out
    }

    /// What is wrong with the files, `file:line: reason` each.
    pub fn problems(&self) -> Vec<String> {
        self.files
            .values()
            .filter_map(|f| f.problem.clone())
            .collect()
    }
}

/// The declaration files in `dir`: `*.toml`, not hidden (an editor's
/// temporary file is not a declaration).
fn declaration_files(dir: &Path) -> Vec<PathBuf> {
    let mut present = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".toml") && !name.starts_with('.') {
                present.push(entry.path());
            }
        }
    }
    present.sort();
    present
}

/// What is wrong with each declaration file in `dir` (`file:line:
/// reason`), as the daemon would read them: `profiled check-config`.
pub fn check_dir(dir: &Path) -> Vec<String> {
    declaration_files(dir)
        .iter()
        .filter_map(|path| load_file(path).err())
        .collect()
}

/// Reads one agents.d file: all of it validates or none of it counts.
fn load_file(path: &Path) -> Result<BTreeMap<String, Spec>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read it: {e}", path.display()))?;
    let file: AgentsFile = toml::from_str(&text).map_err(|e| {
        let span = super::decl::narrow_span(&text, e.span().unwrap_or(0..0), e.message());
        config::invalid(path, &text, span, e.message().to_owned()).to_string()
    })?;
    let Some(agents) = file.agents else {
        return Ok(BTreeMap::new());
    };
    let span = agents.span();
    let mut out = BTreeMap::new();
    for (name, entry) in agents.into_inner().0 {
        match entry {
            Entry::Agent(spec) => {
                out.insert(name, *spec);
            }
            Entry::Enabled(_) => {
                let at = text
                    .find(&format!("[agents.{name}]"))
                    .map_or(span.clone(), |i| i..i);
                return Err(config::invalid(
                    path,
                    &text,
                    at,
                    format!("agents.{name}: give `builtin` or `command`; `enabled` alone is a user's override"),
                )
                .to_string());
            }
        }
    }
    Ok(out)
}

/// The agents that run for `user`: the admins' ones they did not switch
/// off (required ones always), then their own. A user's table naming an
/// admin's agent may only switch it off; the rest is reported in the
/// returned problems.
pub fn for_user(
    admin: &BTreeMap<String, Agent>,
    user: &str,
    own: &Table,
) -> (Vec<Agent>, Vec<String>) {
    let mut agents = Vec::new();
    let mut problems = Vec::new();
    for (name, agent) in admin {
        match own.0.get(name) {
            Some(Entry::Enabled(false)) if agent.spec.required => problems.push(format!(
                "profile.toml: agents.{name}: the admin marked {name} as required; it cannot be switched off"
            )),
            Some(Entry::Enabled(false)) => continue,
            Some(Entry::Agent(_)) => problems.push(format!(
                "profile.toml: agents.{name}: {name} is an admin's agent; pick another name for yours (only `enabled = false` may be set for it)"
            )),
            _ => {}
        }
        agents.push(agent.clone());
    }
    for (name, entry) in &own.0 {
        match entry {
            Entry::Agent(spec) if !admin.contains_key(name) => {
                if spec.required {
                    problems.push(format!(
                        "profile.toml: agents.{name}: `required` is for admins' agents and is ignored here"
                    ));
                }
                agents.push(Agent {
                    name: name.clone(),
                    owner: Owner::User(user.to_owned()),
                    spec: (**spec).clone(),
                });
            }
            Entry::Enabled(_) if !admin.contains_key(name) => problems.push(format!(
                "profile.toml: agents.{name}: there is no admin agent named {name} to switch"
            )),
            _ => {}
        }
    }
    (agents, problems)
}
