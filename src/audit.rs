//! The audit trail: one JSON line per change, in the user's
//! `logs/audit/YYYY-MM-DD.jsonl` and, for acts on another account's profile
//! or by the system, in the state directory's `audit/system-YYYY-MM-DD.jsonl`.
//!
//! A failure to write an audit line is logged loudly but does not undo the
//! act it describes: the act already happened.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use serde::Serialize;

use crate::profile::ProfileDir;
use crate::timefmt;

/// One audit record.
#[derive(Clone, Debug, Serialize)]
pub struct Line<'a> {
    /// When, RFC 3339 UTC.
    pub time: String,
    /// Who acted (account name, or `root`).
    pub actor: &'a str,
    /// Whose profile was acted on.
    pub user: &'a str,
    /// What was done, e.g. `memory.create`.
    pub action: &'a str,
    /// On what: a record id or relative path.
    pub target: &'a str,
    /// `ok`, or `refused: …` / `error: …`.
    pub result: &'a str,
}

/// The system audit log in the state directory (root only, 0700).
#[derive(Clone, Debug)]
pub struct SystemLog {
    dir: PathBuf,
}

impl SystemLog {
    /// A log writing into `dir`, which must exist and belong to root.
    pub fn new(dir: PathBuf) -> SystemLog {
        SystemLog { dir }
    }

    /// Appends `line` to today's file.
    pub fn append(&self, line: &Line<'_>) {
        let path = self.dir.join(format!("system-{}.jsonl", timefmt::today()));
        let result = (|| {
            let mut json = serde_json::to_vec(line).map_err(std::io::Error::other)?;
            json.push(b'\n');
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&path)?;
            f.write_all(&json)?;
            f.sync_data()
        })();
        if let Err(e) = result {
            tracing::error!("system audit log {}: {e}", path.display());
        }
    }
}

/// Who is acting and where their acts are recorded.
#[derive(Clone, Debug)]
pub struct Auditor<'a> {
    /// The system log.
    pub system: &'a SystemLog,
    /// The acting account's name.
    pub actor: &'a str,
    /// Whether the actor acts on someone else's profile (admin), which also
    /// goes to the system log.
    pub on_behalf: bool,
}

impl<'a> Auditor<'a> {
    /// The auditor of the daemon's own work in a profile (a built-in
    /// agent): `actor` names it; nothing is done on someone's behalf.
    pub fn daemon(system: &'a SystemLog, actor: &'a str) -> Auditor<'a> {
        Auditor {
            system,
            actor,
            on_behalf: false,
        }
    }
    /// Records a read of another account's profile: admins' reads are
    /// audited, an owner's own reads are not.
    pub fn record_access(&self, profile: &ProfileDir, action: &str, target: &str) {
        if self.on_behalf {
            self.record(profile, action, target, "ok");
        }
    }

    /// Records `action` on `target` in `profile` with `result`.
    pub fn record(&self, profile: &ProfileDir, action: &str, target: &str, result: &str) {
        let user = profile.account().name.as_str();
        let line = Line {
            time: timefmt::now_rfc3339(),
            actor: self.actor,
            user,
            action,
            target,
            result,
        };
        match serde_json::to_vec(&line) {
            Ok(mut json) => {
                json.push(b'\n');
                let rel = format!("logs/audit/{}.jsonl", timefmt::today());
                if let Err(e) = profile.append(&rel, &json) {
                    tracing::error!("audit log of {user}: {e}");
                }
            }
            Err(e) => tracing::error!("audit line for {user}: {e}"),
        }
        if self.on_behalf {
            self.system.append(&line);
        }
    }
}
