//! A short-lived memory of the name service's answers about callers, so a
//! request does not parse /etc/passwd, /etc/shadow and /etc/group again.
//!
//! The rule (docs/AUTH.md): every answer is dropped as soon as one of the
//! account files changes (/etc/passwd, /etc/shadow, /etc/group,
//! /etc/nsswitch.conf, checked on every request), and at the latest [`TTL`]
//! after it was first asked, for name services that are not files (LDAP,
//! SSSD). `passwd -l`, `userdel`, `usermod -L`, `chage -E` and `gpasswd` all
//! rewrite one of those files, so an account locked, removed or taken out
//! of a group loses access on its next request. A config change is seen
//! too: a caller is remembered with the policy it was judged under.
//!
//! The check is an inotify watch on /etc, read without blocking: the kernel
//! queues an event before the `rename` or `write` that changed a file
//! returns, so a request that follows a change always finds its event.
//! Where inotify is unavailable, its watch is lost, or a file is a link to
//! elsewhere, each file is `stat`ed instead (device, inode, size, time).
//!
//! An answer is only stored if nothing was dropped since the files were
//! checked for it, so an answer from before a change is never kept after.
//! Failures of the name service are never remembered (they fail closed).
//!
//! The same inotify instance watches the entries of the profiles root (a
//! profile created, removed, renamed or chowned), so the check every request
//! makes also says whether the directory behind an account's name may have
//! changed: [`Identities::profiles_generation`] lets a listing trust what it
//! verified of a profile under the same generation instead of `fstatat`ing
//! it again on every request.

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::fs::inotify;
use rustix::io::Errno;

use super::extract::{Caller, identify};
use super::problem::ApiError;
use crate::accounts::{self, Account, Eligibility, Policy, UserId};
use crate::budget::Standing;

/// How long any answer is kept at most.
pub const TTL: Duration = Duration::from_secs(1);

/// The files whose change drops every answer.
const FILES: [&str; 4] = [
    "/etc/passwd",
    "/etc/shadow",
    "/etc/group",
    "/etc/nsswitch.conf",
];

/// Their names in /etc.
const NAMES: [&[u8]; 4] = [b"passwd", b"shadow", b"group", b"nsswitch.conf"];

/// What tells one version of a file from another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Version {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
}

type Versions = [Option<Version>; FILES.len()];

fn versions() -> Versions {
    FILES.map(|f| {
        std::fs::metadata(f).ok().map(|m| Version {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
        })
    })
}

/// How changes of the account files are noticed.
#[derive(Debug)]
enum Watch {
    /// An inotify instance (non-blocking) watching /etc, and the entries of
    /// the profiles root when `profiles` is its watch.
    Inotify { fd: OwnedFd, profiles: Option<i32> },
    /// The files' versions when last checked.
    Stat(Versions),
}

impl Watch {
    /// Watches /etc and, when given, the entries of `profiles_root`.
    fn start(profiles_root: Option<&Path>) -> Watch {
        let mut watch = Watch::start_etc();
        if let (Watch::Inotify { fd, profiles }, Some(root)) = (&mut watch, profiles_root) {
            let flags = inotify::WatchFlags::CREATE
                | inotify::WatchFlags::DELETE
                | inotify::WatchFlags::MOVED_FROM
                | inotify::WatchFlags::MOVED_TO
                | inotify::WatchFlags::ATTRIB
                | inotify::WatchFlags::DELETE_SELF
                | inotify::WatchFlags::MOVE_SELF
                | inotify::WatchFlags::DONT_FOLLOW
                | inotify::WatchFlags::ONLYDIR;
            match inotify::add_watch(&*fd, root, flags) {
                Ok(wd) => *profiles = Some(wd),
                Err(e) => tracing::warn!(
                    "cannot watch {} ({e}); each listing checks its profile directory",
                    root.display()
                ),
            }
        }
        watch
    }

