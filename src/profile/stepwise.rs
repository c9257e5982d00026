//! Opening a path beneath a directory handle one component at a time, for
//! when `openat2` is unavailable: kernels before 5.6, and systemd units
//! with `RestrictSUIDSGID=yes`, whose seccomp filter answers every
//! `openat2` with ENOSYS because it cannot inspect the call's mode.
//!
//! It keeps rule 1 (docs/SECURITY.md) without the kernel's help: `..` is
//! refused outright, each directory on the way is opened with `O_PATH |
//! O_NOFOLLOW` from the previous one and checked with `fstat` (a link is
//! refused, as `RESOLVE_NO_SYMLINKS` would; anything else that is not a
//! directory too), and every step must stay on the mount of the starting
//! handle (`RESOLVE_NO_XDEV`), told by the mount id `statx` gives (Linux
//! 5.8). Where the kernel has no mount ids, the device stands in for the
//! mount, for directories only: overlayfs reports a file's device as that
//! of the layer it lives in, not the overlay's, so a file of the same
//! mount would be refused; a mount on a file rather than a directory is
//! then not seen (root can make one, and a user with FUSE's `fusermount`;
//! its content is then hers). Unlike `openat2`, which refuses at the
//! crossing, the walk looks at the other mount (`statx`, and the final
//! open) before refusing it: a user's FUSE server that never answers could
//! hold the thread, where `/etc/fuse.conf` has `user_allow_other` (without
//! it FUSE refuses root at once). The final component is opened
//! with the caller's flags, which always hold `O_NOFOLLOW`. A rename
//! racing the walk cannot lead it out: every step is relative to a handle
//! already checked, never to a name looked up again.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, StatxFlags};
use rustix::io::Errno;

/// Opens `rel` beneath `dir` as `openat2` with `RESOLVE_BENEATH |
/// RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV` would,
/// answering with the errno `openat2` gives for the same refusal (ELOOP for
/// a link, EXDEV for `..` or another device, ENOTDIR, ENOENT).
pub(super) fn open(
    dir: BorrowedFd<'_>,
    rel: &str,
    flags: OFlags,
    mode: Mode,
) -> Result<OwnedFd, Errno> {
    let start = Place::of(dir)?.0;
    let mut parts = rel.split('/').filter(|c| !c.is_empty() && *c != ".");
    let Some(mut name) = parts.next() else {
        return open_last(dir, ".", flags, mode, start);
    };
    let mut at: Option<OwnedFd> = None;
    for next in parts {
        let here = at.as_ref().map_or(dir, AsFd::as_fd);
        at = Some(step(here, name, start)?);
        name = next;
    }
    open_last(
        at.as_ref().map_or(dir, AsFd::as_fd),
        name,
        flags,
        mode,
        start,
    )
}

/// Which mount a file is on: its mount id where the kernel gives one, else
/// its device (see the module comment for what that misses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Mount(u64),
    Device(u64),
}

impl Place {
    /// The place of `fd`, and its file type.
    fn of(fd: impl AsFd) -> Result<(Place, FileType), Errno> {
        // DONT_SYNC: what the kernel has is enough, a network or FUSE
        // filesystem is not asked again.
        let st = rustix::fs::statx(
            fd,
            "",
            AtFlags::EMPTY_PATH | AtFlags::STATX_DONT_SYNC,
            StatxFlags::TYPE | StatxFlags::MNT_ID,
        )?;
        let kind = FileType::from_raw_mode(u32::from(st.stx_mode));
        let place = if st.stx_mask & StatxFlags::MNT_ID.bits() != 0 {
            Place::Mount(st.stx_mnt_id)
        } else {
            Place::Device(rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor))
        };
        Ok((place, kind))
    }

    /// Whether a file of `kind` at `self` is on the mount `start` names.
    fn within(self, kind: FileType, start: Place) -> bool {
        match (self, start) {
            (Place::Mount(_), _) | (_, Place::Mount(_)) => self == start,
            // Devices: directories only (overlayfs, above).
            (Place::Device(_), Place::Device(_)) => kind != FileType::Directory || self == start,
        }
    }
}

/// Opens the directory `name` in `dir` for further lookups, refusing a
/// link, anything not a directory and another mount.
fn step(dir: BorrowedFd<'_>, name: &str, start: Place) -> Result<OwnedFd, Errno> {
    refuse_parent(name)?;
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let (place, kind) = Place::of(&fd)?;
    match kind {
        FileType::Symlink => Err(Errno::LOOP),
        FileType::Directory if place.within(kind, start) => Ok(fd),
        FileType::Directory => Err(Errno::XDEV),
        _ => Err(Errno::NOTDIR),
    }
}

