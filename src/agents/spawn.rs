//! Starts the agent helper for one run without copying the daemon
//! (security rule 3).
//!
//! `fork` copies the daemon's page tables and descriptor table into every
//! agent, only for exec to throw them away; the daemon's memory and its
//! descriptors (one per watched profile) grow with the number of profiles,
//! so a cycle over N accounts cost O(N²). This uses what `posix_spawn`
//! uses: `clone(CLONE_VM | CLONE_VFORK)`, a child that borrows the
//! daemon's memory on its own small stack while the calling thread waits
//! until it has exec'd or failed.
//!
//! That child never changes its uid: it stays root (a process no account
//! may signal, stop or trace), puts the run's descriptors at the numbers
//! of [`super::plan::fds`] and execs the helper (`profiled-agent-exec`,
//! src/bin/profiled-agent-exec), which drops to the account in its own address
//! space. So no process shares the daemon's memory after its uid changes,
//! and the calling thread waits only for an exec of a root-owned binary by
//! a root process: no account can make that wait last.
//!
//! The child shares the daemon's memory, so it must not allocate, take a
//! lock or call a libc function that keeps state: it makes raw system
//! calls only, on data prepared here beforehand. All signals are blocked
//! around the clone so no handler of the daemon runs on the child's stack
//! (the helper resets and unblocks them for the agent).

use std::ffi::{CStr, c_void};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use super::plan::fds;

/// The child's stack: the work before exec is a handful of system calls.
const STACK_SIZE: usize = 64 * 1024;

/// The lowest number the run's descriptors are copied to before the clone,
/// so none of them sits on a number the child overwrites.
const FIRST_SOURCE: i32 = 10;

/// What the helper gets.
pub struct Spawn<'a> {
    /// The helper's path.
    pub helper: &'a CStr,
    /// The plan (a memfd).
    pub plan: BorrowedFd<'a>,
    /// The report pipe's writing end.
    pub status: BorrowedFd<'a>,
    /// The checked profile directory.
    pub workdir: BorrowedFd<'a>,
    /// The agent's standard input.
    pub stdin: BorrowedFd<'a>,
    /// The agent's standard output and error.
    pub output: BorrowedFd<'a>,
    /// The run cgroup's directory, when the run is contained.
    pub cgroup_dir: Option<BorrowedFd<'a>>,
}

/// A started helper, as a pidfd (from the clone itself, so it can never
/// name a recycled pid).
pub struct Started {
    /// A pidfd of the helper.
    pub pidfd: OwnedFd,
}

/// Everything the child reads, prepared in the parent.
struct ChildPlan {
    helper: *const libc::c_char,
    argv: [*const libc::c_char; 2],
    envp: [*const libc::c_char; 1],
    /// (source, target) descriptor pairs.
    moves: [(i32, i32); 7],
    count: usize,
    /// The step that failed and its errno, written by the child before it
    /// exits; read by the parent once the clone returns.
    failed_step: AtomicI32,
    failed_errno: AtomicI32,
}

/// The child's steps, for the error message.
const STEPS: [&str; 2] = [
    "put the descriptors in place for the agent helper",
    "exec the agent helper",
];

