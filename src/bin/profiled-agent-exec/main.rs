//! `profiled-agent-exec`, the agent helper (security rule 3): the small
//! root program the daemon starts for every external agent run, so that no
//! process ever shares the daemon's memory after its uid changes.
//! Installed beside `profiled` and started only by it.
//!
//! It does not link the daemon's library (so neither libpam and the
//! libraries it pulls in, nor mimalloc): only the plan's format
//! (src/agents/plan.rs) is shared, so its exec stays cheap (it needs libc
//! only) and little code runs as root in it.
//!
//! The daemon's spawner (src/agents/spawn.rs) borrows the daemon's memory only
//! to exec this helper, still as root (a process no account may signal or
//! trace), with the run's descriptors in place (`plan::fds`). The
//! helper then, in its own address space:
//!
//! 1. closes every other descriptor and reads the plan from its memfd;
//! 2. asks for SIGKILL when the daemon dies and checks the daemon is still
//!    its parent;
//! 3. becomes the child subreaper of the run and forks the agent. The
//!    helper stays root and outside the run's cgroup: it reaps every
//!    process of the run, however it detached (they are all re-parented
//!    to it), so none is left as a zombie of anyone, and the account
//!    cannot stop or kill it;
//! 4. the agent's process, cloned straight into the run's cgroup (through
//!    the daemon's handle on it, while still root), before exec: resets
//!    every signal, starts a session, sets the groups, gid and uid, makes
//!    itself non-dumpable (the account cannot trace it before the exec,
//!    even with `fs.suid_dumpable=1`), proves `setuid(0)` fails, asks for
//!    SIGKILL when the helper dies, enters the profile and execs the agent
//!    with exactly the plan's environment;
//! 5. the helper reports the agent's pid, the step that failed (with its
//!    errno) or the agent's wait status on the report pipe, then reaps
//!    until it has no child left: in a contained run, the daemon kills the
//!    cgroup once the agent's first process ended, so that wait is short;
//!    without a cgroup it kills the agent's process group itself and exits
//!    (what left the group goes to init, as `docs/OPERATIONS.md` warns).
//!    That wait is not bounded here: a process of the run held as a zombie
//!    by a tracer outside the run (same uid, `PTRACE_SEIZE`) cannot be
//!    reaped until that tracer lets go. The daemon bounds it instead: it
//!    kills this helper (its own child, through a pidfd) once the run's
//!    cgroup is empty and a short grace passed, or at the latest a fixed
//!    time after the run's SIGKILL (src/agents/runner.rs).
//!
//! The extra fork costs a small process's fork (the helper is a few
//! hundred kilobytes of mapped memory), not the daemon's.

use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::{BorrowedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::process::ExitCode;

use nix::unistd::{Gid, Uid};
use rustix::process::{Pid, Signal};

// The daemon's half of the format (encoding the plan, decoding reports)
// is not used here.
#[allow(dead_code)]
#[path = "../../agents/plan.rs"]
mod plan;

use plan::{MAX_PLAN_BYTES, Plan, Report, Step, fds};

/// One of the descriptors the spawner put in place.
fn fd(raw: RawFd) -> BorrowedFd<'static> {
    // SAFETY: the spawner dup'd these numbers into this process before
    // exec and nothing here closes them while they are borrowed (the ones
    // the agent must not get are CLOEXEC and end with the exec).
    unsafe { BorrowedFd::borrow_raw(raw) }
}

fn report(r: Report) {
    // A lost report (the daemon gone) changes nothing here.
    let _ = rustix::io::write(fd(fds::STATUS), &r.encode());
}

