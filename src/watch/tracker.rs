//! What the watcher knows of each profile (a stamp per record file) and the
//! reconciliation that turns "something happened at this path" into typed
//! changes by comparing the disk with what was known.
//!
//! Comparing, rather than translating raw events one by one, is what makes
//! an editor's temp-and-rename one `updated`, a queue overflow a rescan
//! with no loss, and a freshly created directory's files visible even when
//! they were written before its watch existed.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use super::classify::{classify, may_hold_records};
use super::watches::Scope;
use super::{Action, Change};
use crate::accounts::{self, Eligibility, Policy};
use crate::audit::{Auditor, SystemLog};
use crate::profile::{EntryKind, ProfileDir, ProfilesRoot, Stamp};
use crate::store::{InForce, SettingsInForce, Store};

struct Tracked {
    dir: ProfileDir,
    known: BTreeMap<String, Stamp>,
}

/// The known state of every watched profile.
#[derive(Default)]
pub struct Tracker {
    profiles: HashMap<String, Tracked>,
}

impl Tracker {
    /// Records every eligible profile's files as the starting point; no
    /// changes are reported for them.
    pub fn baseline(&mut self, root: &ProfilesRoot, policy: &Policy) {
        for name in profile_names(root) {
            self.reconcile_profile(root, policy, &name, false);
        }
    }

    /// Every profile checked again: after a queue overflow, when any event
    /// may have been lost.
    pub fn rescan_all(&mut self, root: &ProfilesRoot, policy: &Policy) -> Vec<Change> {
        let mut names = profile_names(root);
        names.extend(self.profiles.keys().cloned());
        names.sort();
        names.dedup();
        names
            .iter()
            .flat_map(|n| self.reconcile_profile(root, policy, n, true))
            .collect()
    }

    /// The changes at `rel` (a file or a directory) of `user`'s profile;
    /// `""` re-opens the profile itself and rescans it.
    pub fn reconcile(
        &mut self,
        root: &ProfilesRoot,
        policy: &Policy,
        user: &str,
        rel: &str,
    ) -> Vec<Change> {
        if rel.is_empty() || !self.profiles.contains_key(user) {
            return self.reconcile_profile(root, policy, user, true);
        }
        let is_record = classify(rel).is_some();
        if !is_record && !may_hold_records(rel) {
            return Vec::new();
        }
        let Some(tracked) = self.profiles.get_mut(user) else {
            return Vec::new();
        };
        let mut now = BTreeMap::new();
        if is_record {
            if let Ok(Some(stamp)) = tracked.dir.stamp(rel) {
                now.insert(rel.to_owned(), stamp);
            }
        } else {
            scan(&tracked.dir, rel, &mut now, 0);
        }
        diff(user, &mut tracked.known, rel, now)
    }

    /// The open directory of `user`'s profile, if it is tracked.
    pub fn dir(&self, user: &str) -> Option<&ProfileDir> {
        self.profiles.get(user).map(|t| &t.dir)
    }

    /// The accounts whose profiles are tracked.
    pub fn users(&self) -> Vec<String> {
        self.profiles.keys().cloned().collect()
    }

    /// The (device, inode) of the directory `rel` of the profile `scope`
    /// names, reached as its account without a link; `None` when there is
    /// no such directory of that account (or `scope` is not a profile).
    pub fn dir_id(&self, scope: &Scope, rel: &str) -> Option<(u64, u64)> {
        match scope {
            Scope::Profile(user) => self.dir(user)?.dir_id(rel),
            Scope::Root | Scope::Knowledge => None,
        }
    }

    /// `user`'s settings in force, read again through `cache` (the
    /// daemon's last valid profile.toml of each profile) now that the file
    /// changed: a valid file becomes the one in force, an invalid one
    /// keeps the previous and says why.
    pub fn settings_in_force(
        &self,
        user: &str,
        system: &SystemLog,
        cache: &SettingsInForce,
    ) -> Option<InForce> {
        let tracked = self.profiles.get(user)?;
        let auditor = Auditor {
            system,
            actor: user,
            on_behalf: false,
        };
        // Never waits: this thread serves every profile (settings changes
        // reach here once the file settled, see `held`).
        Some(cache.get_now(&Store::new(&tracked.dir, &auditor)))
    }

