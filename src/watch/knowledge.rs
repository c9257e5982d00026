//! What the watcher knows of the knowledge directory (the stamp and author
//! of each entry that would be served) and the comparison that turns
//! "something happened there" into typed knowledge changes.

use std::collections::BTreeMap;

use super::{Action, Change, Kind};
use crate::accounts::Policy;
use crate::profile::{EntryKind, Stamp};
use crate::store::{KnowledgeHub, knowledge_id};

/// The known entries: file name to (stamp, author).
#[derive(Default)]
pub struct KnowledgeTracker {
    known: BTreeMap<String, (Stamp, String)>,
}

impl KnowledgeTracker {
    /// Records the entries there now as the starting point.
    pub fn baseline(&mut self, hub: &KnowledgeHub, policy: &Policy) {
        self.known = scan(hub, policy);
    }

    /// The whole directory compared again (it changed as a whole, or
    /// events were lost).
    pub fn rescan(&mut self, hub: &KnowledgeHub, policy: &Policy) -> Vec<Change> {
        let now = scan(hub, policy);
        let gone: Vec<String> = self
            .known
            .keys()
            .filter(|n| !now.contains_key(*n))
            .cloned()
            .collect();
        let mut changes: Vec<Change> = gone.iter().filter_map(|n| self.forget(n)).collect();
        for (name, seen) in now {
            changes.extend(self.see(&name, seen));
        }
        changes
    }

    /// The change of the entry `name`, if any.
    pub fn reconcile(&mut self, hub: &KnowledgeHub, policy: &Policy, name: &str) -> Vec<Change> {
        if knowledge_id(name).is_none() {
            return Vec::new();
        }
        match hub.attribute(name, policy) {
            Some(seen) => self.see(name, seen).into_iter().collect(),
            None => self.forget(name).into_iter().collect(),
        }
    }

    fn see(&mut self, name: &str, seen: (Stamp, String)) -> Option<Change> {
        let action = match self.known.insert(name.to_owned(), seen.clone()) {
            None => Action::Created,
            Some(old) if old != seen => Action::Updated,
            Some(_) => return None,
        };
        Some(change(name, action, seen.1))
    }

    /// An entry gone, or no longer served (a link put in its place).
    fn forget(&mut self, name: &str) -> Option<Change> {
        let (_, author) = self.known.remove(name)?;
        Some(change(name, Action::Deleted, author))
    }
}

/// Every entry that would be served now; the others are reported by the
/// hub (once per version).
fn scan(hub: &KnowledgeHub, policy: &Policy) -> BTreeMap<String, (Stamp, String)> {
    let entries = match hub.dir().list() {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("watch: cannot list the knowledge directory: {e}");
            return BTreeMap::new();
        }
    };
    entries
        .into_iter()
        .filter(|e| e.kind != EntryKind::Dir && knowledge_id(&e.name).is_some())
        .filter_map(|e| Some((e.name.clone(), hub.attribute(&e.name, policy)?)))
        .collect()
}

fn change(name: &str, action: Action, author: String) -> Change {
    Change {
        user: String::new(),
        kind: Kind::Knowledge,
        action,
        record: knowledge_id(name).map(str::to_owned),
        path: name.to_owned(),
        problem: None,
        author: Some(author),
    }
}