fn errno_of(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn main() -> ExitCode {
    match supervise() {
        Ok(()) => ExitCode::SUCCESS,
        Err((step, errno)) => {
            report(Report::Failed(step, errno));
            ExitCode::from(127)
        }
    }
}

fn supervise() -> Result<(), (Step, i32)> {
    let at = |step: Step| move |e: rustix::io::Errno| (step, e.raw_os_error());
    // Nothing but the run's descriptors reaches the agent, even one the
    // daemon opened without CLOEXEC by mistake.
    // SAFETY: close_range on numbers this program does not use (the
    // standard library holds none above 2).
    unsafe {
        libc::syscall(libc::SYS_close_range, fds::FIRST_UNUSED, u32::MAX, 0);
    }
    for n in [fds::PLAN, fds::STATUS, fds::WORKDIR, fds::CGROUP_DIR] {
        // CGROUP_DIR is absent in an uncontained run: EBADF is fine.
        let _ = rustix::io::fcntl_setfd(fd(n), rustix::io::FdFlags::CLOEXEC);
    }
    let plan = read_plan()?;
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
        .map_err(at(Step::WatchDaemon))?;
    // The daemon may have died before the prctl: then no signal will come.
    if rustix::process::getppid()
        .map(Pid::as_raw_nonzero)
        .map(|p| p.get())
        != Some(plan.daemon_pid)
    {
        return Err((Step::WatchDaemon, libc::ESRCH));
    }
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .map_err(at(Step::Supervise))?;
    let helper = rustix::process::getpid();
    let child = match fork_agent(plan.contained)? {
        Forked::Child => {
            let Err((step, errno)) = become_agent(&plan, helper);
            report(Report::Failed(step, errno));
            std::process::exit(127);
        }
        Forked::Parent(child) => child,
    };
    report(Report::Started(child));
    let contained = plan.contained;
    // The environment may hold keys: gone from here before the long wait.
    drop(plan);
    reap(child, contained);
    Ok(())
}

/// Which side of the fork this is.
enum Forked {
    Child,
    Parent(i32),
}

/// Forks the agent's process: in a contained run straight into the run's
/// cgroup (`clone3` with `CLONE_INTO_CGROUP` and the daemon's handle on
/// it: the process is in the cgroup from its first instruction, before it
/// could fork or detach, and no later move through `cgroup.procs` costs
/// an RCU grace period); otherwise a plain fork.
fn fork_agent(contained: bool) -> Result<Forked, (Step, i32)> {
    if !contained {
        return plain_fork();
    }
    match clone_into_cgroup() {
        // systemd's seccomp filter answers clone3 with ENOSYS under
        // `RestrictNamespaces=` (it cannot inspect clone3's flags), as do
        // kernels before 5.7: fork, and the child moves itself into the
        // cgroup before it does anything else (still root, so the agent
        // never runs outside it).
        Err((_, libc::ENOSYS)) => match plain_fork()? {
            Forked::Child => {
                join_cgroup().map_err(|e| (Step::JoinCgroup, e.raw_os_error()))?;
                Ok(Forked::Child)
            }
            parent => Ok(parent),
        },
        other => other,
    }
}

fn plain_fork() -> Result<Forked, (Step, i32)> {
    // SAFETY: this process is single-threaded (nothing here starts a
    // thread), so the child may do anything the parent could.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => Ok(Forked::Child),
        Ok(nix::unistd::ForkResult::Parent { child }) => Ok(Forked::Parent(child.as_raw())),
        Err(e) => Err((Step::Supervise, e as i32)),
    }
}

/// Moves this process into the run's cgroup (`0` names the writer).
fn join_cgroup() -> Result<(), rustix::io::Errno> {
    let procs = rustix::fs::openat(
        fd(fds::CGROUP_DIR),
        "cgroup.procs",
        rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC | rustix::fs::OFlags::NOFOLLOW,
        rustix::fs::Mode::empty(),
    )?;
    rustix::io::write(&procs, b"0\n").map(|_| ())
}

/// `clone3(CLONE_INTO_CGROUP)`: the child starts inside the run's cgroup.
fn clone_into_cgroup() -> Result<Forked, (Step, i32)> {
    // <linux/sched.h>; libc's constant has a type too narrow for it.
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    // The kernel's struct clone_args (version 2, with `cgroup`).
    #[repr(C)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: fds::CGROUP_DIR as u64,
    };
    // SAFETY: clone3 without CLONE_VM (nor any sharing flag) is a fork:
    // the child gets a copy of this single-threaded process and returns
    // here with 0 on a copy of this stack, so it may do anything the
    // parent could; `args` is the kernel's layout and its size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match r {
        0 => Ok(Forked::Child),
        r if r > 0 => Ok(Forked::Parent(i32::try_from(r).unwrap_or(-1))),
        _ => Err((Step::JoinCgroup, errno_of(std::io::Error::last_os_error()))),
    }
}

fn read_plan() -> Result<Plan, (Step, i32)> {
    let file = std::fs::File::from(
        fd(fds::PLAN)
            .try_clone_to_owned()
            .map_err(|e| (Step::ReadPlan, errno_of(e)))?,
    );
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    let mut buf = zeroize::Zeroizing::new(vec![0u8; 64 * 1024]);
    loop {
        let n = file
            .read_at(&mut buf, bytes.len() as u64)
            .map_err(|e| (Step::ReadPlan, errno_of(e)))?;
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&buf[..n]);
        if bytes.len() > MAX_PLAN_BYTES {
            return Err((Step::ReadPlan, libc::E2BIG));
        }
    }
    drop(file);
    // SAFETY: closes the plan's descriptor, which nothing borrows now.
    unsafe {
        libc::close(fds::PLAN);
    }
    Plan::decode(&bytes).map_err(|_| (Step::ReadPlan, libc::EINVAL))
}

