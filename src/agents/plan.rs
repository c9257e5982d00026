//! What the daemon tells the agent helper (`profiled-agent-exec`, see
//! src/bin/profiled-agent-exec) and what the helper tells it back.
//!
//! The plan (whom to become, what to exec, with which environment) travels
//! in a memfd the daemon writes and the helper reads at descriptor
//! [`fds::PLAN`]: never in the helper's arguments (every account can read
//! `/proc/<pid>/cmdline`, and the environment may hold keys) and never
//! through anything a user can write. Reports come back on a pipe at
//! [`fds::STATUS`] as fixed 12-byte records (smaller than `PIPE_BUF`, so
//! each write is atomic).
//!
//! Both sides of this module are compiled into the same crate, so the
//! format has no versioning beyond a magic number that catches a helper
//! from another build.

use std::fmt;

/// The helper's descriptors, put in place by the spawner before it execs
/// the helper.
pub mod fds {
    /// /dev/null, the agent's standard input.
    pub const STDIN: i32 = 0;
    /// The output pipe, the agent's standard output (and error, on 2).
    pub const OUTPUT: i32 = 1;
    /// The plan (a memfd, read from offset 0).
    pub const PLAN: i32 = 3;
    /// The report pipe to the daemon.
    pub const STATUS: i32 = 4;
    /// The checked profile directory: the agent's working directory.
    pub const WORKDIR: i32 = 5;
    /// The run cgroup's directory, opened by the daemon (only when the
    /// plan says the run is contained): the agent is cloned into it.
    pub const CGROUP_DIR: i32 = 6;
    /// Everything from here up is closed by the helper first thing.
    pub const FIRST_UNUSED: u32 = 7;
}

const MAGIC: &[u8; 4] = b"PAX1";

/// The largest plan the helper reads: far above any real argv and
/// environment, far below what could hurt.
pub const MAX_PLAN_BYTES: usize = 4 << 20;

/// One run as the helper carries it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The account's uid and primary gid.
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
    /// The account's groups, computed by the daemon.
    pub groups: Vec<u32>,
    /// The daemon's pid: the helper's parent, checked after it asked for
    /// the parent-death signal.
    pub daemon_pid: i32,
    /// Whether the run has a cgroup (`fds::CGROUP_DIR` is open).
    pub contained: bool,
    /// The paths to try, in order, as execvp would.
    pub candidates: Vec<Vec<u8>>,
    /// The arguments, program first.
    pub argv: Vec<Vec<u8>>,
    /// The whole environment, `NAME=value` each.
    pub env: Vec<Vec<u8>>,
}

/// Why a plan could not be read.
#[derive(Debug, PartialEq, Eq)]
pub struct BadPlan(&'static str);

impl fmt::Display for BadPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the agent plan is malformed ({}); the helper and the daemon come from different builds? Reinstall both",
            self.0
        )
    }
}

impl Plan {
    /// The plan's bytes. They may hold secrets: the caller zeroes them.
    pub fn encode(&self) -> Vec<u8> {
        let strings = |v: &[Vec<u8>]| v.iter().map(|s| 4 + s.len()).sum::<usize>() + 4;
        let mut out = Vec::with_capacity(
            21 + 4 * (self.groups.len() + 1)
                + strings(&self.candidates)
                + strings(&self.argv)
                + strings(&self.env),
        );
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.uid.to_le_bytes());
        out.extend_from_slice(&self.gid.to_le_bytes());
        out.extend_from_slice(&self.daemon_pid.to_le_bytes());
        out.push(u8::from(self.contained));
        put_len(&mut out, self.groups.len());
        for g in &self.groups {
            out.extend_from_slice(&g.to_le_bytes());
        }
        for list in [&self.candidates, &self.argv, &self.env] {
            put_len(&mut out, list.len());
            for s in list {
                put_len(&mut out, s.len());
                out.extend_from_slice(s);
            }
        }
        out
    }

    /// Reads a plan written by [`Plan::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Plan, BadPlan> {
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC {
            return Err(BadPlan("wrong magic"));
        }
        let uid = r.u32()?;
        let gid = r.u32()?;
        let daemon_pid = i32::from_le_bytes(r.array()?);
        let contained = match r.take(1)? {
            [0] => false,
            [1] => true,
            _ => return Err(BadPlan("bad containment flag")),
        };
        let n = r.count(4)?;
        let groups = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
        let candidates = r.strings()?;
        let argv = r.strings()?;
        let env = r.strings()?;
        if !r.0.is_empty() {
            return Err(BadPlan("trailing bytes"));
        }
        if argv.is_empty() || candidates.is_empty() {
            return Err(BadPlan("no program"));
        }
        let nul = |v: &Vec<Vec<u8>>| v.iter().any(|s| s.contains(&0));
        if nul(&candidates) || nul(&argv) || nul(&env) {
            return Err(BadPlan("a NUL byte inside a string"));
        }
        Ok(Plan {
            uid,
            gid,
            groups,
            daemon_pid,
            contained,
            candidates,
            argv,
            env,
        })
    }
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    // Plans are far below 4 GiB (MAX_PLAN_BYTES); saturate, never wrap.
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BadPlan> {
        if self.0.len() < n {
            return Err(BadPlan("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], BadPlan> {
        self.take(N)?.try_into().map_err(|_| BadPlan("truncated"))
    }

    fn u32(&mut self) -> Result<u32, BadPlan> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// A count of items of at least `min_size` bytes each, checked against
    /// what is left (a forged count cannot make a huge allocation).
    fn count(&mut self, min_size: usize) -> Result<usize, BadPlan> {
        let n = usize::try_from(self.u32()?).map_err(|_| BadPlan("count too large"))?;
        if n.saturating_mul(min_size) > self.0.len() {
            return Err(BadPlan("count beyond the end"));
        }
        Ok(n)
    }

    fn strings(&mut self) -> Result<Vec<Vec<u8>>, BadPlan> {
        let n = self.count(4)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let len = self.count(1)?;
            out.push(self.take(len)?.to_vec());
        }
        Ok(out)
    }
}

/// The helper's steps, named in the error when one fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    /// Reading and checking the plan.
    ReadPlan = 0,
    /// Asking for the parent-death signal and checking the daemon.
    WatchDaemon = 1,
    /// Becoming the run's reaper and forking the agent.
    Supervise = 2,
    /// Joining the run's cgroup.
    JoinCgroup = 3,
    /// Resetting the signals.
    ResetSignals = 4,
    /// setsid.
    Session = 5,
    /// setgroups.
    Groups = 6,
    /// setgid.
    Gid = 7,
    /// setuid.
    Uid = 8,
    /// Proving root cannot be taken back.
    DropForGood = 9,
    /// The parent-death signal after the drop.
    DeathSignal = 10,
    /// fchdir into the profile.
    Workdir = 11,
    /// execve.
    Exec = 12,
}