/// Opens the final component with the caller's flags (which hold
/// `O_NOFOLLOW`), then checks that it is on the starting mount.
fn open_last(
    dir: BorrowedFd<'_>,
    name: &str,
    flags: OFlags,
    mode: Mode,
    start: Place,
) -> Result<OwnedFd, Errno> {
    refuse_parent(name)?;
    let fd = rustix::fs::openat(dir, name, flags | OFlags::NOFOLLOW, mode)?;
    let (place, kind) = Place::of(&fd)?;
    if !place.within(kind, start) {
        return Err(Errno::XDEV);
    }
    Ok(fd)
}

/// `..` could climb out of the profile; `openat2` answers EXDEV for it.
fn refuse_parent(name: &str) -> Result<(), Errno> {
    if name == ".." {
        Err(Errno::XDEV)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    const READ: OFlags = OFlags::RDONLY
        .union(OFlags::NOFOLLOW)
        .union(OFlags::CLOEXEC);
    const HANDLE: OFlags = OFlags::PATH.union(OFlags::DIRECTORY).union(OFlags::CLOEXEC);

    /// `a/b/file` and `outside` in a scratch directory removed on drop; the
    /// handle is `a`.
    struct Tree {
        top: PathBuf,
        root: OwnedFd,
    }

    impl Tree {
        fn new() -> Tree {
            let top =
                std::env::temp_dir().join(format!("profiled-stepwise-{}", ulid::Ulid::generate()));
            fs::create_dir_all(top.join("a/b")).expect("scratch tree");
            fs::write(top.join("a/b/file"), "x").expect("scratch file");
            fs::write(top.join("outside"), "secret").expect("scratch file");
            let root = rustix::fs::open(top.join("a"), HANDLE, Mode::empty()).expect("open a");
            Tree { top, root }
        }

        fn open(&self, rel: &str, flags: OFlags) -> Result<OwnedFd, Errno> {
            open(self.root.as_fd(), rel, flags, Mode::from_raw_mode(0o600))
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.top);
        }
    }

    #[test]
    fn opens_a_nested_file_and_the_handle_itself() {
        let t = Tree::new();
        let fd = t.open("b/file", READ).expect("b/file");
        assert_eq!(rustix::fs::fstat(&fd).expect("fstat").st_size, 1);
        t.open("./b//file", READ).expect("./b//file");
        t.open("", READ | OFlags::DIRECTORY).expect("the handle");
    }

    #[test]
    fn refuses_links_anywhere_on_the_path() {
        let t = Tree::new();
        symlink(&t.top, t.top.join("a/up")).expect("link");
        symlink("b", t.top.join("a/inner")).expect("link");
        symlink("file", t.top.join("a/b/last")).expect("link");
        for rel in ["up/outside", "inner/file", "b/last", "up"] {
            assert_eq!(t.open(rel, READ).err(), Some(Errno::LOOP), "{rel}");
        }
    }

    #[test]
    fn refuses_dot_dot_and_a_file_used_as_a_directory() {
        let t = Tree::new();
        for rel in ["../outside", "b/../../outside", "b/.."] {
            assert_eq!(t.open(rel, READ).err(), Some(Errno::XDEV), "{rel}");
        }
        assert_eq!(t.open("b/file/x", READ).err(), Some(Errno::NOTDIR));
        assert_eq!(t.open("b/none", READ).err(), Some(Errno::NOENT));
    }

    #[test]
    fn creates_beneath_with_the_callers_flags() {
        let t = Tree::new();
        let create = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
        t.open("b/new", create).expect("create b/new");
        assert!(t.top.join("a/b/new").is_file());
        assert_eq!(t.open("b/new", create).err(), Some(Errno::EXIST));
    }

    #[test]
    fn refuses_another_mount() {
        // /proc is always a mount of its own, on /.
        let slash = rustix::fs::open("/", HANDLE, Mode::empty()).expect("open /");
        let open = |rel, flags| open(slash.as_fd(), rel, flags, Mode::empty()).err();
        assert_eq!(open("proc/self", OFlags::PATH), Some(Errno::XDEV));
        assert_eq!(open("proc", READ | OFlags::DIRECTORY), Some(Errno::XDEV));
    }

    #[test]
    fn without_mount_ids_only_a_directory_on_another_device_is_refused() {
        let (a, b) = (Place::Device(1), Place::Device(2));
        // overlayfs: a file reports its layer's device.
        assert!(b.within(FileType::RegularFile, a));
        assert!(!b.within(FileType::Directory, a));
        assert!(a.within(FileType::Directory, a));
        assert!(!Place::Mount(2).within(FileType::RegularFile, Place::Mount(1)));
        assert!(Place::Mount(1).within(FileType::RegularFile, Place::Mount(1)));
    }
}
