//! The persona core: `persona/core.toml`, who the assistant is.

use serde::{Deserialize, Serialize};

use super::{Error, Result, Store};
use crate::profile::WriteMode;

const PATH: &str = "persona/core.toml";

const HEADER: &str = "# Your assistant's persona, written by profiled. Keys: name, pronouns,\n\
# identity, tone, values, language. Edit freely.\n";

/// The persona core. Unknown keys are refused so a typo is caught.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Persona {
    /// The assistant's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Pronouns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pronouns: Option<String>,
    /// Who the assistant is, in a sentence or two.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// How it speaks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tone: Option<String>,
    /// The language it answers in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// What it values.
    #[serde(default)]
    pub values: Vec<String>,
}

impl Persona {
    /// The keys `profilectl persona set` accepts.
    pub const KEYS: &'static [&'static str] =
        &["name", "pronouns", "identity", "tone", "language", "values"];
}

impl Store<'_> {
    /// The persona; the defaults when the file does not exist.
    pub fn persona(&self) -> Result<Persona> {
        Ok(self.read_toml(PATH)?.unwrap_or_default())
    }

    /// Replaces the persona.
    pub fn set_persona(&self, persona: &Persona) -> Result<Persona> {
        let body = toml::to_string(persona).map_err(|e| Error::Input {
            field: "persona".into(),
            reason: e.to_string(),
        })?;
        let text = format!("{HEADER}{body}");
        self.dir.write(PATH, text.as_bytes(), WriteMode::Replace)?;
        self.audit("persona.update", PATH, "ok");
        Ok(persona.clone())
    }
}
