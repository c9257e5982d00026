//! `/v1/credentials`: an account's provider keys; `/v1/host/credentials`:
//! the host's fallback keys (admins). See docs/API.md.
//!
//! Rule 5 here: a secret goes out only in the answer to its owner's
//! explicit `POST …/reveal`. Admins may list another account's key names
//! and delete a key (audited in both logs), never reveal or set one. No
//! error, log or audit line carries a secret: bodies are parsed into
//! [`creds::Secret`], which never prints, and errors name fields, not values.

use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::extract::{AdminCaller, ApiJson, ApiPath, ApiQuery, Caller, UserQuery};
use super::{ApiError, AppState, blocking};
use crate::audit;
use crate::creds::{self, EntryInfo, Listing, NewKey, Place, Vault};
use crate::profile;
use crate::store::{Problem, Store};
use crate::timefmt;

impl From<creds::Error> for ApiError {
    fn from(e: creds::Error) -> ApiError {
        use creds::Error as E;
        match e {
            E::InvalidProvider { .. } | E::Input { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_input",
                e.to_string(),
            ),
            E::NotFound { .. } => ApiError::not_found(e.to_string()),
            E::NoKey { .. } => ApiError::new(StatusCode::NOT_FOUND, "no_key", e.to_string()),
            E::Broken { .. } => {
                ApiError::new(StatusCode::CONFLICT, "credentials_broken", e.to_string())
            }
            E::NothingToReset(_) => {
                ApiError::new(StatusCode::CONFLICT, "nothing_to_reset", e.to_string())
            }
            E::KeyOwner { .. } => {
                ApiError::new(StatusCode::CONFLICT, "key_conflict", e.to_string())
            }
            E::Profile(e) => e.into(),
            // Paths of the state directory and age internals: for the log.
            E::UnsafeState { .. } | E::Io { .. } | E::Encrypt { .. } => ApiError::internal(e),
        }
    }
}

fn vault(st: &AppState) -> Result<Vault, ApiError> {
    Vault::open(&st.config().paths.state_dir).map_err(ApiError::from)
}

/// Turns a credentials error into the answer, auditing a broken or refused
/// file in the profile's log (and the system log for an admin), as every
/// refused read is.
fn audited<T>(s: &Store<'_>, r: creds::Result<T>) -> Result<T, ApiError> {
    match &r {
        Err(creds::Error::Broken { reason, .. }) => {
            s.audit(
                "credentials.read",
                creds::FILE,
                &format!("refused: {reason}"),
            );
        }
        Err(creds::Error::Profile(profile::Error::Refused { path, reason })) => {
            s.audit("read", path, &format!("refused: {reason}"));
        }
        _ => {}
    }
    r.map_err(ApiError::from)
}

/// Refuses acting on another account's keys for what only their owner may
/// do (see, set, choose recipients).
fn owner_only(caller: &Caller, user: Option<&str>, what: &str) -> Result<(), ApiError> {
    match user {
        Some(name) if name != caller.account.name => Err(if caller.admin {
            ApiError::forbidden(
                "owner_only",
                format!(
                    "only the account itself may {what} its keys; admins may list another \
                     account's key names and delete keys, never {what} them"
                ),
            )
        } else {
            ApiError::forbidden(
                "forbidden_user",
                "only admins may act on another account's profile (?user= / --user)",
            )
        }),
        _ => Ok(()),
    }
}

/// The profile's problems as `GET /v1/me` lists them, with its credentials
/// file's (audited like any refused read).
pub(super) fn problems(state_dir: &Path, s: &Store<'_>) -> Vec<Problem> {
    let mut out = s.problems();
    match Vault::open(state_dir) {
        Ok(v) => {
            if let Some(p) = v.problem(s.dir()) {
                s.audit(
                    "credentials.read",
                    creds::FILE,
                    &format!("refused: {}", p.reason),
                );
                out.push(p);
            }
        }
        Err(e) => tracing::error!("cannot check credentials: {e}"),
    }
    out
}

pub(super) async fn list(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UserQuery>,
) -> Result<Json<Listing>, ApiError> {
    blocking(move || {
        let vault = vault(&st)?;
        st.with_store(&caller, q.user.as_deref(), |s| {
            let listing = audited(s, vault.list(Place::Profile(s.dir())))?;
            s.audit_access("credentials.list", creds::FILE);
            Ok(Json(listing))
        })
    })
    .await
}

