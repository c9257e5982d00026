//! A walk over a profile's directories for the watcher (rule 12): each
//! directory is opened beneath its parent's handle without following a
//! link, checked to be a directory the account owns, and handed to the
//! caller open, with the thread acting as the account, so what the caller
//! does with the handle (add an inotify watch on exactly that inode) is
//! checked by the kernel as the account.

use std::ops::ControlFlow;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::FileType;

use super::Result;
use super::dir::{ProfileDir, read_entries};
use super::sys::{check_dir, check_rel, open_dir_beneath, stat};

/// How deep a walk goes below its start: deeper than any directory that
/// holds records (`memory/episodic/YYYY/MM`).
const MAX_DEPTH: usize = 6;

impl ProfileDir {
    /// Visits the directory `rel` (`""`: the profile) and every directory
    /// beneath it whose path `descend` accepts, parents first. `visit` gets
    /// each path and its open handle; [`ControlFlow::Break`] ends the walk.
    /// Links, directories owned by anyone but the account and directories
    /// the account may not read are never visited (nor anything below
    /// them).
    pub fn walk_dirs(
        &self,
        rel: &str,
        descend: &dyn Fn(&str) -> bool,
        visit: &mut dyn FnMut(&str, BorrowedFd<'_>) -> ControlFlow<()>,
    ) -> Result<()> {
        let _as = self.as_account()?;
        let fd = if rel.is_empty() {
            self.dup()?
        } else {
            check_rel(rel)?;
            open_dir_beneath(self.fd(), rel)?
        };
        check_dir(&stat(&fd, rel)?, self.account().uid, rel)?;
        let _ = self.walk_from(fd, rel, descend, visit, 0);
        Ok(())
    }

    /// The (device, inode) of the directory `rel` (`""`: the profile),
    /// reached as the account without a link and owned by it; `None`
    /// otherwise.
    pub fn dir_id(&self, rel: &str) -> Option<(u64, u64)> {
        let _as = self.as_account().ok()?;
        let st = if rel.is_empty() {
            stat(self.fd(), rel).ok()?
        } else {
            check_rel(rel).ok()?;
            stat(open_dir_beneath(self.fd(), rel).ok()?, rel).ok()?
        };
        check_dir(&st, self.account().uid, rel).ok()?;
        Some((st.st_dev, st.st_ino))
    }

    fn walk_from(
        &self,
        fd: OwnedFd,
        rel: &str,
        descend: &dyn Fn(&str) -> bool,
        visit: &mut dyn FnMut(&str, BorrowedFd<'_>) -> ControlFlow<()>,
        depth: usize,
    ) -> ControlFlow<()> {
        visit(rel, fd.as_fd())?;
        if depth >= MAX_DEPTH {
            return ControlFlow::Continue(());
        }
        // A directory that cannot be listed has nothing to visit below.
        let Ok(children) = subdirs(&fd, rel) else {
            return ControlFlow::Continue(());
        };
        for name in children {
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if !descend(&child) {
                continue;
            }
            // Opened beneath the parent's handle: a directory swapped for
            // a link since the listing is refused here.
            let Ok(cfd) = open_dir_beneath(&fd, &name) else {
                continue;
            };
            let owned =
                stat(&cfd, &child).and_then(|st| check_dir(&st, self.account().uid, &child));
            if owned.is_ok() {
                self.walk_from(cfd, &child, descend, visit, depth + 1)?;
            }
        }
        ControlFlow::Continue(())
    }
}

/// The names of the directories in `fd` (links and files left out; names
/// that are not UTF-8 too).
fn subdirs(fd: &OwnedFd, rel: &str) -> Result<Vec<String>> {
    Ok(read_entries(fd, rel)?
        .into_iter()
        .filter(|(_, kind)| *kind == FileType::Directory)
        .map(|(name, _)| name)
        .collect())
}
