//! Where changes are learnt from: the daemon's inotify instance, with
//! watches on directories opened through the profile layer (rule 12), and
//! polling where inotify cannot or may not watch (poll mode, a profile
//! over its watch budget, the kernel's watch limit in auto mode).

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use rustix::io::Errno;

use super::classify::may_hold_records;
use super::kernel::{Kernel, Raw};
use super::status::{Polled, Status, limit_hint};
use super::tracker::Tracker;
use super::watches::{Label, Registered, Scope, Touch, Watches};
use crate::config::{Watch, WatchMode};

/// What the sources tell the watcher's loop.
#[derive(Debug)]
pub enum Signal {
    /// Events read from the kernel.
    Kernel(Vec<Raw>),
    /// The daemon is stopping.
    Stop,
}

/// What is due to be polled.
#[derive(Debug, Default)]
pub struct Poll {
    /// Every profile (poll mode, or no watch on the profiles root).
    pub all: bool,
    /// These profiles (not wholly watched).
    pub profiles: Vec<String>,
    /// The knowledge directory.
    pub knowledge: bool,
}

/// The running sources; dropping them stops the events.
pub struct Sources {
    mode: WatchMode,
    poll_interval: Duration,
    /// The most watches one profile may have (`watch.max_watches_per_profile`).
    cap: usize,
    status: Arc<Status>,
    kernel: Option<Kernel>,
    watches: Watches,
    /// Polled besides (or instead of) inotify.
    poll_all: bool,
    poll_knowledge: bool,
    polled: BTreeSet<String>,
    next_poll: Instant,
}

impl Sources {
    /// Starts watching the profiles `root` (its entries: the profiles come
    /// and go there) and the `knowledge` directory as `settings` say;
    /// events go to `tx`, the state to `status`. The profiles' own
    /// directories are added by [`Sources::cover`].
    pub fn start(
        root: &Path,
        knowledge: &Path,
        settings: &Watch,
        status: Arc<Status>,
        tx: Sender<Signal>,
    ) -> Result<Sources, String> {
        let mut sources = Sources {
            mode: settings.mode,
            poll_interval: settings.poll_interval,
            cap: settings.max_watches_per_profile,
            status,
            kernel: None,
            watches: Watches::default(),
            poll_all: settings.mode == WatchMode::Poll,
            poll_knowledge: settings.mode == WatchMode::Poll,
            polled: BTreeSet::new(),
            next_poll: Instant::now() + settings.poll_interval,
        };
        if settings.mode == WatchMode::Poll {
            return Ok(sources);
        }
        // The loop is gone only when the daemon stops.
        let kernel = Kernel::start(move |raw| tx.send(Signal::Kernel(raw)).is_ok())?;
        // The knowledge hub first, so a tree of profiles that reaches the
        // limit never leaves it unwatched.
        for (scope, dir) in [(Scope::Knowledge, knowledge), (Scope::Root, root)] {
            match kernel.add_path(dir) {
                Ok(wd) => {
                    let label = Label {
                        scope,
                        rel: String::new(),
                        id: (0, 0),
                    };
                    sources.watches.register(wd, label, |_| true);
                }
                Err(Errno::NOSPC) => {
                    sources.limit_hit(None);
                    if sources.mode == WatchMode::Auto {
                        sources.poll_knowledge |= scope == Scope::Knowledge;
                        sources.poll_all |= scope == Scope::Root;
                    }
                }
                Err(e) => return Err(format!("cannot watch {}: {e}", dir.display())),
            }
        }
        sources.kernel = Some(kernel);
        Ok(sources)
    }

    /// What `raw` events touched.
    pub fn resolve(&mut self, raw: &[Raw]) -> Vec<Touch> {
        let touched: Vec<Touch> = raw.iter().filter_map(|r| self.watches.resolve(r)).collect();
        if touched.contains(&Touch::Rescan) {
            tracing::warn!(
                "watch: the kernel's event queue overflowed (fs.inotify.max_queued_events); \
                 rescanning, so no change is lost"
            );
        }
        touched
    }

