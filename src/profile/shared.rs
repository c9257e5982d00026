//! [`SharedDir`]: a root-owned directory that every eligible account shares
//! (the knowledge hub), whose entries are files owned by their authors.
//!
//! The rule-1 care of profiles applies here too, with one difference: no
//! owner is known in advance, so the owner is returned for the caller to
//! judge (an entry is attributed to its file's owner, which a person cannot
//! forge). Entries are opened beneath the directory handle with `openat2`
//! and no links, `O_NOFOLLOW|O_NONBLOCK`, and checked with `fstat`: a
//! regular file with one link, under the size limit.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use super::dir::{Entry, EntryKind, Stamp};
use super::sys::{check_shape, errno, lstat_at, open_beneath, stat};
use super::{Error, Refusal, Result};
use crate::accounts::{Account, GroupId, UserId};

/// The mode of an entry the daemon writes: its author may edit it, every
/// account may read it (the API decides who is served; see docs/FORMATS.md).
const ENTRY_MODE: u32 = 0o644;
/// Without a writers' group: only root creates entries (through the API).
const CLOSED_MODE: u32 = 0o755;
/// With a writers' group: its members create entries too; the sticky bit
/// keeps anyone from renaming or removing another's entry (as in /tmp).
const GROUP_MODE: u32 = 0o1775;

/// What `lstat` says of one entry, without opening it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// What the entry is (a link is described, never followed).
    pub kind: EntryKind,
    /// Its owner.
    pub owner: UserId,
    /// Its number of hard links.
    pub links: u64,
    /// Its identity and content version.
    pub stamp: Stamp,
}

/// An entry read from a [`SharedDir`].
#[derive(Clone, Debug)]
pub struct SharedFile {
    /// The file's owner, as `fstat` on the open file says.
    pub owner: UserId,
    /// The file's identity and version when read.
    pub stamp: Stamp,
    /// Its content.
    pub bytes: Vec<u8>,
}

/// An open, checked shared directory.
#[derive(Debug)]
pub struct SharedDir {
    fd: OwnedFd,
    path: PathBuf,
    max_file: u64,
}

