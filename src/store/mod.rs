//! Records on top of the profile layer: memories, tasks, the persona and
//! the user's settings, as files a person can open in any editor.
//!
//! A file that cannot be parsed or is unsafe to read never fails a whole
//! listing: it is skipped and reported as a [`Problem`] with file and line.

pub mod frontmatter;
mod knowledge;
mod memory;
mod persona;
mod settings;
mod task;
mod view;

pub use knowledge::{KnowledgeEntry, KnowledgeHub, NewKnowledge, Removed, id_of as knowledge_id};
pub use memory::{Memory, MemoryUpdate, NewMemory};
pub use persona::Persona;
pub use settings::{InForce, SETTLE, SettingsInForce, UserSettings, Wait};
pub use task::{NewTask, Task, TaskPatch, TaskStatus};
pub use view::{ProfileView, Views};

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::audit::Auditor;
use crate::profile::{self, ProfileDir};

/// The most tags a record may have (each is a term in the search index
/// and a line in listings; a person uses a handful).
pub const MAX_TAGS: usize = 64;

/// Something wrong with one file of a profile, for the user to fix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Path relative to the profile.
    pub file: String,
    /// 1-based line, where one applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// What is wrong and what to do.
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.reason),
            None => write!(f, "{}: {}", self.file, self.reason),
        }
    }
}

/// One page of a listing.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Page<T> {
    /// The records, newest first.
    pub items: Vec<T>,
    /// The cursor for the next page (`before=`), when there is one.
    pub next: Option<String>,
    /// Files skipped while building this page.
    pub problems: Vec<Problem>,
}

/// An error of the record store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No record with that id.
    #[error("no {kind} with id {id:?}")]
    NotFound {
        /// `memory`, `task`…
        kind: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The record's file exists but cannot be parsed.
    #[error("{problem}")]
    Invalid {
        /// Where and why.
        problem: Problem,
    },
    /// The request's input is wrong.
    #[error("{field}: {reason}")]
    Input {
        /// The offending field.
        field: String,
        /// What is wrong and what to send instead.
        reason: String,
    },
    /// The caller may not do this to this record (another's knowledge
    /// entry).
    #[error("{reason}")]
    Forbidden {
        /// Why, and who may.
        reason: String,
    },
    /// The profile layer refused or failed.
    #[error(transparent)]
    Profile(#[from] profile::Error),
}

/// Result of the store.
pub type Result<T> = std::result::Result<T, Error>;

/// The records of one profile, acted on by one actor.
pub struct Store<'a> {
    dir: &'a ProfileDir,
    audit: &'a Auditor<'a>,
    /// The profile's in-memory view; without one, a listing walks the disk.
    view: Option<Arc<ProfileView>>,
}

impl<'a> Store<'a> {
    /// The store of `dir`; refusals and changes are recorded with `audit`.
    pub fn new(dir: &'a ProfileDir, audit: &'a Auditor<'a>) -> Store<'a> {
        Store {
            dir,
            audit,
            view: None,
        }
    }

    /// The same store, listing from `view` (the view of this very profile,
    /// from [`Views::of`]) and keeping it current with its own writes.
    pub fn with_view(self, view: Arc<ProfileView>) -> Store<'a> {
        Store {
            view: Some(view),
            ..self
        }
    }

    /// Runs `f` on the profile's index: the view's, or one walked now.
    fn with_index<R>(&self, f: impl FnOnce(&view::Index) -> R) -> R {
        match &self.view {
            Some(v) => f(&v.index(self)),
            None => f(&view::Index::walk(self)),
        }
    }

    /// Brings the view up to date with the record file `rel` just written
    /// or removed, so the next listing shows it (read-your-writes).
    fn wrote(&self, rel: &str) {
        if let Some(v) = &self.view {
            v.refresh(self, rel);
        }
    }

    /// The profile directory.
    pub fn dir(&self) -> &ProfileDir {
        self.dir
    }

    /// Records a change in the audit log.
    pub fn audit(&self, action: &str, target: &str, result: &str) {
        self.audit.record(self.dir, action, target, result);
    }

    /// Records a read; only an admin's read of another profile is kept.
    pub fn audit_access(&self, action: &str, target: &str) {
        self.audit.record_access(self.dir, action, target);
    }

