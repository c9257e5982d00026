//! Starts one agent process as its account without copying the daemon
//! (security rule 3).
//!
//! `fork` copies the daemon's page tables and descriptor table into every
//! agent, only for exec to throw them away; the daemon's memory and its
//! descriptors (one per watched profile) grow with the number of profiles,
//! so a cycle over N accounts cost O(N²). This uses what `posix_spawn`
//! uses: `clone(CLONE_VM | CLONE_VFORK)`, a child that borrows the
//! daemon's memory on its own small stack while the calling thread waits
//! until it has exec'd or failed. `posix_spawn` itself cannot drop to an
//! account, hence this module.
//!
//! The child shares the daemon's memory, so it must not allocate, take a
//! lock or call a libc function that keeps state: it makes raw system
//! calls only, on data prepared here beforehand. In particular glibc's
//! `setuid`/`setgid`/`setgroups` would try to switch every thread of the
//! daemon (the thread list is in the shared memory); the raw calls change
//! only the child. All signals are blocked around the clone so no handler
//! of the daemon runs on the child's stack; the child resets every signal
//! to its default and unblocks them before exec.
//!
//! The child, in this order: resets its signals; starts a new session (its
//! own process group, which timeouts kill whole); sets the groups computed
//! by the caller in the parent, the gid, the uid; proves that `setuid(0)`
//! fails and that it holds no root id; asks for SIGKILL when the calling
//! thread dies (after the uid change, which would clear it) and checks the
//! parent was still there; enters the profile through its checked handle;
//! puts /dev/null and the output pipe on 0, 1 and 2; execs with exactly
//! the environment given.

use std::ffi::{CString, c_void};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use rustix::process::Pid;

// The raw setuid/setgid/setgroups calls below take 32-bit ids only on
// 64-bit Linux (the 32-bit ABIs have the 16-bit calls under these names).
#[cfg(not(target_pointer_width = "64"))]
compile_error!("the agent spawner supports 64-bit Linux only");

/// The child's stack: the work before exec is a few dozen system calls.
const STACK_SIZE: usize = 64 * 1024;

/// What to start and as whom.
pub struct Spawn<'a> {
    /// The program as given (a name without `/` is looked up in `path`).
    pub program: &'a str,
    /// The arguments, program first.
    pub argv: &'a [String],
    /// The whole environment, `NAME=value` each.
    pub env: &'a [(String, String)],
    /// Where a program name without `/` is looked for (`a:b:c`).
    pub path: &'a str,
    /// The account's uid and primary gid.
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
    /// The account's groups, computed in the parent.
    pub groups: &'a [u32],
    /// The working directory (the checked profile handle).
    pub workdir: BorrowedFd<'a>,
    /// Standard input.
    pub stdin: BorrowedFd<'a>,
    /// Standard output and error.
    pub output: BorrowedFd<'a>,
}

/// A started process: its pid and a pidfd (from the clone itself, so it
/// can never name a recycled pid).
pub struct Started {
    /// The process id (also its process group id).
    pub pid: Pid,
    /// A pidfd of the process.
    pub pidfd: OwnedFd,
}

/// Everything the child reads, prepared in the parent.
struct ChildPlan {
    candidates: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
    parent: libc::pid_t,
    workdir: i32,
    stdin: i32,
    output: i32,
    /// The step that failed and its errno, written by the child before it
    /// exits; read by the parent once the clone returns.
    failed_step: AtomicI32,
    failed_errno: AtomicI32,
}

/// The steps of the child, for the error message.
const STEPS: [&str; 10] = [
    "reset the signals",
    "start a session",
    "set the groups",
    "set the gid",
    "set the uid",
    "drop root for good (setuid(0) still worked)",
    "ask for the parent-death signal",
    "enter the profile",
    "set up standard input and output",
    "exec",
];

fn cstring(what: &str, s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("the {what} {s:?} contains a NUL byte"))
}

/// Starts the process; returns once it has exec'd, or why it could not.
pub fn spawn(s: &Spawn<'_>) -> Result<Started, String> {
    let candidates: Vec<CString> = if s.program.contains('/') {
        vec![cstring("program", s.program)?]
    } else {
        s.path
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| cstring("program", &format!("{d}/{}", s.program)))
            .collect::<Result<_, _>>()?
    };
    let args: Vec<CString> = s
        .argv
        .iter()
        .map(|a| cstring("argument", a))
        .collect::<Result<_, _>>()?;
    let mut env = SecretEnv(Vec::with_capacity(s.env.len()));
    for (k, v) in s.env {
        // Secrets may be in the values: built in a buffer of the final
        // size (no copy left behind by a reallocation), zeroed on drop,
        // and an error names the variable only.
        let mut entry = Vec::with_capacity(k.len() + v.len() + 2);
        entry.extend_from_slice(k.as_bytes());
        entry.push(b'=');
        entry.extend_from_slice(v.as_bytes());
        match CString::new(entry) {
            Ok(c) => env.0.push(c),
            Err(e) => {
                zeroize::Zeroize::zeroize(&mut e.into_vec());
                return Err(format!("the environment variable {k} contains a NUL byte"));
            }
        }
    }
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.0.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let plan = ChildPlan {
        candidates,
        argv,
        envp,
        uid: s.uid,
        gid: s.gid,
        groups: s.groups.to_vec(),
        parent: rustix::process::getpid().as_raw_nonzero().get(),
        workdir: s.workdir.as_raw_fd(),
        stdin: s.stdin.as_raw_fd(),
        output: s.output.as_raw_fd(),
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
            rustix::process::WaitId::PidFd(std::os::fd::AsFd::as_fd(&pidfd)),
            rustix::process::WaitIdOptions::EXITED,
        );
        let errno = std::io::Error::from_raw_os_error(plan.failed_errno.load(Ordering::Acquire));
        let what = usize::try_from(step)
            .ok()
            .and_then(|i| STEPS.get(i))
            .copied()
            .unwrap_or("start");
        return Err(format!("cannot start {:?}: {what}: {errno}", s.program));
    }
    let pid = Pid::from_raw(pid).ok_or_else(|| "the kernel returned pid 0".to_owned())?;
    Ok(Started { pid, pidfd })
}