    /// Adds watches on the directory `rel` of `user`'s profile and on the
    /// directories below it that may hold records, as the account, through
    /// the handles the profile layer opened (no link is ever followed);
    /// returns how many watches are new. Past the profile's watch budget,
    /// or at the kernel's limit in auto mode, the profile is polled.
    pub fn cover(&mut self, tracker: &Tracker, user: &str, rel: &str) -> usize {
        let (Some(kernel), Some(dir)) = (&self.kernel, tracker.dir(user)) else {
            return 0;
        };
        if !may_hold_records(rel) {
            return 0;
        }
        let mut added = 0;
        let mut short = None;
        let watches = &mut self.watches;
        let cap = self.cap;
        let walked = dir.walk_dirs(rel, &may_hold_records, &mut |path, fd| {
            let Ok(st) = rustix::fs::fstat(fd) else {
                return ControlFlow::Continue(());
            };
            if watches.count(user) >= cap {
                short = Some(Short::Cap);
                return ControlFlow::Break(());
            }
            match kernel.add(fd) {
                Ok(wd) => {
                    let label = Label {
                        scope: Scope::Profile(user.to_owned()),
                        rel: path.to_owned(),
                        id: (st.st_dev, st.st_ino),
                    };
                    let outcome = watches.register(wd, label, |old| {
                        tracker.dir_id(&old.scope, &old.rel) == Some(old.id)
                    });
                    match outcome {
                        Registered::New | Registered::Relabelled => added += 1,
                        Registered::Same => {}
                        Registered::Kept => {
                            tracing::warn!(
                                "watch: {user}/{path} is the same directory as one watched \
                                 elsewhere; it is polled instead"
                            );
                            short = Some(Short::Shared);
                        }
                    }
                    ControlFlow::Continue(())
                }
                Err(Errno::NOSPC) => {
                    short = Some(Short::Limit);
                    ControlFlow::Break(())
                }
                // The account may not read it (the kernel checked as the
                // account): nothing of it is shown to anyone.
                Err(Errno::ACCESS) => ControlFlow::Continue(()),
                // No watch can be added this way (no /proc, say): the
                // profile is polled rather than silently unwatched.
                Err(e) => {
                    short = Some(Short::Failed(e));
                    ControlFlow::Break(())
                }
            }
        });
        if let Err(e) = walked {
            tracing::debug!("watch: {user}/{rel}: {e}");
        }
        match short {
            Some(Short::Cap) => self.cap_hit(user),
            Some(Short::Limit) => self.limit_hit(Some(user)),
            Some(Short::Shared) => self.poll_profile(
                user,
                Polled::Shared {
                    every: self.poll_interval,
                },
            ),
            Some(Short::Failed(e)) => {
                if !self.polled.contains(user) {
                    tracing::error!(
                        "watch: cannot add an inotify watch through /proc/self/fd for \
                         {user}/{rel}: {e} (is /proc mounted?); the profile is polled every {:?}",
                        self.poll_interval
                    );
                }
                self.poll_profile(
                    user,
                    Polled::Unwatchable {
                        every: self.poll_interval,
                    },
                );
            }
            None => {}
        }
        added
    }

    /// Removes the watches of directories that moved away from where their
    /// label says (a directory renamed out of the record layout, or out of
    /// the profile); the new place, if watched at all, is covered again by
    /// the events of its new parent.
    pub fn settle_moved(&mut self, tracker: &Tracker) {
        let Some(kernel) = &self.kernel else {
            return;
        };
        for (wd, label) in self.watches.take_moved() {
            if tracker.dir_id(&label.scope, &label.rel) != Some(label.id) {
                kernel.remove(wd);
                self.watches.forget(wd);
            }
        }
    }

    /// Removes every watch of `user`'s profile (it is gone, or no longer
    /// eligible).
    pub fn forget_profile(&mut self, user: &str) {
        if let Some(kernel) = &self.kernel {
            for wd in self.watches.of(user) {
                kernel.remove(wd);
                self.watches.forget(wd);
            }
        }
        if self.polled.remove(user) {
            self.status.set_polled(user, None);
        }
    }

    /// When the next poll is due, if anything is polled.
    pub fn next_poll(&self) -> Option<Instant> {
        (self.poll_all || self.poll_knowledge || !self.polled.is_empty()).then_some(self.next_poll)
    }

    /// What to poll now, if a poll is due.
    pub fn take_poll(&mut self, now: Instant) -> Option<Poll> {
        if self.next_poll().is_none_or(|due| due > now) {
            return None;
        }
        self.next_poll = now + self.poll_interval;
        Some(Poll {
            all: self.poll_all,
            profiles: self.polled.iter().cloned().collect(),
            knowledge: self.poll_knowledge,
        })
    }

    /// `user`'s profile reached its watch budget: it is polled, and its
    /// status says so.
    fn cap_hit(&mut self, user: &str) {
        if !self.polled.contains(user) {
            tracing::warn!(
                "watch: {user}'s profile has more directories than its watch budget \
                 (watch.max_watches_per_profile = {}); the rest of it is polled every {:?}",
                self.cap,
                self.poll_interval
            );
        }
        self.poll_profile(
            user,
            Polled::Budget {
                cap: self.cap,
                every: self.poll_interval,
            },
        );
    }

    fn poll_profile(&mut self, user: &str, why: Polled) {
        if self.polled.insert(user.to_owned()) {
            self.status.set_polled(user, Some(why));
        }
    }

    /// The kernel's watch limit was reached (while watching `user`'s
    /// profile): say so (the log, `/v1/health`) and, in auto mode, poll
    /// what has no watch.
    fn limit_hit(&mut self, user: Option<&str>) {
        let first = self.status.set_limited();
        match self.mode {
            WatchMode::Auto => {
                if first {
                    tracing::warn!(
                        "watch: {}; polling the unwatched profiles every {:?} meanwhile",
                        limit_hint(),
                        self.poll_interval
                    );
                }
                if let Some(user) = user {
                    let every = self.poll_interval;
                    self.poll_profile(user, Polled::Limit { every });
                }
            }
            WatchMode::Inotify if first => tracing::error!(
                "watch: {}; changes in unwatched directories go unseen \
                 (watch.mode = \"auto\" would poll them)",
                limit_hint()
            ),
            WatchMode::Inotify | WatchMode::Poll => {}
        }
    }
}

/// Why a walk left directories without a watch.
enum Short {
    /// The profile's budget.
    Cap,
    /// The kernel's limit.
    Limit,
    /// The inode is watched under another profile's name.
    Shared,
    /// The kernel refused the watch for another reason.
    Failed(Errno),
}
