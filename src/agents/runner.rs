//! Runs one external agent process as its account (security rule 3).
//!
//! The groups are computed by the caller in the parent (NSS after fork in a
//! threaded process can deadlock); [`spawn`] then starts the process
//! without copying the daemon, and its child, in one place before exec,
//! starts a new session (its own process group), drops to the account
//! (setgroups, setgid, setuid), proves root cannot be taken back, asks for
//! SIGKILL when the daemon dies, and enters the profile through its
//! checked directory handle. The run is waited on through a pidfd, so a
//! normal exit is seen at once; timeouts and shutdown signal the whole
//! group.
//!
//! A run must be waited on by the thread that spawned it: the parent-death
//! signal fires when that *thread* ends.

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions, kill_process_group, waitid};

use super::guard::Guard;
use super::spawn::{self, Spawn, Started};
use crate::accounts::{Account, GroupId};

/// The PATH agents get: system directories only, none a user can write.
pub const SAFE_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// How often a waiting run looks at the shutdown flag.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// What to run and how.
pub struct Launch<'a> {
    /// The program and its arguments.
    pub argv: &'a [String],
    /// Whom it runs as.
    pub account: &'a Account,
    /// The account's groups, computed in the parent.
    pub groups: &'a [GroupId],
    /// The checked profile directory: the working directory.
    pub workdir: BorrowedFd<'a>,
    /// The whole environment (nothing is inherited).
    pub env: &'a [(String, String)],
    /// How long it may run.
    pub timeout: Duration,
    /// Between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// The output tail kept, in bytes.
    pub output_limit: usize,
    /// Set when the daemon is stopping.
    pub stop: &'a AtomicBool,
    /// How long a run may go on once `stop` is set.
    pub shutdown_grace: Duration,
    /// Told of the run's process group, to kill it if the daemon dies.
    pub guard: Option<&'a Guard>,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it (not one of ours).
    Signal(i32),
    /// It ran past its timeout and its group was killed.
    TimedOut,
    /// The daemon stopped and the grace period ran out.
    Stopped,
    /// It could not be started.
    NotStarted(String),
}

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    /// How it ended.
    pub exit: Exit,
    /// The end of its stdout and stderr (interleaved as written).
    pub output: String,
}

/// Runs `l` to its end and returns how it went. Never fails: a run that
/// cannot start is [`Exit::NotStarted`].
pub fn run(l: &Launch<'_>) -> Outcome {
    match run_inner(l) {
        Ok(o) => o,
        Err(reason) => Outcome {
            exit: Exit::NotStarted(reason),
            output: String::new(),
        },
    }
}

fn run_inner(l: &Launch<'_>) -> Result<Outcome, String> {
    let Some(program) = l.argv.first() else {
        return Err("the command is empty".into());
    };
    let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| format!("cannot make a pipe: {e}"))?;
    let devnull = rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| format!("cannot open /dev/null: {e}"))?;
    let groups: Vec<u32> = l.groups.iter().map(|g| g.0).collect();
    let started = spawn::spawn(&Spawn {
        program,
        argv: l.argv,
        env: l.env,
        path: SAFE_PATH,
        uid: l.account.uid.0,
        gid: l.account.gid.0,
        groups: &groups,
        workdir: l.workdir,
        stdin: devnull.as_fd(),
        output: writer.as_fd(),
    })?;
    // The writer lives only in the child now: the output ends when it does.
    drop(writer);
    let pgid = started.pid.as_raw_nonzero().get();
    if let Some(g) = l.guard {
        g.watch(pgid);
    }
    let outcome = wait(l, &started, &reader);
    if let Some(g) = l.guard {
        g.release(pgid);
    }
    Ok(outcome)
}

