//! [`Endpoint`]: the URL an administrator pinned for a provider in
//! `[credentials.endpoints]`, the only place a host key is ever sent.
//!
//! A host key is worth stealing, so the URL is checked where the admin
//! writes it (`profiled check-config` names the line): `https` with a host,
//! or, only where the admin says so for that provider, plain `http` to a
//! loopback address written as an IP literal (a local model server such as
//! Ollama). A name such as `localhost` is refused for plain http: what it
//! resolves to is up to NSS, not to the admin's line. No user name or
//! password in the URL (it would be logged with it), no query, no fragment.

use std::net::IpAddr;

use hyper::Uri;
use serde::Deserialize;

/// A pinned endpoint: the base URL of an OpenAI-compatible API, without
/// `/chat/completions` and without a trailing `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    url: String,
}

impl Endpoint {
    /// Checks `url` as an admin wrote it; `loopback_http` allows plain
    /// http to a loopback IP literal. The error says what to write.
    pub fn parse(url: &str, loopback_http: bool) -> Result<Endpoint, String> {
        let uri: Uri = url.parse().map_err(|e| {
            format!("{url:?} is not a URL ({e}); write e.g. \"https://api.openai.com/v1\"")
        })?;
        let authority = uri.authority().ok_or_else(|| {
            format!("{url:?} has no host; write e.g. \"https://api.openai.com/v1\"")
        })?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "{url:?} carries a user name or password; put the key in the host's credentials \
                 (`profilectl creds set --host PROVIDER`), not in the URL"
            ));
        }
        if authority.host().is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        if uri.query().is_some() || url.contains('#') {
            return Err(format!(
                "{url:?} has a query or a fragment; write the API's base URL only, \
                 e.g. \"https://api.openai.com/v1\""
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let loopback = host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if loopback && loopback_http => {}
            Some("http") if loopback => {
                return Err(format!(
                    "{url:?} is plain http: a host key is sent only over https unless the admin \
                     allows it for a model server on this host; write \
                     {{ url = {url:?}, allow_loopback_http = true }}"
                ));
            }
            Some("http") => {
                return Err(format!(
                    "{url:?} is plain http to a host that is not a loopback address written as \
                     an IP (127.0.0.1 or [::1]): a host key never crosses a network in clear; \
                     use https"
                ));
            }
            _ => {
                return Err(format!(
                    "{url:?}: the scheme must be https (e.g. \"https://api.openai.com/v1\")"
                ));
            }
        }
        Ok(Endpoint {
            url: url.trim_end_matches('/').to_owned(),
        })
    }

    /// The base URL, without a trailing `/`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether `base_url` (a user's, as written in profile.toml) names this
    /// endpoint: the same text, give or take trailing slashes.
    pub fn is(&self, base_url: &str) -> bool {
        base_url.trim_end_matches('/') == self.url
    }
}

/// An entry of `[credentials.endpoints]` as written: a URL, or a table
/// `{ url = "...", allow_loopback_http = true }`.
pub struct RawEndpoint(pub Endpoint);

#[derive(Deserialize)]
#[serde(untagged)]
enum Written {
    Url(String),
    Table(Table),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    url: String,
    #[serde(default)]
    allow_loopback_http: bool,
}

impl<'de> Deserialize<'de> for RawEndpoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let written = Written::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "write a URL (\"https://api.openai.com/v1\") or a table \
                 { url = \"http://127.0.0.1:11434/v1\", allow_loopback_http = true }",
            )
        })?;
        let (url, loopback_http) = match written {
            Written::Url(u) => (u, false),
            Written::Table(t) => (t.url, t.allow_loopback_http),
        };
        Endpoint::parse(&url, loopback_http)
            .map(RawEndpoint)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::Endpoint;

    #[test]
    fn https_anywhere_http_only_to_a_loopback_ip_when_allowed() {
        for ok in [
            ("https://api.openai.com/v1", false),
            ("https://api.openai.com/v1/", false),
            ("https://10.0.0.5:8443/v1", false),
            ("http://127.0.0.1:11434/v1", true),
            ("http://[::1]:11434/v1", true),
        ] {
            assert!(Endpoint::parse(ok.0, ok.1).is_ok(), "{ok:?}");
        }
        for bad in [
            ("http://127.0.0.1:11434/v1", false),
            ("http://localhost:11434/v1", true),
            ("http://10.0.0.5/v1", true),
            ("ftp://example.com/v1", false),
            ("https://user:pw@api.openai.com/v1", false),
            ("https://api.openai.com/v1?x=1", false),
            ("https://api.openai.com/v1#x", false),
            ("api.openai.com/v1", false),
            ("", false),
        ] {
            assert!(Endpoint::parse(bad.0, bad.1).is_err(), "{bad:?}");
        }
        let e = Endpoint::parse("https://api.openai.com/v1/", false);
        assert!(e.is_ok_and(|e| e.url() == "https://api.openai.com/v1"
            && e.is("https://api.openai.com/v1/")
            && !e.is("https://api.openai.com/v2")));
    }
}
