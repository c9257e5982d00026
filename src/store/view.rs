//! The in-memory view of each profile's memories and tasks: ids in listing
//! order, front matter and text, so a listing page does no disk I/O.
//!
//! A view is built by one walk through the profile layer the first time a
//! profile is listed, then kept current file by file: by the daemon's own
//! writes (a `POST` is listed by the very next `GET`) and by the watcher for
//! everything else (hand edits, deletions, files moved in or out). Every
//! update re-reads the file from disk under the view's refresh lock, so the
//! view only ever moves forward to what the disk says, whichever of the two
//! updates a file first.
//!
//! Files that cannot be read or parsed are kept as the [`Problem`] a
//! listing reports, in their place in the order, exactly as a walk of the
//! disk would meet them. Texts longer than [`MAX_KEPT_TEXT`] are not kept:
//! such a record is read from disk when a page includes it, which bounds
//! the view at about 0.8 KiB per record plus its text (docs/OPERATIONS.md).
//!
//! A view is looked up by account name and served only for the very
//! directory it was built from (same device, inode and account): a profile
//! removed and provisioned again gets a new view. A listing of the caller's
//! own profile is answered from a walked view on the async thread, with one
//! `fstatat` to check that directory and no file opened
//! ([`Views::get`], [`ProfileView::memories_page`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Page, Problem, Store, TaskStatus, memory, task, valid_id};
use crate::accounts::Account;
use crate::audit::{Auditor, SystemLog};
use crate::profile::{self, ProfileDir, ProfilesRoot};

/// Texts (memory text, task notes) up to this many bytes are kept in the
/// view; longer ones are read from disk when listed.
pub(super) const MAX_KEPT_TEXT: usize = 4096;

/// Where a memory sorts: year and month directory, then id. Listing walks
/// this order backwards (newest first), as the disk walk did.
pub(super) type MemoryKey = (String, String, String);

/// What the view keeps of one record file.
#[derive(Clone, Debug)]
pub(super) enum Slot<M> {
    /// Parsed, kept as the JSON a listing shows (one allocation, no
    /// serializing per request), with what filters need (`meta`). Without
    /// its text when `whole` is false (too long to keep).
    Record {
        /// The record as a listing item.
        json: Box<str>,
        /// What a listing filters on (a task's status).
        meta: M,
        /// Whether `json` holds the whole text.
        whole: bool,
    },
    /// Unreadable, unsafe or invalid: listed as this problem.
    Bad(Problem),
}

/// A page picked from the index: each item's id and JSON, and whether
/// the JSON holds the whole text.
#[derive(Debug, Default)]
pub(super) struct Picked<'a> {
    pub(super) items: Vec<(&'a str, &'a str, bool)>,
    pub(super) next: Option<String>,
    pub(super) problems: Vec<Problem>,
}

impl Picked<'_> {
    /// The page as `Page` serializes it, when every item is whole.
    fn json(&self) -> Option<String> {
        if self.items.iter().any(|(_, _, whole)| !whole) {
            return None;
        }
        let size: usize = self.items.iter().map(|(_, j, _)| j.len() + 1).sum();
        let mut out = String::with_capacity(size + 64);
        out.push_str("{\"items\":[");
        for (i, (_, json, _)) in self.items.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(json);
        }
        out.push_str("],\"next\":");
        out.push_str(&serde_json::to_string(&self.next).ok()?);
        out.push_str(",\"problems\":");
        out.push_str(&serde_json::to_string(&self.problems).ok()?);
        out.push('}');
        Some(out)
    }

    /// The page with its records parsed back, and the positions of those
    /// whose text was not kept (to be read from disk).
    pub(super) fn page<T: DeserializeOwned>(self) -> (Page<T>, Vec<usize>) {
        let mut page = Page {
            items: Vec::with_capacity(self.items.len()),
            next: self.next,
            problems: self.problems,
        };
        let mut stale = Vec::new();
        for (id, json, whole) in self.items {
            match serde_json::from_str(json) {
                Ok(record) => {
                    if !whole {
                        stale.push(page.items.len());
                    }
                    page.items.push(record);
                }
                // Written by `kept` from the same type: never expected.
                Err(e) => page.problems.push(Problem {
                    file: id.to_owned(),
                    line: None,
                    reason: format!(
                        "the daemon's copy of this record is unreadable ({e}); restart the daemon"
                    ),
                }),
            }
        }
        (page, stale)
    }
}

