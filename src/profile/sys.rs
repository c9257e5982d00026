//! The few system calls the profile layer is built from, with errno turned
//! into [`Error`] values that name the relative path.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

use super::{Error, Refusal, Result, stepwise};
use crate::accounts::UserId;

/// The resolution rules of every open inside a profile (rule 1).
const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

/// Flags added to every open: never follow a final link, never block on a
/// FIFO, never leak into a child.
const ALWAYS: OFlags = OFlags::NOFOLLOW
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOCTTY);

/// Opens `rel` beneath `dir` without following any link.
pub(super) fn open_beneath(
    dir: impl AsFd,
    rel: &str,
    flags: OFlags,
    mode: Mode,
) -> Result<OwnedFd> {
    // openat2 answers EAGAIN when a concurrent rename raced the lookup; the
    // kernel asks callers to retry.
    // openat2 refuses O_PATH combined with anything but these.
    let always = if flags.contains(OFlags::PATH) {
        OFlags::NOFOLLOW | OFlags::CLOEXEC
    } else {
        ALWAYS
    };
    if !OPENAT2_MISSING.load(Ordering::Relaxed) {
        let mut tries = 0;
        loop {
            match rustix::fs::openat2(dir.as_fd(), rel, flags | always, mode, BENEATH) {
                Ok(fd) => return Ok(fd),
                Err(Errno::AGAIN) if tries < 16 => tries += 1,
                Err(Errno::NOSYS) => {
                    openat2_missing();
                    break;
                }
                Err(e) => return Err(errno(rel, "open", e)),
            }
        }
    }
    stepwise::open(dir.as_fd(), rel, flags | always, mode).map_err(|e| errno(rel, "open", e))
}

/// Set once `openat2` has answered ENOSYS: the process's seccomp filter or
/// kernel will not change, so every later open goes straight to the walk.
static OPENAT2_MISSING: AtomicBool = AtomicBool::new(false);

/// Notes, once, that opens now walk one component at a time.
fn openat2_missing() {
    if !OPENAT2_MISSING.swap(true, Ordering::Relaxed) {
        tracing::info!(
            "openat2 is not available (a kernel before 5.6, or a seccomp filter such as \
             systemd's RestrictSUIDSGID=yes): opening profile files one path component at a \
             time, with the same refusals (docs/SECURITY.md, rule 1)"
        );
    }
}

/// Opens the directory `rel` beneath `dir`.
pub(super) fn open_dir_beneath(dir: impl AsFd, rel: &str) -> Result<OwnedFd> {
    let dir = dir.as_fd();
    match open_beneath(dir, rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()) {
        // O_DIRECTORY|O_NOFOLLOW answers ENOTDIR for a final link; say
        // "link", which is what the person placed there.
        Err(Error::Refused {
            reason: Refusal::NotADirectory,
            ..
        }) if is_link(dir, rel) => Err(Error::Refused {
            path: rel.to_owned(),
            reason: Refusal::Symlink,
        }),
        other => other,
    }
}

/// Whether `rel` beneath `dir` is itself a symbolic link.
fn is_link(dir: impl AsFd, rel: &str) -> bool {
    open_beneath(dir, rel, OFlags::PATH, Mode::empty())
        .and_then(|fd| stat(&fd, rel))
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
}

/// `fstat`, with the path for the error.
pub(super) fn stat(fd: impl AsFd, rel: &str) -> Result<Stat> {
    rustix::fs::fstat(fd).map_err(|e| errno(rel, "fstat", e))
}

/// `fstatat(..., AT_SYMLINK_NOFOLLOW)`: describes an entry without opening it.
pub(super) fn lstat_at(dir: impl AsFd, name: &str, rel: &str) -> Result<Stat> {
    rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| errno(rel, "stat", e))
}

/// A human name for the kind of file `st` describes.
pub(super) fn kind_name(st: &Stat) -> &'static str {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symbolic link",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Unknown => "file of unknown type",
    }
}

/// Checks that `st` is a regular file with one link, owned by `owner`, no
/// larger than `limit`.
pub(super) fn check_regular(st: &Stat, owner: UserId, limit: u64, rel: &str) -> Result<()> {
    check_shape(st, limit, rel)?;
    if st.st_uid != owner.0 {
        return Err(Error::Refused {
            path: rel.to_owned(),
            reason: Refusal::WrongOwner(UserId(st.st_uid)),
        });
    }
    Ok(())
}

/// Checks that `st` is a regular file with one link, no larger than
/// `limit`, whoever owns it (the caller judges the owner: in a shared
/// directory the owner is the author).
pub(super) fn check_shape(st: &Stat, limit: u64, rel: &str) -> Result<()> {
    let refuse = |reason| {
        Err(Error::Refused {
            path: rel.to_owned(),
            reason,
        })
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return refuse(Refusal::NotRegular(kind_name(st)));
    }
    if st.st_nlink != 1 {
        return refuse(Refusal::HardLinked(st.st_nlink));
    }
    let size = u64::try_from(st.st_size).unwrap_or(0);
    if size > limit {
        return refuse(Refusal::TooLarge { size, limit });
    }
    Ok(())
}

/// Checks that `st` is a directory owned by `owner`.
pub(super) fn check_dir(st: &Stat, owner: UserId, rel: &str) -> Result<()> {
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return Err(Error::Refused {
            path: rel.to_owned(),
            reason: Refusal::NotADirectory,
        });
    }
    if st.st_uid != owner.0 {
        return Err(Error::Refused {
            path: rel.to_owned(),
            reason: Refusal::WrongOwner(UserId(st.st_uid)),
        });
    }
    Ok(())
}

/// Maps an errno from an operation on `rel` to an [`Error`].
pub(super) fn errno(rel: &str, op: &'static str, e: Errno) -> Error {
    let refused = |reason| Error::Refused {
        path: rel.to_owned(),
        reason,
    };
    match e {
        Errno::NOENT => Error::NotFound {
            path: rel.to_owned(),
        },
        // RESOLVE_NO_SYMLINKS and O_NOFOLLOW both answer ELOOP for a link.
        Errno::LOOP => refused(Refusal::Symlink),
        Errno::XDEV => refused(Refusal::LeavesProfile),
        Errno::NOTDIR => refused(Refusal::NotADirectory),
        Errno::NXIO => refused(Refusal::NotRegular("FIFO or socket")),
        // The kernel checked as the account (see `fsid`) and said no.
        Errno::ACCESS => refused(Refusal::Denied),
        e => Error::Io {
            path: rel.to_owned(),
            op,
            source: e.into(),
        },
    }
}

/// Checks that `rel` is a plain relative path: no leading slash, no empty,
/// `.` or `..` components. `RESOLVE_BENEATH` would refuse an escape anyway;
/// this catches the bug before the kernel does, with a clearer message.
pub(super) fn check_rel(rel: &str) -> Result<()> {
    let ok = !rel.is_empty()
        && !rel.starts_with('/')
        && !rel.contains('\0')
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(())
    } else {
        Err(Error::BadPath {
            path: rel.to_owned(),
        })
    }
}

/// Splits `rel` into its parent directory (`None` at the top) and name.
pub(super) fn split_parent(rel: &str) -> (Option<&str>, &str) {
    match rel.rsplit_once('/') {
        Some((parent, name)) => (Some(parent), name),
        None => (None, rel),
    }
}