/// Waits for the run to end, signalling its group on timeout or shutdown,
/// collecting its output; then kills and reaps whatever is left of its
/// group (the daemon is their subreaper).
fn wait(l: &Launch<'_>, started: &Started, reader: &OwnedFd) -> Outcome {
    let (pid, pidfd) = (started.pid, &started.pidfd);
    let mut output = Tail::new(l.output_limit);
    let started = Instant::now();
    let mut timed_out = false;
    let mut stopped = false;
    let mut term_sent: Option<Instant> = None;
    let mut stop_at: Option<Instant> = None;
    let mut reader_open = true;
    loop {
        let now = Instant::now();
        if stop_at.is_none() && l.stop.load(Ordering::Relaxed) {
            stop_at = Some(now + l.shutdown_grace);
        }
        if stop_at.is_some_and(|t| now >= t) && !stopped {
            stopped = true;
            let _ = kill_process_group(pid, Signal::KILL);
        }
        match term_sent {
            None if now >= started + l.timeout => {
                timed_out = true;
                let _ = kill_process_group(pid, Signal::TERM);
                term_sent = Some(now);
            }
            Some(t) if now >= t + l.kill_grace => {
                let _ = kill_process_group(pid, Signal::KILL);
            }
            _ => {}
        }
        if let Ok(Some(status)) = waitid(
            WaitId::PidFd(pidfd.as_fd()),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
        ) {
            // Whatever the agent left behind in its group ends with it.
            let _ = kill_process_group(pid, Signal::KILL);
            reap_group(pid);
            drain(reader, &mut output);
            let exit = if stopped {
                Exit::Stopped
            } else if timed_out {
                Exit::TimedOut
            } else if let Some(code) = status.exit_status() {
                Exit::Code(code)
            } else {
                Exit::Signal(status.terminating_signal().unwrap_or(0))
            };
            return Outcome {
                exit,
                output: output.into_string(),
            };
        }
        let next = [
            Some(started + l.timeout),
            term_sent.map(|t| t + l.kill_grace),
            stop_at,
        ]
        .into_iter()
        .flatten()
        .filter(|t| *t > now)
        .min()
        .map_or(STOP_CHECK, |t| t - now)
        .min(STOP_CHECK);
        let wait = Timespec::try_from(next).unwrap_or(Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        });
        let mut fds = Vec::with_capacity(2);
        fds.push(PollFd::new(pidfd, PollFlags::IN));
        if reader_open {
            fds.push(PollFd::new(reader, PollFlags::IN));
        }
        let _ = rustix::event::poll(&mut fds, Some(&wait));
        let readable = reader_open && fds.last().is_some_and(|f| !f.revents().is_empty());
        if readable && !read_some(reader, &mut output) {
            reader_open = false;
        }
    }
}

/// Reaps the members of the group `pgid` that became the daemon's
/// children when their parent died (the daemon is a subreaper), after they
/// were sent SIGKILL; returns when none is left.
fn reap_group(pgid: Pid) {
    loop {
        // SAFETY: waitpid on a process group id with a null status pointer;
        // it touches no memory of ours.
        let r = unsafe { libc::waitpid(-pgid.as_raw_nonzero().get(), std::ptr::null_mut(), 0) };
        if r < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return;
        }
    }
}

/// Makes the daemon the subreaper of its descendants, so what an agent
/// leaves behind is reparented to the daemon (and reaped by
/// [`reap_group`]) instead of to init.
pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        tracing::warn!(
            "cannot become a subreaper: {}; processes agents leave behind are reaped by init",
            std::io::Error::last_os_error()
        );
    }
}

/// The end of a run's output.
struct Tail {
    buf: Vec<u8>,
    limit: usize,
    cut: bool,
}

impl Tail {
    fn new(limit: usize) -> Tail {
        Tail {
            buf: Vec::new(),
            limit,
            cut: false,
        }
    }

    fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        if self.buf.len() > self.limit.saturating_mul(2) {
            let excess = self.buf.len() - self.limit;
            self.buf.drain(..excess);
            self.cut = true;
        }
    }

    fn into_string(mut self) -> String {
        if self.buf.len() > self.limit {
            let excess = self.buf.len() - self.limit;
            self.buf.drain(..excess);
            self.cut = true;
        }
        let text = String::from_utf8_lossy(&self.buf).into_owned();
        if self.cut {
            format!("[…]{text}")
        } else {
            text
        }
    }
}

/// Reads what is there; false at end of file.
fn read_some(reader: &OwnedFd, out: &mut Tail) -> bool {
    let mut buf = [0u8; 8192];
    match rustix::io::read(reader, &mut buf) {
        Ok(0) => false,
        Ok(n) => {
            out.push(&buf[..n]);
            true
        }
        Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => true,
        Err(_) => false,
    }
}

/// Reads what is left without waiting for writers that may never close.
fn drain(reader: &OwnedFd, out: &mut Tail) {
    let _ = rustix::fs::fcntl_setfl(reader, rustix::fs::OFlags::NONBLOCK);
    let mut file = std::fs::File::from(match reader.try_clone() {
        Ok(fd) => fd,
        Err(_) => return,
    });
    let mut buf = [0u8; 8192];
    while let Ok(n) = file.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.push(&buf[..n]);
    }
}