    fn start_etc() -> Watch {
        let links = FILES
            .iter()
            .any(|f| std::fs::symlink_metadata(f).is_ok_and(|m| m.file_type().is_symlink()));
        if links {
            return Watch::Stat(versions());
        }
        let watched = inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC)
            .and_then(|fd| {
                let flags = inotify::WatchFlags::MODIFY
                    | inotify::WatchFlags::ATTRIB
                    | inotify::WatchFlags::CLOSE_WRITE
                    | inotify::WatchFlags::CREATE
                    | inotify::WatchFlags::DELETE
                    | inotify::WatchFlags::MOVED_FROM
                    | inotify::WatchFlags::MOVED_TO
                    | inotify::WatchFlags::DELETE_SELF
                    | inotify::WatchFlags::MOVE_SELF
                    | inotify::WatchFlags::ONLYDIR;
                inotify::add_watch(&fd, "/etc", flags).map(|_| fd)
            });
        match watched {
            Ok(fd) => Watch::Inotify { fd, profiles: None },
            Err(e) => {
                tracing::warn!(
                    "cannot watch /etc ({e}); the account files are stat()ed on every request"
                );
                Watch::Stat(versions())
            }
        }
    }

    /// Whether an account file changed since the last call.
    fn changed(&mut self) -> bool {
        match self {
            Watch::Stat(known) => {
                let now = versions();
                let changed = *known != now;
                *known = now;
                changed
            }
            Watch::Inotify { fd, profiles } => match drain(fd, *profiles) {
                Some(changed) => changed,
                None => {
                    // A watch is gone (/etc or the profiles root replaced,
                    // unmounted): stat from now on, and count this as a
                    // change.
                    tracing::warn!(
                        "the watch on /etc or the profiles root ended; the account files are \
                         stat()ed on every request, and each listing checks its profile directory"
                    );
                    *self = Watch::Stat(versions());
                    true
                }
            },
        }
    }

    /// Whether every change of the profiles root's entries is seen.
    fn sees_profiles(&self) -> bool {
        matches!(
            self,
            Watch::Inotify {
                profiles: Some(_),
                ..
            }
        )
    }
}

/// Reads every queued event; whether one was about an account file or an
/// entry of the profiles root (watch `profiles`), or events were lost;
/// `None` when a watch no longer works.
fn drain(fd: &OwnedFd, profiles: Option<i32>) -> Option<bool> {
    let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
    let mut reader = inotify::Reader::new(fd, &mut buf);
    let mut changed = false;
    loop {
        match reader.next() {
            Ok(event) => {
                let flags = event.events();
                if flags.intersects(inotify::ReadFlags::IGNORED | inotify::ReadFlags::UNMOUNT) {
                    return None;
                }
                let name = event.file_name().map(|n| n.to_bytes());
                changed |= flags.contains(inotify::ReadFlags::QUEUE_OVERFLOW)
                    || Some(event.wd()) == profiles
                    || name.is_some_and(|n| NAMES.contains(&n));
            }
            Err(Errno::AGAIN) => return Some(changed),
            Err(Errno::INTR) => {}
            Err(_) => return None,
        }
    }
}

#[derive(Debug)]
struct Answers {
    /// Bumped whenever everything is dropped.
    generation: u64,
    watch: Watch,
    since: Instant,
    accounts: HashMap<UserId, Option<Account>>,
    blocked: HashMap<String, Option<String>>,
    callers: HashMap<UserId, (Policy, Caller)>,
    /// Refusals included, unlike `callers`: a uid that may not use the API
    /// is classified on every connection it opens.
    standings: HashMap<UserId, (Policy, Standing)>,
}

/// The remembered answers.
#[derive(Debug)]
pub struct Identities {
    answers: Mutex<Answers>,
    /// The generation, readable without the lock; [`UNSEEN`] while changes
    /// of the profiles root are not watched.
    profiles: AtomicU64,
}

/// [`Identities::profiles`] when the profiles root is not watched.
const UNSEEN: u64 = u64::MAX;

impl Default for Identities {
    fn default() -> Self {
        Identities::new(None)
    }
}

impl Identities {
    /// The memory, also watching the entries of `profiles_root` when given.
    pub fn new(profiles_root: Option<&Path>) -> Identities {
        let watch = Watch::start(profiles_root);
        let profiles = AtomicU64::new(if watch.sees_profiles() { 0 } else { UNSEEN });
        Identities {
            answers: Mutex::new(Answers {
                generation: 0,
                watch,
                since: Instant::now(),
                accounts: HashMap::new(),
                blocked: HashMap::new(),
                callers: HashMap::new(),
                standings: HashMap::new(),
            }),
            profiles,
        }
    }

    /// The generation of the last check, when the profiles root is
    /// watched: what was verified of a profile directory under this same
    /// generation still holds, because a change of the root's entries made
    /// before this request's own check would have started a new one. `None`
    /// when the root is not watched (check every time).
    pub fn profiles_generation(&self) -> Option<u64> {
        Some(self.profiles.load(Ordering::Acquire)).filter(|g| *g != UNSEEN)
    }
}

