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
//!
//! A plain-http loopback endpoint is the admin's only while the admin's
//! service holds the port, so it carries a [`Guard`]: before a host key is
//! sent, the port's listeners must belong to root or to the account the
//! admin named (`listener_user`), see `listener`.

use std::net::{IpAddr, SocketAddr};

use hyper::Uri;
use serde::Deserialize;

use super::listener;
use crate::accounts;

/// A pinned endpoint: the base URL of an OpenAI-compatible API, without
/// `/chat/completions` and without a trailing `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    url: String,
    guard: Option<Guard>,
}

/// Who must be listening on a plain-http loopback endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Guard {
    addr: SocketAddr,
    /// The account besides root that may hold the port.
    user: Option<String>,
}

impl Endpoint {
    /// Checks `url` as an admin wrote it; `loopback_http` allows plain
    /// http to a loopback IP literal, whose port must then be held by root
    /// or by `listener_user`. The error says what to write.
    pub fn parse(
        url: &str,
        loopback_http: bool,
        listener_user: Option<&str>,
    ) -> Result<Endpoint, String> {
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
        let loopback = host.parse::<IpAddr>().ok().filter(IpAddr::is_loopback);
        let guard = match (uri.scheme_str(), loopback) {
            (Some("https"), _) => None,
            (Some("http"), Some(ip)) if loopback_http => Some(Guard {
                addr: SocketAddr::new(ip, authority.port_u16().unwrap_or(80)),
                user: listener_user.map(str::to_owned),
            }),
            (Some("http"), Some(_)) => {
                return Err(format!(
                    "{url:?} is plain http: a host key is sent only over https unless the admin \
                     allows it for a model server on this host; write \
                     {{ url = {url:?}, allow_loopback_http = true }}"
                ));
            }
            (Some("http"), None) => {
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
        };
        if guard.is_none() && listener_user.is_some() {
            return Err(format!(
                "listener_user applies to a plain-http loopback endpoint only, not to {url:?}"
            ));
        }
        if let Some(user) = listener_user
            && !accounts::is_valid_name(user)
        {
            return Err(format!(
                "listener_user {user:?} is not a valid account name; name the account the \
                 model server runs as, e.g. \"ollama\""
            ));
        }
        Ok(Endpoint {
            url: url.trim_end_matches('/').to_owned(),
            guard,
        })
    }

    /// Checks, just before a host key is sent, that a plain-http loopback
    /// endpoint's port is held by root or the named account (and not by
    /// an account that took it while the service was down). Nothing to
    /// check for https: the server proves its name.
    pub fn check_listener(&self) -> Result<(), String> {
        let Some(guard) = &self.guard else {
            return Ok(());
        };
        let mut allowed = vec![0];
        let mut who = "root".to_owned();
        if let Some(name) = &guard.user {
            match accounts::by_name(name) {
                Ok(Some(a)) => allowed.push(a.uid.0),
                Ok(None) => {
                    return Err(format!(
                        "listener_user {name:?} of {} is not an account; the host key was not sent",
                        self.url
                    ));
                }
                Err(e) => return Err(format!("{e}; the host key was not sent")),
            }
            who = format!("root or {name}");
        }
        let holders = listener::holders(guard.addr)?;
        if holders.is_empty() {
            return Err(format!(
                "nothing listens on {} (the model server is down?); the host key was not sent",
                guard.addr
            ));
        }
        if let Some(uid) = holders.iter().find(|u| !allowed.contains(u)) {
            return Err(format!(
                "{} is held by uid {uid}, not by {who} as [credentials.endpoints] says: another \
                 account may have taken the port while the model server was down; the host key \
                 was not sent",
                guard.addr
            ));
        }
        Ok(())
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
    listener_user: Option<String>,
}

impl<'de> Deserialize<'de> for RawEndpoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let written = Written::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "write a URL (\"https://api.openai.com/v1\") or a table \
                 { url = \"http://127.0.0.1:11434/v1\", allow_loopback_http = true, \
                 listener_user = \"ollama\" } (listener_user is optional)",
            )
        })?;
        let (url, loopback_http, user) = match written {
            Written::Url(u) => (u, false, None),
            Written::Table(t) => (t.url, t.allow_loopback_http, t.listener_user),
        };
        Endpoint::parse(&url, loopback_http, user.as_deref())
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
            assert!(Endpoint::parse(ok.0, ok.1, None).is_ok(), "{ok:?}");
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
            assert!(Endpoint::parse(bad.0, bad.1, None).is_err(), "{bad:?}");
        }
        assert!(Endpoint::parse("http://127.0.0.1:1/v1", true, Some("ollama")).is_ok());
        assert!(Endpoint::parse("https://api.openai.com/v1", false, Some("ollama")).is_err());
        assert!(Endpoint::parse("http://127.0.0.1:1/v1", true, Some("-x")).is_err());
        let e = Endpoint::parse("https://api.openai.com/v1/", false, None);
        assert!(e.is_ok_and(|e| e.url() == "https://api.openai.com/v1"
            && e.is("https://api.openai.com/v1/")
            && !e.is("https://api.openai.com/v2")));
    }
}
