//! The run log: one JSON line per run in the profile's
//! `logs/agents/<agent>.jsonl`, written by the daemon through the profile's
//! checked append (owned by the account). See docs/FORMATS.md.

use serde::{Deserialize, Serialize};

use crate::profile::ProfileDir;

/// One run as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// The run's id (ULID; also `$PROFILED_RUN_ID`).
    pub run_id: String,
    /// The agent.
    pub agent: String,
    /// The account it ran for.
    pub user: String,
    /// What started it: `schedule`, `manual`, `cycle` or `change:<path>`.
    pub trigger: String,
    /// The scheduled slot (Unix seconds) of a scheduled cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<i64>,
    /// When it started and ended (RFC 3339, UTC, with fractions).
    pub start: String,
    /// See `start`.
    pub end: String,
    /// How long it ran, in milliseconds.
    pub duration_ms: u64,
    /// `ok`, `failed`, `timeout`, `stopped`, `error` or `skipped`.
    pub status: String,
    /// The exit code, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that ended it, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// What went wrong, in words the user can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The end of its output (or a built-in's summary).
    #[serde(default)]
    pub output: String,
    /// What the user should know that did not stop the run, in words to
    /// act on (e.g. a declared key they have none of).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The process id of the daemon that ran it.
    pub daemon_pid: u32,
}

/// The current time as RFC 3339 with microseconds, so runs of a cycle
/// (often under a second each) can be ordered from the log.
pub fn precise_now() -> String {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    time::OffsetDateTime::now_utc()
        .format(fmt)
        .unwrap_or_else(|_| crate::timefmt::now_rfc3339())
}

/// The log file of `agent`, relative to the profile.
pub fn path(agent: &str) -> String {
    format!("logs/agents/{agent}.jsonl")
}

/// Where the log goes when it is rotated: one previous file is kept.
fn previous(agent: &str) -> String {
    format!("logs/agents/{agent}.jsonl.1")
}

/// A log this large is rotated before the next line: well under the
/// largest file the daemon reads back (`limits.max_record_bytes`, 1 MiB by
/// default), so `agent logs` can always read it, and the two files together
/// bound what a frequent agent keeps (about 2,000 runs each).
const ROTATE_AT: u64 = 512 * 1024;

/// Moves a full log aside to `<agent>.jsonl.1` (replacing the previous
/// one), so appends start a new file.
fn rotate_if_full(profile: &ProfileDir, agent: &str) -> Result<(), String> {
    let current = path(agent);
    match profile.stamp(&current) {
        Ok(Some(stamp)) if stamp.size() >= ROTATE_AT => {}
        Ok(_) => return Ok(()),
        Err(e) => return Err(e.to_string()),
    }
    let old = previous(agent);
    match profile.remove(&old) {
        Ok(()) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.to_string()),
    }
    profile.rename(&current, &old).map_err(|e| e.to_string())
}

/// Appends `run` to the profile's log of its agent; with `durable`, syncs
/// it before returning. A cycle passes `false` and syncs the filesystem
/// once at its end ([`sync_all`]): a sync per user forces a journal commit
/// per user and triples the cost of a cycle of small agents. A process
/// crash loses nothing either way (the line is written); a power cut
/// during a cycle may lose that cycle's lines.
pub fn append(profile: &ProfileDir, run: &Run, durable: bool) -> Result<(), String> {
    rotate_if_full(profile, &run.agent)?;
    let mut line = serde_json::to_vec(run).map_err(|e| e.to_string())?;
    line.push(b'\n');
    let file = profile
        .append_unsynced(&path(&run.agent), &line)
        .map_err(|e| e.to_string())?;
    if durable {
        file.sync_data().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Makes the run logs written so far durable: one `syncfs` of the
/// filesystem holding `profile`.
pub fn sync_all(profile: &ProfileDir) {
    if let Err(e) = rustix::fs::syncfs(profile.dir_fd()) {
        tracing::error!("cannot sync the run logs of the cycle: {e}");
    }
}

/// The newest `limit` runs of `agent` in `profile`, newest first, from the
/// log and, when it holds fewer, the rotated one. A line that does not
/// parse (edited by hand) is left out.
pub fn newest(
    profile: &ProfileDir,
    agent: &str,
    limit: usize,
) -> Result<Vec<Run>, crate::profile::Error> {
    let mut runs = Vec::new();
    for file in [path(agent), previous(agent)] {
        if runs.len() >= limit {
            break;
        }
        let data = match profile.read(&file) {
            Ok(d) => d,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        let text = String::from_utf8_lossy(&data);
        runs.extend(
            text.lines()
                .rev()
                .filter_map(|l| serde_json::from_str::<Run>(l).ok())
                .take(limit - runs.len()),
        );
    }
    Ok(runs)
}