impl Step {
    const ALL: [Step; 13] = [
        Step::ReadPlan,
        Step::WatchDaemon,
        Step::Supervise,
        Step::JoinCgroup,
        Step::ResetSignals,
        Step::Session,
        Step::Groups,
        Step::Gid,
        Step::Uid,
        Step::DropForGood,
        Step::DeathSignal,
        Step::Workdir,
        Step::Exec,
    ];

    /// In words, for the run's error.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::ReadPlan => "read the plan",
            Step::WatchDaemon => "watch the daemon (it may have just died)",
            Step::Supervise => "start the agent under its reaper",
            Step::JoinCgroup => "start the agent in the run's cgroup",
            Step::ResetSignals => "reset the signals",
            Step::Session => "start a session",
            Step::Groups => "set the groups",
            Step::Gid => "set the gid",
            Step::Uid => "set the uid",
            Step::DropForGood => "drop root for good (setuid(0) still worked)",
            Step::DeathSignal => "ask for the parent-death signal",
            Step::Workdir => "enter the profile",
            Step::Exec => "exec",
        }
    }
}

/// A report of the helper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report {
    /// The agent's first process was forked with this pid (its process
    /// group and session id too).
    Started(i32),
    /// A step failed with this errno; the agent never ran.
    Failed(Step, i32),
    /// The agent's first process ended with this wait status.
    Exited(i32),
}

/// The size of one encoded report.
pub const REPORT_BYTES: usize = 12;

impl Report {
    /// Its bytes.
    pub fn encode(self) -> [u8; REPORT_BYTES] {
        let (kind, a, b): (u32, i32, i32) = match self {
            Report::Started(pid) => (1, pid, 0),
            Report::Failed(step, errno) => (2, step as i32, errno),
            Report::Exited(status) => (3, status, 0),
        };
        let mut out = [0u8; REPORT_BYTES];
        out[..4].copy_from_slice(&kind.to_le_bytes());
        out[4..8].copy_from_slice(&a.to_le_bytes());
        out[8..].copy_from_slice(&b.to_le_bytes());
        out
    }

    /// Reads one report; `None` for bytes no helper writes.
    pub fn decode(bytes: &[u8; REPORT_BYTES]) -> Option<Report> {
        let word = |i: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&bytes[i..i + 4]);
            w
        };
        let (kind, a, b) = (
            u32::from_le_bytes(word(0)),
            i32::from_le_bytes(word(4)),
            i32::from_le_bytes(word(8)),
        );
        match kind {
            1 => Some(Report::Started(a)),
            2 => {
                let step = usize::try_from(a).ok().and_then(|i| Step::ALL.get(i))?;
                Some(Report::Failed(*step, b))
            }
            3 => Some(Report::Exited(a)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_and_reports_survive_the_trip_and_forgeries_are_refused() -> Result<(), BadPlan> {
        let plan = Plan {
            uid: 1001,
            gid: 1001,
            groups: vec![1001, 27],
            daemon_pid: 4242,
            contained: true,
            candidates: vec![b"/bin/true".to_vec()],
            argv: vec![b"true".to_vec(), b"".to_vec()],
            env: vec![b"A=b".to_vec()],
        };
        let bytes = plan.encode();
        assert_eq!(Plan::decode(&bytes)?, plan);
        for cut in 0..bytes.len() {
            assert!(Plan::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = bytes.clone();
        huge[17..21].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Plan::decode(&huge).is_err());
        for r in [
            Report::Started(7),
            Report::Failed(Step::Exec, 2),
            Report::Exited(256),
        ] {
            assert_eq!(Report::decode(&r.encode()), Some(r));
        }
        assert_eq!(Report::decode(&[9; REPORT_BYTES]), None);
        Ok(())
    }
}