pub(super) async fn set(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UserQuery>,
    ApiPath(provider): ApiPath<String>,
    ApiJson(key): ApiJson<NewKey>,
) -> Result<(StatusCode, Json<EntryInfo>), ApiError> {
    owner_only(&caller, q.user.as_deref(), "set")?;
    blocking(move || {
        let vault = vault(&st)?;
        st.with_store(&caller, q.user.as_deref(), |s| {
            let (info, replaced) = audited(s, vault.set(Place::Profile(s.dir()), &provider, key))?;
            let (status, result) = if replaced {
                (StatusCode::OK, "ok: replaced")
            } else {
                (StatusCode::CREATED, "ok: added")
            };
            s.audit("credentials.set", &provider, result);
            Ok((status, Json(info)))
        })
    })
    .await
}

pub(super) async fn remove(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UserQuery>,
    ApiPath(provider): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    blocking(move || {
        let vault = vault(&st)?;
        st.with_store(&caller, q.user.as_deref(), |s| {
            audited(s, vault.remove(Place::Profile(s.dir()), &provider))?;
            s.audit("credentials.delete", &provider, "ok");
            Ok(StatusCode::NO_CONTENT)
        })
    })
    .await
}

pub(super) async fn reveal(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UserQuery>,
    ApiPath(provider): ApiPath<String>,
) -> Result<Response, ApiError> {
    owner_only(&caller, q.user.as_deref(), "see")?;
    blocking(move || {
        let vault = vault(&st)?;
        st.with_store(&caller, q.user.as_deref(), |s| {
            let revealed = audited(s, vault.reveal(s.dir(), &provider))?;
            s.audit("credentials.reveal", &provider, "ok");
            let mut resp = Json(revealed).into_response();
            // A secret must not linger in a cache on the way.
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(resp)
        })
    })
    .await
}

/// The body and answer of `PUT /v1/credentials/recipients`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Recipients {
    recipients: Vec<String>,
}

pub(super) async fn set_recipients(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UserQuery>,
    ApiJson(body): ApiJson<Recipients>,
) -> Result<Json<Recipients>, ApiError> {
    owner_only(&caller, q.user.as_deref(), "choose recipients for")?;
    blocking(move || {
        let vault = vault(&st)?;
        st.with_store(&caller, q.user.as_deref(), |s| {
            let recipients = audited(s, vault.set_recipients(s.dir(), &body.recipients))?;
            s.audit(
                "credentials.recipients",
                creds::FILE,
                &format!(
                    "ok: encrypted to the daemon identity and {} recipient(s)",
                    recipients.len()
                ),
            );
            Ok(Json(Recipients { recipients }))
        })
    })
    .await
}

/// The answer of `POST /v1/credentials/reset`.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ResetAnswer {
    moved_to: String,
}

pub(super) async fn reset(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UserQuery>,
) -> Result<Json<ResetAnswer>, ApiError> {
    blocking(move || {
        let vault = vault(&st)?;
        st.with_store(&caller, q.user.as_deref(), |s| {
            let moved_to = vault.reset(s.dir())?;
            s.audit(
                "credentials.reset",
                creds::FILE,
                &format!("ok: moved aside to {moved_to}"),
            );
            Ok(Json(ResetAnswer { moved_to }))
        })
    })
    .await
}

/// Records an admin's change to the host's keys in the system log.
fn audit_host(st: &AppState, actor: &str, action: &str, provider: &str) {
    st.system_log().append(&audit::Line {
        time: timefmt::now_rfc3339(),
        actor,
        user: "(host)",
        action,
        target: provider,
        result: "ok",
    });
}

pub(super) async fn host_list(
    State(st): State<Arc<AppState>>,
    AdminCaller(_): AdminCaller,
) -> Result<Json<Listing>, ApiError> {
    blocking(move || Ok(Json(vault(&st)?.list(Place::Host)?))).await
}

pub(super) async fn host_set(
    State(st): State<Arc<AppState>>,
    AdminCaller(caller): AdminCaller,
    ApiPath(provider): ApiPath<String>,
    ApiJson(key): ApiJson<NewKey>,
) -> Result<(StatusCode, Json<EntryInfo>), ApiError> {
    blocking(move || {
        let (info, replaced) = vault(&st)?.set(Place::Host, &provider, key)?;
        audit_host(&st, &caller.account.name, "host_credentials.set", &provider);
        let status = if replaced {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        Ok((status, Json(info)))
    })
    .await
}

pub(super) async fn host_remove(
    State(st): State<Arc<AppState>>,
    AdminCaller(caller): AdminCaller,
    ApiPath(provider): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    blocking(move || {
        vault(&st)?.remove(Place::Host, &provider)?;
        audit_host(
            &st,
            &caller.account.name,
            "host_credentials.delete",
            &provider,
        );
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
