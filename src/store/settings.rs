//! The user's settings: `profile.toml`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Deserialize;

use super::{Problem, Result, Store};

const PATH: &str = "profile.toml";

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
    in_force: InForce,
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
    pub fn get(&self, store: &Store<'_>) -> InForce {
        let account = store.dir().account();
        let key = (account.name.clone(), account.uid.0);
        let stamp = match store.dir().stamp(PATH) {
            Ok(s) => s.map(|s| s.key()),
            Err(e) => Some(format!("unreadable: {e}")),
        };
        let mut map = self
            .by_account
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(kept) = map.get(&key)
            && kept.stamp == stamp
        {
            return kept.in_force.clone();
        }
        let previous = map.get(&key).map(|k| k.in_force.settings.clone());
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
        map.insert(
            key,
            Kept {
                stamp,
                in_force: in_force.clone(),
            },
        );
        in_force
    }
}