/// Everything a listing needs of one profile.
#[derive(Debug, Default)]
pub(super) struct Index {
    /// Whether the walk that fills it has run.
    built: bool,
    /// Memories by (year, month, id).
    pub(super) memories: BTreeMap<MemoryKey, Slot<()>>,
    /// Problems of the memory tree itself (a month directory that cannot
    /// be listed), found by the walk.
    pub(super) memory_tree: Vec<Problem>,
    /// Tasks by id, with their status.
    pub(super) tasks: BTreeMap<String, Slot<TaskStatus>>,
    /// Problems of the task directory itself.
    pub(super) task_tree: Vec<Problem>,
}

/// The view of one profile.
#[derive(Debug)]
pub struct ProfileView {
    /// The account whose profile it is.
    account: Account,
    /// The (device, inode) of the profile directory it was built from.
    identity: (u64, u64),
    /// The watch generation under which the directory was last found to be
    /// the one the view was built from ([`Views::get`]).
    verified: AtomicU64,
    /// Held while the disk is read for the view (the walk, a re-read), so
    /// what is stored is never older than what is already there.
    refresh: Mutex<()>,
    index: RwLock<Index>,
}

/// The views of every profile listed so far.
#[derive(Debug, Default)]
pub struct Views {
    by_user: Mutex<HashMap<String, Arc<ProfileView>>>,
}

/// [`ProfileView::verified`] before the first check.
const NEVER: u64 = u64::MAX;

impl Views {
    /// The view of the profile `dir` (which the caller has already been
    /// allowed to act on), created empty when there is none for this very
    /// directory; it is filled on first listing.
    pub fn of(&self, dir: &ProfileDir) -> profile::Result<Arc<ProfileView>> {
        let identity = dir.identity()?;
        let name = dir.account().name.as_str();
        let mut map = lock(&self.by_user);
        if let Some(v) = map.get(name)
            && v.identity == identity
            && v.account == *dir.account()
        {
            return Ok(v.clone());
        }
        let view = Arc::new(ProfileView {
            account: dir.account().clone(),
            identity,
            verified: AtomicU64::new(NEVER),
            refresh: Mutex::new(()),
            index: RwLock::new(Index::default()),
        });
        map.insert(name.to_owned(), view.clone());
        Ok(view)
    }

    /// The view of `account`'s profile, if one was made for this very
    /// account (name, uid, group and home alike) and the directory under
    /// `root` is still the one it was made from (checked without opening
    /// it: a profile removed, replaced or handed to someone else is never
    /// answered from its old view).
    ///
    /// `generation` is the caller's watch generation of the profiles
    /// root's entries, taken after the request arrived
    /// ([`crate::api::Identities::profiles_generation`]): a directory found
    /// right under the same generation is not looked up again, since any
    /// change of the root's entries since then would have started a new one.
    /// `None`: the root is not watched, look every time.
    pub fn get(
        &self,
        root: &ProfilesRoot,
        account: &Account,
        generation: Option<u64>,
    ) -> Option<Arc<ProfileView>> {
        let view = lock(&self.by_user)
            .get(&account.name)
            .filter(|v| v.account == *account)
            .cloned()?;
        if generation.is_some_and(|g| view.verified.load(Ordering::Acquire) == g) {
            return Some(view);
        }
        if root.profile_identity(account) != Some(view.identity) {
            return None;
        }
        if let Some(g) = generation {
            view.verified.store(g, Ordering::Release);
        }
        Some(view)
    }

