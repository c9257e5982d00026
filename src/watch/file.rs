//! Watching one file (the system config) for changes, so it is re-read
//! without a SIGHUP.

use std::ffi::OsString;
use std::path::Path;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{Config, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

/// Watches `file`; the receiver gets a message whenever it may have
/// changed. The directory is watched, not the file: editors and config
/// management replace files by renaming a new one over them, which a
/// watch on the old file would not see.
pub fn watch_file(file: &Path) -> Result<(RecommendedWatcher, UnboundedReceiver<()>), String> {
    let dir = file
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", file.display()))?;
    let name: Option<OsString> = file.file_name().map(ToOwned::to_owned);
    let (tx, rx) = unbounded_channel();
    let mut watcher = RecommendedWatcher::new(
        move |res: notify::Result<notify::Event>| {
            let touched = match res {
                // Only a finished write (closed, or renamed into place):
                // a file read mid-write could be a valid but truncated
                // config (an empty file is the built-in defaults).
                Ok(ev) if ev.need_rescan() => true,
                Ok(ev) => {
                    matches!(
                        ev.kind,
                        EventKind::Access(AccessKind::Close(AccessMode::Write))
                            | EventKind::Create(_)
                            | EventKind::Modify(ModifyKind::Name(_))
                            | EventKind::Remove(_)
                    ) && ev.paths.iter().any(|p| p.file_name() == name.as_deref())
                }
                Err(_) => true,
            };
            if touched {
                let _ = tx.send(());
            }
        },
        Config::default().with_follow_symlinks(false),
    )
    .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    Ok((watcher, rx))
}
