//! Watching one file (the system config) for changes, so it is re-read
//! without a SIGHUP.

use std::path::Path;

use rustix::fs::inotify::ReadFlags;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use super::kernel::Kernel;

/// Watches `file`; the receiver gets a message whenever it may have
/// changed, and ends when the watch does. The directory is watched, not
/// the file: editors and config management replace files by renaming a
/// new one over them, which a watch on the old file would not see. The
/// directory is root's (/etc/profiled), so it is watched by its path.
pub fn watch_file(file: &Path) -> Result<(Kernel, UnboundedReceiver<()>), String> {
    let dir = file
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", file.display()))?;
    let name = file
        .file_name()
        .map(|n| n.as_encoded_bytes().to_vec())
        .ok_or_else(|| format!("{} names no file", file.display()))?;
    let (tx, rx) = unbounded_channel();
    // Only a finished write (closed, or renamed into place): a file read
    // mid-write could be a valid but truncated config (an empty file is the
    // built-in defaults). A lost event (overflow) or a gone directory may
    // hide a change: read it again.
    let finished = ReadFlags::CLOSE_WRITE
        | ReadFlags::CREATE
        | ReadFlags::MOVED_TO
        | ReadFlags::MOVED_FROM
        | ReadFlags::DELETE;
    let kernel = Kernel::start(move |raw| {
        let touched = raw.iter().any(|ev| {
            ev.mask
                .intersects(ReadFlags::QUEUE_OVERFLOW | ReadFlags::IGNORED)
                || (ev.mask.intersects(finished) && ev.name.as_deref() == Some(name.as_slice()))
        });
        !touched || tx.send(()).is_ok()
    })
    .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    kernel
        .add_path(dir)
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    Ok((kernel, rx))
}
