//! Containment of agent runs in cgroup v2 (security rule 3): every process
//! a run starts, however it detaches (double fork, `setsid`), stays in the
//! run's cgroup, which the daemon kills with `cgroup.kill` when the run
//! ends and the agent guard kills when the daemon dies.
//!
//! The tree lives in the daemon's own cgroup (the `0::` line of
//! /proc/self/cgroup, under the cgroup2 mount found in
//! /proc/self/mountinfo; on a hybrid host that is /sys/fs/cgroup/unified):
//! `<own>/profiled-agents-<id>/<run id>`, where `<id>` is a hash of the
//! daemon's runtime directory. Only one daemon serves a runtime directory
//! (its socket is there), so what is found under that name at start-up was
//! left by a previous life of this daemon and is killed and removed; two
//! daemons sharing one cgroup (tests, or a host without systemd) never
//! touch each other's runs. Under systemd the unit needs `Delegate=yes` so
//! the daemon owns its cgroup. No controller is enabled (`cgroup.kill` and
//! `cgroup.events` need none), so the daemon may stay in its own cgroup
//! beside the tree: the no-internal-processes rule only concerns cgroups
//! that distribute controllers.
//!
//! Processes cannot leave a run's cgroup: moving a process needs write
//! access to `cgroup.procs` of a common ancestor, and the whole tree is
//! root's.
//!
//! The agent is cloned straight into its cgroup (`clone3` with
//! `CLONE_INTO_CGROUP`, by the helper): moving a process afterwards
//! through `cgroup.procs` takes the kernel's cgroup-threadgroup lock for
//! writing, which waits for an RCU grace period, about 10 ms a run on the
//! development machine against well under 1 ms for the clone.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};
use sha2::Digest;

/// How long the end of a run waits for its cgroup to empty after
/// `cgroup.kill` before it leaves the directory to the next start-up.
pub const EMPTY_WAIT: Duration = Duration::from_secs(10);

/// Why runs cannot be contained in cgroups here (the daemon falls back to
/// process groups and says so).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(String);

/// Why a run's cgroup could not be made, killed or removed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

fn err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |e| Error(format!("{what} {}: {e}", path.display()))
}

/// The daemon's agent tree.
#[derive(Debug)]
pub struct Tree {
    dir: PathBuf,
}

impl Tree {
    /// Finds or creates the tree of the daemon whose runtime directory is
    /// `runtime_dir`, killing and removing what a previous life left in it.
    pub fn open(runtime_dir: &Path) -> Result<Tree, Unavailable> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| Unavailable(format!("cannot read /proc/self/mountinfo: {e}")))?;
        let (mount, root) = cgroup2_mount(&mountinfo)
            .ok_or_else(|| Unavailable("no cgroup2 filesystem is mounted".into()))?;
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| Unavailable(format!("cannot read /proc/self/cgroup: {e}")))?;
        let own = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .ok_or_else(|| Unavailable("/proc/self/cgroup has no cgroup v2 (0::) line".into()))?;
        let relative = own
            .strip_prefix(root.trim_end_matches('/'))
            .ok_or_else(|| {
                Unavailable(format!(
                    "this process's cgroup {own} is outside the cgroup2 mount's root {root}"
                ))
            })?;
        let digest = sha2::Sha256::digest(runtime_dir.as_os_str().as_encoded_bytes());
        let id: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        let dir = mount
            .join(relative.trim_start_matches('/'))
            .join(format!("profiled-agents-{id}"));
        // The guard of a previous life, killed just before this start,
        // may remove the (then empty) tree between these steps: try again.
        let mut attempts = 0;
        loop {
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(Unavailable(format!(
                        "cannot create {}: {e} (under systemd, give the unit Delegate=yes)",
                        dir.display()
                    )));
                }
            }
            if dir.join("cgroup.kill").exists() {
                break;
            }
            attempts += 1;
            if dir.exists() || attempts >= 3 {
                return Err(Unavailable(format!(
                    "{} has no cgroup.kill (Linux 5.14 or later is needed)",
                    dir.display()
                )));
            }
        }
        let tree = Tree { dir };
        tree.remove_leftovers();
        Ok(tree)
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn remove_leftovers(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let path = entry.path();
                match kill_and_remove(&path, EMPTY_WAIT) {
                    Ok(()) => tracing::info!(
                        "removed the cgroup of a run a previous daemon left: {}",
                        path.display()
                    ),
                    Err(e) => tracing::error!("{e}"),
                }
            }
        }
    }

    /// Removes the tree if it is empty (at the daemon's stop; the agent
    /// guard does it when the daemon was killed).
    pub fn remove_if_empty(&self) {
        remove_tree(&self.dir);
    }

    /// Creates the cgroup of run `run_id`.
    pub fn create_run(&self, run_id: &str) -> Result<RunGroup, Error> {
        let dir = self.dir.join(run_id);
        let made = std::fs::create_dir(&dir).or_else(|e| {
            // The guard of a previous life, killed just before this daemon
            // started, may have removed the tree after it was opened.
            if e.kind() == std::io::ErrorKind::NotFound {
                std::fs::create_dir(&self.dir).and_then(|()| std::fs::create_dir(&dir))
            } else {
                Err(e)
            }
        });
        made.map_err(err("cannot create the run's cgroup", &dir))?;
        let handle = rustix::fs::open(
            &dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(std::io::Error::from)
        .map_err(err("cannot open the run's cgroup", &dir));
        match handle {
            Ok(handle) => Ok(RunGroup { dir, handle }),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(e)
            }
        }
    }
}

