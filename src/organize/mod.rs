//! The `organize` agent: asks the user's own model to tag new memories
//! (front matter `processed = false`), writes the tags back and marks them
//! processed, and records the tokens used in `logs/usage/YYYY-MM.jsonl`.
//!
//! The endpoint and model come from the user's `profile.toml` `[model]`
//! (`provider`, default `openai`; `base_url`; `name`), the key from the
//! credentials resolver (the user's own, or the host's where fallback is
//! allowed). The user's own key goes to their `base_url`; the host's key
//! only to the endpoint the administrator pinned for the provider (rule
//! 10): a `base_url` naming anything else gets no request and a status
//! that says so. Without a model or a key no request is sent and the run
//! says what to set. A key the endpoint refuses (401/403) is remembered by its
//! fingerprint in `.profiled/organize-rejected` (never the key): later runs
//! send nothing until the key changes.

pub mod chat;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::{Auditor, SystemLog};
use crate::builtin::Summary;
use crate::config::Config;
use crate::creds::{self, Resolved, Source, Vault};
use crate::profile::{self, ProfileDir};
use crate::store::{self, Memory, MemoryUpdate, SettingsInForce, Store};
use crate::timefmt;

/// Where a refused key's fingerprint is kept.
pub const REJECTED: &str = ".profiled/organize-rejected";
/// The name organize acts under in audit lines.
pub const ACTOR: &str = "agent:organize";
/// Memories sent in one run at most; the rest wait for the next run.
pub const MAX_PER_RUN: usize = 100;
/// Characters of a memory sent at most.
const MAX_TEXT_CHARS: usize = 8000;
/// Tags kept from one answer at most.
const MAX_TAGS: usize = 8;
const NO_MODEL: &str = "no model configured in profile.toml [model]: set base_url and name \
     (e.g. base_url = \"https://api.openai.com/v1\", name = \"gpt-4o-mini\")";
const PROMPT: &str = "You tag personal notes. Answer with JSON only, exactly \
{\"tags\": [\"tag\", ...]}: 1 to 5 short lowercase tags that say what the note is about.";

/// An error that stopped the run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The profile's files failed.
    #[error("organize: {0}")]
    Profile(#[from] profile::Error),
    /// The record store failed.
    #[error("organize: {0}")]
    Store(#[from] store::Error),
    /// The credentials could not be opened (not a missing key).
    #[error("organize: {0}")]
    Creds(#[from] creds::Error),
    /// A call to the model failed (not a refused key): the run stopped
    /// there, and the next one tries again.
    #[error(
        "organize: the model call failed after {tagged} memories were tagged, {waiting} wait          for the next run: {reason}"
    )]
    Model {
        /// Why, as the HTTP client or the endpoint said.
        reason: String,
        /// Memories tagged before the failure (kept).
        tagged: u64,
        /// Memories left for the next run.
        waiting: u64,
    },
}

#[derive(Deserialize)]
struct TagAnswer {
    tags: Vec<String>,
}

/// The usage line of a run that used a model.
#[derive(Serialize)]
struct TokensLine<'a> {
    time: String,
    kind: &'a str,
    day: &'a str,
    count: u64,
    agent: &'a str,
    provider: &'a str,
    model: &'a str,
    requests: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
}

/// Tags `dir`'s new memories with its account's model, as its
/// profile.toml says now.
pub fn run(config: &Config, dir: &ProfileDir) -> Result<Summary, Error> {
    run_with(config, dir, &SettingsInForce::default())
}