    /// Re-reads the record file `rel` of `user`'s profile into its view, if
    /// the profile has one: the watcher saw it change. The profile is
    /// opened afresh under `root` (views hold no descriptors); a view whose
    /// directory is gone or replaced is dropped. `system` records refused
    /// reads like any other read.
    pub fn refresh(&self, root: &ProfilesRoot, user: &str, rel: &str, system: &SystemLog) {
        let Some(view) = lock(&self.by_user).get(user).cloned() else {
            return;
        };
        let dir = match root.open_owned(&view.account) {
            Ok(Some(dir)) if dir.identity().is_ok_and(|id| id == view.identity) => dir,
            _ => {
                let mut map = lock(&self.by_user);
                if map.get(user).is_some_and(|v| Arc::ptr_eq(v, &view)) {
                    map.remove(user);
                }
                return;
            }
        };
        let auditor = Auditor {
            system,
            actor: user,
            on_behalf: false,
        };
        view.refresh(&Store::new(&dir, &auditor), rel);
    }

    /// Drops every view: events may have been lost (a queue overflow), so
    /// each profile is walked again on its next listing.
    pub fn clear(&self) {
        lock(&self.by_user).clear();
    }
}

impl ProfileView {
    /// One page of memories (as [`Store::list_memories`]) as JSON, from
    /// memory alone: `None` when the view is not walked yet or a record on
    /// the page has a text too long to keep (then the store reads it).
    pub fn memories_page(&self, limit: usize, before: Option<&str>) -> Option<String> {
        let index = read(&self.index);
        if !index.built {
            return None;
        }
        memory::pick(&index, limit, before).json()
    }

    /// One page of tasks (as [`Store::list_tasks`]) as JSON, from memory
    /// alone, as [`ProfileView::memories_page`].
    pub fn tasks_page(
        &self,
        status: Option<TaskStatus>,
        limit: usize,
        before: Option<&str>,
    ) -> Option<String> {
        let index = read(&self.index);
        if !index.built {
            return None;
        }
        task::pick(&index, status, limit, before).json()
    }

