//! Root-owned files of the state directory (keys, the host's credentials,
//! sessions): never through a link, checked with fstat, written atomically.
//!
//! The state directory is root's (checked at start-up), so paths are used
//! here, but every open still refuses links (`O_NOFOLLOW`), FIFOs
//! (`O_NONBLOCK`, then `fstat`) and hard links, and checks that the file is
//! root's and private: a key readable by others is refused, not used.
//! Writes are atomic like profile writes (rule 2): temporary file, fsync,
//! rename, fsync of the directory.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;
use zeroize::Zeroizing;

/// What can go wrong with a state file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file or directory is unsafe to use (a link, not root's, open to
    /// others, too large).
    #[error("{}: {reason}; fix: {fix}", path.display())]
    Unsafe {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
        /// The command that fixes it.
        fix: String,
    },
    /// An operation failed.
    #[error("{}: {op} failed: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, Error>;

fn io(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io { path, op, source }
}

const ALWAYS: OFlags = OFlags::NOFOLLOW
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOCTTY);

fn unsafe_state(path: &Path, reason: impl Into<String>, fix: impl Into<String>) -> Error {
    Error::Unsafe {
        path: path.to_owned(),
        reason: reason.into(),
        fix: fix.into(),
    }
}

fn errno(path: &Path, op: &'static str) -> impl FnOnce(Errno) -> Error {
    let path = path.to_owned();
    move |e| Error::Io {
        path,
        op,
        source: e.into(),
    }
}

/// Creates `path` (root, 0700) when missing and checks that it is a
/// directory, not a link, owned by root, with no access for group or
/// others. Its parent (the state directory) must exist: creating it here
/// with 0700 would lock users out of their profiles below it.
pub fn ensure_private_dir(path: &Path) -> Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(path, "create the directory")(e)),
    }
    let md = std::fs::symlink_metadata(path).map_err(io(path, "stat"))?;
    let fix = format!("chown root:root {0} && chmod 0700 {0}", path.display());
    if !md.file_type().is_dir() {
        return Err(unsafe_state(
            path,
            "is not a directory (a link or a file)",
            format!("move it away; profiled creates {} itself", path.display()),
        ));
    }
    if md.uid() != 0 {
        return Err(unsafe_state(
            path,
            format!("is owned by uid {}, not root", md.uid()),
            fix,
        ));
    }
    if md.mode() & 0o077 != 0 {
        return Err(unsafe_state(
            path,
            format!(
                "is open to group or others (mode {:04o})",
                md.mode() & 0o7777
            ),
            fix,
        ));
    }
    Ok(())
}

/// Opens `path` for reading and checks it: a regular file with one link,
/// owned by root, mode without group or other bits, at most `max` bytes.
fn open_checked(path: &Path, max: u64) -> Result<Option<File>> {
    let fd = match rustix::fs::open(path, OFlags::RDONLY | ALWAYS, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(Errno::LOOP) => {
            return Err(unsafe_state(
                path,
                "is a symbolic link",
                format!("remove the link; profiled writes {} itself", path.display()),
            ));
        }
        Err(e) => return Err(errno(path, "open")(e)),
    };
    let st = rustix::fs::fstat(&fd).map_err(errno(path, "fstat"))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(unsafe_state(
            path,
            "is not a regular file",
            format!("remove it; profiled writes {} itself", path.display()),
        ));
    }
    if st.st_nlink != 1 {
        return Err(unsafe_state(
            path,
            format!("has {} hard links", st.st_nlink),
            format!(
                "replace it with a copy: cp -p {0} {0}.new && mv {0}.new {0}",
                path.display()
            ),
        ));
    }
    if st.st_uid != 0 || st.st_mode & 0o077 != 0 {
        return Err(unsafe_state(
            path,
            format!(
                "must be root's and private, but is owned by uid {} with mode {:04o}",
                st.st_uid,
                st.st_mode & 0o7777
            ),
            format!("chown root:root {0} && chmod 0600 {0}", path.display()),
        ));
    }
    let size = u64::try_from(st.st_size).unwrap_or(u64::MAX);
    if size > max {
        return Err(unsafe_state(
            path,
            format!("is {size} bytes, over the {max}-byte limit"),
            "move it aside and restore it from a backup",
        ));
    }
    Ok(Some(File::from(fd)))
}