/// The account files as checked for one request: answers remembered since
/// that check may be used for the rest of the request without another.
#[derive(Clone, Copy, Debug)]
pub struct Checked(u64);

impl Identities {
    /// Checks the account files for a request, dropping every answer if
    /// they changed or the answers are too old.
    pub fn check(&self) -> Checked {
        Checked(self.current().1)
    }

    /// The answers as of `checked`; `None` when they were dropped since.
    fn as_of(&self, checked: Checked) -> Option<MutexGuard<'_, Answers>> {
        let a = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        (a.generation == checked.0).then_some(a)
    }

    /// The answers, after dropping them if the files changed or they are
    /// too old; the generation to store new ones under.
    fn current(&self) -> (MutexGuard<'_, Answers>, u64) {
        let mut a = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        // Checked first, every time: a change must never stay queued.
        let changed = a.watch.changed();
        if changed || a.since.elapsed() >= TTL {
            a.generation += 1;
            a.since = Instant::now();
            a.accounts.clear();
            a.blocked.clear();
            a.callers.clear();
            a.standings.clear();
            let seen = if a.watch.sees_profiles() {
                a.generation
            } else {
                UNSEEN
            };
            self.profiles.store(seen, Ordering::Release);
        }
        let generation = a.generation;
        (a, generation)
    }

    /// Stores with `put` unless everything was dropped since `generation`.
    fn remember(&self, generation: u64, put: impl FnOnce(&mut Answers)) {
        let mut a = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        if a.generation == generation {
            put(&mut a);
        }
    }

    /// The remembered account of `uid`, without asking NSS.
    pub fn peek_account(&self, checked: Checked, uid: UserId) -> Option<Option<Account>> {
        self.as_of(checked)?.accounts.get(&uid).cloned()
    }

    /// The account of `uid` (`getpwuid`); may block on NSS.
    pub fn account(&self, uid: UserId) -> Result<Option<Account>, accounts::Error> {
        let generation = {
            let (a, generation) = self.current();
            if let Some(known) = a.accounts.get(&uid) {
                return Ok(known.clone());
            }
            generation
        };
        let found = accounts::by_uid(uid)?;
        self.remember(generation, |a| {
            a.accounts.insert(uid, found.clone());
        });
        Ok(found)
    }

    /// The remembered answer of [`Account::login_blocked`], without
    /// asking NSS.
    pub fn peek_login_blocked(
        &self,
        checked: Checked,
        account: &Account,
    ) -> Option<Option<String>> {
        self.as_of(checked)?.blocked.get(&account.name).cloned()
    }

    /// Why `account` may not log in any more, if it may not (the shadow
    /// entry); may block on NSS.
    pub fn login_blocked(&self, account: &Account) -> Result<Option<String>, accounts::Error> {
        let generation = {
            let (a, generation) = self.current();
            if let Some(known) = a.blocked.get(&account.name) {
                return Ok(known.clone());
            }
            generation
        };
        let blocked = account.login_blocked()?;
        self.remember(generation, |a| {
            a.blocked.insert(account.name.clone(), blocked.clone());
        });
        Ok(blocked)
    }

    /// The remembered caller `uid` under `policy`, without asking NSS.
    pub fn peek_caller(&self, checked: Checked, uid: UserId, policy: &Policy) -> Option<Caller> {
        self.as_of(checked)?
            .callers
            .get(&uid)
            .filter(|(p, _)| p == policy)
            .map(|(_, c)| c.clone())
    }

    /// [`identify`] through the memory; may block on NSS. Refusals are not
    /// remembered.
    pub fn caller(&self, uid: UserId, policy: &Policy) -> Result<Caller, ApiError> {
        let generation = {
            let (a, generation) = self.current();
            if let Some((p, c)) = a.callers.get(&uid)
                && p == policy
            {
                return Ok(c.clone());
            }
            generation
        };
        let caller = identify(uid, policy)?;
        self.remember(generation, |a| {
            a.callers.insert(uid, (policy.clone(), caller.clone()));
        });
        Ok(caller)
    }
}

impl Identities {
    /// The remembered standing of `uid` under `policy`, without asking NSS.
    pub fn peek_standing(
        &self,
        checked: Checked,
        uid: UserId,
        policy: &Policy,
    ) -> Option<Standing> {
        if uid == UserId::ROOT {
            return Some(Standing::Root);
        }
        self.as_of(checked)?
            .standings
            .get(&uid)
            .filter(|(p, _)| p == policy)
            .map(|(_, s)| *s)
    }