/// [`run`] with the settings in force from `settings` (the daemon's cache
/// of the last valid profile.toml: an invalid edit keeps the model that was
/// configured before).
pub fn run_with(
    config: &Config,
    dir: &ProfileDir,
    settings: &SettingsInForce,
) -> Result<Summary, Error> {
    let system = SystemLog::new(config.paths.audit_dir());
    let auditor = Auditor::daemon(&system, ACTOR);
    let store = Store::new(dir, &auditor);
    let in_force = settings.get(&store);
    if let (None, Some(problem)) = (&in_force.settings.model, &in_force.problem) {
        return Ok(Summary::attention(format!(
            "profile.toml is invalid, so no model is known: {problem}"
        )));
    }
    let settings = in_force.settings;
    let model = settings.model.clone().unwrap_or_default();
    let Some(name) = model.name.as_deref() else {
        return Ok(Summary::attention(NO_MODEL.into()));
    };
    let provider = model.provider.as_deref().unwrap_or("openai");
    let todo = unprocessed(&store)?;
    if todo.is_empty() {
        return Ok(Summary::of(vec![("tagged", 0)], &[]));
    }
    let vault = Vault::open(&config.paths.state_dir)?;
    let key = match vault.resolve(dir, provider, &config.credentials) {
        Ok(k) => k,
        Err(
            e @ (creds::Error::NoKey { .. }
            | creds::Error::InvalidProvider { .. }
            | creds::Error::Broken { .. }),
        ) => {
            return Ok(Summary::attention(e.to_string()));
        }
        Err(e) => return Err(e.into()),
    };
    // Rule 10: the user's own key goes where the user says; the host's
    // only to the endpoint pinned with it, never to the user's base_url.
    let endpoint = match (&key, model.base_url.as_deref()) {
        (Resolved::User(k), Some(base_url)) => chat::Endpoint::own(k, base_url, name),
        (Resolved::User(_), None) => return Ok(Summary::attention(NO_MODEL.into())),
        (Resolved::Host(k), None) => chat::Endpoint::pinned(k, name),
        (Resolved::Host(k), Some(base_url)) if k.endpoint().is(base_url) => {
            chat::Endpoint::pinned(k, name)
        }
        (Resolved::Host(k), Some(base_url)) => {
            return Ok(Summary::attention(format!(
                "you have no {provider} key of your own, and the host's is sent only to the \
                 endpoint the administrator pinned ({}), not to your base_url ({base_url}): \
                 set your own key with `profilectl creds set {provider}`, or set base_url in \
                 profile.toml [model] to {} (or remove it) to use the host's",
                k.endpoint().url(),
                k.endpoint().url()
            )));
        }
    };
    let print = fingerprint(provider, &key);
    if rejected(dir)?.as_deref() == Some(print.as_str()) {
        return Ok(Summary::attention(rejected_message(provider, key.source())));
    }
    let (mut tagged, mut requests) = (0u64, 0u64);
    let (mut prompt, mut completion, mut total) = (0u64, 0u64, 0u64);
    let mut problems = Vec::new();
    let mut attention = None;
    let mut failed = None;
    for m in &todo {
        let text: String = m.text.chars().take(MAX_TEXT_CHARS).collect();
        requests += 1;
        match endpoint.complete(PROMPT, &text) {
            Ok((answer, tokens)) => {
                prompt += tokens.prompt_tokens;
                completion += tokens.completion_tokens;
                total += tokens
                    .total_tokens
                    .max(tokens.prompt_tokens + tokens.completion_tokens);
                let Some(tags) = parse_tags(&answer) else {
                    problems.push(format!("{}: the model's answer had no usable tags", m.id));
                    continue;
                };
                let mut all = m.tags.clone();
                for t in tags {
                    if !all.contains(&t) {
                        all.push(t);
                    }
                }
                store.update_memory(
                    &m.id,
                    MemoryUpdate {
                        text: m.text.clone(),
                        tags: Some(all),
                        processed: Some(true),
                    },
                )?;
                tagged += 1;
            }
            Err(chat::Error::Rejected(status)) => {
                dir.write(
                    REJECTED,
                    format!("{print}\n").as_bytes(),
                    profile::WriteMode::Replace,
                )?;
                store.audit("organize.key", provider, &format!("refused: HTTP {status}"));
                attention = Some(rejected_message(provider, key.source()));
                break;
            }
            Err(chat::Error::Failed(reason)) => {
                // Stop here: the next scheduled run tries again, no loop.
                failed = Some(reason);
                break;
            }
        }
    }
    if requests > 0 {
        record_tokens(dir, provider, name, requests, prompt, completion, total);
    }
    // A run whose model could not be reached is a failed run (its status
    // says so), not an "ok" with a remark.
    if let Some(reason) = failed {
        return Err(Error::Model {
            reason,
            tagged,
            waiting: (todo.len() as u64).saturating_sub(tagged),
        });
    }
    let mut summary = Summary::of(
        vec![
            ("tagged", tagged),
            ("requests", requests),
            ("tokens", total),
            ("waiting", (todo.len() as u64).saturating_sub(tagged)),
        ],
        &problems,
    );
    if let Some(a) = attention {
        summary.line = format!("{a}; {}", summary.line);
        summary.attention = Some(a);
    }
    Ok(summary)
}

