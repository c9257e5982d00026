//! The watcher: notify over the profiles root and the knowledge directory,
//! bursts coalesced, raw paths turned into typed changes of records and
//! published on the event hub (knowledge changes on every stream).
//!
//! One thread owns the sources and the known state of every profile, so
//! changes come out in the order they were found, with no locking.

mod classify;
mod file;
mod held;
mod hub;
mod knowledge;
mod source;
mod status;
mod tracker;

pub use classify::Kind;
pub use file::watch_file;
pub use hub::{Audience, BUFFER, Body, Catchup, Event, EventHub, Subscription};
pub use status::{Report as StatusReport, Status};

use std::collections::BTreeSet;
use std::path::{Component, Path};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::api::AppState;
use crate::store::Problem;
use held::Held;
use knowledge::KnowledgeTracker;
use source::{Signal, Sources};
use tracker::Tracker;

/// How long the watcher waits for a burst to go quiet: an editor's save
/// (temp file, write, rename) lands within it. Short, since it is most of
/// the delay of every event; a save that straddles it is still one change
/// (stamps are compared, and deletions are held, see [`held`]).
const QUIET: Duration = Duration::from_millis(10);
/// The longest a busy burst delays its changes.
const MAX_DELAY: Duration = Duration::from_millis(250);

/// What happened to a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// It appeared.
    Created,
    /// Its content changed (or it was replaced).
    Updated,
    /// It is gone.
    Deleted,
    /// It changed and no longer validates (settings): the previous content
    /// stays in force; `problem` says where and why.
    Invalid,
}

impl Action {
    /// The name used in event types (`memory.updated`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Deleted => "deleted",
            Action::Invalid => "invalid",
        }
    }
}

/// A typed change of one record file in one profile, or of one entry of
/// the knowledge hub.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The account whose profile changed; empty for knowledge changes,
    /// which every stream carries.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// What kind of record.
    pub kind: Kind,
    /// What happened.
    pub action: Action,
    /// The record's id (the file stem), where the record has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// The file, relative to the profile (to the knowledge directory for
    /// knowledge changes).
    pub path: String,
    /// For `invalid`: the file, line and reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<Problem>,
    /// For knowledge changes: the account that owns the entry's file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
}

/// The running watcher; [`Watching::stop`] ends it.
pub struct Watching {
    tx: Sender<Signal>,
    thread: Option<JoinHandle<()>>,
}

impl Watching {
    /// Stops the watcher and waits for its thread.
    pub fn stop(mut self) {
        let _ = self.tx.send(Signal::Stop);
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the watcher thread panicked");
        }
    }
}

/// Starts watching the profiles root and the knowledge directory of
/// `state` with the `[watch]` settings; changes go to `state.events`.
pub fn start(state: Arc<AppState>) -> Result<Watching, String> {
    let (tx, rx) = channel();
    let roots = Roots {
        profiles: state.root().path().to_owned(),
        knowledge: state.knowledge.dir().path().to_owned(),
    };
    let sources = Sources::start(
        &roots.profiles,
        &roots.knowledge,
        &state.config().watch,
        state.watch.clone(),
        tx.clone(),
    )?;
    let thread = std::thread::Builder::new()
        .name("watch".into())
        .spawn(move || run(&state, &roots, sources, &rx))
        .map_err(|e| format!("cannot start the watcher thread: {e}"))?;
    Ok(Watching {
        tx,
        thread: Some(thread),
    })
}

/// The watched directories.
struct Roots {
    profiles: std::path::PathBuf,
    knowledge: std::path::PathBuf,
}

/// What one burst touched.
#[derive(Default)]
struct Batch {
    /// (user, path relative to the profile; `""` for the profile itself).
    paths: BTreeSet<(String, String)>,
    /// Names in the knowledge directory.
    knowledge: BTreeSet<String>,
    rescan: bool,
    knowledge_rescan: bool,
    stop: bool,
}

impl Batch {
    fn add(&mut self, signal: Signal, roots: &Roots, sources: &mut Sources) {
        let root = roots.profiles.as_path();
        match signal {
            Signal::Paths(paths) => {
                for p in paths {
                    if let Ok(rest) = p.strip_prefix(&roots.knowledge) {
                        match rest.to_str() {
                            // The directory itself.
                            Some("") => self.knowledge_rescan = true,
                            Some(name) if !name.contains('/') => {
                                self.knowledge.insert(name.to_owned());
                            }
                            _ => {}
                        }
                        continue;
                    }
                    match split(root, &p) {
                        Some(Some(key)) => {
                            self.paths.insert(key);
                        }
                        // The root itself: profiles may have come or gone.
                        Some(None) => self.rescan = true,
                        None => {}
                    }
                }
            }
            Signal::Rescan => {
                self.rescan = true;
                self.knowledge_rescan = true;
            }
            Signal::LimitHit => {
                sources.limit_hit();
                self.rescan = true;
            }
            Signal::Stop => self.stop = true,
        }
    }
}