/// Starts the helper; returns once it has exec'd, or why it could not.
pub fn spawn(s: &Spawn<'_>) -> Result<Started, String> {
    let high = |fd: BorrowedFd<'_>| {
        rustix::io::fcntl_dupfd_cloexec(fd, FIRST_SOURCE)
            .map_err(|e| format!("cannot copy a descriptor for the agent helper: {e}"))
    };
    let mut sources = vec![
        (high(s.stdin)?, fds::STDIN),
        (high(s.output)?, fds::OUTPUT),
        (high(s.output)?, 2),
        (high(s.plan)?, fds::PLAN),
        (high(s.status)?, fds::STATUS),
        (high(s.workdir)?, fds::WORKDIR),
    ];
    if let Some(dir) = s.cgroup_dir {
        sources.push((high(dir)?, fds::CGROUP_DIR));
    }
    let mut moves = [(-1, -1); 7];
    for (slot, (fd, target)) in moves.iter_mut().zip(&sources) {
        *slot = (fd.as_raw_fd(), *target);
    }
    let plan = ChildPlan {
        helper: s.helper.as_ptr(),
        argv: [s.helper.as_ptr(), std::ptr::null()],
        envp: [std::ptr::null()],
        moves,
        count: sources.len(),
        failed_step: AtomicI32::new(-1),
        failed_errno: AtomicI32::new(0),
    };
    let stack = Stack::new()?;
    let mut pidfd: libc::c_int = -1;
    let pid = {
        let _blocked = SignalsBlocked::new();
        // SAFETY: `child_main` only reads `plan` (alive until the clone
        // returns: CLONE_VFORK suspends this thread until the child has
        // exec'd or exited) and makes raw system calls; `stack` maps
        // STACK_SIZE bytes below its page-aligned top, over a guard page;
        // with CLONE_PIDFD the kernel writes the pidfd into `pidfd`.
        unsafe {
            libc::clone(
                child_main,
                stack.top(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
                std::ptr::from_ref(&plan).cast_mut().cast::<c_void>(),
                &mut pidfd as *mut libc::c_int,
            )
        }
    };
    drop(sources);
    if pid < 0 {
        return Err(format!(
            "cannot start a process: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: CLONE_PIDFD gave this process a new descriptor it owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let step = plan.failed_step.load(Ordering::Acquire);
    if step >= 0 {
        // The child has exited; reap it so it leaves no zombie.
        let _ = rustix::process::waitid(
            rustix::process::WaitId::PidFd(pidfd.as_fd()),
            rustix::process::WaitIdOptions::EXITED,
        );
        let errno = std::io::Error::from_raw_os_error(plan.failed_errno.load(Ordering::Acquire));
        let what = usize::try_from(step)
            .ok()
            .and_then(|i| STEPS.get(i))
            .copied()
            .unwrap_or("start");
        return Err(format!("cannot {what} {:?}: {errno}", s.helper));
    }
    Ok(Started { pidfd })
}

/// A raw system call's result as `Err(errno)` on failure. Only for the
/// child: `libc::syscall` stores errno in the (shared) thread-local, which
/// the suspended parent thread never reads after the clone.
fn check(r: libc::c_long) -> Result<libc::c_long, i32> {
    if r < 0 {
        // SAFETY: reading errno right after the failed call.
        Err(unsafe { *libc::__errno_location() })
    } else {
        Ok(r)
    }
}

extern "C" fn child_main(arg: *mut c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildPlan` the parent keeps alive while it is
    // suspended by CLONE_VFORK.
    let plan = unsafe { &*arg.cast::<ChildPlan>() };
    // SAFETY: only raw system calls on data prepared before the clone.
    let (step, errno) = match unsafe { child_steps(plan) } {
        Ok(never) => match never {},
        Err(e) => e,
    };
    plan.failed_step.store(step, Ordering::Release);
    plan.failed_errno.store(errno, Ordering::Release);
    // SAFETY: ends this process (the child) only.
    unsafe {
        libc::syscall(libc::SYS_exit, 127);
    }
    127
}

/// The child's work: the descriptors, then the helper. Returns only on
/// failure, with the step and errno.
///
/// # Safety
/// Only in the child of [`spawn`]'s clone.
unsafe fn child_steps(p: &ChildPlan) -> Result<std::convert::Infallible, (i32, i32)> {
    // SAFETY (the whole body): raw system calls whose pointer arguments
    // point into `p`, which outlives the child's use of it.
    unsafe {
        for &(from, to) in p.moves.iter().take(p.count) {
            // dup3 without O_CLOEXEC: the copy survives the exec.
            check(libc::syscall(libc::SYS_dup3, from, to, 0)).map_err(|e| (0, e))?;
        }
        let e = check(libc::syscall(
            libc::SYS_execve,
            p.helper,
            p.argv.as_ptr(),
            p.envp.as_ptr(),
        ))
        .err()
        .unwrap_or(libc::EIO);
        Err((1, e))
    }
}

/// A guard page below the child's stack: an overflow faults instead of
/// writing into the daemon's memory.
const GUARD_SIZE: usize = 4096;

/// The child's stack: an anonymous mapping with a guard page at its
/// bottom, released on drop.
struct Stack {
    base: *mut c_void,
}

impl Stack {
    fn new() -> Result<Stack, String> {
        let fail = |what: &str| {
            format!(
                "cannot {what} for the agent: {}",
                std::io::Error::last_os_error()
            )
        };
        // SAFETY: a fresh private anonymous mapping; no existing memory is
        // touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                GUARD_SIZE + STACK_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(fail("map a stack"));
        }
        let stack = Stack { base };
        // SAFETY: the first page of the mapping just made.
        if unsafe { libc::mprotect(base, GUARD_SIZE, libc::PROT_NONE) } != 0 {
            return Err(fail("protect the stack's guard page"));
        }
        Ok(stack)
    }

    /// The top of the stack (stacks grow down); page-aligned.
    fn top(&self) -> *mut c_void {
        self.base.wrapping_byte_add(GUARD_SIZE + STACK_SIZE)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, no longer used
        // (the child has exec'd or exited when the clone returns).
        unsafe {
            libc::munmap(self.base, GUARD_SIZE + STACK_SIZE);
        }
    }
}

/// All signals blocked on this thread while it lives; the old mask back
/// on drop.
struct SignalsBlocked {
    old: libc::sigset_t,
}

impl SignalsBlocked {
    fn new() -> SignalsBlocked {
        // SAFETY: sigfillset and pthread_sigmask on local sigset_t values.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            SignalsBlocked { old }
        }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `new`.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
        }
    }
}
