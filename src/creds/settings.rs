//! The `[credentials]` section of the system config: which providers may
//! fall back to the host's key, and the endpoint each host key may go to.
//!
//! A host key is only ever sent by the daemon's own code to the endpoint
//! pinned here for its provider (rule 10), so a provider listed in
//! `fallback` without a pinned endpoint is a config error: it could never
//! be used, and saying so at `check-config` beats a silent "no key" later.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use serde::Deserialize;

use super::endpoint::{Endpoint, RawEndpoint};
use super::format::check_provider;

/// The validated `[credentials]` section.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// For which providers the host's key stands in for a user's.
    pub fallback: Fallback,
    /// Where each provider's host key may be sent.
    pub endpoints: BTreeMap<String, Endpoint>,
}

/// Which providers may use the host's key when a user has none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Fallback {
    /// None (the default): every user brings their own keys.
    #[default]
    Never,
    /// Every provider with a pinned endpoint (`fallback = ["*"]`).
    Any,
    /// These providers only.
    Only(BTreeSet<String>),
}

impl Settings {
    /// The endpoint the host's key for `provider` may be sent to, when the
    /// host's key may stand in for a user's: fallback allows `provider` and
    /// an endpoint is pinned for it. `None`: never use the host's key.
    pub fn host_endpoint(&self, provider: &str) -> Option<&Endpoint> {
        let allowed = match &self.fallback {
            Fallback::Never => false,
            Fallback::Any => true,
            Fallback::Only(set) => set.contains(provider),
        };
        allowed.then(|| self.endpoints.get(provider)).flatten()
    }
}

/// The `[credentials]` section as written; unknown keys are errors.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    #[serde(default)]
    fallback: Vec<toml::Spanned<FallbackName>>,
    #[serde(default)]
    endpoints: BTreeMap<String, toml::Spanned<RawEndpoint>>,
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

impl RawSettings {
    /// Validates the section as a whole; an error carries the byte range
    /// of the offending value (the caller turns it into file:line).
    pub fn validate(self) -> Result<Settings, (Range<usize>, String)> {
        let mut endpoints = BTreeMap::new();
        for (provider, raw) in self.endpoints {
            let span = raw.span();
            if let Err(e) = check_provider(&provider) {
                return Err((
                    span,
                    format!("{e}; the keys of [credentials.endpoints] are provider names"),
                ));
            }
            endpoints.insert(provider, raw.into_inner().0);
        }
        let mut names = BTreeSet::new();
        for spanned in self.fallback {
            let span = spanned.span();
            let name = spanned.into_inner().0;
            let pinned = if name == "*" {
                !endpoints.is_empty()
            } else {
                endpoints.contains_key(&name)
            };
            if !pinned {
                let which = if name == "*" {
                    "fallback = [\"*\"], but no endpoint is pinned for any provider".to_owned()
                } else {
                    format!("fallback lists {name:?}, but no endpoint is pinned for it")
                };
                let example = if name == "*" { "openai" } else { &name };
                return Err((
                    span,
                    format!(
                        "credentials.fallback: {which} in [credentials.endpoints], and a host \
                         key is sent nowhere else; add e.g. {example} = \
                         \"https://api.openai.com/v1\" there"
                    ),
                ));
            }
            names.insert(name);
        }
        let fallback = if names.contains("*") {
            Fallback::Any
        } else if names.is_empty() {
            Fallback::Never
        } else {
            Fallback::Only(names)
        };
        Ok(Settings {
            fallback,
            endpoints,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, Error};

    fn parse(text: &str) -> Result<Config, Error> {
        Config::parse(text, Path::new("/etc/profiled/profiled.toml"))
    }

    const PINNED: &str = "[credentials.endpoints]\nopenai = \"https://api.openai.com/v1\"\n\
        ollama-local = { url = \"http://127.0.0.1:11434/v1\", allow_loopback_http = true }\n";

    #[test]
    fn fallback_is_off_by_default_and_per_provider_to_its_pinned_endpoint() -> Result<(), Error> {
        let c = parse("")?;
        assert!(c.credentials.host_endpoint("openai").is_none());
        let c = parse(&format!(
            "[credentials]\nfallback = [\"openai\", \"ollama-local\"]\n{PINNED}"
        ))?;
        let url = |p: &str| c.credentials.host_endpoint(p).map(|e| e.url().to_owned());
        assert_eq!(url("openai").as_deref(), Some("https://api.openai.com/v1"));
        assert_eq!(
            url("ollama-local").as_deref(),
            Some("http://127.0.0.1:11434/v1")
        );
        assert_eq!(url("anthropic"), None);
        // "*": every provider that has a pinned endpoint, and no other.
        let c = parse(&format!("[credentials]\nfallback = [\"*\"]\n{PINNED}"))?;
        assert!(c.credentials.host_endpoint("ollama-local").is_some());
        assert!(c.credentials.host_endpoint("anthropic").is_none());
        // A pinned endpoint alone allows nothing.
        let c = parse(PINNED)?;
        assert!(c.credentials.host_endpoint("openai").is_none());
        Ok(())
    }

    fn error_of(text: &str) -> String {
        parse(text).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn a_fallback_without_a_pinned_endpoint_or_a_bad_endpoint_names_the_line() {
        let err = error_of("[credentials]\nfallback = [\"openai\"]\n");
        assert!(
            err.starts_with("/etc/profiled/profiled.toml:2: credentials.fallback:")
                && err.contains("[credentials.endpoints]"),
            "{err}"
        );
        let err = error_of("[credentials]\nfallback = [\"*\"]\n");
        assert!(err.contains(":2:") && err.contains("any provider"), "{err}");
        for (line, why) in [
            ("openai = \"http://api.openai.com/v1\"", "plain http"),
            (
                "openai = { url = \"http://10.1.2.3/v1\", allow_loopback_http = true }",
                "loopback",
            ),
            ("openai = \"https://u:p@api.openai.com/v1\"", "user name"),
            ("openai = \"file:///etc/passwd\"", "https"),
            ("openai = { uri = \"https://x/v1\" }", "write a URL"),
        ] {
            let err = error_of(&format!("[credentials.endpoints]\n\n{line}\n"));
            assert!(
                err.starts_with("/etc/profiled/profiled.toml:3: credentials.endpoints.openai:")
                    && err.contains(why),
                "{line}: {err}"
            );
        }
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
