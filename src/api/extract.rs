//! Request extractors: who is calling, and JSON bodies and query strings
//! whose rejections are problem+json like every other error.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::AppState;
use super::identity::Checked;
use super::problem::ApiError;
use crate::accounts::{self, Account, Eligibility, Policy, UserId};

/// The kernel's word on who is at the other end of a connection
/// (`SO_PEERCRED`, read once at accept).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The peer's effective uid when it connected.
    pub uid: UserId,
}

/// Where a TCP connection comes from (for login throttling).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// The port of the TCP listener a request came in on: with [`ClientAddr`]
/// it names the connection in the kernel's socket table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenPort(pub u16);

/// How a TCP request proved who it is: the id of the session or token its
/// `Authorization: Bearer` header carried (the only credential accepted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// The session's or token's public id.
    pub id: String,
}

/// The account making the request and its role, looked up for every request
/// through [`Identities`](super::Identities), so a change to /etc/group or
/// the config applies on the next request.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The account.
    pub account: Account,
    /// Whether it is an admin.
    pub admin: bool,
    /// Why it has no profile of its own, when it has none (root, or an
    /// admin outside the eligible range).
    pub ineligible: Option<String>,
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Caller, ApiError> {
        let peer = parts
            .extensions
            .get::<Peer>()
            .copied()
            .ok_or_else(|| ApiError::internal("a request arrived without peer credentials"))?;
        let config = state.config();
        let ids = &state.auth.identities;
        // Over TCP the guard has checked the account files for this request.
        let checked = match parts.extensions.get::<Checked>() {
            Some(c) => *c,
            None => ids.check(),
        };
        if let Some(caller) = ids.peek_caller(checked, peer.uid, &config.policy) {
            return Ok(caller);
        }
        // NSS may block (LDAP, SSSD): keep it off the async threads.
        let policy = config.policy.clone();
        let st = state.clone();
        tokio::task::spawn_blocking(move || st.auth.identities.caller(peer.uid, &policy))
            .await
            .map_err(ApiError::internal)?
    }
}

/// A caller that must be an admin; anyone else is refused before the
/// request body is even read.
#[derive(Clone, Debug)]
pub struct AdminCaller(pub Caller);

impl FromRequestParts<Arc<AppState>> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<AdminCaller, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if !caller.admin {
            return Err(ApiError::forbidden(
                "admin_only",
                format!(
                    "{} is not an admin; admins are root, the accounts in `admins` and members of `admin_group`",
                    caller.account.name
                ),
            ));
        }
        Ok(AdminCaller(caller))
    }
}

/// Resolves `uid` to a caller, or the 403 that explains why it is not one.
pub fn identify(uid: UserId, policy: &Policy) -> Result<Caller, ApiError> {
    let account = accounts::by_uid(uid)?.ok_or_else(|| {
        ApiError::forbidden(
            "unknown_account",
            format!("uid {uid} has no account in the name service; profiled serves accounts only"),
        )
    })?;
    let admin = policy.is_admin(&account)?;
    let ineligible = match policy.eligibility(&account)? {
        Eligibility::Eligible => None,
        Eligibility::Ineligible(reason) => Some(reason),
    };
    match ineligible {
        Some(reason) if !admin => Err(ApiError::forbidden(
            "not_eligible",
            format!("{reason}, so it has no profile; ask an admin if you need one"),
        )),
        ineligible => Ok(Caller {
            account,
            admin,
            ineligible,
        }),
    }
}

/// A path parameter; a bad one (not UTF-8) answers problem+json 400.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(rejection) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_path",
                rejection.body_text(),
            )),
        }
    }
}

/// A query string with only `?user=`.
#[derive(Debug, serde::Deserialize)]
pub struct UserQuery {
    /// The account whose profile to act on (admins only).
    pub user: Option<String>,
}

/// A JSON body; a bad one answers problem+json (413 over the size limit,
/// 415 without `Content-Type: application/json`, 400/422 naming the field).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "the request body is over the limit (limits.max_body_bytes in profiled.toml)",
                ),
                StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send the body as JSON with Content-Type: application/json",
                ),
                StatusCode::UNPROCESSABLE_ENTITY => ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_input",
                    rejection.body_text(),
                ),
                status => ApiError::new(status, "invalid_json", rejection.body_text()),
            }),
        }
    }
}

/// A query string; a bad one answers problem+json 400 naming the parameter.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(rejection) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                plain_query_error(&rejection.body_text()),
            )),
        }
    }
}

/// serde's words for a bad query string (`Failed to deserialize query
/// string: status: unknown variant `bogus`, expected one of …`) as a person
/// reads them: `status: "bogus" is not one of todo, in_progress, …`.
fn plain_query_error(text: &str) -> String {
    let text = text
        .strip_prefix("Failed to deserialize query string: ")
        .unwrap_or(text);
    let (field, reason) = match text.split_once(": ") {
        Some((f, r)) if !f.is_empty() && f.chars().all(|c| c.is_alphanumeric() || c == '_') => {
            (Some(f), r)
        }
        _ => (None, text),
    };
    let unquote = |s: &str| s.replace('`', "");
    let reason = if let Some(rest) = reason.strip_prefix("unknown variant `")
        && let Some((value, expected)) = rest.split_once("`, expected one of ")
    {
        format!("\"{value}\" is not one of {}", unquote(expected))
    } else if let Some(rest) = reason.strip_prefix("unknown field `")
        && let Some((name, expected)) = rest.split_once("`, expected ")
    {
        format!(
            "there is no parameter \"{name}\" (this route takes {})",
            unquote(expected).trim_start_matches("one of ")
        )
    } else if reason == "invalid digit found in string" {
        "not a whole number".to_owned()
    } else if reason == "number too large to fit in target type" {
        "too large a number".to_owned()
    } else {
        reason.to_owned()
    };
    let said = match field {
        Some(f) => format!("{f}: {reason}"),
        None => reason,
    };
    format!("the query string is not valid: {said} (docs/API.md lists each route's parameters)")
}

#[cfg(test)]
mod tests {
    use super::plain_query_error;

    #[test]
    fn query_errors_are_told_in_plain_words() {
        let said = |t: &str| plain_query_error(&format!("Failed to deserialize query string: {t}"));
        assert_eq!(
            said("status: unknown variant `bogus`, expected one of `todo`, `in_progress`"),
            "the query string is not valid: status: \"bogus\" is not one of todo, in_progress \
             (docs/API.md lists each route's parameters)"
        );
        assert!(said("limit: invalid digit found in string").contains("limit: not a whole number"));
        assert!(
            said("unknown field `lmit`, expected one of `limit`, `before`")
                .contains("there is no parameter \"lmit\" (this route takes limit, before)")
        );
        assert!(said("something else").contains("not valid: something else"));
    }
}
