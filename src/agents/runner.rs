//! Runs one external agent process as its account (security rule 3).
//!
//! The groups are computed by the caller in the parent (NSS after fork in a
//! threaded process can deadlock). The run gets its own cgroup
//! ([`super::cgroup`]) where the host has cgroup v2; [`spawn`] execs the
//! root helper (`profiled-agent-exec`, src/bin/profiled-agent-exec) with the plan,
//! and the helper drops to the account in its own address space and forks
//! the agent into the cgroup. The daemon then waits on the helper (a root
//! process the account cannot stop) through its pidfd, with the output
//! and the helper's reports polled beside it, so the wait is bounded by
//! the run's timeout whatever the agent does. When the agent's first
//! process ends, whatever it left behind (double-forked, `setsid`) is
//! killed with `cgroup.kill`; the helper, their subreaper, reaps them all
//! and exits; the cgroup is removed. Timeouts send SIGTERM to every
//! process of the cgroup, then SIGKILL after `kill_grace`. Every wait has
//! a hard limit (see [`wait`]): a helper that cannot reap a process held
//! by a tracer outside the run is killed, and the run ends.
//!
//! Without a usable cgroup v2 (see [`Setup`]) runs are contained by their
//! process group only, and a process that leaves it outlives the run: the
//! daemon says so in its log and `/v1/health`.
//!
//! A run must be waited on by the thread that spawned it: the helper's
//! parent-death signal fires when that *thread* ends.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions, kill_process_group, waitid};

use super::cgroup::{EMPTY_WAIT, RunGroup, Tree};
use super::guard::{Guard, Target};
use super::plan::{Plan, REPORT_BYTES, Report, Step};
use super::spawn::{self, Spawn, Started};
use crate::accounts::{Account, GroupId};

/// The PATH agents get: system directories only, none a user can write.
pub const SAFE_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The helper's file name, beside the daemon's executable.
pub const HELPER_NAME: &str = "profiled-agent-exec";

/// How often a waiting run looks at the shutdown flag and its cgroup.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// How long the helper may take to end once every process of a contained
/// run is gone (it only has to reap them and exit: milliseconds), before
/// the daemon kills it. A helper still there is waiting for a zombie held
/// by a tracer outside the run (same uid, `PTRACE_SEIZE`), which only the
/// tracer can release.
const HELPER_GRACE: Duration = Duration::from_secs(5);

/// How long the daemon waits for its own helper to die of SIGKILL before
/// it stops waiting (the helper is root's: nothing the account does can
/// hold it, so this is a bound, not an expected wait).
const HELPER_REAP: Duration = Duration::from_secs(5);

/// What every run needs from the host, found once: the helper and the
/// cgroup tree (or why there is none).
#[derive(Debug)]
pub struct Setup {
    helper: Result<CString, String>,
    cgroups: Result<Tree, String>,
}

impl Setup {
    /// Finds the helper beside this executable and opens the cgroup tree
    /// of the daemon whose runtime directory is `runtime_dir` (removing
    /// what a previous life left there); logs how runs are contained.
    pub fn new(runtime_dir: &Path) -> Setup {
        let helper = find_helper();
        if let Err(e) = &helper {
            tracing::error!("{e}; external agents cannot run");
        }
        let cgroups = Tree::open(runtime_dir).map_err(|e| e.to_string());
        match &cgroups {
            Ok(tree) => tracing::info!(
                "agent runs are contained in cgroups under {}",
                tree.path().display()
            ),
            Err(e) => tracing::warn!(
                "agent runs are contained by process group only ({e}): a process an agent detaches with setsid can outlive its run"
            ),
        }
        Setup { helper, cgroups }
    }

    /// The cgroup tree, when runs are contained in cgroups.
    pub fn tree(&self) -> Option<&Tree> {
        self.cgroups.as_ref().ok()
    }

    /// How runs are contained, for `/v1/health`: `Ok(tree)` or why only
    /// process groups are used.
    pub fn containment(&self) -> Result<&Path, &str> {
        match &self.cgroups {
            Ok(tree) => Ok(tree.path()),
            Err(e) => Err(e),
        }
    }
}

