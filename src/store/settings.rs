//! The user's settings: `profile.toml`.

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

    /// What is wrong with `profile.toml`, if anything (file, line, reason).
    pub fn settings_problem(&self) -> Option<Problem> {
        self.settings().err().and_then(super::problem_of)
    }
}
