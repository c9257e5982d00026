//! The watch table: which watch descriptor is which directory of whose
//! profile, and the translation of raw kernel events into what was
//! touched.
//!
//! inotify hands out one descriptor per inode, so adding a watch on a
//! directory already watched under another name returns the old
//! descriptor: [`Watches::register`] never lets that re-label a directory
//! of another profile (or the profiles root, or the knowledge directory)
//! while it is still where it was, so nothing a user does in her profile
//! changes what another profile's watches report.

use std::collections::HashMap;

use rustix::fs::inotify::ReadFlags;

use super::kernel::Raw;

/// Whose directory a watch is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The profiles root.
    Root,
    /// The knowledge directory.
    Knowledge,
    /// A directory of this account's profile.
    Profile(String),
}

/// A watched directory: its scope, its path relative to the scope and its
/// identity (device, inode) when the watch was added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    /// Whose it is.
    pub scope: Scope,
    /// Its path relative to the profile (`""`: the profile itself).
    pub rel: String,
    /// Its (device, inode).
    pub id: (u64, u64),
}

/// What an event touched.
#[derive(Debug, PartialEq, Eq)]
pub enum Touch {
    /// `rel` (`""`: the profile itself) of `user`'s profile.
    Profile {
        /// The account.
        user: String,
        /// The path relative to the profile.
        rel: String,
    },
    /// The profiles root itself: profiles may have come or gone.
    Root,
    /// The entry `name` of the knowledge directory.
    Knowledge(String),
    /// The knowledge directory itself.
    KnowledgeDir,
    /// Events were lost (queue overflow): everything must be compared.
    Rescan,
}

/// What [`Watches::register`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Registered {
    /// A new watch.
    New,
    /// The directory was watched already under this label.
    Same,
    /// The directory was watched under a label that no longer describes
    /// it (it moved): it now has this one.
    Relabelled,
    /// The descriptor belongs to another directory that is still where its
    /// label says: the label was kept and this directory has no watch of
    /// its own.
    Kept,
}

/// Every watch of the daemon's inotify instance.
#[derive(Default)]
pub struct Watches {
    labels: HashMap<i32, Label>,
    per_profile: HashMap<String, usize>,
    /// Watches whose directory moved: checked at the end of the burst.
    moved: Vec<i32>,
}

impl Watches {
    /// How many watches `user`'s profile has.
    pub fn count(&self, user: &str) -> usize {
        self.per_profile.get(user).copied().unwrap_or(0)
    }

    /// Records that `wd` watches `label`. When `wd` already names another
    /// directory, `still_there` says whether that label still describes
    /// the inode; if so it is kept (the profiles root and the knowledge
    /// directory always are).
    pub fn register(
        &mut self,
        wd: i32,
        label: Label,
        still_there: impl FnOnce(&Label) -> bool,
    ) -> Registered {
        let outcome = match self.labels.get(&wd) {
            None => Registered::New,
            Some(old) if *old == label => return Registered::Same,
            Some(old) if !matches!(old.scope, Scope::Profile(_)) => return Registered::Kept,
            Some(old) if old.scope != label.scope && still_there(old) => return Registered::Kept,
            Some(_) => Registered::Relabelled,
        };
        self.forget(wd);
        if let Scope::Profile(user) = &label.scope {
            *self.per_profile.entry(user.clone()).or_insert(0) += 1;
        }
        self.labels.insert(wd, label);
        outcome
    }