/// The helper beside the daemon's executable, checked to be root's and
/// writable by root only (it runs as root).
fn find_helper() -> Result<CString, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the daemon's executable: {e}"))?;
    let path: PathBuf = exe.with_file_name(HELPER_NAME);
    for (what, p) in [
        ("the agent helper", path.as_path()),
        ("its directory", path.parent().unwrap_or(Path::new("/"))),
    ] {
        let md = std::fs::metadata(p).map_err(|e| {
            format!(
                "{what} {}: {e}; install {HELPER_NAME} beside profiled",
                p.display()
            )
        })?;
        if md.uid() != 0 || md.mode() & 0o022 != 0 {
            return Err(format!(
                "{what} {} must be owned by root and writable by root only (fix: chown root {0}; chmod go-w {0})",
                p.display()
            ));
        }
    }
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{} contains a NUL byte", path.display()))
}

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
    /// The run's id (its cgroup's name).
    pub run_id: &'a str,
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
    /// Told of the run's cgroup (or process group), to kill it if the
    /// daemon dies.
    pub guard: Option<&'a Guard>,
    /// The helper and the cgroup tree.
    pub setup: &'a Setup,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it (not one of ours).
    Signal(i32),
    /// It ran past its timeout and was killed.
    TimedOut,
    /// The daemon stopped and the grace period ran out.
    Stopped,
    /// It could not be started.
    NotStarted(String),
    /// Its processes are gone but how its first one ended is unknown: the
    /// daemon stopped waiting for it (see [`Outcome::abandoned`]).
    Unknown,
}

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    /// How it ended.
    pub exit: Exit,
    /// The end of its stdout and stderr (interleaved as written).
    pub output: String,
    /// Set when the daemon stopped waiting for the helper (see
    /// [`HELPER_GRACE`]): what was left behind, for the run's notes.
    pub abandoned: Option<String>,
}

/// Runs `l` to its end and returns how it went. Never fails: a run that
/// cannot start is [`Exit::NotStarted`].
pub fn run(l: &Launch<'_>) -> Outcome {
    match run_inner(l) {
        Ok(o) => o,
        Err(reason) => Outcome {
            exit: Exit::NotStarted(reason),
            output: String::new(),
            abandoned: None,
        },
    }
}

/// The plan's memfd: the plan written, its buffer zeroed (it may hold
/// keys).
fn plan_fd(l: &Launch<'_>, program: &str) -> Result<OwnedFd, String> {
    let candidates: Vec<Vec<u8>> = if program.contains('/') {
        vec![program.as_bytes().to_vec()]
    } else {
        SAFE_PATH
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| format!("{d}/{program}").into_bytes())
            .collect()
    };
    for (what, list) in [
        ("argument", l.argv),
        ("program", std::slice::from_ref(&program.to_owned())),
    ] {
        if let Some(a) = list.iter().find(|a| a.contains('\0')) {
            return Err(format!("the {what} {a:?} contains a NUL byte"));
        }
    }
    if let Some((k, _)) = l
        .env
        .iter()
        .find(|(k, v)| k.contains('\0') || v.contains('\0'))
    {
        return Err(format!("the environment variable {k} contains a NUL byte"));
    }
    let mut plan = Plan {
        uid: l.account.uid.0,
        gid: l.account.gid.0,
        groups: l.groups.iter().map(|g| g.0).collect(),
        daemon_pid: rustix::process::getpid().as_raw_nonzero().get(),
        contained: l.setup.cgroups.is_ok(),
        candidates,
        argv: l.argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        env: l
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}").into_bytes())
            .collect(),
    };
    let bytes = zeroize::Zeroizing::new(plan.encode());
    for entry in &mut plan.env {
        zeroize::Zeroize::zeroize(entry);
    }
    let fd = rustix::fs::memfd_create("profiled-agent-plan", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| format!("cannot make the agent's plan: {e}"))?;
    let mut written = 0;
    while written < bytes.len() {
        match rustix::io::write(&fd, &bytes[written..]) {
            Ok(n) => written += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(format!("cannot write the agent's plan: {e}")),
        }
    }
    Ok(fd)
}

fn run_inner(l: &Launch<'_>) -> Result<Outcome, String> {
    let Some(program) = l.argv.first() else {
        return Err("the command is empty".into());
    };
    let helper = l.setup.helper.as_ref().map_err(Clone::clone)?;
    let plan = plan_fd(l, program)?;
    let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| format!("cannot make a pipe: {e}"))?;
    // Non-blocking: the reports are read only when poll says so, and once
    // more, to the end, after the helper exited.
    let (reports, report_writer) = rustix::pipe::pipe_with(
        rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
    )
    .map_err(|e| format!("cannot make a pipe: {e}"))?;
    let devnull = rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| format!("cannot open /dev/null: {e}"))?;
    // With cgroups available, a run that cannot get one does not run
    // uncontained.
    let group = match &l.setup.cgroups {
        Ok(tree) => Some(tree.create_run(l.run_id).map_err(|e| e.to_string())?),
        Err(_) => None,
    };
    let started = spawn::spawn(&Spawn {
        helper,
        plan: plan.as_fd(),
        status: report_writer.as_fd(),
        workdir: l.workdir,
        stdin: devnull.as_fd(),
        output: writer.as_fd(),
        cgroup_dir: group.as_ref().map(RunGroup::handle),
    });
    // These live only in the helper now: the output and the reports end
    // when it and the agent do.
    drop((writer, report_writer, plan));
    let started = match started {
        Ok(s) => s,
        Err(e) => {
            if let Some(g) = group {
                g.remove();
            }
            return Err(e);
        }
    };
    let target = group.as_ref().map(|g| Target::Cgroup(g.path().to_owned()));
    if let (Some(g), Some(t)) = (l.guard, &target) {
        g.watch(t);
    }
    let mut run = Running {
        group: group.as_ref(),
        killed_at: None,
        agent: None,
        exited: None,
        failed: None,
        reports: Vec::new(),
    };
    let outcome = wait(l, &started, &reader, &reports, &mut run, program);
    if let Some(g) = l.guard {
        if let Some(t) = &target {
            g.release(t);
        } else if let Some(pid) = run.agent {
            g.release(&Target::Group(pid.as_raw_nonzero().get()));
        }
    }
    if let Some(g) = group {
        g.remove();
    }
    Ok(outcome)
}

