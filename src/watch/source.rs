//! Where raw file events come from: inotify, polling, or inotify with a
//! fallback to polling when the kernel's watch limit is reached.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{
    Config, ErrorKind, EventKind, PollWatcher, RecommendedWatcher, RecursiveMode, Watcher,
};

use super::status::{Status, limit_hint};
use crate::config::{Watch, WatchMode};

/// What the sources tell the watcher's loop.
#[derive(Debug)]
pub enum Signal {
    /// Something happened at these absolute paths.
    Paths(Vec<PathBuf>),
    /// Events were lost (queue overflow): everything must be compared.
    Rescan,
    /// The inotify watch limit was reached: some directories are unwatched.
    LimitHit,
    /// The daemon is stopping.
    Stop,
}

/// The running sources; dropping them stops the events.
pub struct Sources {
    root: PathBuf,
    knowledge: PathBuf,
    tx: Sender<Signal>,
    mode: WatchMode,
    poll_interval: Duration,
    status: Arc<Status>,
    inotify: Option<RecommendedWatcher>,
    poll: Option<PollWatcher>,
}

impl Sources {
    /// Starts watching the profiles `root` (and below) and the
    /// `knowledge` directory (its entries only) as `settings` say; events
    /// go to `tx`, a reached watch limit to `status`.
    pub fn start(
        root: &Path,
        knowledge: &Path,
        settings: &Watch,
        status: Arc<Status>,
        tx: Sender<Signal>,
    ) -> Result<Sources, String> {
        let mut sources = Sources {
            root: root.to_owned(),
            knowledge: knowledge.to_owned(),
            tx,
            mode: settings.mode,
            poll_interval: settings.poll_interval,
            status,
            inotify: None,
            poll: None,
        };
        match settings.mode {
            WatchMode::Poll => sources.start_poll()?,
            WatchMode::Inotify | WatchMode::Auto => {
                // notify follows links by default: a user's link to another
                // tree would leak its file names and burn watches.
                let config = Config::default().with_follow_symlinks(false);
                let mut w = RecommendedWatcher::new(handler(sources.tx.clone()), config)
                    .map_err(|e| format!("cannot start inotify: {e}"))?;
                // One watch, taken first so a tree of profiles that reaches
                // the limit never leaves the knowledge hub unwatched.
                match w.watch(knowledge, RecursiveMode::NonRecursive) {
                    Ok(()) => {}
                    Err(e) if matches!(e.kind, ErrorKind::MaxFilesWatch) => {
                        sources.inotify = Some(w);
                        sources.limit_hit();
                        return Ok(sources);
                    }
                    Err(e) => return Err(format!("cannot watch {}: {e}", knowledge.display())),
                }
                match w.watch(root, RecursiveMode::Recursive) {
                    Ok(()) => {}
                    // notify keeps the watches it could add.
                    Err(e) if matches!(e.kind, ErrorKind::MaxFilesWatch) => {
                        sources.inotify = Some(w);
                        sources.limit_hit();
                        return Ok(sources);
                    }
                    Err(e) => return Err(format!("cannot watch {}: {e}", root.display())),
                }
                sources.inotify = Some(w);
            }
        }
        Ok(sources)
    }

    /// The watch limit was reached: say so (the log, `/v1/health`) and, in
    /// auto mode, poll too.
    pub fn limit_hit(&mut self) {
        let first = self.status.set_limited();
        match self.mode {
            WatchMode::Auto if self.poll.is_none() => {
                tracing::warn!(
                    "watch: {}; polling the profiles every {:?} meanwhile",
                    limit_hint(),
                    self.poll_interval
                );
                if let Err(e) = self.start_poll() {
                    tracing::error!("watch: {e}");
                }
            }
            WatchMode::Auto | WatchMode::Poll => {}
            WatchMode::Inotify if first => tracing::error!(
                "watch: {}; changes in unwatched directories go unseen \
                 (watch.mode = \"auto\" would poll them)",
                limit_hint()
            ),
            WatchMode::Inotify => {}
        }
    }

    /// Watches the directory `dir` (and below) again. notify names events
    /// by the path a watch was added with, so a directory renamed into
    /// place (a profile provisioned under a temporary name, a month moved
    /// by hand) would otherwise keep reporting under its old name.
    pub fn rewatch(&mut self, dir: &Path) {
        let Some(w) = &mut self.inotify else {
            return;
        };
        match w.watch(dir, RecursiveMode::Recursive) {
            Err(e) if matches!(e.kind, ErrorKind::MaxFilesWatch) => self.limit_hit(),
            // Gone again already: its removal is seen through its parent.
            Ok(()) | Err(_) => {}
        }
    }

    fn start_poll(&mut self) -> Result<(), String> {
        let config = Config::default()
            .with_poll_interval(self.poll_interval)
            .with_follow_symlinks(false);
        let mut w = PollWatcher::new(handler(self.tx.clone()), config)
            .map_err(|e| format!("cannot start polling: {e}"))?;
        w.watch(&self.knowledge, RecursiveMode::NonRecursive)
            .map_err(|e| format!("cannot poll {}: {e}", self.knowledge.display()))?;
        w.watch(&self.root, RecursiveMode::Recursive)
            .map_err(|e| format!("cannot poll {}: {e}", self.root.display()))?;
        self.poll = Some(w);
        Ok(())
    }
}

/// Turns notify's callbacks into signals.
fn handler(tx: Sender<Signal>) -> impl notify::EventHandler {
    move |res: notify::Result<notify::Event>| {
        let signal = match res {
            Ok(ev) if ev.need_rescan() => {
                tracing::warn!(
                    "watch: the kernel's event queue overflowed (fs.inotify.max_queued_events); \
                     rescanning, so no change is lost"
                );
                Signal::Rescan
            }
            // Reads change nothing (the daemon's own reads included).
            Ok(notify::Event {
                kind: EventKind::Access(AccessKind::Open(_) | AccessKind::Close(AccessMode::Read)),
                ..
            }) => return,
            Ok(ev) => Signal::Paths(ev.paths),
            Err(e) if matches!(e.kind, ErrorKind::MaxFilesWatch) => Signal::LimitHit,
            // An error about paths (one vanished mid-walk, say): look at
            // them again rather than rescanning everything.
            Err(e) if !e.paths.is_empty() => Signal::Paths(e.paths),
            Err(e) => {
                tracing::warn!("watch: {e}; rescanning");
                Signal::Rescan
            }
        };
        // The loop is gone only when the daemon stops.
        let _ = tx.send(signal);
    }
}
