//! [`ProfileDir`]: an open, checked profile directory and the only way to
//! read or write a file inside it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use super::batch::Batch;
use super::fsid::AsAccount;
use super::sys::{
    check_dir, check_regular, check_rel, errno, lstat_at, open_beneath, open_dir_beneath,
    split_parent, stat,
};
use super::{Error, Refusal, Result};
use crate::accounts::Account;

const DIR_MODE: u32 = 0o700;
pub(super) const FILE_MODE: u32 = 0o600;

/// Whether a write may replace an existing file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// Replace whatever regular file is there (an update).
    Replace,
    /// Fail with [`Error::Io`] (`EEXIST`) if the name is taken (a new record).
    CreateNew,
}

/// What kind of entry a directory listing found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (never followed).
    Symlink,
    /// A FIFO, socket or device.
    Other,
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The entry's name.
    pub name: String,
    /// Its kind, as the directory reports it.
    pub kind: EntryKind,
}

/// A regular file's identity and content version: inode, size and
/// modification time. A rename over the file changes the inode, a write
/// the time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    ino: u64,
    size: i64,
    mtime: (i64, u64),
}

impl Stamp {
    /// The stamp of the file `st` describes.
    pub(super) fn of(st: &rustix::fs::Stat) -> Stamp {
        Stamp {
            ino: st.st_ino,
            size: st.st_size,
            mtime: (st.st_mtime, st.st_mtime_nsec),
        }
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        u64::try_from(self.size).unwrap_or(0)
    }

    /// The stamp as a short string, to keep beside derived data (the search
    /// index) and tell later whether the file changed.
    pub fn key(&self) -> String {
        format!(
            "{}:{}:{}.{}",
            self.ino, self.size, self.mtime.0, self.mtime.1
        )
    }

    /// When the file was last modified.
    pub fn modified(&self) -> std::time::SystemTime {
        let secs = u64::try_from(self.mtime.0).unwrap_or(0);
        std::time::UNIX_EPOCH
            + std::time::Duration::new(secs, 0)
            + std::time::Duration::from_nanos(self.mtime.1)
    }
}

/// An open profile directory whose owner was checked against its account.
#[derive(Debug)]
pub struct ProfileDir {
    fd: OwnedFd,
    account: Account,
    max_file: u64,
}

impl ProfileDir {
    /// Wraps `fd`, already checked to be a directory owned by `account`.
    pub(super) fn new(fd: OwnedFd, account: Account, max_file: u64) -> ProfileDir {
        ProfileDir {
            fd,
            account,
            max_file,
        }
    }

    /// The account this profile belongs to.
    pub fn account(&self) -> &Account {
        &self.account
    }

    /// The size limit of a file in this profile (`limits.max_record_bytes`).
    pub fn max_file(&self) -> u64 {
        self.max_file
    }

    /// The profile's directory handle, for an agent's working directory
    /// (entered with fchdir as the account, never by path).
    pub fn dir_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// The profile's own directory handle.
    pub(super) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// The directory's identity (device, inode): a profile removed and
    /// created again is another directory, and what was cached of the old
    /// one must not be served for the new one.
    pub fn identity(&self) -> Result<(u64, u64)> {
        let st = stat(&self.fd, ".")?;
        Ok((st.st_dev, st.st_ino))
    }

    /// Reads the regular file `rel`, refusing links, FIFOs, hard links,
    /// files owned by anyone but the account and files over the size limit.
    pub fn read(&self, rel: &str) -> Result<Vec<u8>> {
        self.read_stamped(rel).map(|(bytes, _)| bytes)
    }

    /// [`ProfileDir::read`], with the [`Stamp`] of the file as it was
    /// opened (one lookup where `stamp` then `read` take two).
    pub fn read_stamped(&self, rel: &str) -> Result<(Vec<u8>, Stamp)> {
        check_rel(rel)?;
        let _as = self.as_account()?;
        let fd = match open_beneath(&self.fd, rel, OFlags::RDONLY, Mode::empty()) {
            Err(Error::Refused {
                reason: Refusal::Denied,
                ..
            }) => return Err(self.why_denied(rel)),
            other => other?,
        };
        let st = stat(&fd, rel)?;
        check_regular(&st, self.account.uid, self.max_file, rel)?;
        let mut buf = Vec::with_capacity(usize::try_from(st.st_size).unwrap_or(0));
        // The file may grow between fstat and read: read one byte past the
        // limit so growth is caught rather than silently truncated.
        File::from(fd)
            .take(self.max_file.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|source| Error::Io {
                path: rel.to_owned(),
                op: "read",
                source,
            })?;
        self.check_size(rel, buf.len())?;
        let stamp = Stamp {
            ino: st.st_ino,
            size: st.st_size,
            mtime: (st.st_mtime, st.st_mtime_nsec),
        };
        Ok((buf, stamp))
    }

