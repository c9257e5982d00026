//! `/v1/auth/login`, `/v1/auth/logout` and `/v1/tokens`: PAM logins that
//! yield a session, and personal tokens for scripts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::extract::{
    ApiJson, ApiPath, ApiQuery, Caller, ClientAddr, Credential, ListenPort, Peer, UserQuery,
};
use super::{ApiError, AppState, blocking};
use crate::accounts::{self, Account, Eligibility};
use crate::auth::client::Client;
use crate::auth::throttle::{self, Attempt};
use crate::auth::tokens::{Error as TokenError, Issued, Kind, Record};
use crate::metrics::Login;
use crate::{audit, auth, timefmt};

/// What a login sends.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginRequest {
    username: String,
    password: Zeroizing<String>,
}

/// What a login or a new token answers: the secret, shown this once.
#[derive(Serialize, Deserialize, Debug)]
pub struct NewToken {
    /// The public id, for listing and revoking.
    pub id: String,
    /// The secret: `Authorization: Bearer <token>`.
    pub token: String,
    /// The account.
    pub user: String,
    /// `session` or `token`.
    pub kind: Kind,
    /// When it stops working (RFC 3339).
    pub expires: String,
}

/// A session or token as listed: never the secret.
#[derive(Serialize, Deserialize, Debug)]
pub struct TokenInfo {
    /// The public id.
    pub id: String,
    /// `session` or `token`.
    pub kind: Kind,
    /// A personal token's name.
    pub name: Option<String>,
    /// When it was issued.
    pub created: String,
    /// When it stops working.
    pub expires: String,
    /// When it was last used (to the minute).
    pub last_used: String,
}

fn stamp(unix: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(unix).unwrap_or(i64::MAX))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    timefmt::rfc3339(t)
}

impl From<&Record> for TokenInfo {
    fn from(r: &Record) -> Self {
        TokenInfo {
            id: r.id.clone(),
            kind: r.kind,
            name: r.name.clone(),
            created: stamp(r.created),
            expires: stamp(r.expires),
            last_used: stamp(r.last_used),
        }
    }
}

fn new_token(issued: &Issued) -> NewToken {
    NewToken {
        id: issued.record.id.clone(),
        token: issued.secret.to_string(),
        user: issued.record.user.clone(),
        kind: issued.record.kind,
        expires: stamp(issued.record.expires),
    }
}

/// The one answer every failed login gets, whatever the reason, so a
/// client learns nothing about which accounts exist or may log in.
fn login_failed() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "login_failed",
        "wrong user name or password, or this account may not log in here",
    )
}

/// A 429 with `Retry-After`.
pub(super) fn too_many(code: &'static str, detail: &str, wait: Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut resp = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        code,
        format!("{detail}; try again in {secs} s"),
    )
    .into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    resp
}

/// The client a login comes from: on TCP, the account that owns the
/// connecting socket (the kernel's socket table says), else its address;
/// on the Unix socket, the peer.
async fn client_of(
    tcp: Option<(ClientAddr, ListenPort)>,
    peer: Option<Peer>,
) -> Result<Client, ApiError> {
    match (tcp, peer) {
        (Some((ClientAddr(addr), ListenPort(port))), _) => {
            blocking(move || Ok(crate::auth::client::of_tcp(addr, port))).await
        }
        (None, Some(peer)) => Ok(Client::Account(peer.uid)),
        (None, None) => Err(ApiError::internal(
            "a login arrived with neither a client address nor peer credentials",
        )),
    }
}

