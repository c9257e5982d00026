//! What the watcher can see, for `/v1/health`: its mode, and whether the
//! kernel's inotify watch limit was reached (then part of the tree has no
//! watch, and in `auto` mode it is polled).

use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::config::WatchMode;

/// Where the kernel's per-user watch limit is set.
const MAX_USER_WATCHES: &str = "/proc/sys/fs/inotify/max_user_watches";

/// The watcher's state, shared with the API.
#[derive(Debug)]
pub struct Status {
    mode: WatchMode,
    limited: AtomicBool,
}

/// The watcher's state as `/v1/health` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `auto`, `inotify` or `poll` (`watch.mode`).
    pub mode: &'static str,
    /// Whether the inotify watch limit was reached: some directories have
    /// no inotify watch.
    pub limited: bool,
    /// Whether the tree is polled (poll mode, or auto mode once limited).
    pub polling: bool,
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
        }
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
        Report {
            mode: match self.mode {
                WatchMode::Auto => "auto",
                WatchMode::Inotify => "inotify",
                WatchMode::Poll => "poll",
            },
            limited,
            polling: self.mode == WatchMode::Poll || (limited && self.mode == WatchMode::Auto),
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
