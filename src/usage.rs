//! Request counts per account per day, kept in memory and appended to each
//! user's `logs/usage/YYYY-MM.jsonl` now and then (a write per request
//! would cost an fsync per request).

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;

use crate::accounts::{self, UserId};
use crate::api::AppState;
use crate::timefmt;

/// Counts not yet written.
#[derive(Debug, Default)]
pub struct Usage {
    /// By account and UTC day (days since 1970: no date to format per
    /// request).
    counts: Mutex<HashMap<(UserId, u64), u64>>,
}

/// One line of a usage log.
#[derive(Debug, Serialize)]
pub struct Line<'a> {
    /// When the line was written.
    pub time: String,
    /// What is counted.
    pub kind: &'a str,
    /// The day counted (UTC).
    pub day: &'a str,
    /// How many since the previous line for that day.
    pub count: u64,
}

impl Usage {
    /// Counts one request of `uid` today.
    pub fn request(&self, uid: UserId) {
        let day = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() / 86_400);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry((uid, day)).or_insert(0) += 1;
    }

    /// Takes every pending count: (uid, day, count).
    pub fn drain(&self) -> Vec<(UserId, String, u64)> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts
            .drain()
            .map(|((uid, day), n)| (uid, timefmt::day(day), n))
            .collect()
    }
}

/// Appends the pending counts to each account's `logs/usage/YYYY-MM.jsonl`.
/// Accounts that are gone or have no profile any more are skipped.
pub fn flush(state: &AppState) {
    for (uid, day, count) in state.auth.usage.drain() {
        let Ok(Some(account)) = accounts::by_uid(uid) else {
            continue;
        };
        // Only a profile the account already owns: counting requests must
        // never adopt a tree (that is audited, and done on a request).
        let profile = match state.root().open_owned(&account) {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!("usage of {}: {e}", account.name);
                continue;
            }
        };
        let line = Line {
            time: timefmt::now_rfc3339(),
            kind: "requests",
            day: &day,
            count,
        };
        let Ok(mut json) = serde_json::to_vec(&line) else {
            continue;
        };
        json.push(b'\n');
        let month = day.get(..7).unwrap_or(&day);
        if let Err(e) = profile.append(&format!("logs/usage/{month}.jsonl"), &json) {
            tracing::warn!("usage log of {}: {e}", account.name);
        }
    }
}