pub(super) async fn login(
    State(st): State<Arc<AppState>>,
    addr: Option<axum::Extension<ClientAddr>>,
    port: Option<axum::Extension<ListenPort>>,
    peer: Option<axum::Extension<Peer>>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Response {
    let config = st.config();
    let user = req.username;
    // A name that cannot be an account never reaches PAM, the throttle's
    // maps or the logs (a password typed into the name field included).
    if !accounts::is_valid_name(&user) || user.len() > 64 {
        st.auth.metrics.login(Login::Failed);
        return login_failed().into_response();
    }
    let tcp = addr.zip(port).map(|(a, p)| (a.0, p.0));
    let client = match client_of(tcp, peer.map(|p| p.0)).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let attempt = Attempt::new(&user, client);
    let client = client.to_string();
    let policy = throttle::Policy {
        account_free: config.auth.login_free_attempts,
        client_free: config.auth.client_free_attempts,
        max_delay: config.auth.login_max_delay,
    };
    if let Err(wait) = st.auth.throttle.check(&attempt, Instant::now()) {
        st.auth.metrics.login(Login::Throttled);
        return too_many("login_throttled", "too many failed logins", wait);
    }
    // A bounded number of PAM conversations at a time, each on the
    // blocking pool: PAM sleeps after a failure and must not stall the API.
    let Ok(_slot) = st.auth.pam_slots.acquire().await else {
        return ApiError::internal("the PAM semaphore was closed").into_response();
    };
    // Checked again with the slot in hand: attempts that queued together
    // before the first failure was counted must not all reach PAM.
    if let Err(wait) = st.auth.throttle.check(&attempt, Instant::now()) {
        st.auth.metrics.login(Login::Throttled);
        return too_many("login_throttled", "too many failed logins", wait);
    }
    let service = config.auth.pam_service.clone();
    let checked = {
        let user = user.clone();
        let policy = config.policy.clone();
        tokio::task::spawn_blocking(move || -> Result<Account, String> {
            auth::pam::login(&service, &user, req.password).map_err(|e| e.to_string())?;
            let account = accounts::by_name(&user)
                .map_err(|e| e.to_string())?
                .filter(|a| a.name == user)
                .ok_or_else(|| {
                    format!("PAM accepted {user:?} but NSS has no account of exactly that name")
                })?;
            match policy.eligibility(&account).map_err(|e| e.to_string())? {
                Eligibility::Eligible => Ok(account),
                Eligibility::Ineligible(reason) => Err(reason),
            }
        })
        .await
    };
    let account = match checked {
        Ok(Ok(account)) => account,
        Ok(Err(reason)) => {
            tracing::info!("login of {user:?} from {client} refused: {reason}");
            st.auth.throttle.failed(&attempt, policy, Instant::now());
            st.auth.metrics.login(Login::Failed);
            st.system_log().append(&audit::Line {
                time: timefmt::now_rfc3339(),
                actor: &user,
                user: &user,
                action: "auth.login",
                target: &client,
                result: "refused",
            });
            return login_failed().into_response();
        }
        Err(e) => return ApiError::internal(e).into_response(),
    };
    st.auth.throttle.succeeded(&attempt);
    let issued =
        match blocking_issue(&st, Kind::Session, &account, None, config.auth.session_max).await {
            Ok(i) => i,
            Err(e) => return e.into_response(),
        };
    st.auth.metrics.login(Login::Ok);
    st.system_log().append(&audit::Line {
        time: timefmt::now_rfc3339(),
        actor: &account.name,
        user: &account.name,
        action: "auth.login",
        target: &client,
        result: "ok",
    });
    // The secret goes in the body only, never in a cookie (rule 11): a
    // browser sends cookies to every port of the host, so another
    // account's server on a loopback port would receive it. A page keeps
    // the token in storage scoped to its own origin, port included.
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (StatusCode::OK, headers, Json(new_token(&issued))).into_response()
}

async fn blocking_issue(
    st: &Arc<AppState>,
    kind: Kind,
    account: &Account,
    name: Option<String>,
    lifetime: Duration,
) -> Result<Issued, ApiError> {
    let st = st.clone();
    let account = account.clone();
    blocking(move || {
        st.auth
            .tokens
            .issue(kind, &account, name, lifetime)
            .map_err(|e| match e {
                TokenError::TooMany(_) => {
                    ApiError::new(StatusCode::CONFLICT, "too_many_tokens", e.to_string())
                }
                e => ApiError::internal(e),
            })
    })
    .await
}

pub(super) async fn logout(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    credential: Option<axum::Extension<Credential>>,
) -> Result<Response, ApiError> {
    let Some(axum::Extension(credential)) = credential else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "not_logged_in",
            "this request carries no session to end (the Unix socket needs none)",
        ));
    };
    let user = caller.account.name.clone();
    blocking(move || {
        st.auth
            .tokens
            .revoke(&user, &credential.id)
            .map_err(ApiError::internal)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenRequest {
    name: String,
    /// Lifetime in days; the config's `token_max_lifetime` when absent.
    expires_in_days: Option<u64>,
}

/// The account whose tokens a request may manage: the caller's own, or
/// with `?user=` another's (admins only).
fn token_owner(caller: &Caller, user: Option<&str>) -> Result<Account, ApiError> {
    match user {
        Some(name) if name != caller.account.name => {
            if !caller.admin {
                return Err(ApiError::forbidden(
                    "forbidden_user",
                    "only admins may manage another account's sessions and tokens",
                ));
            }
            accounts::by_name(name)?
                .ok_or_else(|| ApiError::not_found(format!("no account named {name:?}")))
        }
        _ => Ok(caller.account.clone()),
    }
}

pub(super) async fn create_token(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(req): ApiJson<TokenRequest>,
) -> Result<(StatusCode, Json<NewToken>), ApiError> {
    if caller.ineligible.is_some() {
        return Err(ApiError::forbidden(
            "no_own_profile",
            "tokens are for accounts with a profile",
        ));
    }
    let name = req.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            "name: must be 1 to 64 characters without control characters",
        ));
    }
    let max = st.config().auth.token_max;
    let lifetime = match req.expires_in_days {
        Some(0) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_input",
                "expires_in_days: must be at least 1",
            ));
        }
        Some(days) => Duration::from_secs(days.saturating_mul(86_400)),
        None => max,
    };
    if lifetime > max {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            format!(
                "expires_in_days: at most {} days (auth.token_max_lifetime)",
                max.as_secs() / 86_400
            ),
        ));
    }
    let issued = blocking_issue(&st, Kind::Token, &caller.account, Some(name), lifetime).await?;
    Ok((StatusCode::CREATED, Json(new_token(&issued))))
}