/// Reaps every child until none is left, reporting the agent's end. In a
/// contained run the daemon kills the cgroup once the agent ended, so
/// whatever it left behind dies and is reaped here; otherwise its process
/// group is killed here and the helper leaves the rest to init.
fn reap(agent: i32, contained: bool) {
    // SAFETY: closes descriptors the agent has its own copies of (or
    // none); nothing borrows them any more.
    unsafe {
        libc::close(fds::WORKDIR);
        libc::close(fds::CGROUP_DIR);
    }
    loop {
        match rustix::process::wait(rustix::process::WaitOptions::empty()) {
            Ok(Some((pid, status))) if pid.as_raw_nonzero().get() == agent => {
                report(Report::Exited(status.as_raw()));
                if !contained {
                    if let Some(group) = Pid::from_raw(agent) {
                        let _ = rustix::process::kill_process_group(group, Signal::KILL);
                    }
                    return;
                }
            }
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            // ECHILD: the run is over.
            Err(_) => return,
        }
    }
}

/// The agent's side of the fork: returns only on failure.
fn become_agent(plan: &Plan, helper: Pid) -> Result<Infallible, (Step, i32)> {
    let at = |step: Step| move |e: rustix::io::Errno| (step, e.raw_os_error());
    let nix_at = |step: Step| move |e: nix::errno::Errno| (step, e as i32);
    reset_signals().map_err(|e| (Step::ResetSignals, e))?;
    nix::unistd::setsid().map_err(nix_at(Step::Session))?;
    let groups: Vec<Gid> = plan.groups.iter().copied().map(Gid::from_raw).collect();
    nix::unistd::setgroups(&groups).map_err(nix_at(Step::Groups))?;
    nix::unistd::setgid(Gid::from_raw(plan.gid)).map_err(nix_at(Step::Gid))?;
    nix::unistd::setuid(Uid::from_raw(plan.uid)).map_err(nix_at(Step::Uid))?;
    // Not traceable by the account until the exec (even where
    // fs.suid_dumpable=1): this process still holds the report pipe.
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(at(Step::DropForGood))?;
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok()
        || nix::unistd::geteuid().is_root()
        || (nix::unistd::getegid().as_raw() == 0 && plan.gid != 0)
    {
        return Err((Step::DropForGood, libc::EPERM));
    }
    // After the uid change, which clears it.
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
        .map_err(at(Step::DeathSignal))?;
    if rustix::process::getppid() != Some(helper) {
        return Err((Step::DeathSignal, libc::ESRCH));
    }
    rustix::process::fchdir(fd(fds::WORKDIR)).map_err(at(Step::Workdir))?;
    let cstrings = |v: &[Vec<u8>]| -> Vec<CString> {
        // NUL bytes were refused when the plan was read.
        v.iter()
            .filter_map(|s| CString::new(s.clone()).ok())
            .collect()
    };
    let (argv, env) = (cstrings(&plan.argv), cstrings(&plan.env));
    // As execvp: the first candidate that exists; EACCES is kept over a
    // later ENOENT so a program that is there but not executable says so.
    let mut errno = libc::ENOENT;
    for candidate in cstrings(&plan.candidates) {
        let e = match nix::unistd::execve(&candidate, &argv, &env) {
            Ok(never) => match never {},
            Err(e) => e as i32,
        };
        match e {
            libc::ENOENT | libc::ENOTDIR => {}
            libc::EACCES => errno = libc::EACCES,
            other => return Err((Step::Exec, other)),
        }
    }
    Err((Step::Exec, errno))
}

/// Every signal back to its default (the daemon ignores SIGPIPE; this
/// program's runtime handles SIGSEGV and SIGBUS; something may have left
/// one of the C library's reserved real-time signals ignored), then all
/// unblocked (the spawner blocked them all around its clone): an agent
/// starts as from a fresh login. Raw system calls: the C library's
/// `sigaction` refuses the signals it reserves.
fn reset_signals() -> Result<(), i32> {
    // The kernel's sigaction: handler, flags, restorer, mask.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    const SIGSET_SIZE: usize = 8;
    let default = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction with a pointer to a local of the kernel's
        // layout and the kernel's sigset size; installs the default, so
        // no handler of ours can run.
        let r = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &default as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                SIGSET_SIZE,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL));
        }
    }
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    )
    .map_err(|e| e as i32)
}
