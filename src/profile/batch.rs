//! [`Batch`]: many writes in one profile made durable together, for one
//! filesystem sync instead of two fsyncs per file (rule 2, batched).
//!
//! New files are written under hidden temporary names through the checked
//! directory handles (the same `openat2` rules, owner and modes as
//! [`ProfileDir::write`]) but not synced one by one. [`Batch::commit`]
//! then syncs the filesystem once (`syncfs`), which makes every temporary
//! file, append and rename done so far durable, and only then renames each
//! new file into place (never over an existing entry) and fsyncs each
//! directory it renamed into. So a new file is never visible under its
//! final name before its content is on disk, and a crash leaves at worst
//! hidden temporary files, never a torn record.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};

use super::dir::{FILE_MODE, NewEntry, ProfileDir, append_whole, exact_mode, open_log};
use super::sys::{check_regular, check_rel, errno, open_beneath, split_parent, stat};
use super::{Error, Result};

/// The end of a batch's temporary names (a single write's end in `.tmp`),
/// so what a crashed batch left can be told apart and swept.
const TMP_SUFFIX: &str = ".batch.tmp";

/// Removes the temporary files a batch left in the directory `rel` (a
/// crash before its commit), returning how many. Only safe where no other
/// batch is under way in that profile: the ingest agent calls it at the
/// start of a run, under the profile's agent lock. A missing directory has
/// none.
pub(super) fn sweep(profile: &ProfileDir, rel: &str) -> Result<usize> {
    let entries = match profile.list(rel) {
        Ok(e) => e,
        Err(Error::NotFound { .. }) => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut litter = entries
        .into_iter()
        .filter(|e| e.kind == super::EntryKind::File)
        .filter(|e| e.name.starts_with('.') && e.name.ends_with(TMP_SUFFIX))
        .peekable();
    if litter.peek().is_none() {
        return Ok(0);
    }
    let dir = profile.ensure_dir(rel)?;
    let _as = profile.as_account()?;
    let mut n = 0;
    for e in litter {
        match rustix::fs::unlinkat(&dir, e.name.as_str(), AtFlags::empty()) {
            Ok(()) => n += 1,
            Err(rustix::io::Errno::NOENT) => {}
            Err(err) => return Err(errno(&format!("{rel}/{}", e.name), "remove", err)),
        }
    }
    Ok(n)
}

/// Writes to one profile made durable together by [`Batch::commit`].
/// Dropping a batch without committing removes its temporary files: none
/// of its new files appears.
pub struct Batch<'p> {
    profile: &'p ProfileDir,
    /// Directories opened so far, by path relative to the profile (`""`:
    /// the profile itself), so a thousand files in one directory open it
    /// once.
    dirs: HashMap<String, OwnedFd>,
    /// New files written under temporary names, in order.
    staged: Vec<Staged>,
    /// Bytes of the staged files.
    bytes: u64,
    /// Whether appends or renames wait for the commit's sync.
    dirty: bool,
}

/// A new file written under a hidden temporary name.
struct Staged {
    /// Its directory, relative to the profile.
    parent: String,
    tmp: String,
    name: String,
    /// The whole relative path, for errors.
    rel: String,
}

impl<'p> Batch<'p> {
    pub(super) fn new(profile: &'p ProfileDir) -> Batch<'p> {
        Batch {
            profile,
            dirs: HashMap::new(),
            staged: Vec::new(),
            bytes: 0,
            dirty: false,
        }
    }

    /// How many new files are staged.
    pub fn len(&self) -> usize {
        self.staged.len()
    }

    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.staged.is_empty()
    }

    /// Bytes of the staged files.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Writes `data` as the new file `rel`, under a hidden temporary name
    /// beside it until [`Batch::commit`]. Missing parent directories are
    /// created (0700, owned by the account); the file is created as the
    /// account (so owned by it), mode 0600. Over the size limit it is
    /// refused.
    pub fn stage(&mut self, rel: &str, data: &[u8]) -> Result<()> {
        check_rel(rel)?;
        self.profile.check_size(rel, data.len())?;
        let _as = self.profile.as_account()?;
        let (parent, name) = split_parent(rel);
        let parent = parent.unwrap_or("");
        let tmp = format!(".{name}.{}{TMP_SUFFIX}", ulid::Ulid::generate());
        let dir = self.dir(parent)?;
        let fd = open_beneath(
            dir,
            &tmp,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
            Mode::from_raw_mode(FILE_MODE),
        )
        .map_err(|e| e.at(rel))?;
        // Recorded before anything can fail, so a drop removes it.
        self.staged.push(Staged {
            parent: parent.to_owned(),
            tmp,
            name: name.to_owned(),
            rel: rel.to_owned(),
        });
        exact_mode(&fd, FILE_MODE).map_err(|e| errno(rel, "chmod", e))?;
        File::from(fd).write_all(data).map_err(|source| Error::Io {
            path: rel.to_owned(),
            op: "write",
            source,
        })?;
        self.bytes += data.len() as u64;
        Ok(())
    }

