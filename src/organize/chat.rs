//! One request to an OpenAI-compatible `POST {base_url}/chat/completions`
//! (OpenAI, OpenRouter, a local Ollama…), blocking, with timeouts.
//!
//! ureq 3 (rustls, blocking) fits the agents' blocking worker thread: no
//! second async runtime, https without OpenSSL. Its errors never carry
//! request headers, so the key cannot leak through them.
//!
//! Which key goes where is fixed by the types (rule 10): an [`Endpoint`]
//! is made either from the account's own key and the base URL the account
//! chose, or from a host key and the endpoint pinned with it; no
//! constructor pairs a host key with any other URL. Redirects are never
//! followed, so no answer can steer the request (or the key) elsewhere.
//!
//! The request is made by root on the account's behalf, possibly to a URL
//! of the account's choice: root may reach what the account cannot (a
//! service only root is let through to by the firewall, a cloud metadata
//! address), so nothing of an unexpected answer's body is passed on, only
//! its HTTP status, or where a JSON answer stopped parsing (line and
//! column: serde's messages can quote the text). What a well-formed answer
//! carries (tags) is the point of the request and is kept.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::creds::{self, HostKey, Secret, UserKey};

/// How long to wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a whole request may take (a local model can be slow).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// The largest answer read.
const MAX_ANSWER: u64 = 1024 * 1024;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The endpoint refused the key (401 or 403).
    #[error("the endpoint refused the key (HTTP {0})")]
    Rejected(u16),
    /// Any other failure: network, status, or an answer that is not the
    /// expected JSON.
    #[error("{0}")]
    Failed(String),
}

/// Tokens an answer cost, as the endpoint reports them.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub struct Tokens {
    /// Tokens in the request.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Tokens in the answer.
    #[serde(default)]
    pub completion_tokens: u64,
    /// Both.
    #[serde(default)]
    pub total_tokens: u64,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'a str,
    content: &'a str,
}

#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    messages: Vec<Message<'a>>,
    temperature: f32,
    response_format: serde_json::Value,
}

#[derive(Deserialize)]
struct Answer {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Tokens>,
}

#[derive(Deserialize)]
struct Choice {
    message: AnswerMessage,
}

#[derive(Deserialize)]
struct AnswerMessage {
    content: Option<String>,
}

/// A chat endpoint with its model and key.
pub struct Endpoint<'a> {
    base_url: &'a str,
    model: &'a str,
    key: &'a Secret,
    /// With a host key: its pinned endpoint, checked before each request.
    pinned: Option<&'a creds::Endpoint>,
}

impl<'a> Endpoint<'a> {
    /// The account's own key, sent to the base URL the account chose
    /// (without `/chat/completions`): their key, theirs to send anywhere.
    pub fn own(key: &'a UserKey, base_url: &'a str, model: &'a str) -> Endpoint<'a> {
        Endpoint {
            base_url,
            model,
            key: key.secret(),
            pinned: None,
        }
    }

    /// The host's key, sent to the endpoint the administrator pinned for
    /// it, and nowhere else.
    pub fn pinned(key: &'a HostKey, model: &'a str) -> Endpoint<'a> {
        Endpoint {
            base_url: key.endpoint().url(),
            model,
            key: key.secret(),
            pinned: Some(key.endpoint()),
        }
    }

    /// Sends `system` and `user` messages; the answer's text and its cost.
    pub fn complete(&self, system: &str, user: &str) -> Result<(String, Tokens), Error> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(REQUEST_TIMEOUT))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        let body = serde_json::to_vec(&Request {
            model: self.model,
            messages: vec![
                Message {
                    role: "system",
                    content: system,
                },
                Message {
                    role: "user",
                    content: user,
                },
            ],
            temperature: 0.0,
            response_format: serde_json::json!({"type": "json_object"}),
        })
        .map_err(|e| Error::Failed(e.to_string()))?;
        let url = format!("{}/chat/completions", self.base_url.trim_end_matches('/'));
        if let Some(pinned) = self.pinned {
            // As late as can be: a loopback port may change hands.
            if let Err(e) = pinned.check_listener() {
                tracing::warn!("organize: {url}: {e}");
                return Err(Error::Failed(format!("{url}: {e}")));
            }
        }
        let auth = Zeroizing::new(format!("Bearer {}", self.key.expose()));
        let mut resp = agent
            .post(&url)
            .header("Authorization", auth.as_str())
            .header("Content-Type", "application/json")
            .send(&body[..])
            .map_err(|e| Error::Failed(format!("{url}: {e}")))?;
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(Error::Rejected(status));
        }
        if !(200..300).contains(&status) {
            // The status only, the body unread: see the module's comment.
            let reason = resp.status().canonical_reason().unwrap_or("");
            return Err(Error::Failed(format!(
                "{url}: HTTP {status} {reason} (the answer's body is not shown)"
            )));
        }
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
            .map_err(|e| Error::Failed(format!("{url}: reading the answer: {e}")))?;
        let answer: Answer = serde_json::from_str(&text).map_err(|e| {
            Error::Failed(format!(
                "{url}: not a chat-completions answer (it stops parsing at line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        let content = answer
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content)
            .ok_or_else(|| Error::Failed(format!("{url}: the answer has no message")))?;
        Ok((content, answer.usage.unwrap_or_default()))
    }
}