/// The child's environment; zeroed when dropped (it may hold keys).
struct SecretEnv(Vec<CString>);

impl Drop for SecretEnv {
    fn drop(&mut self) {
        for entry in self.0.drain(..) {
            zeroize::Zeroize::zeroize(&mut entry.into_bytes_with_nul());
        }
    }
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

/// The child's work; returns only on failure, with the step and errno.
///
/// # Safety
/// Only in the child of [`spawn`]'s clone.
unsafe fn child_steps(p: &ChildPlan) -> Result<std::convert::Infallible, (i32, i32)> {
    use libc::{SYS_execve, SYS_fchdir, SYS_prctl, SYS_setsid, syscall};
    let at = |step: i32| move |errno: i32| (step, errno);
    // SAFETY (the whole body): raw system calls whose pointer arguments
    // point into `p`, which outlives the child's use of it.
    unsafe {
        reset_signals().map_err(at(0))?;
        check(syscall(SYS_setsid)).map_err(at(1))?;
        check(syscall(
            libc::SYS_setgroups,
            p.groups.len(),
            p.groups.as_ptr(),
        ))
        .map_err(at(2))?;
        check(syscall(libc::SYS_setgid, p.gid)).map_err(at(3))?;
        check(syscall(libc::SYS_setuid, p.uid)).map_err(at(4))?;
        if syscall(libc::SYS_setuid, 0) == 0
            || syscall(libc::SYS_geteuid) == 0
            || (syscall(libc::SYS_getegid) == 0 && p.gid != 0)
        {
            return Err((5, libc::EPERM));
        }
        // After the uid change: changing credentials clears the signal.
        check(syscall(
            SYS_prctl,
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ))
        .map_err(at(6))?;
        // The daemon may have died before the prctl: then no signal will
        // ever come.
        if syscall(libc::SYS_getppid) != libc::c_long::from(p.parent) {
            return Err((6, libc::ESRCH));
        }
        check(syscall(SYS_fchdir, p.workdir)).map_err(at(7))?;
        for (from, to) in [(p.stdin, 0), (p.output, 1), (p.output, 2)] {
            check(syscall(libc::SYS_dup3, from, to, 0)).map_err(at(8))?;
        }
        // As execvp: the first candidate that exists; EACCES is kept over
        // a later ENOENT so a program that is there but not executable
        // says so.
        let mut errno = libc::ENOENT;
        for candidate in &p.candidates {
            let e = match check(syscall(
                SYS_execve,
                candidate.as_ptr(),
                p.argv.as_ptr(),
                p.envp.as_ptr(),
            )) {
                Ok(_) => libc::EIO,
                Err(e) => e,
            };
            match e {
                libc::ENOENT | libc::ENOTDIR => {}
                libc::EACCES => errno = libc::EACCES,
                other => return Err((9, other)),
            }
        }
        Err((9, errno))
    }
}

/// Resets every signal the daemon catches or ignores (Rust programs ignore
/// SIGPIPE) to its default, then unblocks them all: an agent starts as
/// from a fresh login.
///
/// # Safety
/// Only in the child of [`spawn`]'s clone.
unsafe fn reset_signals() -> Result<(), i32> {
    // The kernel's sigaction: handler, flags, restorer, mask.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    const SIGSET_SIZE: usize = 8;
    // SAFETY: rt_sigaction and rt_sigprocmask with pointers to locals of
    // the kernel's layout and the kernel's sigset size.
    unsafe {
        for sig in 1..=64 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old = KernelSigaction {
                handler: 0,
                flags: 0,
                restorer: 0,
                mask: 0,
            };
            if libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                std::ptr::null::<KernelSigaction>(),
                &mut old as *mut KernelSigaction,
                SIGSET_SIZE,
            ) != 0
            {
                continue;
            }
            if old.handler != libc::SIG_DFL {
                let default = KernelSigaction {
                    handler: libc::SIG_DFL,
                    flags: 0,
                    restorer: 0,
                    mask: 0,
                };
                check(libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &default as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    SIGSET_SIZE,
                ))?;
            }
        }
        let empty: u64 = 0;
        check(libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const u64,
            std::ptr::null_mut::<u64>(),
            SIGSET_SIZE,
        ))?;
    }
    Ok(())
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
