//! Profiles on disk: the profiles root, provisioning and adoption, and the
//! safe file layer through which every profile file is read or written
//! (docs/SECURITY.md, rules 1 and 2).
//!
//! No path under a profile is ever opened by name from the filesystem root:
//! everything goes through a directory handle with `openat2` and
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
//! RESOLVE_NO_XDEV` (or, where `openat2` is unavailable, a walk of one
//! component at a time with the same refusals: `stepwise`), and every
//! opened file is checked with `fstat`.

mod batch;
mod dir;
mod fsid;
mod layout;
mod root;
mod shared;
mod stepwise;
mod sys;
mod walk;

pub use batch::Batch;
pub use dir::{Entry, EntryKind, ProfileDir, Stamp, WriteMode};
pub use layout::LAYOUT_DIRS;
pub use root::{
    AdoptReport, ProfileListing, ProfileState, ProfilesRoot, Provenance, check_ancestors,
};
pub use shared::{Probe, SharedDir, SharedFile};

use std::fmt;
use std::path::PathBuf;

use crate::accounts::UserId;

/// Why a file inside a profile was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The path is, or passes through, a symbolic link.
    Symlink,
    /// The path leaves the profile (another mount, or `..`).
    LeavesProfile,
    /// Not a regular file (a FIFO, socket or device) where one was expected.
    NotRegular(&'static str),
    /// A regular file with more than one link.
    HardLinked(u64),
    /// Owned by a uid other than the profile's account.
    WrongOwner(UserId),
    /// Larger than the configured limit.
    TooLarge {
        /// The file's size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A directory was expected and something else is there.
    NotADirectory,
    /// The kernel refused the account itself (the daemon works inside a
    /// profile with the account's own file permissions).
    Denied,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Symlink => f.write_str(
                "it is a symbolic link or its path passes through one; profiled never follows \
                 links inside a profile: replace the link with a regular file",
            ),
            Refusal::LeavesProfile => f.write_str(
                "its path leaves the profile (another filesystem or a parent directory); \
                 keep profile files inside the profile",
            ),
            Refusal::NotRegular(kind) => write!(
                f,
                "it is a {kind}, not a regular file; remove it or replace it with a regular file"
            ),
            Refusal::HardLinked(n) => write!(
                f,
                "it has {n} hard links; profiled only reads files with one link: \
                 replace it with a copy (cp FILE FILE.new && mv FILE.new FILE)"
            ),
            Refusal::WrongOwner(uid) => write!(
                f,
                "it is owned by uid {uid}, not by the profile's account; \
                 only the account's own files are read"
            ),
            Refusal::TooLarge { size, limit } => write!(
                f,
                "it is {size} bytes, over the {limit}-byte limit (limits.max_record_bytes); \
                 split it or move it out of the profile"
            ),
            Refusal::NotADirectory => f.write_str("a directory was expected here"),
            Refusal::Denied => f.write_str(
                "the account's own permissions do not allow it (profiled works inside a profile \
                 with the account's permissions, so the kernel checks it as the account): give \
                 the account access again, e.g. `chmod u+rw FILE` or `chmod u+rwx DIRECTORY`",
            ),
        }
    }
}

/// An error of the profile layer. `path` is always relative to the profile
/// (or to the profiles root), so it can be shown to the profile's owner.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing at that path.
    #[error("{path}: no such file")]
    NotFound {
        /// Relative path.
        path: String,
    },
    /// Something is there, but it is unsafe to use.
    #[error("{path}: refused: {reason}")]
    Refused {
        /// Relative path.
        path: String,
        /// Why.
        reason: Refusal,
    },
    /// A relative path built by the caller is malformed (a bug, or an id
    /// that slipped past validation).
    #[error("{path:?} is not a plain relative path inside a profile")]
    BadPath {
        /// The path.
        path: String,
    },
    /// The profile directory belongs to another uid than the account's.
    #[error(
        "the profile directory {user}/ is owned by uid {owner}, not by {user} (uid {expected}); \
         it may belong to a removed account whose name was reused. An admin must decide: \
         `profilectl profile adopt {user}` hands it to the current account"
    )]
    Conflict {
        /// The account name.
        user: String,
        /// The directory's owner.
        owner: UserId,
        /// The account's uid.
        expected: UserId,
    },
    /// The profiles root, or a directory above it or above the state or
    /// runtime directory, is unsafe; the daemon refuses to start.
    #[error("unsafe directory {}: {reason}; fix: {fix}", path.display())]
    UnsafeRoot {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
        /// The command that fixes it.
        fix: String,
    },
    /// The operating system refused an operation.
    #[error("{path}: {op} failed: {source}")]
    Io {
        /// Relative path.
        path: String,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

impl Error {
    /// The same error, naming `path` instead of the path it was raised for
    /// (a lookup made component by component reports the whole path).
    pub(crate) fn at(self, path: &str) -> Error {
        let path = path.to_owned();
        match self {
            Error::NotFound { .. } => Error::NotFound { path },
            Error::Refused { reason, .. } => Error::Refused { path, reason },
            Error::Io { op, source, .. } => Error::Io { path, op, source },
            other => other,
        }
    }

    /// Whether this is [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}

/// Result of the profile layer.
pub type Result<T> = std::result::Result<T, Error>;