    /// The index, walked from disk through `store` if it was not yet.
    pub(super) fn index(&self, store: &Store<'_>) -> RwLockReadGuard<'_, Index> {
        {
            let index = read(&self.index);
            if index.built {
                return index;
            }
        }
        let _refreshing = lock(&self.refresh);
        if !read(&self.index).built {
            let built = Index::walk(store);
            *write(&self.index) = built;
        }
        read(&self.index)
    }

    /// Re-reads the record file `rel` through `store` (a store of this very
    /// profile) and stores what it now is; a view not yet walked is left
    /// alone, its walk will read the file.
    pub(super) fn refresh(&self, store: &Store<'_>, rel: &str) {
        let _refreshing = lock(&self.refresh);
        if !read(&self.index).built {
            return;
        }
        if let Some(key) = memory_key(rel) {
            let slot = store.memory_slot(&key.2, rel);
            let mut index = write(&self.index);
            match slot {
                Some(slot) => index.memories.insert(key, slot),
                None => index.memories.remove(&key),
            };
        } else if let Some(id) = task_key(rel) {
            let slot = store.task_slot(&id, rel);
            let mut index = write(&self.index);
            match slot {
                Some(slot) => index.tasks.insert(id, slot),
                None => index.tasks.remove(&id),
            };
        }
    }
}

impl Index {
    /// One walk of the profile's memories and tasks.
    pub(super) fn walk(store: &Store<'_>) -> Index {
        let (memories, memory_tree) = store.walk_memories();
        let (tasks, task_tree) = store.walk_tasks();
        Index {
            built: true,
            memories,
            memory_tree,
            tasks,
            task_tree,
        }
    }
}

/// A record as the view keeps it: as JSON, without a text over
/// [`MAX_KEPT_TEXT`].
pub(super) fn kept<T: Serialize, M>(
    mut record: T,
    meta: M,
    rel: &str,
    text: impl FnOnce(&mut T) -> &mut String,
) -> Slot<M> {
    let body = text(&mut record);
    let whole = body.len() <= MAX_KEPT_TEXT;
    if !whole {
        *body = String::new();
    }
    match serde_json::to_string(&record) {
        Ok(json) => Slot::Record {
            json: json.into_boxed_str(),
            meta,
            whole,
        },
        Err(e) => Slot::Bad(Problem {
            file: rel.to_owned(),
            line: None,
            reason: format!("cannot be shown as JSON: {e}"),
        }),
    }
}

/// `memory/episodic/YYYY/MM/<id>.md` as its key.
fn memory_key(rel: &str) -> Option<MemoryKey> {
    let rest = rel.strip_prefix("memory/episodic/")?;
    let mut parts = rest.split('/');
    let (year, month, name) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !digits(year, 4) || !digits(month, 2) {
        return None;
    }
    let id = record_id(name)?;
    Some((year.to_owned(), month.to_owned(), id))
}

/// `memory/tasks/<id>.md` as its id.
fn task_key(rel: &str) -> Option<String> {
    record_id(rel.strip_prefix("memory/tasks/")?)
}

/// The id of a record file name, as listings accept it.
fn record_id(name: &str) -> Option<String> {
    name.strip_suffix(".md")
        .filter(|id| valid_id(id))
        .map(str::to_owned)
}

fn digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_record_paths_have_keys() {
        assert_eq!(
            memory_key("memory/episodic/2026/11/evt-1.md"),
            Some(("2026".into(), "11".into(), "evt-1".into()))
        );
        assert_eq!(task_key("memory/tasks/task-1.md"), Some("task-1".into()));
        for other in [
            "memory/episodic/2026/11/.evt-1.md.01J.tmp",
            "memory/episodic/2026/11/evt-1.md~",
            "memory/episodic/26/11/evt-1.md",
            "memory/episodic/2026/11/x/evt-1.md",
            "memory/tasks/sub/task-1.md",
            "memory/inbox/note.md",
            "profile.toml",
        ] {
            assert_eq!(memory_key(other), None, "{other}");
            assert_eq!(task_key(other), None, "{other}");
        }
    }

    #[test]
    fn long_texts_are_not_kept() {
        let short = kept(String::from("hello"), (), "f", |s| s);
        assert!(
            matches!(short, Slot::Record { whole: true, ref json, .. } if &**json == "\"hello\"")
        );
        let long = kept("x".repeat(MAX_KEPT_TEXT + 1), (), "f", |s| s);
        assert!(matches!(long, Slot::Record { whole: false, ref json, .. } if &**json == "\"\""));
    }

    #[test]
    fn a_page_as_json_is_what_page_serializes_to() -> Result<(), serde_json::Error> {
        let memory = crate::store::Memory {
            id: "evt-1".into(),
            path: "memory/episodic/2026/11/evt-1.md".into(),
            created: Some("2026-11-22T05:41:54Z".into()),
            updated: None,
            tags: vec!["a \"quoted\" tag".into()],
            processed: false,
            source: None,
            text: "line one\nline two\n".into(),
        };
        let Slot::Record { json, .. } = kept(memory, (), "f", |m| &mut m.text) else {
            panic!("a plain memory is kept");
        };
        let picked = Picked {
            items: vec![("evt-1", &json, true)],
            next: Some("evt-1".into()),
            problems: vec![Problem {
                file: "memory/tasks/x.md".into(),
                line: Some(2),
                reason: "bad".into(),
            }],
        };
        let fast = picked.json();
        let (page, stale) = picked.page::<crate::store::Memory>();
        assert!(stale.is_empty());
        assert_eq!(fast, Some(serde_json::to_string(&page)?));
        Ok(())
    }
}
