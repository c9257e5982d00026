//! [`ProfilesRoot`]: the directory holding every profile; provisioning,
//! adoption and conflict detection.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use super::dir::{ProfileDir, WriteMode};
use super::layout::{LAYOUT_DIRS, PERSONA_CORE_TOML, PROFILE_TOML};
use super::sys::{errno, kind_name, lstat_at, open_beneath, open_dir_beneath, stat};
use super::{Error, Refusal, Result};
use crate::accounts::{Account, UserId};

const PROVISION_PREFIX: &str = ".provision-";
const MAX_DEPTH: usize = 64;

/// The profiles root, opened once at start-up after its safety was checked.
#[derive(Debug)]
pub struct ProfilesRoot {
    fd: OwnedFd,
    path: PathBuf,
    max_file: u64,
}

/// The state of one directory in the profiles root, as the admin list shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileListing {
    /// Directory name (the account name).
    pub name: String,
    /// Owner uid of the directory.
    pub owner: UserId,
    /// What the directory is.
    pub state: ProfileState,
}

/// What a directory in the profiles root is, judged by its owner alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileState {
    /// A directory; whether its owner matches an account is the caller's call.
    Directory,
    /// Not a directory (a stray file or link): never used as a profile.
    NotADirectory,
}

/// How an opened profile came to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Provenance {
    /// It was there, owned by the account.
    Existing,
    /// It was provisioned now.
    Created,
    /// A root-owned tree was adopted now.
    Adopted(AdoptReport),
}

/// What an adoption changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdoptReport {
    /// The owner the profile directory had before.
    pub previous_owner: Option<UserId>,
    /// Entries whose owner or mode was repaired.
    pub repaired: usize,
    /// Entries left as they are, each with the reason.
    pub skipped: Vec<String>,
}

impl ProfilesRoot {
    /// Opens the profiles root at `path`, creating it (root, 0755) when
    /// missing. Refuses a root, or any ancestor, that someone other than
    /// root could change: such a root would let a user swap profiles.
    pub fn open(path: &Path, max_file: u64) -> Result<ProfilesRoot> {
        ProfilesRoot::open_checked(path, max_file, true)
    }

