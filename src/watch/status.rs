//! What the watcher can see, for `/v1/health`: its mode, and whether the
//! kernel's inotify watch limit was reached (then part of the tree has no
//! watch, and in `auto` mode it is polled).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::config::WatchMode;

/// Where the kernel's per-user watch limit is set.
const MAX_USER_WATCHES: &str = "/proc/sys/fs/inotify/max_user_watches";

/// The watcher's state, shared with the API.
#[derive(Debug)]
pub struct Status {
    mode: WatchMode,
    limited: AtomicBool,
    /// Profiles not wholly watched by inotify (over their watch budget,
    /// or unwatched at the kernel's limit in auto mode): polled.
    polled: Mutex<BTreeMap<String, Polled>>,
}

/// Why a profile is polled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polled {
    /// It has more directories than its watch budget.
    Budget {
        /// `watch.max_watches_per_profile`.
        cap: usize,
        /// `watch.poll_interval`.
        every: Duration,
    },
    /// The kernel's watch limit was reached while watching it.
    Limit {
        /// `watch.poll_interval`.
        every: Duration,
    },
    /// One of its directories is watched as another place's.
    Shared {
        /// `watch.poll_interval`.
        every: Duration,
    },
    /// Watches cannot be added (no /proc).
    Unwatchable {
        /// `watch.poll_interval`.
        every: Duration,
    },
}

impl Polled {
    /// What the profile's owner is told.
    fn note(self) -> String {
        match self {
            Polled::Budget { cap, every } => format!(
                "your profile has more record directories than the {cap} that are watched \
                 (watch.max_watches_per_profile); the rest are polled every {every:?}, so \
                 changes there may show up later. Removing empty directories under memory/ \
                 brings it back under the budget after a restart of the daemon"
            ),
            Polled::Limit { every } => format!(
                "the host's inotify watch limit is reached (fs.inotify.max_user_watches); \
                 your profile is polled every {every:?} until an administrator raises it"
            ),
            Polled::Shared { every } => format!(
                "a directory of your profile is also reached from elsewhere; your profile \
                 is polled every {every:?}"
            ),
            Polled::Unwatchable { every } => format!(
                "the daemon cannot add inotify watches on this host (see its log); your \
                 profile is polled every {every:?}"
            ),
        }
    }
}

/// The watcher's state as `/v1/health` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `auto`, `inotify` or `poll` (`watch.mode`).
    pub mode: &'static str,
    /// Whether the inotify watch limit was reached: some directories have
    /// no inotify watch.
    pub limited: bool,
    /// Whether anything is polled (poll mode, auto mode once limited, or
    /// a profile over its watch budget).
    pub polling: bool,
    /// How many profiles are polled because inotify does not wholly watch
    /// them (their names are theirs to see, in `/v1/me`).
    pub polled_profiles: usize,
    /// What to do about it, when limited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Status {
    /// The state of a watcher in `mode` that has not hit the limit.
    pub fn new(mode: WatchMode) -> Status {
        Status {
            mode,
            limited: AtomicBool::new(false),
            polled: Mutex::new(BTreeMap::new()),
        }
    }

    fn polled(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Polled>> {
        self.polled.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records why `user`'s profile is polled (`None`: it no longer is).
    pub fn set_polled(&self, user: &str, why: Option<Polled>) {
        match why {
            Some(why) => {
                self.polled().insert(user.to_owned(), why);
            }
            None => {
                self.polled().remove(user);
            }
        }
    }

    /// For `user`'s own status: why inotify does not wholly watch their
    /// profile and what that means, if it does not (poll mode aside).
    pub fn polled_note(&self, user: &str) -> Option<String> {
        self.polled().get(user).map(|p| p.note())
    }

    /// Records that the watch limit was reached; `true` the first time.
    pub fn set_limited(&self) -> bool {
        !self.limited.swap(true, Ordering::Relaxed)
    }

    /// The state now.
    pub fn report(&self) -> Report {
        let limited = self.limited.load(Ordering::Relaxed);
        let hint = limited.then(|| {
            let mut hint = limit_hint();
            if self.mode == WatchMode::Inotify {
                hint.push_str(
                    "; changes in unwatched directories go unseen until then \
                     (watch.mode = \"auto\" would poll them)",
                );
            } else {
                hint.push_str("; the profiles are polled meanwhile");
            }
            hint
        });
        let polled_profiles = self.polled().len();
        Report {
            mode: match self.mode {
                WatchMode::Auto => "auto",
                WatchMode::Inotify => "inotify",
                WatchMode::Poll => "poll",
            },
            limited,
            polling: self.mode == WatchMode::Poll
                || (limited && self.mode == WatchMode::Auto)
                || polled_profiles > 0,
            polled_profiles,
            hint,
        }
    }
}

/// The sysctl that raises the watch limit: to twice the current limit, at
/// least 524288.
pub fn limit_hint() -> String {
    let now = std::fs::read_to_string(MAX_USER_WATCHES)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let raise = now.map_or(524_288, |n| n.saturating_mul(2).max(524_288));
    format!(
        "the inotify watch limit (fs.inotify.max_user_watches{}) is reached; raise it with \
         `sysctl fs.inotify.max_user_watches={raise}` (and a file in /etc/sysctl.d/ to keep it)",
        now.map_or_else(String::new, |n| format!(" = {n}"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reached_limit_is_reported_with_the_sysctl_once() {
        let s = Status::new(WatchMode::Auto);
        assert!(!s.report().limited);
        assert!(s.report().hint.is_none());
        assert!(s.set_limited());
        assert!(!s.set_limited());
        let r = s.report();
        assert!(r.limited && r.polling);
        assert!(
            r.hint
                .is_some_and(|h| h.contains("sysctl fs.inotify.max_user_watches=")),
        );
        let s = Status::new(WatchMode::Inotify);
        s.set_limited();
        assert!(!s.report().polling);
    }
}