/// Reads the checked file `path`; `Ok(None)` when it does not exist.
pub fn read(path: &Path, max: u64) -> Result<Option<Zeroizing<Vec<u8>>>> {
    let Some(file) = open_checked(path, max)? else {
        return Ok(None);
    };
    let mut buf = Zeroizing::new(Vec::new());
    file.take(max.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(io(path, "read"))?;
    if buf.len() as u64 > max {
        return Err(unsafe_state(
            path,
            format!("grew over the {max}-byte limit while being read"),
            "move it aside and restore it from a backup",
        ));
    }
    Ok(Some(buf))
}

fn parent_and_name(path: &Path) -> Result<(PathBuf, String)> {
    let parent = path.parent().map(Path::to_owned);
    let name = path.file_name().and_then(|n| n.to_str()).map(str::to_owned);
    match (parent, name) {
        (Some(p), Some(n)) => Ok((p, n)),
        _ => Err(unsafe_state(path, "is not a file path", "a bug: report it")),
    }
}

fn fsync_dir(dir: &Path) -> Result<()> {
    let fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno(dir, "open directory"))?;
    rustix::fs::fsync(&fd).map_err(errno(dir, "fsync directory"))
}

/// Writes `data` to `path` atomically, root 0600: a hidden temporary file
/// beside it, fsync, rename (with `replace == false`, never over an
/// existing file: `EEXIST` comes back as [`Error::Io`]), fsync of the
/// directory. When this returns, the new content is durable.
pub fn write(path: &Path, data: &[u8], replace: bool) -> Result<()> {
    let (dir, name) = parent_and_name(path)?;
    let tmp = dir.join(format!(".{name}.{}.tmp", ulid::Ulid::generate()));
    let written = (|| {
        let fd = rustix::fs::open(
            &tmp,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | ALWAYS,
            Mode::from_raw_mode(0o600),
        )
        .map_err(errno(&tmp, "create"))?;
        // The umask may have narrowed the mode, never widened it; make it exact.
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o600)).map_err(errno(&tmp, "chmod"))?;
        let mut file = File::from(fd);
        file.write_all(data).map_err(io(&tmp, "write"))?;
        file.sync_all().map_err(io(&tmp, "fsync"))?;
        if replace {
            rustix::fs::rename(&tmp, path)
        } else {
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                &tmp,
                rustix::fs::CWD,
                path,
                RenameFlags::NOREPLACE,
            )
        }
        .map_err(errno(path, "rename into place"))
    })();
    if written.is_err() {
        // Best effort: a hidden temporary file is never read.
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    fsync_dir(&dir)
}

/// Renames `from` to `to` (replacing it) and makes the rename durable.
pub fn rename(from: &Path, to: &Path) -> Result<()> {
    rustix::fs::rename(from, to).map_err(errno(to, "rename into place"))?;
    let (dir, _) = parent_and_name(to)?;
    fsync_dir(&dir)
}

/// Removes `path` if it is there and makes the removal durable.
pub fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(path, "remove")(e)),
    }
    let (dir, _) = parent_and_name(path)?;
    fsync_dir(&dir)
}

/// An exclusive `flock` on `path` (created root 0600), released when the
/// returned file is dropped or the process dies: one writer per
/// credentials file, across threads and processes (the daemon and
/// `profiled rotate-keys`).
pub fn lock(path: &Path) -> Result<File> {
    let file = open_lock(path)?;
    file.lock().map_err(io(path, "lock"))?;
    Ok(file)
}

/// Opens (creating root 0600) the lock file `path` without locking it,
/// refusing anything but a regular file owned by root.
pub fn open_lock(path: &Path) -> Result<File> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDWR | OFlags::CREATE | ALWAYS,
        Mode::from_raw_mode(0o600),
    )
    .map_err(errno(path, "open lock file"))?;
    let st = rustix::fs::fstat(&fd).map_err(errno(path, "fstat"))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || st.st_uid != 0 {
        return Err(unsafe_state(
            path,
            "is not a regular file owned by root",
            format!("remove it; profiled creates {} itself", path.display()),
        ));
    }
    Ok(File::from(fd))
}