    /// What identifies the current content of the regular file `rel`
    /// without opening it: `None` when nothing is there or it is not a
    /// regular file (a link is described, never followed). The watcher
    /// compares stamps to tell a change from a no-op event.
    pub fn stamp(&self, rel: &str) -> Result<Option<Stamp>> {
        check_rel(rel)?;
        let _as = self.as_account()?;
        let (parent, name) = split_parent(rel);
        let found = match parent {
            Some(p) => open_dir_beneath(&self.fd, p).and_then(|fd| lstat_at(&fd, name, rel)),
            None => lstat_at(&self.fd, name, rel),
        };
        let st = match found {
            Ok(st) => st,
            Err(Error::NotFound { .. }) => return Ok(None),
            // A parent that is a link or a file: nothing readable is there.
            Err(Error::Refused { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Ok(None);
        }
        Ok(Some(Stamp::of(&st)))
    }

    /// Whether `rel` (`""`: the profile) is a directory the account owns,
    /// reached without passing through a link.
    pub fn is_dir(&self, rel: &str) -> bool {
        if rel.is_empty() {
            return true;
        }
        let Ok(_as) = self.as_account() else {
            return false;
        };
        check_rel(rel).is_ok()
            && open_dir_beneath(&self.fd, rel)
                .and_then(|fd| stat(&fd, rel))
                .and_then(|st| check_dir(&st, self.account.uid, rel))
                .is_ok()
    }

    /// Whether something (even a link, which is not followed) is at `rel`.
    /// A path through a link is refused.
    pub fn exists(&self, rel: &str) -> Result<bool> {
        check_rel(rel)?;
        let _as = self.as_account()?;
        match open_beneath(&self.fd, rel, OFlags::PATH, Mode::empty()) {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes `data` to `rel` atomically (rule 2): a temporary file in the
    /// same checked directory, created as the account (so owned by it),
    /// mode 0600, fsynced,
    /// renamed over the target, then the directory fsynced. Missing parent
    /// directories are created (0700, owned by the account).
    pub fn write(&self, rel: &str, data: &[u8], mode: WriteMode) -> Result<()> {
        check_rel(rel)?;
        // Never write what `read` would then refuse.
        self.check_size(rel, data.len())?;
        let _as = self.as_account()?;
        let (parent, name) = split_parent(rel);
        let dir = self.ensure_dir_opt(parent)?;
        let tmp = format!(".{name}.{}.tmp", ulid::Ulid::generate());
        let io = |op: &'static str| {
            move |e: Errno| Error::Io {
                path: rel.to_owned(),
                op,
                source: e.into(),
            }
        };
        let fd = open_beneath(
            &dir,
            &tmp,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
            Mode::from_raw_mode(FILE_MODE),
        )
        .map_err(|e| e.at(rel))?;
        let written = (|| {
            exact_mode(&fd, FILE_MODE).map_err(io("chmod"))?;
            let mut file = File::from(fd);
            file.write_all(data).map_err(|source| Error::Io {
                path: rel.to_owned(),
                op: "write",
                source,
            })?;
            rustix::fs::fdatasync(&file).map_err(io("fsync"))?;
            match mode {
                WriteMode::Replace => rustix::fs::renameat(&dir, tmp.as_str(), &dir, name),
                WriteMode::CreateNew => rustix::fs::renameat_with(
                    &dir,
                    tmp.as_str(),
                    &dir,
                    name,
                    RenameFlags::NOREPLACE,
                ),
            }
            .map_err(|e| errno(rel, "rename", e))
        })();
        if let Err(e) = written {
            // Best effort: the temporary name is hidden and never read as a
            // record, so a failed unlink only leaves litter.
            let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
            return Err(e);
        }
        rustix::fs::fsync(&dir).map_err(io("fsync directory"))
    }

    /// Appends `line` to the log file `rel`, creating it (and its parents)
    /// owned by the account. One `write` per line, so concurrent appenders
    /// never interleave inside a line.
    pub fn append(&self, rel: &str, line: &[u8]) -> Result<()> {
        let file = self.append_unsynced(rel, line)?;
        rustix::fs::fdatasync(&file).map_err(|e| errno(rel, "fsync", e))
    }

    /// [`ProfileDir::append`] without the final `fdatasync`: the line is
    /// written (a process crash loses nothing) and the open file is
    /// returned for the caller to sync later, off its hot path (agent run
    /// logs, synced by a background thread).
    pub fn append_unsynced(&self, rel: &str, line: &[u8]) -> Result<File> {
        check_rel(rel)?;
        let _as = self.as_account()?;
        let (parent, name) = split_parent(rel);
        let dir = self.ensure_dir_opt(parent)?;
        let fd = open_log(&dir, name, rel, NewEntry::SyncNow)?;
        check_regular(&stat(&fd, rel)?, self.account.uid, u64::MAX, rel)?;
        let file = File::from(fd);
        append_whole(&file, line, rel)?;
        Ok(file)
    }

    /// Removes the file `rel` (never a directory). A link is removed, not
    /// followed.
    pub fn remove(&self, rel: &str) -> Result<()> {
        check_rel(rel)?;
        let _as = self.as_account()?;
        let (parent, name) = split_parent(rel);
        let dir = match parent {
            Some(p) => open_dir_beneath(&self.fd, p).map_err(|e| e.at(rel))?,
            None => self.dup()?,
        };
        rustix::fs::unlinkat(&dir, name, AtFlags::empty()).map_err(|e| errno(rel, "remove", e))?;
        rustix::fs::fsync(&dir).map_err(|e| errno(rel, "fsync directory", e))
    }

    /// Renames the entry `from` to `to` inside the profile, never over an
    /// existing entry (`EEXIST`) and without following links (a link is
    /// renamed itself), then fsyncs the directories. Both parents must
    /// exist. Used to set a file aside byte for byte.
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        check_rel(from)?;
        check_rel(to)?;
        let _as = self.as_account()?;
        let (from_parent, from_name) = split_parent(from);
        let (to_parent, to_name) = split_parent(to);
        let open_parent = |parent: Option<&str>, rel: &str| match parent {
            Some(p) => open_dir_beneath(&self.fd, p).map_err(|e| e.at(rel)),
            None => self.dup(),
        };
        let from_dir = open_parent(from_parent, from)?;
        let to_dir = open_parent(to_parent, to)?;
        rustix::fs::renameat_with(
            &from_dir,
            from_name,
            &to_dir,
            to_name,
            RenameFlags::NOREPLACE,
        )
        .map_err(|e| errno(from, "rename", e))?;
        rustix::fs::fsync(&to_dir).map_err(|e| errno(to, "fsync directory", e))?;
        if from_parent != to_parent {
            rustix::fs::fsync(&from_dir).map_err(|e| errno(from, "fsync directory", e))?;
        }
        Ok(())
    }

    /// A batch of writes made durable together by [`Batch::commit`]: many
    /// new files for one filesystem sync instead of two fsyncs each.
    pub fn batch(&self) -> Batch<'_> {
        Batch::new(self)
    }

    /// Removes the hidden temporary files a [`Batch`] that never committed
    /// (a crash) left in the directory `rel`; returns how many. Only for a
    /// caller that holds the profile's agent lock, so no batch is under
    /// way. Record listings never show them either way.
    pub fn sweep_batch_litter(&self, rel: &str) -> Result<usize> {
        super::batch::sweep(self, rel)
    }

    /// Lists the directory `rel` (`""` for the profile itself), unsorted.
    /// Names that are not UTF-8 are left out.
    pub fn list(&self, rel: &str) -> Result<Vec<Entry>> {
        let _as = self.as_account()?;
        let fd = self.open_to_list(rel)?;
        Ok(read_entries(&fd, rel)?
            .into_iter()
            .map(|(name, ft)| Entry {
                name,
                kind: match ft {
                    FileType::RegularFile => EntryKind::File,
                    FileType::Directory => EntryKind::Dir,
                    FileType::Symlink => EntryKind::Symlink,
                    _ => EntryKind::Other,
                },
            })
            .collect())
    }

    /// The name and stamp of every regular file directly in the directory
    /// `rel`, each looked at without opening or following it. One handle
    /// and one identity change serve the whole directory, where
    /// [`ProfileDir::stamp`] takes both for every file (the search index
    /// checks 100,000 memories this way on every run).
    pub fn stamps(&self, rel: &str) -> Result<Vec<(String, Stamp)>> {
        let _as = self.as_account()?;
        let fd = self.open_to_list(rel)?;
        let mut out = Vec::new();
        for (name, ft) in read_entries(&fd, rel)? {
            if ft != FileType::RegularFile {
                continue;
            }
            match lstat_at(&fd, &name, rel) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
                    out.push((name, Stamp::of(&st)));
                }
                // Removed or replaced since the directory was read.
                Ok(_) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The directory `rel` (`""`: the profile), opened to be read, checked
    /// to be a directory the account owns.
    fn open_to_list(&self, rel: &str) -> Result<OwnedFd> {
        let fd = if rel.is_empty() {
            self.dup()?
        } else {
            check_rel(rel)?;
            open_dir_beneath(&self.fd, rel)?
        };
        check_dir(&stat(&fd, rel)?, self.account.uid, rel)?;
        Ok(fd)
    }

    /// Opens `rel` as a directory, creating each missing component (0700,
    /// owned by the account) and checking each existing one is a directory
    /// the account owns.
    pub fn ensure_dir(&self, rel: &str) -> Result<OwnedFd> {
        check_rel(rel)?;
        let _as = self.as_account()?;
        let mut cur: Option<OwnedFd> = None;
        let mut end = 0;
        for comp in rel.split('/') {
            end += comp.len();
            let shown = &rel[..end];
            end += 1;
            let parent = cur.as_ref().map_or(self.fd.as_fd(), AsFd::as_fd);
            let fd = match open_dir_beneath(parent, comp) {
                Ok(fd) => fd,
                Err(Error::NotFound { .. }) => self.make_dir(parent, comp, shown)?,
                Err(e) => return Err(e.at(shown)),
            };
            check_dir(&stat(&fd, shown)?, self.account.uid, shown)?;
            cur = Some(fd);
        }
        cur.ok_or_else(|| Error::BadPath {
            path: rel.to_owned(),
        })
    }

    /// Creates the directory `name` in `parent` (as the account, so owned
    /// by it, 0700) and opens it; a directory another request created
    /// meanwhile is used as it is.
    fn make_dir(&self, parent: BorrowedFd<'_>, name: &str, shown: &str) -> Result<OwnedFd> {
        match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(DIR_MODE)) {
            Ok(()) => {}
            Err(Errno::EXIST) => return open_dir_beneath(parent, name).map_err(|e| e.at(shown)),
            Err(e) => return Err(errno(shown, "mkdir", e)),
        }
        let fd = open_dir_beneath(parent, name).map_err(|e| e.at(shown))?;
        exact_mode(&fd, DIR_MODE).map_err(|e| errno(shown, "chmod", e))?;
        // The new entry must survive a crash with the first file written
        // into it.
        rustix::fs::fsync(parent).map_err(|e| errno(shown, "fsync directory", e))?;
        Ok(fd)
    }

    /// Refuses `len` bytes at `rel` when over the size limit.
    pub(super) fn check_size(&self, rel: &str, len: usize) -> Result<()> {
        let size = len as u64;
        if size > self.max_file {
            return Err(Error::Refused {
                path: rel.to_owned(),
                reason: super::Refusal::TooLarge {
                    size,
                    limit: self.max_file,
                },
            });
        }
        Ok(())
    }

    fn ensure_dir_opt(&self, rel: Option<&str>) -> Result<OwnedFd> {
        match rel {
            Some(p) => self.ensure_dir(p),
            None => self.dup(),
        }
    }

    pub(super) fn dup(&self) -> Result<OwnedFd> {
        self.fd.try_clone().map_err(|source| Error::Io {
            path: ".".to_owned(),
            op: "dup",
            source,
        })
    }

    /// The most precise reason the kernel refused the account `rel`: a
    /// file that is not the account's (a hard link to a root file, say) is
    /// described as such, since the account cannot `chmod` it; its own file
    /// is [`Refusal::Denied`]. Looked at without opening or following it.
    fn why_denied(&self, rel: &str) -> Error {
        let (parent, name) = split_parent(rel);
        let found = match parent {
            Some(p) => open_dir_beneath(&self.fd, p).and_then(|fd| lstat_at(&fd, name, rel)),
            None => lstat_at(&self.fd, name, rel),
        };
        let denied = || Error::Refused {
            path: rel.to_owned(),
            reason: Refusal::Denied,
        };
        match found {
            Ok(st) => check_regular(&st, self.account.uid, self.max_file, rel)
                .err()
                .unwrap_or_else(denied),
            Err(_) => denied(),
        }
    }

    /// Sets the thread's filesystem identity to the account's until the
    /// guard is dropped (rule 12): every public operation takes it first.
    pub(super) fn as_account(&self) -> Result<AsAccount> {
        AsAccount::enter(&self.account)
    }
}

/// The entries of the directory `fd` (shown as `rel`) but `.` and `..`,
/// with their kinds (asked of the file itself where the directory does not
/// say); names that are not UTF-8 are left out.
pub(super) fn read_entries(fd: &OwnedFd, rel: &str) -> Result<Vec<(String, FileType)>> {
    let dir = rustix::fs::Dir::read_from(fd).map_err(|e| errno(rel, "read directory", e))?;
    let mut out = Vec::new();
    for entry in dir {
        let entry = entry.map_err(|e| errno(rel, "read directory", e))?;
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if name == "." || name == ".." {
            continue;
        }
        let mut ft = entry.file_type();
        if ft == FileType::Unknown {
            ft = FileType::from_raw_mode(lstat_at(fd, name, rel)?.st_mode);
        }
        out.push((name.to_owned(), ft));
    }
    Ok(out)
}

/// Sets `mode` on `fd` exactly (the daemon's umask could have cleared bits
/// of the mode asked at creation), on the handle, never by path.
pub(super) fn exact_mode(fd: impl AsFd, mode: u32) -> std::result::Result<(), Errno> {
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
}

/// When the directory entry of a log file just created becomes durable.
#[derive(Clone, Copy)]
pub(super) enum NewEntry {
    /// Fsync its directory before the first line is written.
    SyncNow,
    /// A batch's commit syncs the whole filesystem: an fsync per new file
    /// would only slow the batch down (one per ingested file's journal).
    SyncedByCommit,
}

/// Opens the log file `name` in `dir` to append, creating it when missing
/// (0600, owned by the account that the thread acts as); a new file's
/// directory entry is made durable as `new_entry` says.
pub(super) fn open_log(
    dir: impl AsFd,
    name: &str,
    rel: &str,
    new_entry: NewEntry,
) -> Result<OwnedFd> {
    let dir = dir.as_fd();
    let flags = OFlags::WRONLY | OFlags::APPEND;
    loop {
        match open_beneath(dir, name, flags, Mode::empty()) {
            Err(Error::NotFound { .. }) => {}
            other => return other.map_err(|e| e.at(rel)),
        }
        let created = open_beneath(
            dir,
            name,
            flags | OFlags::CREATE | OFlags::EXCL,
            Mode::from_raw_mode(FILE_MODE),
        );
        match created {
            Ok(fd) => {
                exact_mode(&fd, FILE_MODE).map_err(|e| errno(rel, "chmod", e))?;
                if let NewEntry::SyncNow = new_entry {
                    rustix::fs::fsync(dir).map_err(|e| errno(rel, "fsync directory", e))?;
                }
                return Ok(fd);
            }
            // Another appender created it first: open theirs.
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
            }
            Err(e) => return Err(e.at(rel)),
        }
    }
}

/// Appends `data` to `file` (opened with `O_APPEND`) in one `write`, so
/// concurrent appenders never interleave within a line; a short write is
/// an error rather than half a line.
pub(super) fn append_whole(mut file: &File, data: &[u8], rel: &str) -> Result<()> {
    let done = file.write(data).map_err(|source| Error::Io {
        path: rel.to_owned(),
        op: "append",
        source,
    })?;
    if done != data.len() {
        return Err(Error::Io {
            path: rel.to_owned(),
            op: "append",
            source: std::io::Error::new(std::io::ErrorKind::WriteZero, "short write"),
        });
    }
    Ok(())
}