    /// Forgets `wd` (its directory is gone, or the watch was removed).
    pub fn forget(&mut self, wd: i32) -> Option<Label> {
        let label = self.labels.remove(&wd)?;
        if let Scope::Profile(user) = &label.scope
            && let Some(n) = self.per_profile.get_mut(user)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_profile.remove(user);
            }
        }
        Some(label)
    }

    /// The watches of `user`'s profile.
    pub fn of(&self, user: &str) -> Vec<i32> {
        self.labels
            .iter()
            .filter(|(_, l)| matches!(&l.scope, Scope::Profile(u) if u == user))
            .map(|(wd, _)| *wd)
            .collect()
    }

    /// The watches whose directory moved since the last call, with their
    /// labels.
    pub fn take_moved(&mut self) -> Vec<(i32, Label)> {
        let moved = std::mem::take(&mut self.moved);
        moved
            .into_iter()
            .filter_map(|wd| Some((wd, self.labels.get(&wd)?.clone())))
            .collect()
    }

    /// What `raw` touched; `None` for an event of no known watch.
    pub fn resolve(&mut self, raw: &Raw) -> Option<Touch> {
        if raw.mask.contains(ReadFlags::QUEUE_OVERFLOW) {
            return Some(Touch::Rescan);
        }
        if raw.mask.contains(ReadFlags::IGNORED) {
            // The watch is gone (its directory removed, or us removing it):
            // the removal itself was reported through the parent.
            self.forget(raw.wd);
            return None;
        }
        if raw.mask.contains(ReadFlags::MOVE_SELF) {
            self.moved.push(raw.wd);
        }
        let label = self.labels.get(&raw.wd)?;
        let name = match (raw.name.is_some(), raw.name()) {
            (false, _) => None,
            (true, Some(name)) => Some(name),
            // A name that is not UTF-8 is never a record or a profile.
            (true, None) => return None,
        };
        match (&label.scope, name) {
            (Scope::Root, None) => Some(Touch::Root),
            // The daemon's own `.provision-*` and other hidden names.
            (Scope::Root, Some(name)) if name.starts_with('.') => None,
            (Scope::Root, Some(name)) => Some(Touch::Profile {
                user: name.to_owned(),
                rel: String::new(),
            }),
            (Scope::Knowledge, None) => Some(Touch::KnowledgeDir),
            (Scope::Knowledge, Some(name)) => Some(Touch::Knowledge(name.to_owned())),
            (Scope::Profile(user), name) => {
                let rel = match name {
                    None => label.rel.clone(),
                    Some(n) if label.rel.is_empty() => n.to_owned(),
                    Some(n) => format!("{}/{n}", label.rel),
                };
                Some(Touch::Profile {
                    user: user.clone(),
                    rel,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(user: &str, rel: &str, ino: u64) -> Label {
        Label {
            scope: Scope::Profile(user.into()),
            rel: rel.into(),
            id: (1, ino),
        }
    }

    fn raw(wd: i32, mask: ReadFlags, name: Option<&str>) -> Raw {
        Raw {
            wd,
            mask,
            name: name.map(|n| n.as_bytes().to_vec()),
        }
    }

    #[test]
    fn another_profiles_directory_is_never_relabelled_while_it_is_there() {
        let mut w = Watches::default();
        assert_eq!(
            w.register(5, label("bob", "memory", 9), |_| true),
            Registered::New
        );
        // alice reached the same inode: bob's label stays.
        assert_eq!(
            w.register(5, label("alice", "memory/tasks", 9), |_| true),
            Registered::Kept
        );
        assert_eq!((w.count("bob"), w.count("alice")), (1, 0));
        assert_eq!(
            w.resolve(&raw(5, ReadFlags::CREATE, Some("t.md"))),
            Some(Touch::Profile {
                user: "bob".into(),
                rel: "memory/t.md".into()
            })
        );
        // Moved within a profile: the new name wins.
        assert_eq!(
            w.register(5, label("bob", "persona", 9), |_| true),
            Registered::Relabelled
        );
        // Moved to another profile (an admin's mv): bob's label is stale.
        assert_eq!(
            w.register(5, label("carol", "memory", 9), |_| false),
            Registered::Relabelled
        );
        assert_eq!((w.count("bob"), w.count("carol")), (0, 1));
        let root = Label {
            scope: Scope::Root,
            rel: String::new(),
            id: (1, 2),
        };
        assert_eq!(w.register(1, root, |_| false), Registered::New);
        assert_eq!(
            w.register(1, label("alice", "", 2), |_| false),
            Registered::Kept
        );
    }

    #[test]
    fn events_name_the_profile_and_path_and_gone_watches_are_forgotten() {
        let mut w = Watches::default();
        let root = Label {
            scope: Scope::Root,
            rel: String::new(),
            id: (1, 2),
        };
        w.register(1, root, |_| false);
        w.register(2, label("alice", "", 3), |_| false);
        assert_eq!(
            w.resolve(&raw(1, ReadFlags::CREATE, Some("alice"))),
            Some(Touch::Profile {
                user: "alice".into(),
                rel: String::new()
            })
        );
        assert_eq!(
            w.resolve(&raw(1, ReadFlags::CREATE, Some(".provision-x"))),
            None
        );
        assert_eq!(
            w.resolve(&raw(2, ReadFlags::CREATE, Some("memory"))),
            Some(Touch::Profile {
                user: "alice".into(),
                rel: "memory".into()
            })
        );
        assert_eq!(
            w.resolve(&raw(-1, ReadFlags::QUEUE_OVERFLOW, None)),
            Some(Touch::Rescan)
        );
        assert_eq!(w.resolve(&raw(2, ReadFlags::IGNORED, None)), None);
        assert_eq!(w.count("alice"), 0);
        assert_eq!(w.resolve(&raw(2, ReadFlags::CREATE, Some("x"))), None);
    }
}
