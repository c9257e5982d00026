//! The watcher: inotify over the profiles root, the record directories of
//! every profile (each watch added on a directory the profile layer opened
//! as the account, rule 12) and the knowledge directory; bursts coalesced,
//! what was touched turned into typed changes of records and published on
//! the event hub (knowledge changes on every stream). Polling stands in
//! where inotify cannot or may not watch.
//!
//! One thread owns the sources and the known state of every profile, so
//! changes come out in the order they were found, with no locking.

mod classify;
mod file;
mod held;
mod hub;
mod kernel;
mod knowledge;
mod source;
mod status;
mod tracker;
mod watches;

pub use classify::Kind;
pub use file::watch_file;
pub use hub::{Audience, BUFFER, Body, Catchup, Event, EventHub, Subscription};
pub use status::{Report as StatusReport, Status};

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::api::AppState;
use crate::store::Problem;
use held::Held;
use knowledge::KnowledgeTracker;
use source::{Poll, Signal, Sources};
use tracker::Tracker;
use watches::Touch;

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
    fn add(&mut self, signal: Signal, sources: &mut Sources) {
        match signal {
            Signal::Kernel(raw) => {
                for touch in sources.resolve(&raw) {
                    match touch {
                        Touch::Profile { user, rel } => {
                            self.paths.insert((user, rel));
                        }
                        // Profiles may have come or gone.
                        Touch::Root => self.rescan = true,
                        Touch::Knowledge(name) => {
                            self.knowledge.insert(name);
                        }
                        Touch::KnowledgeDir => self.knowledge_rescan = true,
                        Touch::Rescan => {
                            self.rescan = true;
                            self.knowledge_rescan = true;
                        }
                    }
                }
            }
            Signal::Stop => self.stop = true,
        }
    }
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
    for user in tracker.profiles.users() {
        sources.cover(&tracker.profiles, &user, "");
    }
    tracing::info!(
        "watching {} and {}",
        roots.profiles.display(),
        roots.knowledge.display()
    );
    let mut held = Held::default();
    loop {
        let due = [held.next_due(), sources.next_poll()]
            .into_iter()
            .flatten()
            .min();
        let first = match due {
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
            let Some(changes) = next_burst(state, &mut sources, &mut tracker, rx, first) else {
                return;
            };
            for change in held.merge(changes, Instant::now()) {
                publish(state, &tracker.profiles, change);
            }
        }
        if let Some(due) = sources.take_poll(Instant::now()) {
            let changes = poll(state, &mut tracker, &due);
            for change in held.merge(changes, Instant::now()) {
                publish(state, &tracker.profiles, change);
            }
        }
        for change in held.due(Instant::now()) {
            publish(state, &tracker.profiles, change);
        }
    }
}

/// Compares what is polled with what was known.
fn poll(state: &AppState, trackers: &mut Trackers, due: &Poll) -> Vec<Change> {
    let policy = state.config().policy.clone();
    let mut changes = if due.knowledge {
        trackers.knowledge.rescan(&state.knowledge, &policy)
    } else {
        Vec::new()
    };
    let tracker = &mut trackers.profiles;
    if due.all {
        changes.extend(tracker.rescan_all(state.root(), &policy));
    } else {
        for user in &due.profiles {
            changes.extend(tracker.reconcile(state.root(), &policy, user, ""));
        }
    }
    changes
}

/// Collects the burst that starts with `first` and returns its changes;
/// `None` when the watcher must stop.
fn next_burst(
    state: &AppState,
    sources: &mut Sources,
    trackers: &mut Trackers,
    rx: &Receiver<Signal>,
    first: Signal,
) -> Option<Vec<Change>> {
    let mut batch = Batch::default();
    batch.add(first, sources);
    let until = Instant::now() + MAX_DELAY;
    while !batch.stop {
        let wait = QUIET.min(until.saturating_duration_since(Instant::now()));
        match rx.recv_timeout(wait) {
            Ok(s) => batch.add(s, sources),
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
    let tracker = &mut trackers.profiles;
    sources.settle_moved(tracker);
    if batch.rescan {
        state.clear_views();
        let before = tracker.users();
        changes.extend(tracker.rescan_all(state.root(), &policy));
        let now = tracker.users();
        for gone in before.iter().filter(|u| !now.contains(u)) {
            sources.forget_profile(gone);
        }
        // Events may have been lost, directory creations among them.
        for user in &now {
            sources.cover(tracker, user, "");
        }
        return Some(changes);
    }
    for (user, rel) in &batch.paths {
        // A whole-profile rescan covers the rest of its paths.
        if !rel.is_empty() && batch.paths.contains(&(user.clone(), String::new())) {
            continue;
        }
        if rel.is_empty() || tracker.dir(user).is_none() {
            // The profile (re-)opened first, then watched, then compared
            // again if new watches were needed: what was written before a
            // directory had its watch is found by the second look.
            changes.extend(tracker.reconcile(state.root(), &policy, user, rel));
            if tracker.dir(user).is_none() {
                sources.forget_profile(user);
            } else if sources.cover(tracker, user, "") > 0 {
                changes.extend(tracker.reconcile(state.root(), &policy, user, ""));
            }
            continue;
        }
        // Watched before it is compared: whatever is written in a new
        // directory after this look is reported by its watch.
        sources.cover(tracker, user, rel);
        changes.extend(tracker.reconcile(state.root(), &policy, user, rel));
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
