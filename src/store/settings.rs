//! The user's settings: `profile.toml`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

use super::{Problem, Result, Store};

const PATH: &str = "profile.toml";

/// How old a changed `profile.toml`'s last write must be before it is
/// taken. An editor saving in place (nano, `echo >`) truncates the file and
/// then writes it, and a prefix of a valid file is often valid itself (an
/// empty file is): read mid-save, it would replace the settings in force
/// with a fraction of them, and the user's agents and model would vanish
/// for a moment.
pub const SETTLE: Duration = Duration::from_millis(200);

/// The longest a reader waits for a file still being written to settle;
/// after that the settings in force stay as they were (a writer that never
/// stops only keeps its own edits from applying).
const MAX_WAIT: Duration = Duration::from_millis(1000);

/// The user's settings. Unknown keys are refused so a typo is caught.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSettings {
    /// The name the assistant calls the user.
    pub display_name: Option<String>,
    /// IANA time zone.
    pub timezone: Option<String>,
    /// The model agents use.
    pub model: Option<ModelSettings>,
    /// The user's own agents, and `enabled = false` for admins' agents
    /// they do not want (`[agents.NAME]`, see docs/CONFIG.md).
    #[serde(default)]
    pub agents: crate::agents::decl::Table,
}

/// An OpenAI-compatible chat endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// The credential name holding the key.
    pub provider: Option<String>,
    /// The endpoint's base URL.
    pub base_url: Option<String>,
    /// The model name.
    pub name: Option<String>,
}

impl Store<'_> {
    /// The settings; the defaults when the file does not exist.
    pub fn settings(&self) -> Result<UserSettings> {
        Ok(self.read_toml(PATH)?.unwrap_or_default())
    }
}

/// The settings in force for one profile: the last `profile.toml` that
/// validated (the defaults when none has yet), and what is wrong with the
/// file on disk now, if anything (rule 7: an invalid file changes nothing).
#[derive(Clone, Debug, Default)]
pub struct InForce {
    /// The settings that apply.
    pub settings: Arc<UserSettings>,
    /// Why the file on disk is not the one in force (file, line, reason).
    pub problem: Option<Problem>,
}

/// What was last read of one profile's settings.
struct Kept {
    /// The file's stamp when read (`None`: there was no file).
    stamp: Option<String>,
    /// Whether the file had settled when read; an unsettled read is
    /// repeated at the next use even when the stamp is the same.
    settled: bool,
    in_force: InForce,
}

/// Whether a reader waits for a file still being written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Up to [`MAX_WAIT`]: a request just after an edit sees the edit.
    UntilSettled,
    /// Never: what serves every profile from one thread or loop (the
    /// watcher, the agent scheduler and its cycles), which a user who
    /// keeps rewriting her file must not hold up. The watcher reports a
    /// settings change once the file settled, so they read it then.
    No,
}

/// The settings in force of every profile read so far, keyed by account
/// name and uid (a name given to a new person starts afresh). The file is
/// re-read only when its stamp (inode, size, mtime) changed, so a hand edit
/// applies at its next use, with or without the watcher.
#[derive(Default)]
pub struct SettingsInForce {
    by_account: Mutex<HashMap<(String, u32), Kept>>,
}

impl SettingsInForce {
    /// The settings in force for `store`'s profile: what every part of
    /// the daemon reads instead of the file (the watcher calls it when the
    /// file changes, so the last valid version is known before a broken
    /// edit replaces it).
    ///
    /// A file changed less than [`SETTLE`] ago is waited for (up to
    /// [`MAX_WAIT`]); one still changing after that leaves the settings in
    /// force as they were.
    pub fn get(&self, store: &Store<'_>) -> InForce {
        self.read(store, Wait::UntilSettled)
    }

    /// [`SettingsInForce::get`] without waiting: a file changed less than
    /// [`SETTLE`] ago leaves the settings in force as they were.
    pub fn get_now(&self, store: &Store<'_>) -> InForce {
        self.read(store, Wait::No)
    }

    /// The settings in force, waiting for a file still being written as
    /// `wait` says.
    pub fn read(&self, store: &Store<'_>, wait: Wait) -> InForce {
        let account = store.dir().account();
        let key = (account.name.clone(), account.uid.0);
        let waiting_since = Instant::now();
        let (stamp, settled) = loop {
            let (stamp, unsettled_for) = match store.dir().stamp(PATH) {
                Ok(Some(s)) => (Some(s.key()), settling(s.modified(), SystemTime::now())),
                Ok(None) => (None, None),
                Err(e) => (Some(format!("unreadable: {e}")), None),
            };
            let waited = waiting_since.elapsed();
            match unsettled_for {
                Some(left) if wait == Wait::UntilSettled && waited < MAX_WAIT => {
                    std::thread::sleep(left.min(MAX_WAIT - waited));
                }
                left => break (stamp, left.is_none()),
            }
        };
        let lock = || {
            self.by_account
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        };
        // The file is read without the lock held: one profile's slow file
        // must not hold up every other profile's settings.
        let previous = {
            let map = lock();
            match map.get(&key) {
                Some(kept) if kept.stamp == stamp && kept.settled || !settled => {
                    return kept.in_force.clone();
                }
                Some(kept) => Some(kept.in_force.settings.clone()),
                None => None,
            }
        };
        let in_force = match store.settings() {
            Ok(settings) => InForce {
                settings: Arc::new(settings),
                problem: None,
            },
            Err(e) => {
                let kept = if previous.is_some() {
                    "the last good settings stay in force"
                } else {
                    "the defaults are in force"
                };
                tracing::warn!("{}'s {e}; {kept} until it is fixed", account.name);
                InForce {
                    settings: previous.unwrap_or_default(),
                    problem: super::problem_of(e),
                }
            }
        };
        lock().insert(
            key,
            Kept {
                stamp,
                settled,
                in_force: in_force.clone(),
            },
        );
        in_force
    }
}

/// How much longer a file last modified at `modified` is still settling
/// ([`SETTLE`]); `None` once settled. A time in the future (a clock set
/// back, `touch -d`) counts as settled: it would otherwise never settle.
fn settling(modified: SystemTime, now: SystemTime) -> Option<Duration> {
    let age = now.duration_since(modified).ok()?;
    SETTLE.checked_sub(age).filter(|left| !left.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_settles_once_its_last_write_is_settle_old() {
        let now = SystemTime::now();
        assert_eq!(settling(now, now), Some(SETTLE));
        let half = SETTLE / 2;
        assert_eq!(settling(now - half, now), Some(SETTLE - half));
        assert_eq!(settling(now - SETTLE, now), None);
        assert_eq!(settling(now - SETTLE * 10, now), None);
        assert_eq!(settling(now + Duration::from_secs(60), now), None);
    }
}