    /// Reads `rel` as UTF-8 text. Refusals (rule 1) are audited.
    fn read_text(&self, rel: &str) -> Result<String> {
        let bytes = match self.dir.read(rel) {
            Ok(b) => b,
            Err(profile::Error::Refused { path, reason }) => {
                self.audit("read", rel, &format!("refused: {reason}"));
                return Err(profile::Error::Refused { path, reason }.into());
            }
            Err(e) => return Err(e.into()),
        };
        String::from_utf8(bytes).map_err(|e| {
            let line = e.as_bytes()[..e.utf8_error().valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1;
            Error::Invalid {
                problem: Problem {
                    file: rel.to_owned(),
                    line: Some(line),
                    reason: "not valid UTF-8 text; save the file as UTF-8".into(),
                },
            }
        })
    }

    /// Reads and parses the TOML file `rel`; `Ok(None)` when it is absent.
    fn read_toml<T: serde::de::DeserializeOwned>(&self, rel: &str) -> Result<Option<T>> {
        let text = match self.read_text(rel) {
            Ok(t) => t,
            Err(Error::Profile(profile::Error::NotFound { .. })) => return Ok(None),
            Err(e) => return Err(e),
        };
        parse_toml(rel, &text).map(Some)
    }

    /// A problem for each symbolic link directly in `rel`: links are never
    /// followed, so whatever they point to is invisible to profiled.
    fn unfollowed_links(&self, rel: &str) -> Vec<Problem> {
        let Ok(entries) = self.dir.list(rel) else {
            return Vec::new();
        };
        entries
            .into_iter()
            .filter(|e| e.kind == profile::EntryKind::Symlink && !e.name.ends_with(".md"))
            .map(|e| Problem {
                file: format!("{rel}/{}", e.name),
                line: None,
                reason: format!("refused: {}", profile::Refusal::Symlink),
            })
            .collect()
    }

    /// Reads and parses the record file `rel`, whose file name says its id
    /// is `stem`.
    fn read_record<F: RecordFront>(
        &self,
        stem: &str,
        rel: &str,
        known: &[&str],
    ) -> Result<frontmatter::Document<F>> {
        parse_record(stem, rel, &self.read_text(rel)?, known)
    }

    /// Renders and writes a record atomically.
    fn write_record<F: RecordFront>(
        &self,
        rel: &str,
        front: &F,
        extra: &toml::Table,
        body: &str,
        mode: profile::WriteMode,
    ) -> Result<()> {
        let text = render_record(rel, front, extra, body)?;
        self.dir.write(rel, text.as_bytes(), mode)?;
        Ok(())
    }

    /// Every problem in the profile, read from disk: unparsable or unsafe
    /// records, an invalid persona or settings file.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = self.memory_problems();
        out.extend(self.task_problems());
        if let Err(e) = self.persona() {
            out.extend(problem_of(e));
        }
        if let Err(e) = self.settings() {
            out.extend(problem_of(e));
        }
        out
    }
}

/// Parses `text`, the TOML file `rel` (errors name its line).
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(rel: &str, text: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        // A whole table's span (an agent declaration) narrows to the
        // line of the key the message names.
        let at = crate::agents::decl::narrow_span(text, span, e.message())
            .start
            .min(text.len());
        Error::Invalid {
            problem: Problem {
                file: rel.to_owned(),
                line: Some(text[..at].matches('\n').count() + 1),
                reason: e.message().to_owned(),
            },
        }
    })
}

/// Parses `text`, the record file `rel` whose file name says its id is
/// `stem`; an `id` key that disagrees is an error on its line, and so are
/// more than [`MAX_TAGS`] tags.
fn parse_record<F: RecordFront>(
    stem: &str,
    rel: &str,
    text: &str,
    known: &[&str],
) -> Result<frontmatter::Document<F>> {
    let invalid = |line, reason| Error::Invalid {
        problem: Problem {
            file: rel.to_owned(),
            line: Some(line),
            reason,
        },
    };
    let doc = frontmatter::parse::<F>(text, known).map_err(|e| invalid(e.line, e.reason))?;
    if let Some(id) = doc.front.id()
        && id != stem
    {
        return Err(invalid(
            line_of_key(text, "id").unwrap_or(2),
            format!("id {id:?} does not match the file name {stem}.md; rename one to match"),
        ));
    }
    if doc.front.tags().len() > MAX_TAGS {
        return Err(invalid(
            line_of_key(text, "tags").unwrap_or(2),
            format!(
                "{} tags and the most is {MAX_TAGS}; keep the ones that matter",
                doc.front.tags().len()
            ),
        ));
    }
    Ok(doc)
}

/// The text of the record file `rel`: front matter and body.
fn render_record<F: RecordFront>(
    rel: &str,
    front: &F,
    extra: &toml::Table,
    body: &str,
) -> Result<String> {
    frontmatter::render(front, extra, body).map_err(|reason| Error::Input {
        field: rel.to_owned(),
        reason,
    })
}

