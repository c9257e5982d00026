//! What stands between a loopback TCP connection and the routes (rules 6
//! and 11): the Host header must name a loopback host and our port (DNS
//! rebinding), a cross-origin request is refused, and every route but the
//! public ones needs a live session or token, whose account is checked
//! afresh. The only credential is an `Authorization: Bearer` header: a
//! cookie is never read, because a browser sends cookies to every port of
//! a host (another account's server included) and adds them to requests
//! by itself (CSRF); a bearer header is sent only by the page's own code.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::extract::{Credential, ListenPort, Peer};
use super::identity::Checked;
use super::{ApiError, AppState, Identities};
use crate::auth::tokens::Record;

/// Routes a TCP client may call without credentials.
const PUBLIC: &[&str] = &[
    "/v1/health",
    "/v1/auth/login",
    "/v1/openapi.json",
    "/v1/metrics",
];

/// The TCP guard's state: the shared state and the port actually bound.
#[derive(Clone)]
pub struct TcpGuard {
    /// Shared state.
    pub state: Arc<AppState>,
    /// The listening port, which the Host header must name.
    pub port: u16,
}

/// The middleware.
pub async fn tcp_guard(State(guard): State<TcpGuard>, mut req: Request, next: Next) -> Response {
    req.extensions_mut().insert(ListenPort(guard.port));
    let headers = req.headers();
    let Some(host) = loopback_host(headers, guard.port) else {
        return ApiError::forbidden(
            "bad_host",
            format!(
                "the Host header must name a loopback host and port {} (localhost, 127.0.0.1 or [::1])",
                guard.port
            ),
        )
        .into_response();
    };
    let origin = headers.get(header::ORIGIN).map(HeaderValue::as_bytes);
    if origin.is_some_and(|o| o.strip_prefix(b"http://") != Some(host.as_bytes())) {
        return ApiError::forbidden(
            "bad_origin",
            "cross-origin requests are refused; call the API from its own origin",
        )
        .into_response();
    }
    let public = PUBLIC.contains(&req.uri().path());
    let Some(secret) = bearer(headers) else {
        if public {
            return next.run(req).await;
        }
        return unauthenticated(
            "log in with POST /v1/auth/login, or send a token: Authorization: Bearer pfd_…",
        );
    };
    let st = guard.state.clone();
    let idle = st.config().auth.session_idle;
    // The account files are checked once for the whole request.
    let checked = st.auth.identities.check();
    req.extensions_mut().insert(checked);
    let verdict = match st.auth.tokens.authenticate(&secret, idle) {
        None => Ok(Err(
            "the session or token is unknown, expired or revoked; log in again",
        )),
        Some(record) => match owner_known(&st.auth.identities, checked, &record) {
            Some(verdict) => Ok(verdict.map(|()| record)),
            // NSS may block (LDAP, SSSD): keep it off the async threads.
            None => {
                tokio::task::spawn_blocking(move || {
                    owner_asked(&st.auth.identities, &record).map(|()| record)
                })
                .await
            }
        },
    };
    match verdict {
        Ok(Ok(record)) => {
            req.extensions_mut().insert(Peer { uid: record.uid });
            req.extensions_mut().insert(Credential { id: record.id });
            next.run(req).await
        }
        // A stale token must not stop a login page from working.
        Ok(Err(_)) if public => next.run(req).await,
        Ok(Err(why)) => unauthenticated(why),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// Whether the token's account is still the same live, unlocked account,
/// from what the name service already told: `None` when it must be asked.
fn owner_known(
    ids: &Identities,
    checked: Checked,
    record: &Record,
) -> Option<Result<(), &'static str>> {
    match ids.peek_account(checked, record.uid)? {
        Some(account) if account.name == record.user => {
            match ids.peek_login_blocked(checked, &account)? {
                None => Some(Ok(())),
                Some(_) => Some(Err(LOCKED)),
            }
        }
        _ => Some(Err(GONE)),
    }
}

/// [`owner_known`], asking the name service what it does not know yet.
fn owner_asked(ids: &Identities, record: &Record) -> Result<(), &'static str> {
    // The account may be gone, renamed, or locked since the token was
    // issued: it keeps access only while it is the same live account.
    let account = ids
        .account(record.uid)
        .ok()
        .flatten()
        .filter(|a| a.name == record.user)
        .ok_or(GONE)?;
    // Fail closed: a shadow database that cannot answer keeps tokens out.
    match ids.login_blocked(&account) {
        Ok(None) => Ok(()),
        _ => Err(LOCKED),
    }
}

const GONE: &str = "the account this token belongs to no longer exists";
const LOCKED: &str = "the account is locked or expired";

fn unauthenticated(detail: &str) -> Response {
    let mut resp =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail).into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// The Host header when it names a loopback host and `port`.
fn loopback_host(headers: &HeaderMap, port: u16) -> Option<String> {
    let host = headers
        .get(header::HOST)?
        .to_str()
        .ok()?
        .to_ascii_lowercase();
    let (name, p) = host.rsplit_once(':')?;
    let ok = matches!(name, "localhost" | "127.0.0.1" | "[::1]") && p.parse::<u16>().ok()? == port;
    ok.then_some(host)
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(h) {
            m.insert(header::HOST, v);
        }
        m
    }

    #[test]
    fn only_loopback_hosts_with_our_port_pass() {
        for ok in [
            "localhost:7733",
            "127.0.0.1:7733",
            "[::1]:7733",
            "LOCALHOST:7733",
        ] {
            assert!(loopback_host(&host(ok), 7733).is_some(), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:7733",
            "localhost",
            "localhost:80",
            "127.0.0.2:7733",
            "localhost.evil.example:7733",
        ] {
            assert!(loopback_host(&host(bad), 7733).is_none(), "{bad}");
        }
    }
}
