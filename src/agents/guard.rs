//! The agent guard: a small root process (`profiled agent-guard`, started
//! by the daemon) that outlives a daemon killed with SIGKILL just long
//! enough to kill the runs it had in flight.
//!
//! The parent-death signal reaches only the helper and the agent's first
//! process; what the agent started in the background would survive the
//! daemon. The daemon tells the guard each run's cgroup (`+cg PATH` /
//! `-cg PATH` lines on the guard's stdin), or without cgroups its process
//! group (`+pg PGID` / `-pg PGID`), and once the daemon's cgroup tree
//! (`+tr PATH`); when that pipe closes (the daemon is gone, however it
//! ended), the guard kills every cgroup (`cgroup.kill`, then removes it)
//! and process group still listed, removes the tree if it is empty, and
//! exits.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::Mutex;

use rustix::process::{Pid, Signal, kill_process_group};

use super::cgroup;

/// What the guard kills if the daemon dies.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// A run's cgroup directory.
    Cgroup(PathBuf),
    /// A run's process group (where there are no cgroups).
    Group(i32),
    /// The daemon's cgroup tree, removed once empty.
    Tree(PathBuf),
}

impl Target {
    fn line(&self, op: char) -> String {
        match self {
            Target::Cgroup(p) => format!("{op}cg {}\n", p.display()),
            Target::Group(g) => format!("{op}pg {g}\n"),
            Target::Tree(p) => format!("{op}tr {}\n", p.display()),
        }
    }

    fn parse(rest: &str) -> Option<Target> {
        match rest.split_once(' ')? {
            ("cg", path) if path.starts_with('/') => Some(Target::Cgroup(PathBuf::from(path))),
            ("pg", pgid) => pgid.parse().ok().map(Target::Group),
            ("tr", path) if path.starts_with('/') => Some(Target::Tree(PathBuf::from(path))),
            _ => None,
        }
    }
}

/// The daemon's end of the guard.
pub struct Guard {
    pipe: Mutex<Option<ChildStdin>>,
}

impl Guard {
    /// Starts the guard (this executable, `agent-guard`). `None`, logged,
    /// when it cannot start: agents still run, with the parent-death
    /// signal alone.
    pub fn spawn() -> Option<Guard> {
        let exe = std::env::current_exe().ok()?;
        match Command::new(exe)
            .arg("agent-guard")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
        {
            Ok(mut child) => Some(Guard {
                pipe: Mutex::new(child.stdin.take()),
            }),
            Err(e) => {
                tracing::error!(
                    "cannot start the agent guard: {e}; background processes of agents may outlive a killed daemon"
                );
                None
            }
        }
    }

    fn send(&self, line: &str) {
        let mut pipe = match self.pipe.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(p) = pipe.as_mut()
            && let Err(e) = p.write_all(line.as_bytes())
        {
            tracing::error!("the agent guard is gone ({e}); runs continue without it");
            *pipe = None;
        }
    }

    /// Registers a run that started.
    pub fn watch(&self, target: &Target) {
        self.send(&target.line('+'));
    }

    /// Forgets a run that ended.
    pub fn release(&self, target: &Target) {
        self.send(&target.line('-'));
    }
}

/// The guard's body: follows stdin, then kills what is left.
pub fn run_guard() {
    let mut targets = BTreeSet::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let (op, rest) = line.split_at(line.len().min(1));
        let Some(target) = Target::parse(rest) else {
            continue;
        };
        match op {
            "+" => {
                targets.insert(target);
            }
            "-" => {
                targets.remove(&target);
            }
            _ => {}
        }
    }
    let mut trees = Vec::new();
    for target in targets {
        match target {
            Target::Cgroup(dir) => {
                if let Err(e) = cgroup::kill_and_remove(&dir, cgroup::EMPTY_WAIT) {
                    eprintln!("profiled agent-guard: {e}");
                }
            }
            Target::Group(pgid) => {
                if let Some(pid) = Pid::from_raw(pgid) {
                    let _ = kill_process_group(pid, Signal::KILL);
                }
            }
            Target::Tree(dir) => trees.push(dir),
        }
    }
    // Last: the runs' cgroups are gone now.
    for dir in trees {
        cgroup::remove_tree(&dir);
    }
}