impl SharedDir {
    /// Opens the directory at `path`, creating it when missing, and sets
    /// its owner and mode on the handle: root:root 0755, or root:`group`
    /// 1775 when a writers' group is given. Refuses a directory owned by
    /// anyone but root, or any ancestor someone other than root could change.
    pub fn open(path: &Path, group: Option<GroupId>, max_file: u64) -> Result<SharedDir> {
        let shown = path.display().to_string();
        if !path.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(CLOSED_MODE)
                .create(path)
                .map_err(|source| Error::Io {
                    path: shown.clone(),
                    op: "create the directory",
                    source,
                })?;
        }
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::Io {
            path: shown.clone(),
            op: "open the directory (it must be a directory, not a link)",
            source: e.into(),
        })?;
        let st = rustix::fs::fstat(&fd).map_err(|e| Error::Io {
            path: shown.clone(),
            op: "stat the directory",
            source: e.into(),
        })?;
        if st.st_uid != 0 {
            return Err(Error::UnsafeRoot {
                path: path.to_owned(),
                reason: format!(
                    "it is owned by uid {}, not root: its owner could swap entries",
                    st.st_uid
                ),
                fix: format!("chown root:root {shown}"),
            });
        }
        super::check_ancestors(path)?;
        let (gid, mode) = match group {
            Some(g) => (g.0, GROUP_MODE),
            None => (0, CLOSED_MODE),
        };
        if st.st_gid != gid {
            rustix::fs::fchown(&fd, None, Some(rustix::fs::Gid::from_raw(gid))).map_err(|e| {
                Error::Io {
                    path: shown.clone(),
                    op: "chown the directory",
                    source: e.into(),
                }
            })?;
        }
        if st.st_mode & 0o7777 != mode {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|e| Error::Io {
                path: shown.clone(),
                op: "chmod the directory",
                source: e.into(),
            })?;
            tracing::info!("{shown}: mode set to {mode:04o} (gid {gid})");
        }
        Ok(SharedDir {
            fd,
            path: path.to_owned(),
            max_file,
        })
    }

    /// The path the directory was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The entries directly in the directory, unsorted; names that are not
    /// UTF-8 are left out.
    pub fn list(&self) -> Result<Vec<Entry>> {
        let dir =
            rustix::fs::Dir::read_from(&self.fd).map_err(|e| errno(".", "read directory", e))?;
        let mut out = Vec::new();
        for entry in dir {
            let entry = entry.map_err(|e| errno(".", "read directory", e))?;
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            if name == "." || name == ".." {
                continue;
            }
            let kind = match entry.file_type() {
                FileType::Unknown => match self.probe(name)? {
                    Some(p) => p.kind,
                    None => continue,
                },
                ft => kind_of(ft),
            };
            out.push(Entry {
                name: name.to_owned(),
                kind,
            });
        }
        Ok(out)
    }

    /// Describes the entry `name` without opening or following it; `None`
    /// when nothing is there.
    pub fn probe(&self, name: &str) -> Result<Option<Probe>> {
        check_name(name)?;
        let st = match lstat_at(&self.fd, name, name) {
            Ok(st) => st,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(Probe {
            kind: kind_of(FileType::from_raw_mode(st.st_mode)),
            owner: UserId(st.st_uid),
            links: st.st_nlink,
            stamp: Stamp::of(&st),
        }))
    }

    /// Reads the entry `name`: only a regular file with one link, under the
    /// size limit, reached without a link; a link, FIFO or device is refused
    /// before it is opened, and the open file is checked again.
    pub fn read(&self, name: &str) -> Result<SharedFile> {
        let probe = self.probe(name)?.ok_or_else(|| Error::NotFound {
            path: name.to_owned(),
        })?;
        match probe.kind {
            EntryKind::File => {}
            EntryKind::Symlink => return Err(refused(name, Refusal::Symlink)),
            EntryKind::Dir => return Err(refused(name, Refusal::NotRegular("directory"))),
            EntryKind::Other => {
                return Err(refused(name, Refusal::NotRegular("FIFO, socket or device")));
            }
        }
        let fd = open_beneath(&self.fd, name, OFlags::RDONLY, Mode::empty())?;
        let st = stat(&fd, name)?;
        check_shape(&st, self.max_file, name)?;
        let mut bytes = Vec::with_capacity(usize::try_from(st.st_size).unwrap_or(0));
        // Read one byte past the limit so growth after fstat is caught.
        File::from(fd)
            .take(self.max_file.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|source| Error::Io {
                path: name.to_owned(),
                op: "read",
                source,
            })?;
        self.check_size(name, bytes.len())?;
        Ok(SharedFile {
            owner: UserId(st.st_uid),
            stamp: Stamp::of(&st),
            bytes,
        })
    }

    /// Writes a new entry `name` owned by `owner` (mode 0644), atomically:
    /// a hidden temporary file created in the directory, given to the
    /// owner on its handle, fsynced, renamed into place without replacing
    /// anything (`EEXIST` if the name is taken), then the directory fsynced.
    pub fn create(&self, name: &str, data: &[u8], owner: &Account) -> Result<()> {
        check_name(name)?;
        self.check_size(name, data.len())?;
        let tmp = format!(".{name}.{}.tmp", ulid::Ulid::generate());
        let io = |op: &'static str| {
            move |e: Errno| Error::Io {
                path: name.to_owned(),
                op,
                source: e.into(),
            }
        };
        let fd = open_beneath(
            &self.fd,
            &tmp,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
            Mode::from_raw_mode(ENTRY_MODE),
        )
        .map_err(|e| e.at(name))?;
        let written = (|| {
            rustix::fs::fchown(
                &fd,
                Some(rustix::fs::Uid::from_raw(owner.uid.0)),
                Some(rustix::fs::Gid::from_raw(owner.gid.0)),
            )
            .map_err(io("chown"))?;
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(ENTRY_MODE)).map_err(io("chmod"))?;
            let mut file = File::from(fd);
            file.write_all(data).map_err(|source| Error::Io {
                path: name.to_owned(),
                op: "write",
                source,
            })?;
            rustix::fs::fdatasync(&file).map_err(io("fsync"))?;
            rustix::fs::renameat_with(
                &self.fd,
                tmp.as_str(),
                &self.fd,
                name,
                RenameFlags::NOREPLACE,
            )
            .map_err(|e| errno(name, "rename", e))
        })();
        if let Err(e) = written {
            // Best effort: the hidden temporary name is never read as an entry.
            let _ = rustix::fs::unlinkat(&self.fd, tmp.as_str(), AtFlags::empty());
            return Err(e);
        }
        rustix::fs::fsync(&self.fd).map_err(io("fsync directory"))
    }

    /// Refuses an entry of `len` bytes over the size limit.
    fn check_size(&self, name: &str, len: usize) -> Result<()> {
        let size = len as u64;
        if size > self.max_file {
            return Err(refused(
                name,
                Refusal::TooLarge {
                    size,
                    limit: self.max_file,
                },
            ));
        }
        Ok(())
    }

    /// Removes the entry `name` (never a directory; a link is removed, not
    /// followed), then fsyncs the directory.
    pub fn remove(&self, name: &str) -> Result<()> {
        check_name(name)?;
        rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())
            .map_err(|e| errno(name, "remove", e))?;
        rustix::fs::fsync(&self.fd).map_err(|e| errno(name, "fsync directory", e))
    }
}

fn refused(name: &str, reason: Refusal) -> Error {
    Error::Refused {
        path: name.to_owned(),
        reason,
    }
}

fn kind_of(ft: FileType) -> EntryKind {
    match ft {
        FileType::RegularFile => EntryKind::File,
        FileType::Directory => EntryKind::Dir,
        FileType::Symlink => EntryKind::Symlink,
        _ => EntryKind::Other,
    }
}

/// Only names directly in the directory: no `/`, `.`, `..` or NUL.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(Error::BadPath {
            path: name.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_are_accepted() {
        assert!(check_name("kn-01.md").is_ok());
        for bad in ["", ".", "..", "a/b", "../x", "a\0b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