/// What the daemon knows of a run in progress.
struct Running<'a> {
    group: Option<&'a RunGroup>,
    /// When every process of the run was first sent SIGKILL.
    killed_at: Option<Instant>,
    /// The agent's first process (its process group), once reported.
    agent: Option<Pid>,
    /// Its wait status, once it ended.
    exited: Option<i32>,
    /// The helper's step that failed.
    failed: Option<(Step, i32)>,
    /// Report bytes not yet decoded.
    reports: Vec<u8>,
}

impl Running<'_> {
    /// Signals every process of the run: the cgroup, or without one the
    /// agent's process group.
    fn signal(&mut self, sig: Signal) {
        if sig == Signal::KILL && self.killed_at.is_none() {
            self.killed_at = Some(Instant::now());
        }
        match (self.group, self.agent) {
            (Some(g), _) if sig == Signal::KILL => g.kill(),
            (Some(g), _) => g.signal(sig),
            (None, Some(pid)) => {
                let _ = kill_process_group(pid, sig);
            }
            (None, None) => {}
        }
    }

    /// Reads the helper's reports that arrived (the pipe does not block);
    /// false at end of file.
    fn read_reports(&mut self, fd: &OwnedFd, guard: Option<&Guard>) -> bool {
        let mut buf = [0u8; REPORT_BYTES * 4];
        let open = loop {
            match rustix::io::read(fd, &mut buf) {
                Ok(0) => break false,
                Ok(n) => self.reports.extend_from_slice(&buf[..n]),
                Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::AGAIN) => break true,
                Err(_) => break false,
            }
        };
        while self.reports.len() >= REPORT_BYTES {
            let mut one = [0u8; REPORT_BYTES];
            one.copy_from_slice(&self.reports[..REPORT_BYTES]);
            self.reports.drain(..REPORT_BYTES);
            match Report::decode(&one) {
                Some(Report::Started(pid)) => {
                    self.agent = Pid::from_raw(pid);
                    if self.group.is_none()
                        && let Some(g) = guard
                    {
                        g.watch(&Target::Group(pid));
                    }
                }
                Some(Report::Failed(step, errno)) => self.failed = Some((step, errno)),
                Some(Report::Exited(status)) => {
                    self.exited = Some(status);
                    // Whatever the agent left behind ends with it.
                    self.signal(Signal::KILL);
                }
                None => tracing::error!("the agent helper sent a report this daemon cannot read"),
            }
        }
        open
    }
}

