//! The agents' flock locks and cycle stamps, in the lock directory (root,
//! 0700; shared by daemons that share a profiles tree).
//!
//! `agent-<key>.lock` is held for a whole cycle; its content is the
//! cycle's stamp: the slot (the scheduled time, Unix seconds) on the first
//! line, then one line per user done. A daemon that takes the lock for a
//! slot already stamped skips the users listed, so two daemons firing at
//! the same slot run each user once, and a daemon restarted mid-cycle goes
//! on where the previous one stopped. `user-<name>.lock` is held for one
//! run: one agent at a time in a profile. The kernel drops both when a
//! process dies: no stale locks.

use std::collections::BTreeSet;
use std::fs::{File, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::statefs;

/// How often a bounded wait tries the lock again.
const RETRY: Duration = Duration::from_millis(20);

/// A held lock (released on drop).
#[derive(Debug)]
pub struct Held {
    file: File,
}

/// Takes the lock at `path` if it is free; `Ok(None)` when it is held.
pub fn try_lock(path: &Path) -> Result<Option<Held>, String> {
    let file = statefs::open_lock(path).map_err(|e| e.to_string())?;
    match file.try_lock() {
        Ok(()) => Ok(Some(Held { file })),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

/// Takes the lock at `path`, waiting at most `bound`; `Ok(None)` when it
/// stayed held that long.
pub fn lock_within(path: &Path, bound: Duration) -> Result<Option<Held>, String> {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(held) = try_lock(path)? {
            return Ok(Some(held));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(RETRY);
    }
}

impl Held {
    /// The stamp: the slot and the users done in it (`None` if unstamped).
    pub fn stamp(&mut self) -> (Option<i64>, BTreeSet<String>) {
        let mut text = String::new();
        if self.file.seek(SeekFrom::Start(0)).is_err()
            || self.file.read_to_string(&mut text).is_err()
        {
            return (None, BTreeSet::new());
        }
        let mut lines = text.lines();
        let slot = lines.next().and_then(|l| l.trim().parse().ok());
        // A torn last line (a crash mid-write) has no newline: not counted.
        let complete = if text.ends_with('\n') {
            text.as_str()
        } else {
            text.rsplit_once('\n').map_or("", |(head, _)| head)
        };
        let done = complete.lines().skip(1).map(str::to_owned).collect();
        (slot, done)
    }

    /// Starts the stamp of `slot` (forgetting the previous one).
    pub fn begin(&mut self, slot: i64) -> Result<(), String> {
        self.file
            .set_len(0)
            .and_then(|()| self.file.write_all_at(format!("{slot}\n").as_bytes(), 0))
            .map_err(|e| format!("cannot write the cycle stamp: {e}"))
    }

    /// Records `user` as done in the current slot.
    pub fn done(&mut self, user: &str) -> Result<(), String> {
        self.file
            .seek(SeekFrom::End(0))
            .and_then(|_| self.file.write_all(format!("{user}\n").as_bytes()))
            .map_err(|e| format!("cannot write the cycle stamp: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stamp_lists_users_done_in_its_slot_and_ignores_a_torn_line() -> Result<(), String> {
        let path = std::env::temp_dir().join(format!("profiled-stamp-{}", ulid::Ulid::generate()));
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| e.to_string())?;
        let mut held = Held { file };
        assert_eq!(held.stamp(), (None, BTreeSet::new()));
        held.begin(600)?;
        held.done("alice")?;
        held.done("bob")?;
        held.file.write_all(b"car").map_err(|e| e.to_string())?;
        let (slot, done) = held.stamp();
        assert_eq!(slot, Some(600));
        assert_eq!(done.into_iter().collect::<Vec<_>>(), ["alice", "bob"]);
        held.begin(900)?;
        assert_eq!(held.stamp(), (Some(900), BTreeSet::new()));
        let _ = std::fs::remove_file(path);
        Ok(())
    }
}
