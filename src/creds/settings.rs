//! The `[credentials]` section of the system config: which providers may
//! fall back to the host's key.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::format::check_provider;

/// The validated `[credentials]` section.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// For which providers the host's key stands in for a user's.
    pub fallback: Fallback,
}

/// Which providers may use the host's key when a user has none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Fallback {
    /// None (the default): every user brings their own keys.
    #[default]
    Never,
    /// Every provider (`fallback = ["*"]`).
    Any,
    /// These providers only.
    Only(BTreeSet<String>),
}

impl Settings {
    /// Whether the host's key may be used for `provider`.
    pub fn allows_fallback(&self, provider: &str) -> bool {
        match &self.fallback {
            Fallback::Never => false,
            Fallback::Any => true,
            Fallback::Only(set) => set.contains(provider),
        }
    }
}

/// The `[credentials]` section as written; unknown keys are errors.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    #[serde(default)]
    fallback: Vec<FallbackName>,
}

/// A provider name, or `*` for every provider.
struct FallbackName(String);

impl<'de> Deserialize<'de> for FallbackName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s != "*"
            && let Err(e) = check_provider(&s)
        {
            return Err(serde::de::Error::custom(format!(
                "{e}; write provider names such as \"openai\", or \"*\" for every provider"
            )));
        }
        Ok(FallbackName(s))
    }
}

impl From<RawSettings> for Settings {
    fn from(raw: RawSettings) -> Settings {
        let names: BTreeSet<String> = raw.fallback.into_iter().map(|n| n.0).collect();
        let fallback = if names.contains("*") {
            Fallback::Any
        } else if names.is_empty() {
            Fallback::Never
        } else {
            Fallback::Only(names)
        };
        Settings { fallback }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, Error};

    fn parse(text: &str) -> Result<Config, Error> {
        Config::parse(text, Path::new("/etc/profiled/profiled.toml"))
    }

    #[test]
    fn fallback_is_off_by_default_and_per_provider() -> Result<(), Error> {
        let c = parse("")?;
        assert!(!c.credentials.allows_fallback("openai"));
        let c = parse("[credentials]\nfallback = [\"openai\", \"ollama-local\"]\n")?;
        assert!(c.credentials.allows_fallback("openai"));
        assert!(c.credentials.allows_fallback("ollama-local"));
        assert!(!c.credentials.allows_fallback("anthropic"));
        let c = parse("[credentials]\nfallback = [\"*\"]\n")?;
        assert!(c.credentials.allows_fallback("anthropic"));
        Ok(())
    }

    #[test]
    fn bad_names_and_unknown_keys_name_file_line_and_key() {
        let err = parse("[credentials]\nfallback = [\"openai\", \"bad name\"]\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with("/etc/profiled/profiled.toml:2: credentials.fallback:"),
            "{err}"
        );
        assert!(err.contains("bad name"), "{err}");
        let err = parse("\n[credentials]\nfalback = []\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains(":3:") && err.contains("falback"), "{err}");
    }
}
