//! The agent guard: a small root process (`profiled agent-guard`, started
//! by the daemon) that outlives a daemon killed with SIGKILL just long
//! enough to kill the process groups of the runs it had in flight.
//!
//! The parent-death signal reaches only an agent's first process; what it
//! started in the background would survive the daemon. The daemon tells
//! the guard each run's process group (`+PGID` / `-PGID` lines on the
//! guard's stdin); when that pipe closes (the daemon is gone, however it
//! ended), the guard kills every group still listed and exits.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::Mutex;

use rustix::process::{Pid, Signal, kill_process_group};

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

    /// Registers the process group of a run that started.
    pub fn watch(&self, pgid: i32) {
        self.send(&format!("+{pgid}\n"));
    }

    /// Forgets the group of a run that ended.
    pub fn release(&self, pgid: i32) {
        self.send(&format!("-{pgid}\n"));
    }
}

/// The guard's body: follows stdin, then kills what is left.
pub fn run_guard() {
    let mut groups = BTreeSet::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let (op, pgid) = line.split_at(line.len().min(1));
        let Ok(pgid) = pgid.parse::<i32>() else {
            continue;
        };
        match op {
            "+" => {
                groups.insert(pgid);
            }
            "-" => {
                groups.remove(&pgid);
            }
            _ => {}
        }
    }
    for pgid in groups {
        if let Some(pid) = Pid::from_raw(pgid) {
            let _ = kill_process_group(pid, Signal::KILL);
        }
    }
}