/// `path` as (user, relative path): `Some(None)` for the root itself,
/// `None` for what is no profile's (hidden names such as the daemon's
/// `.provision-*`, paths outside the root, names that are not UTF-8).
fn split(root: &Path, path: &Path) -> Option<Option<(String, String)>> {
    let rest = path.strip_prefix(root).ok()?;
    let mut parts = Vec::new();
    for c in rest.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?),
            _ => return None,
        }
    }
    let Some((user, rel)) = parts.split_first() else {
        return Some(None);
    };
    if user.starts_with('.') {
        return None;
    }
    Some(Some(((*user).to_owned(), rel.join("/"))))
}

/// What the watcher knows of the profiles and of the knowledge directory.
#[derive(Default)]
struct Trackers {
    profiles: Tracker,
    knowledge: KnowledgeTracker,
}

fn run(state: &AppState, roots: &Roots, mut sources: Sources, rx: &Receiver<Signal>) {
    let mut tracker = Trackers::default();
    let policy = state.config().policy.clone();
    tracker.profiles.baseline(state.root(), &policy);
    tracker.knowledge.baseline(&state.knowledge, &policy);
    tracing::info!(
        "watching {} and {}",
        roots.profiles.display(),
        roots.knowledge.display()
    );
    let mut held = Held::default();
    loop {
        let first = match held.next_due() {
            None => match rx.recv() {
                Ok(s) => Some(s),
                Err(_) => return,
            },
            Some(due) => match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
                Ok(s) => Some(s),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            },
        };
        if let Some(first) = first {
            let Some(changes) = next_burst(state, roots, &mut sources, &mut tracker, rx, first)
            else {
                return;
            };
            for change in held.merge(changes, Instant::now()) {
                publish(state, &tracker.profiles, change);
            }
        }
        for change in held.due(Instant::now()) {
            publish(state, &tracker.profiles, change);
        }
    }
}

/// Collects the burst that starts with `first` and returns its changes;
/// `None` when the watcher must stop.
fn next_burst(
    state: &AppState,
    roots: &Roots,
    sources: &mut Sources,
    trackers: &mut Trackers,
    rx: &Receiver<Signal>,
    first: Signal,
) -> Option<Vec<Change>> {
    let mut batch = Batch::default();
    batch.add(first, roots, sources);
    let until = Instant::now() + MAX_DELAY;
    while !batch.stop {
        let wait = QUIET.min(until.saturating_duration_since(Instant::now()));
        match rx.recv_timeout(wait) {
            Ok(s) => batch.add(s, roots, sources),
            Err(RecvTimeoutError::Timeout) => break,
            Err(RecvTimeoutError::Disconnected) => return None,
        }
    }
    if batch.stop {
        return None;
    }
    let policy = state.config().policy.clone();
    let mut changes = if batch.knowledge_rescan {
        trackers.knowledge.rescan(&state.knowledge, &policy)
    } else {
        batch
            .knowledge
            .iter()
            .flat_map(|name| {
                trackers
                    .knowledge
                    .reconcile(&state.knowledge, &policy, name)
            })
            .collect()
    };
    let root = roots.profiles.as_path();
    let tracker = &mut trackers.profiles;
    if batch.rescan {
        state.clear_views();
        changes.extend(tracker.rescan_all(state.root(), &policy));
        return Some(changes);
    }
    for (user, rel) in &batch.paths {
        // A whole-profile rescan covers the rest of its paths.
        if !rel.is_empty() && batch.paths.contains(&(user.clone(), String::new())) {
            continue;
        }
        changes.extend(tracker.reconcile(state.root(), &policy, user, rel));
        // Checked through the profile's handle first: a link put where a
        // directory was is never watched through.
        if classify::may_hold_records(rel) && tracker.is_real_dir(user, rel) {
            let mut dir = root.join(user);
            if !rel.is_empty() {
                dir.push(rel);
            }
            sources.rewatch(&dir);
        }
    }
    Some(changes)
}

/// Publishes `change`; a settings file that no longer validates becomes
/// `settings.invalid` (rule 7: reported where the user looks, their stream
/// and /v1/me, and in the log). Knowledge changes go to every stream.
fn publish(state: &AppState, tracker: &Tracker, mut change: Change) {
    if change.kind == Kind::Knowledge {
        state.events.publish_shared(change);
        return;
    }
    if change.kind == Kind::Settings
        && let Some(in_force) =
            tracker.settings_in_force(&change.user, state.system_log(), &state.settings)
        && let Some(problem) = in_force.problem
        && change.action != Action::Deleted
    {
        change.action = Action::Invalid;
        change.problem = Some(problem);
    }
    state.refresh_view(&change.user, &change.path);
    state.events.publish(change);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_user_and_relative_path() {
        let root = Path::new("/var/lib/profiled/profiles");
        assert_eq!(
            split(root, &root.join("alice/memory/tasks/t.md")),
            Some(Some(("alice".into(), "memory/tasks/t.md".into())))
        );
        assert_eq!(
            split(root, &root.join("alice")),
            Some(Some(("alice".into(), String::new())))
        );
        assert_eq!(split(root, root), Some(None));
        assert_eq!(split(root, &root.join(".provision-alice-01J/x")), None);
        assert_eq!(split(root, Path::new("/etc/passwd")), None);
    }
}