    fn open_checked(path: &Path, max_file: u64, cleanup: bool) -> Result<ProfilesRoot> {
        if !path.exists() {
            std::fs::create_dir_all(path).map_err(|source| Error::Io {
                path: path.display().to_string(),
                op: "create the profiles root",
                source,
            })?;
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .map_err(|source| Error::Io {
                    path: path.display().to_string(),
                    op: "chmod the profiles root",
                    source,
                })?;
        }
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::Io {
            path: path.display().to_string(),
            op: "open the profiles root",
            source: e.into(),
        })?;
        let st = rustix::fs::fstat(&fd).map_err(|e| Error::Io {
            path: path.display().to_string(),
            op: "stat the profiles root",
            source: e.into(),
        })?;
        check_root_owned(path, st.st_uid, st.st_mode, false)?;
        check_ancestors(path)?;
        let root = ProfilesRoot {
            fd,
            path: path.to_owned(),
            max_file,
        };
        if cleanup {
            root.remove_stale_provisions();
        }
        Ok(root)
    }

    /// Opens the profiles root like [`ProfilesRoot::open`], for tools that
    /// may run beside the daemon (`profiled rotate-keys`): it leaves the
    /// `.provision-*` directories alone, since they may be the daemon's
    /// provisioning in flight.
    pub fn open_beside_daemon(path: &Path, max_file: u64) -> Result<ProfilesRoot> {
        ProfilesRoot::open_checked(path, max_file, false)
    }

    /// The path the root was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The (device, inode) of `account`'s profile when it is a directory
    /// owned by the account, found without opening it (one `fstatat`
    /// beneath the root, not following a link): enough to tell whether
    /// what was cached of a profile still describes the directory there.
    pub fn profile_identity(&self, account: &Account) -> Option<(u64, u64)> {
        let name = account.name.as_str();
        if !crate::accounts::is_valid_name(name) {
            return None;
        }
        let st = lstat_at(&self.fd, name, name).ok()?;
        (FileType::from_raw_mode(st.st_mode) == FileType::Directory && st.st_uid == account.uid.0)
            .then_some((st.st_dev, st.st_ino))
    }

    /// Opens `account`'s profile only if it is a directory owned by the
    /// account; changes nothing (no adoption, no chmod). `Ok(None)` when it
    /// is missing or belongs to someone else: the watcher reports nothing
    /// of a profile whose owner is not its account.
    pub fn open_owned(&self, account: &Account) -> Result<Option<ProfileDir>> {
        let name = account.name.as_str();
        let fd = match open_dir_beneath(&self.fd, name) {
            Ok(fd) => fd,
            Err(Error::NotFound { .. } | Error::Refused { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let st = stat(&fd, name)?;
        if st.st_uid != account.uid.0 {
            return Ok(None);
        }
        Ok(Some(ProfileDir::new(fd, account.clone(), self.max_file)))
    }

    /// Opens `account`'s profile. `Ok(None)` when it does not exist. A tree
    /// owned by root (placed by an admin, e.g. a copy of an example profile)
    /// is adopted: ownership and modes repaired, content kept, missing
    /// layout directories added. A tree owned by another uid is an
    /// [`Error::Conflict`].
    pub fn open_profile(&self, account: &Account) -> Result<Option<(ProfileDir, Provenance)>> {
        let name = account.name.as_str();
        let fd = match open_dir_beneath(&self.fd, name) {
            Ok(fd) => fd,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let st = stat(&fd, name)?;
        if st.st_uid == account.uid.0 {
            if st.st_mode & 0o7777 != 0o700 {
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700))
                    .map_err(|e| errno(name, "chmod", e))?;
            }
            let profile = ProfileDir::new(fd, account.clone(), self.max_file);
            return Ok(Some((profile, Provenance::Existing)));
        }
        if st.st_uid != 0 {
            return Err(Error::Conflict {
                user: name.to_owned(),
                owner: UserId(st.st_uid),
                expected: account.uid,
            });
        }
        let profile = ProfileDir::new(fd, account.clone(), self.max_file);
        let mut report = adopt_tree(&profile, &[UserId::ROOT])?;
        report.previous_owner = Some(UserId::ROOT);
        complete_layout(&profile)?;
        Ok(Some((profile, Provenance::Adopted(report))))
    }

    /// Opens `account`'s profile, provisioning it when missing.
    pub fn ensure_profile(&self, account: &Account) -> Result<(ProfileDir, Provenance)> {
        if let Some(opened) = self.open_profile(account)? {
            return Ok(opened);
        }
        match self.provision(account) {
            Ok(p) => Ok((p, Provenance::Created)),
            // Another request provisioned it first.
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
                self.open_profile(account)?.ok_or_else(|| Error::NotFound {
                    path: account.name.clone(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Builds a new profile for `account` under a hidden temporary name and
    /// renames it into place, so a failure leaves nothing behind.
    pub fn provision(&self, account: &Account) -> Result<ProfileDir> {
        let tmp = format!(
            "{PROVISION_PREFIX}{}-{}",
            account.name,
            ulid::Ulid::generate()
        );
        rustix::fs::mkdirat(&self.fd, tmp.as_str(), Mode::from_raw_mode(0o700))
            .map_err(|e| errno(&tmp, "mkdir", e))?;
        let built = (|| {
            let fd = open_dir_beneath(&self.fd, &tmp)?;
            chown(&fd, account, 0o700).map_err(|e| errno(&tmp, "chown", e))?;
            let profile = ProfileDir::new(fd, account.clone(), self.max_file);
            complete_layout(&profile)?;
            profile.write(
                "profile.toml",
                PROFILE_TOML.as_bytes(),
                WriteMode::CreateNew,
            )?;
            profile.write(
                "persona/core.toml",
                PERSONA_CORE_TOML.as_bytes(),
                WriteMode::CreateNew,
            )?;
            rustix::fs::renameat_with(
                &self.fd,
                tmp.as_str(),
                &self.fd,
                account.name.as_str(),
                RenameFlags::NOREPLACE,
            )
            .map_err(|e| Error::Io {
                path: account.name.clone(),
                op: "rename the new profile into place",
                source: e.into(),
            })?;
            rustix::fs::fsync(&self.fd).map_err(|e| errno(&account.name, "fsync", e))?;
            Ok(profile)
        })();
        if built.is_err() {
            let _ = remove_tree(self.fd.as_fd(), &tmp, 0);
        }
        built
    }

    /// Hands `account`'s existing profile to the account whatever its
    /// current owner (an admin's decision on a conflict): everything owned
    /// by root or by the previous owner is given to the account.
    pub fn adopt(&self, account: &Account) -> Result<AdoptReport> {
        let name = account.name.as_str();
        let fd = open_dir_beneath(&self.fd, name)?;
        let st = stat(&fd, name)?;
        let previous = UserId(st.st_uid);
        let profile = ProfileDir::new(fd, account.clone(), self.max_file);
        let mut report = adopt_tree(&profile, &[UserId::ROOT, previous])?;
        report.previous_owner = Some(previous);
        complete_layout(&profile)?;
        Ok(report)
    }

    /// Every entry of the profiles root except the daemon's hidden ones.
    pub fn list(&self) -> Result<Vec<ProfileListing>> {
        let mut out = Vec::new();
        let dir = rustix::fs::Dir::read_from(&self.fd).map_err(|e| errno(".", "list", e))?;
        for entry in dir {
            let entry = entry.map_err(|e| errno(".", "list", e))?;
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let st = lstat_at(&self.fd, name, name)?;
            let state = if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                ProfileState::Directory
            } else {
                ProfileState::NotADirectory
            };
            out.push(ProfileListing {
                name: name.to_owned(),
                owner: UserId(st.st_uid),
                state,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes what an interrupted provisioning left.
    fn remove_stale_provisions(&self) {
        let Ok(dir) = rustix::fs::Dir::read_from(&self.fd) else {
            return;
        };
        for entry in dir.flatten() {
            if let Ok(name) = entry.file_name().to_str()
                && name.starts_with(PROVISION_PREFIX)
                && let Err(e) = remove_tree(self.fd.as_fd(), name, 0)
            {
                tracing::warn!("could not remove stale {name}: {e}");
            }
        }
    }
}

/// Adds the layout directories a profile lacks (0700, owned by the account).
fn complete_layout(profile: &ProfileDir) -> Result<()> {
    for dir in LAYOUT_DIRS {
        profile.ensure_dir(dir)?;
    }
    Ok(())
}

/// Refuses `path` if a directory above it could be changed by someone other
/// than root: whoever can rename an ancestor can swap what lies below it.
pub fn check_ancestors(path: &Path) -> Result<()> {
    for ancestor in path.ancestors().skip(1) {
        let md = std::fs::metadata(ancestor).map_err(|source| Error::Io {
            path: ancestor.display().to_string(),
            op: "stat an ancestor directory",
            source,
        })?;
        check_root_owned(ancestor, md.uid(), md.mode(), true)?;
    }
    Ok(())
}

/// Refuses `path` unless root owns it and nobody else can write to it (a
/// sticky directory such as /tmp is fine as an ancestor).
fn check_root_owned(path: &Path, uid: u32, mode: u32, ancestor: bool) -> Result<()> {
    let shown = path.display();
    if uid != 0 {
        return Err(Error::UnsafeRoot {
            path: path.to_owned(),
            reason: format!(
                "{}owned by uid {uid}, not root",
                if ancestor {
                    "an ancestor directory is "
                } else {
                    "it is "
                }
            ),
            fix: format!("chown root:root {shown}"),
        });
    }
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !(ancestor && sticky) {
        return Err(Error::UnsafeRoot {
            path: path.to_owned(),
            reason: format!(
                "{}group- or world-writable (mode {:04o})",
                if ancestor {
                    "an ancestor directory is "
                } else {
                    "it is "
                },
                mode & 0o7777
            ),
            fix: format!("chmod go-w {shown}"),
        });
    }
    Ok(())
}

/// Gives the whole tree of `profile` to its account: entries owned by one
/// of `take_from` are chowned; modes become 0700 (directories) and 0600
/// (files; 0700 if executable). Links, hard-linked files, special files and
/// files of other owners are left as they are and reported.
fn adopt_tree(profile: &ProfileDir, take_from: &[UserId]) -> Result<AdoptReport> {
    let mut report = AdoptReport::default();
    let account = profile.account();
    let top = profile.fd();
    let st = stat(top, ".")?;
    fix_entry(top, &st, account, take_from, 0o700, ".", &mut report)?;
    walk(top, "", account, take_from, &mut report, 0)?;
    Ok(report)
}

fn walk(
    dir: &OwnedFd,
    prefix: &str,
    account: &Account,
    take_from: &[UserId],
    report: &mut AdoptReport,
    depth: usize,
) -> Result<()> {
    let entries = rustix::fs::Dir::read_from(dir).map_err(|e| errno(prefix, "list", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| errno(prefix, "list", e))?;
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if name == "." || name == ".." {
            continue;
        }
        let rel = if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}/{name}")
        };
        let st = lstat_at(dir, name, &rel)?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory if depth >= MAX_DEPTH => {
                report
                    .skipped
                    .push(format!("{rel}: nested deeper than {MAX_DEPTH}, left as is"));
            }
            FileType::Directory => {
                let fd = open_dir_beneath(dir, name).map_err(|e| e.at(&rel))?;
                let st = stat(&fd, &rel)?;
                fix_entry(&fd, &st, account, take_from, 0o700, &rel, report)?;
                walk(&fd, &rel, account, take_from, report, depth + 1)?;
            }
            FileType::RegularFile if st.st_nlink == 1 => {
                let fd = open_beneath(dir, name, OFlags::RDONLY, Mode::empty())
                    .map_err(|e| e.at(&rel))?;
                let st = stat(&fd, &rel)?;
                if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || st.st_nlink != 1
                {
                    report
                        .skipped
                        .push(format!("{rel}: changed while adopting, left as is"));
                    continue;
                }
                let mode = if st.st_mode & 0o100 != 0 {
                    0o700
                } else {
                    0o600
                };
                fix_entry(&fd, &st, account, take_from, mode, &rel, report)?;
            }
            FileType::RegularFile => report
                .skipped
                .push(format!("{rel}: {}", Refusal::HardLinked(st.st_nlink))),
            _ => report
                .skipped
                .push(format!("{rel}: a {}, left as is", kind_name(&st))),
        }
    }
    Ok(())
}

fn fix_entry(
    fd: &OwnedFd,
    st: &rustix::fs::Stat,
    account: &Account,
    take_from: &[UserId],
    mode: u32,
    rel: &str,
    report: &mut AdoptReport,
) -> Result<()> {
    let owner = UserId(st.st_uid);
    if owner != account.uid && !take_from.contains(&owner) {
        report
            .skipped
            .push(format!("{rel}: owned by uid {owner}, left as is"));
        return Ok(());
    }
    if owner != account.uid || st.st_mode & 0o7777 != mode {
        chown(fd, account, mode).map_err(|e| errno(rel, "chown", e))?;
        report.repaired += 1;
    }
    Ok(())
}

fn chown(fd: impl AsFd, account: &Account, mode: u32) -> std::result::Result<(), Errno> {
    rustix::fs::fchown(
        &fd,
        Some(rustix::fs::Uid::from_raw(account.uid.0)),
        Some(rustix::fs::Gid::from_raw(account.gid.0)),
    )?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
}

/// Removes `name` under `parent` and everything in it, through handles,
/// never following a link.
fn remove_tree(parent: std::os::fd::BorrowedFd<'_>, name: &str, depth: usize) -> Result<()> {
    let st = lstat_at(parent, name, name)?;
    if FileType::from_raw_mode(st.st_mode) == FileType::Directory && depth < MAX_DEPTH {
        let fd = open_dir_beneath(parent, name)?;
        let entries = rustix::fs::Dir::read_from(&fd).map_err(|e| errno(name, "list", e))?;
        for entry in entries.flatten() {
            if let Ok(child) = entry.file_name().to_str()
                && child != "."
                && child != ".."
            {
                remove_tree(fd.as_fd(), child, depth + 1)?;
            }
        }
        rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR).map_err(|e| errno(name, "remove", e))
    } else {
        rustix::fs::unlinkat(parent, name, AtFlags::empty()).map_err(|e| errno(name, "remove", e))
    }
}