    /// Opens (or re-opens) `user`'s profile if it is an eligible account's
    /// directory owned by that account, and compares all of it.
    fn reconcile_profile(
        &mut self,
        root: &ProfilesRoot,
        policy: &Policy,
        user: &str,
        emit: bool,
    ) -> Vec<Change> {
        let opened = accounts::by_name(user)
            .ok()
            .flatten()
            .filter(|a| matches!(policy.eligibility(a), Ok(Eligibility::Eligible)))
            .and_then(|a| root.open_owned(&a).ok().flatten());
        let mut known = self
            .profiles
            .remove(user)
            .map(|t| t.known)
            .unwrap_or_default();
        let mut now = BTreeMap::new();
        if let Some(dir) = &opened {
            scan(dir, "", &mut now, 0);
        }
        let changes = diff(user, &mut known, "", now);
        if let Some(dir) = opened {
            self.profiles
                .insert(user.to_owned(), Tracked { dir, known });
        }
        if emit { changes } else { Vec::new() }
    }
}

/// The names in the profiles root that may be profiles.
fn profile_names(root: &ProfilesRoot) -> Vec<String> {
    match root.list() {
        Ok(list) => list.into_iter().map(|l| l.name).collect(),
        Err(e) => {
            tracing::error!("watch: cannot list the profiles root: {e}");
            Vec::new()
        }
    }
}

/// Deep enough for `memory/episodic/YYYY/MM`.
const MAX_DEPTH: usize = 5;

/// Adds the stamp of every record file under the directory `rel` to `out`,
/// never following a link.
fn scan(dir: &ProfileDir, rel: &str, out: &mut BTreeMap<String, Stamp>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(entries) = dir.list(rel) else {
        return;
    };
    for entry in entries {
        let child = if rel.is_empty() {
            entry.name.clone()
        } else {
            format!("{rel}/{}", entry.name)
        };
        match entry.kind {
            EntryKind::Dir if may_hold_records(&child) => scan(dir, &child, out, depth + 1),
            EntryKind::File if classify(&child).is_some() => {
                if let Ok(Some(stamp)) = dir.stamp(&child) {
                    out.insert(child, stamp);
                }
            }
            _ => {}
        }
    }
}

/// Compares `now` (what is at and under `rel`) with `known`, updates
/// `known` and returns the differences.
fn diff(
    user: &str,
    known: &mut BTreeMap<String, Stamp>,
    rel: &str,
    now: BTreeMap<String, Stamp>,
) -> Vec<Change> {
    // Only the keys at and under `rel` are looked at (a range of the sorted
    // map, not every path of the profile), so a burst of N files in a
    // profile of M costs N·log M, not N·M.
    let prefix = format!("{rel}/");
    // `rel` and every `rel/…` sort before `rel0` ('0' follows '/').
    let end = format!("{rel}0");
    let range = if rel.is_empty() {
        known.range::<str, _>(..)
    } else {
        known.range::<str, _>((Bound::Included(rel), Bound::Excluded(end.as_str())))
    };
    let gone: Vec<String> = range
        .map(|(p, _)| p)
        .filter(|p| rel.is_empty() || p.as_str() == rel || p.starts_with(&prefix))
        .filter(|p| !now.contains_key(*p))
        .cloned()
        .collect();
    let mut changes = Vec::new();
    for path in gone {
        known.remove(&path);
        changes.extend(change(user, &path, Action::Deleted));
    }
    for (path, stamp) in now {
        let action = match known.insert(path.clone(), stamp) {
            None => Action::Created,
            Some(old) if old != stamp => Action::Updated,
            Some(_) => continue,
        };
        changes.extend(change(user, &path, action));
    }
    changes
}

fn change(user: &str, path: &str, action: Action) -> Option<Change> {
    let (kind, record) = classify(path)?;
    Some(Change {
        user: user.to_owned(),
        kind,
        action,
        record,
        path: path.to_owned(),
        problem: None,
        author: None,
    })
}