    /// Replaces the file `rel` with `data` now, atomically (a temporary
    /// file renamed over it, as [`ProfileDir::write`]), durable at the
    /// commit: before any staged file takes its name. For a journal of
    /// what the batch is about to place.
    pub fn replace(&mut self, rel: &str, data: &[u8]) -> Result<()> {
        let len = self.staged.len();
        if let Err(e) = self.stage(rel, data) {
            self.truncate(len);
            return Err(e);
        }
        let s = self.staged.pop().ok_or_else(|| Error::BadPath {
            path: rel.to_owned(),
        })?;
        self.staged.truncate(len);
        self.bytes -= data.len() as u64;
        let _as = self.profile.as_account()?;
        let placed = match self.dirs.get(&s.parent) {
            Some(dir) => rustix::fs::renameat(dir, s.tmp.as_str(), dir, s.name.as_str())
                .map_err(|e| errno(rel, "rename", e)),
            None => Err(Error::BadPath {
                path: rel.to_owned(),
            }),
        };
        if placed.is_err() {
            self.unlink_tmp(&s);
        }
        self.dirty = true;
        placed
    }

    /// Removes the files staged after the first `len` (a mark taken with
    /// [`Batch::len`]): a caller that stages several files for one item
    /// takes them all back when one fails.
    pub fn truncate(&mut self, len: usize) {
        for s in self.staged.split_off(len.min(self.staged.len())) {
            self.unlink_tmp(&s);
        }
    }

    /// Appends `data` to the log file `rel` with one `write`, creating it
    /// (owned by the account) when missing; durable at the commit.
    pub fn append(&mut self, rel: &str, data: &[u8]) -> Result<()> {
        check_rel(rel)?;
        let (parent, name) = split_parent(rel);
        let _as = self.profile.as_account()?;
        let dir = self.dir(parent.unwrap_or(""))?;
        let fd = open_log(dir, name, rel, NewEntry::SyncedByCommit)?;
        check_regular(&stat(&fd, rel)?, self.profile.account().uid, u64::MAX, rel)?;
        self.dirty = true;
        append_whole(&File::from(fd), data, rel)
    }