    /// What `uid` may hold open (rule 9); may block on NSS. A name service
    /// that fails makes it an [`Standing::Outsider`], not remembered (fail
    /// closed: the small budget, until it answers again).
    pub fn standing(&self, uid: UserId, policy: &Policy) -> Standing {
        if uid == UserId::ROOT {
            return Standing::Root;
        }
        let generation = {
            let (a, generation) = self.current();
            if let Some((p, s)) = a.standings.get(&uid)
                && p == policy
            {
                return *s;
            }
            generation
        };
        let Ok(decided) = self.account(uid).and_then(|account| {
            let Some(account) = account else {
                return Ok(Standing::Outsider);
            };
            if policy.is_admin(&account)? {
                return Ok(Standing::Admin);
            }
            Ok(match policy.eligibility(&account)? {
                Eligibility::Eligible => Standing::Member,
                Eligibility::Ineligible(_) => Standing::Outsider,
            })
        }) else {
            return Standing::Outsider;
        };
        self.remember(generation, |a| {
            a.standings.insert(uid, (policy.clone(), decided));
        });
        decided
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            uid_min: 1000,
            uid_max: 60000,
            allowed_groups: vec![],
            denied_users: vec![],
            admins: vec![],
            admin_group: "profiled-admin".into(),
        }
    }

    #[test]
    fn answers_are_kept_then_dropped_after_the_ttl() -> Result<(), accounts::Error> {
        let ids = Identities::default();
        assert_eq!(ids.peek_account(ids.check(), UserId::ROOT), None);
        let root = ids.account(UserId::ROOT)?;
        assert_eq!(root.as_ref().map(|a| a.name.as_str()), Some("root"));
        // Other processes may change /etc meanwhile (tests add accounts),
        // which rightly drops the answer: a quiet moment comes soon.
        let mut kept = false;
        for _ in 0..100 {
            let asked = ids.account(UserId::ROOT)?;
            if ids.peek_account(ids.check(), UserId::ROOT) == Some(asked) {
                kept = true;
                break;
            }
        }
        assert!(kept, "an answer is never kept");
        // As if the TTL had passed.
        {
            let mut a = ids.answers.lock().unwrap_or_else(|p| p.into_inner());
            a.since = a.since.checked_sub(TTL).expect("a second after boot");
        }
        assert_eq!(ids.peek_account(ids.check(), UserId::ROOT), None);
        Ok(())
    }

    #[test]
    fn a_changed_file_drops_everything_and_a_stale_answer_is_not_stored() {
        let ids = Identities::default();
        let before = ids.check();
        // As if /etc/passwd had changed since it was last checked.
        ids.answers.lock().unwrap_or_else(|p| p.into_inner()).watch =
            Watch::Stat([None; FILES.len()]);
        let after = ids.check();
        assert_ne!(before.0, after.0);
        // An answer looked up under the old generation is dropped, and a
        // check from before the change answers nothing.
        ids.remember(before.0, |a| {
            a.accounts.insert(UserId(4242), None);
        });
        assert_eq!(ids.peek_account(after, UserId(4242)), None);
        assert!(ids.peek_caller(before, UserId::ROOT, &policy()).is_none());
    }

    #[test]
    fn a_change_of_the_profiles_roots_entries_starts_a_new_generation() -> std::io::Result<()> {
        let root = std::env::temp_dir().join(format!("pfd-ids-{}", ulid::Ulid::generate()));
        std::fs::create_dir_all(root.join("alice"))?;
        let ids = Identities::new(Some(&root));
        let unwatched = Identities::new(None);
        assert_eq!(unwatched.profiles_generation(), None);
        let seen = |ids: &Identities| {
            ids.check();
            ids.profiles_generation()
        };
        let before = seen(&ids);
        assert!(before.is_some());
        // Writes inside a profile are not the root's entries: a quiet
        // moment keeps the generation (other tests may touch /etc).
        std::fs::write(root.join("alice/note.md"), "x")?;
        assert!((0..100).any(|_| {
            let g = seen(&ids);
            g == seen(&ids)
        }));
        for change in 0..3 {
            let g = seen(&ids);
            match change {
                0 => std::fs::rename(root.join("alice"), root.join("alice.old"))?,
                1 => std::fs::create_dir(root.join("alice"))?,
                _ => std::fs::remove_dir(root.join("alice"))?,
            }
            assert_ne!(seen(&ids), g, "change {change} went unseen");
        }
        std::fs::remove_dir_all(&root)
    }
}