/// Reads again the items of `page` at `stale` (ascending), whose text was
/// too long for the view; one that now fails becomes a problem.
fn fill_texts<T>(page: &mut Page<T>, stale: &[usize], read: impl Fn(&T) -> Result<T>) {
    for &i in stale.iter().rev() {
        let Some(item) = page.items.get_mut(i) else {
            continue;
        };
        match read(item) {
            Ok(whole) => *item = whole,
            Err(e) => {
                page.items.remove(i);
                page.problems.extend(problem_of(e));
            }
        }
    }
}

/// The problems among `slots`, in listing order.
fn bad_slots<'s, K: 's, T: 's>(
    slots: impl DoubleEndedIterator<Item = (&'s K, &'s view::Slot<T>)>,
) -> impl Iterator<Item = Problem> {
    slots.rev().filter_map(|(_, s)| match s {
        view::Slot::Bad(p) => Some(p.clone()),
        view::Slot::Record { .. } => None,
    })
}

/// Turns a store error met while reading one file into a [`Problem`];
/// `NotFound` is not a problem.
fn problem_of(e: Error) -> Option<Problem> {
    match e {
        Error::Invalid { problem } => Some(problem),
        Error::Profile(profile::Error::NotFound { .. }) | Error::NotFound { .. } => None,
        Error::Profile(profile::Error::Refused { path, reason }) => Some(Problem {
            file: path,
            line: None,
            reason: format!("refused: {reason}"),
        }),
        Error::Profile(e) => Some(Problem {
            file: String::new(),
            line: None,
            reason: e.to_string(),
        }),
        Error::Input { field, reason } => Some(Problem {
            file: field,
            line: None,
            reason,
        }),
        Error::Forbidden { reason } => Some(Problem {
            file: String::new(),
            line: None,
            reason,
        }),
    }
}

/// The front matter of a record kind: it knows its own `id` key.
trait RecordFront: Serialize + serde::de::DeserializeOwned {
    /// The `id` written in the file, if any.
    fn id(&self) -> Option<&str>;
    /// The tags.
    fn tags(&self) -> &[String];
}

/// Text as stored: ending in a newline, like every text file.
fn with_newline(text: &str) -> String {
    let mut s = text.to_owned();
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// Whether `id` can name a record file: 1 to 128 of `[A-Za-z0-9_-]`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A new record id: `prefix` and a ULID, so ids sort by creation time.
fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", ulid::Ulid::generate())
}

/// The record ids among `entries`: regular `*.md` files that are not hidden
/// (the daemon's temporary files are hidden), sorted newest first.
fn record_stems(entries: Vec<profile::Entry>) -> Vec<String> {
    let mut stems: Vec<String> = entries
        .into_iter()
        .filter(|e| !e.name.starts_with('.'))
        .filter_map(|e| e.name.strip_suffix(".md").map(str::to_owned))
        .filter(|s| valid_id(s))
        .collect();
    stems.sort_unstable_by(|a, b| b.cmp(a));
    stems
}

/// Checks a list of tags from a request.
fn check_tags(tags: &[String]) -> Result<()> {
    if tags.len() > MAX_TAGS {
        return Err(Error::Input {
            field: "tags".into(),
            reason: format!(
                "{} tags and the most is {MAX_TAGS}; keep the ones that matter",
                tags.len()
            ),
        });
    }
    for t in tags {
        if t.trim().is_empty() || t.chars().count() > 64 || frontmatter::control_char(t).is_some() {
            return Err(Error::Input {
                field: "tags".into(),
                reason: format!("tag {t:?} must be 1 to 64 characters without control characters"),
            });
        }
    }
    Ok(())
}

/// Where in the file `key = …` stands, for an error about that key.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

/// Fuzz target `record`: `text` as a memory file and as a task file, read
/// as the store reads them; and `+++` front matter rendered back after a
/// parse must parse to the same rendering.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_record(text: &str) {
    let _ = memory::parse("evt-x", "memory/episodic/2026/01/evt-x.md", text);
    let _ = task::parse("task-x", "memory/tasks/task-x.md", text);
    let Ok(doc) = frontmatter::parse::<toml::Table>(text, &[]) else {
        return;
    };
    let Ok(once) = frontmatter::render(&doc.front, &toml::Table::new(), &doc.body) else {
        return;
    };
    let again = frontmatter::parse::<toml::Table>(&once, &[])
        .unwrap_or_else(|e| panic!("a rendered record does not parse: {e:?}\n{once}"));
    let twice = frontmatter::render(&again.front, &toml::Table::new(), &again.body);
    assert_eq!(twice.as_deref(), Ok(once.as_str()), "render is not stable");
}

/// Fuzz target `settings`: `text` as `profile.toml` (the user's agents
/// included) and as `persona/core.toml`.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_settings(text: &str) {
    let _ = parse_toml::<UserSettings>("profile.toml", text);
    let _ = parse_toml::<Persona>("persona/core.toml", text);
}
