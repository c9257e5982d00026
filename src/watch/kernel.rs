//! The daemon's own inotify instance: watches added on directory handles
//! (never by a path a user controls) and a thread that reads the events.
//!
//! notify's recursive mode was dropped for this: it adds the watch of a new
//! directory by path, from its own thread, as root, so a user who swaps a
//! new directory for a link gets a tree of someone else's watched (root's
//! watch quota, another account's inode re-labelled with her paths). Here a
//! watch names exactly the inode the profile layer opened, as the account.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use rustix::event::{PollFd, PollFlags, poll};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::io::Errno;

/// What every watch reports: entries made, removed, renamed, written or
/// re-moded in the directory, and the directory's own removal or move.
/// Reads and opens are left out (the daemon's own reads would echo).
const EVENTS: WatchFlags = WatchFlags::CREATE
    .union(WatchFlags::DELETE)
    .union(WatchFlags::MOVED_FROM)
    .union(WatchFlags::MOVED_TO)
    .union(WatchFlags::CLOSE_WRITE)
    .union(WatchFlags::MODIFY)
    .union(WatchFlags::ATTRIB)
    .union(WatchFlags::DELETE_SELF)
    .union(WatchFlags::MOVE_SELF)
    .union(WatchFlags::ONLYDIR)
    .union(WatchFlags::EXCL_UNLINK);

/// The read buffer: many events per `read`.
const BUFFER: usize = 64 * 1024;

/// One event as the kernel reported it.
#[derive(Debug)]
pub struct Raw {
    /// The watch it came from (-1 for a queue overflow).
    pub wd: i32,
    /// What happened.
    pub mask: ReadFlags,
    /// The entry's name, for events about an entry of the directory.
    pub name: Option<Vec<u8>>,
}

impl Raw {
    /// The entry's name as text; `None` for events about the directory
    /// itself and for names that are not UTF-8 (never a record).
    pub fn name(&self) -> Option<&str> {
        std::str::from_utf8(self.name.as_deref()?).ok()
    }
}

/// An inotify instance and its reader thread; dropping it stops both.
pub struct Kernel {
    fd: Arc<OwnedFd>,
    /// Closed on drop: the reader sees the hang-up and ends.
    stop: Option<OwnedFd>,
    reader: Option<JoinHandle<()>>,
}

impl Kernel {
    /// A new instance; `deliver` gets the events of each read, and returns
    /// false once nobody listens any more (the reader then ends).
    pub fn start(deliver: impl FnMut(Vec<Raw>) -> bool + Send + 'static) -> Result<Kernel, String> {
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)
            .map_err(|e| format!("cannot start inotify: {e}"))?;
        let fd = Arc::new(fd);
        let (stop_rx, stop_tx) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| format!("cannot start inotify: pipe: {e}"))?;
        let events = fd.clone();
        let reader = std::thread::Builder::new()
            .name("watch-events".into())
            .spawn(move || read_events(&events, &stop_rx, deliver))
            .map_err(|e| format!("cannot start the inotify reader thread: {e}"))?;
        Ok(Kernel {
            fd,
            stop: Some(stop_tx),
            reader: Some(reader),
        })
    }

    /// Watches the directory open at `dir`: through `/proc/self/fd/N`,
    /// which names exactly that inode whatever its path is now. The kernel
    /// checks read access with the calling thread's filesystem identity.
    /// The same inode watched twice gives the same watch descriptor.
    pub fn add(&self, dir: BorrowedFd<'_>) -> Result<i32, Errno> {
        let path = format!("/proc/self/fd/{}", dir.as_raw_fd());
        inotify::add_watch(&*self.fd, path.as_str(), EVENTS)
    }

    /// Watches the root-owned directory at `path` (the profiles root, the
    /// knowledge directory, the system config's directory: checked at
    /// start-up or root's own, no user can swap them), refusing a link.
    pub fn add_path(&self, path: &Path) -> Result<i32, Errno> {
        inotify::add_watch(&*self.fd, path, EVENTS | WatchFlags::DONT_FOLLOW)
    }

    /// Removes the watch `wd` (already gone is fine).
    pub fn remove(&self, wd: i32) {
        let _ = inotify::remove_watch(&*self.fd, wd);
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.reader.take()
            && t.join().is_err()
        {
            tracing::error!("the inotify reader thread panicked");
        }
    }
}

/// Reads events until `stop` hangs up, delivering each read's events
/// together.
fn read_events(fd: &OwnedFd, stop: &OwnedFd, mut deliver: impl FnMut(Vec<Raw>) -> bool) {
    let mut buf = vec![MaybeUninit::<u8>::uninit(); BUFFER];
    let mut reader = inotify::Reader::new(fd.as_fd(), &mut buf);
    loop {
        let mut fds = [
            PollFd::new(fd, PollFlags::IN),
            PollFd::new(stop, PollFlags::IN),
        ];
        match poll(&mut fds, None) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => {
                tracing::error!("watch: polling the inotify descriptor failed: {e}");
                return;
            }
        }
        if !fds[1].revents().is_empty() {
            return;
        }
        let mut batch = Vec::new();
        loop {
            match reader.next() {
                Ok(ev) => batch.push(Raw {
                    wd: ev.wd(),
                    mask: ev.events(),
                    name: ev.file_name().map(|n| n.to_bytes().to_vec()),
                }),
                Err(Errno::AGAIN | Errno::INTR) => break,
                Err(e) => {
                    tracing::error!("watch: reading inotify events failed: {e}");
                    return;
                }
            }
            if reader.is_buffer_empty() {
                break;
            }
        }
        if !batch.is_empty() && !deliver(batch) {
            return;
        }
    }
}