pub(super) async fn list_tokens(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UserQuery>,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    let owner = token_owner(&caller, q.user.as_deref())?;
    let list = st.auth.tokens.list(&owner.name);
    Ok(Json(list.iter().map(TokenInfo::from).collect()))
}

pub(super) async fn revoke_token(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<UserQuery>,
) -> Result<StatusCode, ApiError> {
    let owner = token_owner(&caller, q.user.as_deref())?;
    let (st2, owner2, id2) = (st.clone(), owner.name.clone(), id.clone());
    let revoked = blocking(move || {
        st.auth
            .tokens
            .revoke(&owner.name, &id)
            .map_err(ApiError::internal)
    })
    .await?;
    if revoked {
        audit_revocation(&st2, &caller, &owner2, &id2);
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("no such session or token"))
    }
}

#[derive(Serialize, Deserialize, Debug)]
pub(super) struct Revoked {
    revoked: usize,
}

pub(super) async fn revoke_all_tokens(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UserQuery>,
) -> Result<Json<Revoked>, ApiError> {
    let owner = token_owner(&caller, q.user.as_deref())?;
    let (st2, owner2) = (st.clone(), owner.name.clone());
    let revoked = blocking(move || {
        st.auth
            .tokens
            .revoke_all(&owner.name)
            .map_err(ApiError::internal)
    })
    .await?;
    audit_revocation(&st2, &caller, &owner2, "all");
    Ok(Json(Revoked { revoked }))
}

/// An admin's revocation of another account's sessions goes to the
/// system log (the user's own revocations are theirs alone).
fn audit_revocation(st: &AppState, caller: &Caller, owner: &str, target: &str) {
    if owner != caller.account.name {
        st.system_log().append(&audit::Line {
            time: timefmt::now_rfc3339(),
            actor: &caller.account.name,
            user: owner,
            action: "auth.revoke",
            target,
            result: "ok",
        });
    }
}