    /// Renames the entry `from` to `to` now, never over an existing entry
    /// (`EEXIST`, as [`ProfileDir::rename`]) and without following links;
    /// durable at the commit. Both parents must exist.
    pub fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        check_rel(from)?;
        check_rel(to)?;
        let (from_parent, from_name) = split_parent(from);
        let (to_parent, to_name) = split_parent(to);
        let (from_parent, to_parent) = (from_parent.unwrap_or(""), to_parent.unwrap_or(""));
        // Both opened first: the map hands out one borrow at a time.
        self.dir(from_parent)?;
        self.dir(to_parent)?;
        let (Some(from_dir), Some(to_dir)) = (self.dirs.get(from_parent), self.dirs.get(to_parent))
        else {
            return Err(Error::BadPath {
                path: from.to_owned(),
            });
        };
        self.dirty = true;
        let _as = self.profile.as_account()?;
        rustix::fs::renameat_with(from_dir, from_name, to_dir, to_name, RenameFlags::NOREPLACE)
            .map_err(|e| errno(from, "rename", e))
    }

    /// Makes everything in the batch durable: one sync of the filesystem
    /// (the staged files' content, appends, renames), then each staged
    /// file renamed to its name (never over an existing entry: a clash is
    /// an `EEXIST` error naming the file) and each directory renamed into
    /// fsynced. On an error the files not yet renamed are removed, those
    /// already renamed stay (and are synced as far as possible).
    pub fn commit(mut self) -> Result<()> {
        if self.staged.is_empty() && !self.dirty {
            return Ok(());
        }
        rustix::fs::syncfs(self.profile.dir_fd()).map_err(|e| errno(".", "sync filesystem", e))?;
        let _as = self.profile.as_account()?;
        let mut touched = BTreeSet::new();
        let mut rest = std::mem::take(&mut self.staged).into_iter();
        while let Some(s) = rest.next() {
            let placed = match self.dirs.get(&s.parent) {
                Some(dir) => rustix::fs::renameat_with(
                    dir,
                    s.tmp.as_str(),
                    dir,
                    s.name.as_str(),
                    RenameFlags::NOREPLACE,
                )
                .map_err(|e| errno(&s.rel, "rename", e)),
                None => Err(Error::BadPath {
                    path: s.rel.clone(),
                }),
            };
            if let Err(e) = placed {
                // The rest are removed by drop; what was placed is kept.
                self.staged = std::iter::once(s).chain(rest).collect();
                let _ = self.sync_dirs(&touched);
                return Err(e);
            }
            touched.insert(s.parent);
        }
        self.sync_dirs(&touched)
    }

    /// Fsyncs each directory of `touched`.
    fn sync_dirs(&self, touched: &BTreeSet<String>) -> Result<()> {
        for parent in touched {
            if let Some(dir) = self.dirs.get(parent) {
                rustix::fs::fsync(dir).map_err(|e| errno(parent, "fsync directory", e))?;
            }
        }
        Ok(())
    }

    /// The directory `rel` (`""`: the profile), opened (and created where
    /// missing) once per batch.
    fn dir(&mut self, rel: &str) -> Result<&OwnedFd> {
        if !self.dirs.contains_key(rel) {
            let fd = if rel.is_empty() {
                self.profile.dup()?
            } else {
                self.profile.ensure_dir(rel)?
            };
            self.dirs.insert(rel.to_owned(), fd);
        }
        self.dirs.get(rel).ok_or_else(|| Error::BadPath {
            path: rel.to_owned(),
        })
    }

    /// Removes a staged file's temporary name, best effort: it is hidden
    /// and never read as a record, so a failure only leaves litter.
    fn unlink_tmp(&self, s: &Staged) {
        // Never as root: what the account could not remove stays.
        let Ok(_as) = self.profile.as_account() else {
            return;
        };
        if let Some(dir) = self.dirs.get(&s.parent) {
            let _ = rustix::fs::unlinkat(dir, s.tmp.as_str(), AtFlags::empty());
        }
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        for s in &self.staged {
            self.unlink_tmp(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, symlink};
    use std::path::PathBuf;

    use rustix::fs::{Mode, OFlags};

    use super::super::{Error, ProfileDir, Refusal};
    use crate::accounts::{Account, GroupId, UserId};

    /// A scratch profile owned by the user running the tests, removed on
    /// drop.
    struct Scratch {
        path: PathBuf,
        dir: ProfileDir,
    }

    impl Scratch {
        fn new() -> Scratch {
            let path =
                std::env::temp_dir().join(format!("profiled-batch-{}", ulid::Ulid::generate()));
            std::fs::create_dir(&path).expect("create a scratch directory");
            let fd = rustix::fs::open(
                &path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .expect("open the scratch directory");
            let account = Account {
                name: "batch-test".into(),
                uid: UserId(rustix::process::geteuid().as_raw()),
                gid: GroupId(rustix::process::getegid().as_raw()),
                home: path.clone(),
            };
            Scratch {
                dir: ProfileDir::new(fd, account, 1024),
                path,
            }
        }

        /// The names in `rel`, sorted.
        fn names(&self, rel: &str) -> Vec<String> {
            let mut names: Vec<String> = self
                .dir
                .list(rel)
                .expect("list")
                .into_iter()
                .map(|e| e.name)
                .collect();
            names.sort();
            names
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }

    #[test]
    fn staged_files_appear_under_their_names_only_at_the_commit() -> Result<(), Error> {
        let s = Scratch::new();
        let mut batch = s.dir.batch();
        batch.stage("m/2026/a.md", b"first")?;
        batch.stage("m/2026/b.md", b"second")?;
        assert_eq!((batch.len(), batch.bytes()), (2, 11));
        // Written, but only under hidden temporary names.
        assert!(!s.dir.exists("m/2026/a.md")?);
        assert!(!s.dir.exists("m/2026/b.md")?);
        let hidden = s.names("m/2026");
        assert_eq!(hidden.len(), 2, "{hidden:?}");
        assert!(
            hidden
                .iter()
                .all(|n| n.starts_with('.') && n.ends_with(".tmp")),
            "{hidden:?}"
        );
        batch.commit()?;
        assert_eq!(s.names("m/2026"), ["a.md", "b.md"]);
        assert_eq!(s.dir.read("m/2026/a.md")?, b"first");
        let meta = std::fs::metadata(s.path.join("m/2026/b.md")).expect("stat");
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(meta.uid(), s.dir.account().uid.0);
        Ok(())
    }

    #[test]
    fn a_name_clash_is_refused_and_the_file_there_kept() -> Result<(), Error> {
        let s = Scratch::new();
        s.dir
            .write("m/a.md", b"theirs", super::super::WriteMode::CreateNew)?;
        let mut batch = s.dir.batch();
        batch.stage("m/a.md", b"ours")?;
        batch.stage("m/b.md", b"after")?;
        match batch.commit() {
            Err(Error::Io { path, op, source }) => {
                assert_eq!((path.as_str(), op), ("m/a.md", "rename"));
                assert_eq!(source.raw_os_error(), Some(libc::EEXIST));
            }
            other => panic!("a clash must be refused, got {other:?}"),
        }
        assert_eq!(s.dir.read("m/a.md")?, b"theirs");
        // The rest of the batch is taken back, temporary files included.
        assert_eq!(s.names("m"), ["a.md"]);
        Ok(())
    }

    #[test]
    fn a_failed_or_dropped_batch_leaves_nothing_behind() -> Result<(), Error> {
        let s = Scratch::new();
        let mut batch = s.dir.batch();
        batch.stage("m/a.md", b"one")?;
        let mark = batch.len();
        batch.stage("m/b.md", b"two")?;
        batch.truncate(mark);
        assert_eq!(s.names("m").len(), 1);
        // Over the size limit: refused, nothing written for it.
        match batch.stage("m/big.md", &[b'x'; 2048]) {
            Err(Error::Refused {
                reason: Refusal::TooLarge { size: 2048, .. },
                ..
            }) => {}
            other => panic!("a file over the limit must be refused, got {other:?}"),
        }
        drop(batch);
        assert!(s.names("m").is_empty());
        Ok(())
    }

    #[test]
    fn staging_goes_through_the_checked_layer() -> Result<(), Error> {
        let s = Scratch::new();
        let outside = s.path.join("outside");
        std::fs::create_dir(&outside).expect("mkdir");
        symlink(&outside, s.path.join("link")).expect("plant a link");
        let mut batch = s.dir.batch();
        match batch.stage("link/a.md", b"x") {
            Err(Error::Refused {
                reason: Refusal::Symlink,
                ..
            }) => {}
            other => panic!("a link must be refused, got {other:?}"),
        }
        drop(batch);
        assert_eq!(std::fs::read_dir(&outside).expect("read").count(), 0);
        Ok(())
    }

    #[test]
    fn appends_refuse_links_and_hard_links() -> Result<(), Error> {
        let s = Scratch::new();
        s.dir
            .write("log/h", b"1\n", super::super::WriteMode::CreateNew)?;
        std::fs::hard_link(s.path.join("log/h"), s.path.join("log/twin")).expect("hard link");
        let secret = s.path.join("secret");
        std::fs::write(&secret, "keep").expect("write");
        symlink(&secret, s.path.join("log/link")).expect("plant a link");
        let mut batch = s.dir.batch();
        match batch.append("log/h", b"2\n") {
            Err(Error::Refused {
                reason: Refusal::HardLinked(2),
                ..
            }) => {}
            other => panic!("a hard-linked file must be refused, got {other:?}"),
        }
        match batch.append("log/link", b"2\n") {
            Err(Error::Refused {
                reason: Refusal::Symlink,
                ..
            }) => {}
            other => panic!("a link must be refused, got {other:?}"),
        }
        batch.commit()?;
        assert_eq!(std::fs::read(&secret).expect("read"), b"keep");
        assert_eq!(
            std::fs::read(s.path.join("log/twin")).expect("read"),
            b"1\n"
        );
        Ok(())
    }

    #[test]
    fn appends_and_renames_never_replace() -> Result<(), Error> {
        let s = Scratch::new();
        let mut batch = s.dir.batch();
        batch.append("log/h", b"1\n")?;
        batch.append("log/h", b"2\n")?;
        batch.append("log/g", b"3\n")?;
        match batch.rename("log/h", "log/g") {
            Err(Error::Io { source, .. }) => assert_eq!(source.raw_os_error(), Some(libc::EEXIST)),
            other => panic!("a rename over a file must be refused, got {other:?}"),
        }
        batch.rename("log/h", "log/f")?;
        // A replace is in place at once (a journal must precede what the
        // commit places), the file it replaces gone.
        batch.replace("log/g", b"4\n")?;
        batch.replace("log/j", b"5\n")?;
        assert_eq!(s.dir.read("log/g")?, b"4\n");
        assert_eq!(s.names("log"), ["f", "g", "j"]);
        assert!(batch.is_empty());
        batch.commit()?;
        assert_eq!(s.dir.read("log/f")?, b"1\n2\n");
        assert_eq!(s.dir.read("log/j")?, b"5\n");
        Ok(())
    }
}