/// Waits for the helper to end (the agent ended and everything it left was
/// killed and reaped), signalling the run on timeout or shutdown and
/// collecting its output.
///
/// Every wait has a hard limit. The end of a contained run is its
/// cgroup's: once the agent started and no process is left in it, the
/// helper gets [`HELPER_GRACE`] to reap and exit; once the run was sent
/// SIGKILL, it gets [`super::cgroup::EMPTY_WAIT`] and that grace in any
/// case (without a cgroup too). Past either, the daemon kills its helper
/// and stops waiting: a process of the run held as a zombie by a tracer
/// outside the run (which only that tracer can release) then goes to
/// init, and holds no slot nor lock of the daemon's.
fn wait(
    l: &Launch<'_>,
    started: &Started,
    reader: &OwnedFd,
    reports: &OwnedFd,
    run: &mut Running<'_>,
    program: &str,
) -> Outcome {
    let pidfd = &started.pidfd;
    let mut output = Tail::new(l.output_limit);
    let began = Instant::now();
    let mut timed_out = false;
    let mut stopped = false;
    let mut term_sent: Option<Instant> = None;
    let mut stop_at: Option<Instant> = None;
    let mut empty_since: Option<Instant> = None;
    let mut looked_at_cgroup = began;
    let mut reader_open = true;
    let mut reports_open = true;
    loop {
        let now = Instant::now();
        if stop_at.is_none() && l.stop.load(Ordering::Relaxed) {
            stop_at = Some(now + l.shutdown_grace);
        }
        if stop_at.is_some_and(|t| now >= t) && !stopped {
            stopped = true;
            run.signal(Signal::KILL);
        }
        match term_sent {
            None if now >= began + l.timeout => {
                timed_out = true;
                run.signal(Signal::TERM);
                term_sent = Some(now);
            }
            Some(t) if now >= t + l.kill_grace => run.signal(Signal::KILL),
            _ => {}
        }
        if empty_since.is_none()
            && run.agent.is_some()
            && now >= looked_at_cgroup + STOP_CHECK
            && let Some(group) = run.group
        {
            looked_at_cgroup = now;
            if group.is_empty() {
                empty_since = Some(now);
            }
        }
        let give_up = [
            empty_since.map(|t| t + HELPER_GRACE),
            run.killed_at.map(|t| t + EMPTY_WAIT + HELPER_GRACE),
        ]
        .into_iter()
        .flatten()
        .min();
        let helper = waitid(
            WaitId::PidFd(pidfd.as_fd()),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
        );
        let ended = match helper {
            Ok(Some(status)) => Some((format!("{status:?}"), None)),
            _ if give_up.is_some_and(|t| now >= t) => {
                let note = abandon(pidfd, empty_since.is_some());
                tracing::error!("agent run {}: {note}", l.run_id);
                Some(("killed by the daemon".to_owned(), Some(note)))
            }
            _ => None,
        };
        if let Some((helper, abandoned)) = ended {
            if reports_open {
                run.read_reports(reports, l.guard);
            }
            drain(reader, &mut output);
            let exit = if let Some((step, errno)) = run.failed {
                Exit::NotStarted(format!(
                    "cannot start {program:?}: {}: {}",
                    step.as_str(),
                    std::io::Error::from_raw_os_error(errno)
                ))
            } else if stopped {
                Exit::Stopped
            } else if timed_out {
                Exit::TimedOut
            } else if let Some(status) = run.exited {
                if libc::WIFEXITED(status) {
                    Exit::Code(libc::WEXITSTATUS(status))
                } else {
                    Exit::Signal(libc::WTERMSIG(status))
                }
            } else if abandoned.is_some() {
                Exit::Unknown
            } else {
                Exit::NotStarted(format!(
                    "the agent helper ended without a report ({helper})"
                ))
            };
            return Outcome {
                exit,
                output: output.into_string(),
                abandoned,
            };
        }
        let next = [
            Some(began + l.timeout),
            term_sent.map(|t| t + l.kill_grace),
            stop_at,
            give_up,
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
        let mut fds = Vec::with_capacity(3);
        fds.push(PollFd::new(pidfd, PollFlags::IN));
        if reader_open {
            fds.push(PollFd::new(reader, PollFlags::IN));
        }
        if reports_open {
            fds.push(PollFd::new(reports, PollFlags::IN));
        }
        let _ = rustix::event::poll(&mut fds, Some(&wait));
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);
        let mut i = 1;
        if reader_open {
            if ready.get(i).copied().unwrap_or(false) && !read_some(reader, &mut output) {
                reader_open = false;
            }
            i += 1;
        }
        if reports_open
            && ready.get(i).copied().unwrap_or(false)
            && !run.read_reports(reports, l.guard)
        {
            reports_open = false;
        }
    }
}

/// Kills the daemon's own helper (its direct child, through the pidfd, so
/// never another process) and reaps it, waiting at most [`HELPER_REAP`];
/// returns what to note about the run. What the helper had not reaped
/// goes to init.
fn abandon(pidfd: &OwnedFd, run_empty: bool) -> String {
    let why = if run_empty {
        format!(
            "the agent helper had not ended {HELPER_GRACE:?} after every process of the run was gone"
        )
    } else {
        format!(
            "the run's processes were not all gone {:?} after SIGKILL",
            EMPTY_WAIT + HELPER_GRACE
        )
    };
    let mut note = format!(
        "{why}: a process of the run is likely held as a zombie by a tracer outside the run          (a debugger or strace of the same account, which only that tracer can release); the          daemon killed its helper and stopped waiting, and what was left goes to init"
    );
    let _ = rustix::process::pidfd_send_signal(pidfd, Signal::KILL);
    let deadline = Instant::now() + HELPER_REAP;
    loop {
        if let Ok(Some(_)) = waitid(
            WaitId::PidFd(pidfd.as_fd()),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
        ) {
            return note;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            note.push_str(&format!(
                "; the helper itself did not end within {HELPER_REAP:?} of SIGKILL and was not reaped"
            ));
            return note;
        }
        let pause = Timespec::try_from(left.min(STOP_CHECK)).unwrap_or(Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        });
        let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
        let _ = rustix::event::poll(&mut fds, Some(&pause));
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