/// The first cgroup2 mount in `mountinfo`: its mount point and root.
fn cgroup2_mount(mountinfo: &str) -> Option<(PathBuf, String)> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        if fs.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mut fields = mount.split_whitespace();
        let root = fields.nth(3)?;
        let point = fields.next()?;
        Some((PathBuf::from(unescape(point)), unescape(root)))
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One run's cgroup.
#[derive(Debug)]
pub struct RunGroup {
    dir: PathBuf,
    handle: OwnedFd,
}

impl RunGroup {
    /// Its directory, open: the helper clones the agent into it
    /// (`CLONE_INTO_CGROUP`; the kernel checks the cloner's rights, root's).
    pub fn handle(&self) -> BorrowedFd<'_> {
        self.handle.as_fd()
    }

    /// Its directory (for the agent guard).
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Sends `sig` to every process in it now (SIGTERM at a timeout: the
    /// kernel has no "signal the cgroup" but SIGKILL through
    /// `cgroup.kill`). Processes are listed, then signalled; a process
    /// cannot leave the cgroup, so a pid read here is a member's unless it
    /// exited and its number was handed out again within microseconds.
    pub fn signal(&self, sig: rustix::process::Signal) {
        if let Ok(text) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in text
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .filter_map(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, sig);
            }
        }
    }

    /// Kills every process in it (SIGKILL, through `cgroup.kill`; should
    /// that write fail, each process listed is sent SIGKILL instead).
    pub fn kill(&self) {
        if let Err(e) = kill(&self.dir) {
            tracing::error!("{e}; killing its processes one by one");
            self.signal(rustix::process::Signal::KILL);
        }
    }

    /// Whether the kernel says no live process is in it (zombies are
    /// not: a process leaves its cgroup when it exits). False when
    /// `cgroup.events` cannot be read: an end is never concluded from an
    /// error.
    pub fn is_empty(&self) -> bool {
        std::fs::read_to_string(self.dir.join("cgroup.events"))
            .is_ok_and(|t| t.lines().any(|l| l == "populated 0"))
    }

    /// Kills what is left, waits (at most [`EMPTY_WAIT`]) for it to empty
    /// and removes it; a cgroup that would not empty is left for the next
    /// start-up and logged.
    pub fn remove(self) {
        if let Err(e) = kill_and_remove(&self.dir, EMPTY_WAIT) {
            tracing::error!("{e}");
        }
    }
}

/// Removes the tree at `dir` if no run is in it (a non-empty one stays:
/// another life of the daemon is using it).
pub fn remove_tree(dir: &Path) {
    let _ = std::fs::remove_dir(dir);
}

fn kill(dir: &Path) -> Result<(), Error> {
    let path = dir.join("cgroup.kill");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| f.write_all(b"1"))
        .map_err(err("cannot write", &path))
}

/// Whether the cgroup at `dir` still has a live process.
fn populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .map(|t| t.lines().any(|l| l == "populated 1"))
        .unwrap_or(false)
}

/// Kills every process of the cgroup at `dir` (and of its children), waits
/// until it is empty (at most `wait`) and removes it. Used at a run's end,
/// by the agent guard and at start-up.
pub fn kill_and_remove(dir: &Path, wait: Duration) -> Result<(), Error> {
    // Children first (an agent cannot make any: the tree is root's, but a
    // previous version or an admin might have).
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                kill_and_remove(&e.path(), wait)?;
            }
        }
    }
    let deadline = Instant::now() + wait;
    if populated(dir) {
        kill(dir)?;
        let mut pause = Duration::from_millis(1);
        while populated(dir) {
            if Instant::now() >= deadline {
                return Err(Error(format!(
                    "the processes of {} did not die within {wait:?} of cgroup.kill; it is left for the next start-up",
                    dir.display()
                )));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
    std::fs::remove_dir(dir).map_err(err("cannot remove the cgroup", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup2_mount_is_found_among_v1_mounts() {
        let info = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                    41 31 0:38 / /sys/fs/cgroup/un\\040ified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(info),
            Some((PathBuf::from("/sys/fs/cgroup/un ified"), "/".to_owned()))
        );
        assert_eq!(cgroup2_mount("1 2 0:1 / / rw - ext4 /dev/sda rw\n"), None);
    }
}