fn rejected_message(provider: &str, source: Source) -> String {
    match source {
        Source::User => format!(
            "your {provider} key was rejected; set a new one with `profilectl creds set {provider}`"
        ),
        Source::Host => format!(
            "the host's {provider} key was rejected by its endpoint; ask an administrator to \
             renew it, or set your own with `profilectl creds set {provider}`"
        ),
    }
}

/// Up to [`MAX_PER_RUN`] memories not yet processed, oldest first.
fn unprocessed(store: &Store<'_>) -> Result<Vec<Memory>, Error> {
    let mut out = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let page = store.list_memories(1000, before.as_deref())?;
        out.extend(page.items.into_iter().filter(|m| !m.processed));
        match page.next {
            Some(n) => before = Some(n),
            None => break,
        }
    }
    out.reverse();
    out.truncate(MAX_PER_RUN);
    Ok(out)
}

/// The tags of a model's answer: JSON `{"tags": [...]}`, possibly inside a
/// Markdown code fence; tags are trimmed, lowercased and checked.
fn parse_tags(answer: &str) -> Option<Vec<String>> {
    let start = answer.find('{')?;
    let end = answer.rfind('}')?;
    let parsed: TagAnswer = serde_json::from_str(answer.get(start..=end)?).ok()?;
    let tags: Vec<String> = parsed
        .tags
        .into_iter()
        .map(|t| t.trim().to_lowercase())
        .filter(|t| !t.is_empty() && t.chars().count() <= 64 && !t.chars().any(char::is_control))
        .take(MAX_TAGS)
        .collect();
    (!tags.is_empty()).then_some(tags)
}

/// A short, one-way name of `key` for `provider`, to tell whether the key
/// changed without keeping it.
fn fingerprint(provider: &str, key: &Resolved) -> String {
    let secret = match key {
        Resolved::User(k) => k.secret(),
        Resolved::Host(k) => k.secret(),
    };
    let digest = Sha256::digest(format!(
        "profiled-key-fingerprint\0{provider}\0{}",
        secret.expose()
    ));
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("{provider} {hex}")
}

/// The fingerprint of the key last refused, if any.
fn rejected(dir: &ProfileDir) -> Result<Option<String>, Error> {
    match dir.read(REJECTED) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).trim().to_owned())),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Appends the run's token count to the usage log; a failure is logged
/// (the tags are written, only the bookkeeping is lost).
fn record_tokens(
    dir: &ProfileDir,
    provider: &str,
    model: &str,
    requests: u64,
    prompt: u64,
    completion: u64,
    total: u64,
) {
    let day = timefmt::today();
    let line = TokensLine {
        time: timefmt::now_rfc3339(),
        kind: "model_tokens",
        day: &day,
        count: total,
        agent: "organize",
        provider,
        model,
        requests,
        prompt_tokens: prompt,
        completion_tokens: completion,
    };
    let Ok(mut json) = serde_json::to_vec(&line) else {
        return;
    };
    json.push(b'\n');
    let month = day.get(..7).unwrap_or(&day);
    if let Err(e) = dir.append(&format!("logs/usage/{month}.jsonl"), &json) {
        tracing::warn!("usage log of {}: {e}", dir.account().name);
    }
}

#[cfg(test)]
mod tests {
    use super::parse_tags;

    #[test]
    fn tags_from_strict_or_fenced_json() {
        assert_eq!(
            parse_tags(r#"{"tags": [" Work ", "bob"]}"#),
            Some(vec!["work".into(), "bob".into()])
        );
        assert_eq!(
            parse_tags("```json\n{\"tags\": [\"a\"]}\n```"),
            Some(vec!["a".into()])
        );
        assert_eq!(parse_tags("no json here"), None);
        assert_eq!(parse_tags(r#"{"tags": ["", "\u0007"]}"#), None);
    }
}
