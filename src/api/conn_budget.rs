//! The API side of the connection budgets (rule 9, src/budget): binding a
//! TCP connection to the account its token authenticated, and the
//! problem+json answers of a refused connection or event stream.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::extract::Peer;
use super::identity::Checked;
use super::{ApiError, AppState};
use crate::budget::{Listener, Place, Quota, RETRY_AFTER_SECS, Refusal, Refused, Standing};

/// A refusal as the client is told it: a problem, `Retry-After`, and
/// `Connection: close` (the connection has no place to stay).
#[derive(Clone, Debug)]
pub struct Busy {
    /// The problem.
    pub error: ApiError,
}

impl Busy {
    /// The answer.
    pub fn response(&self) -> Response {
        let mut resp = self.error.clone().into_response();
        let h = resp.headers_mut();
        h.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        resp
    }
}

/// Why a connection by a caller of `standing` was refused, for the
/// counters and for the caller.
pub fn connection_refused(refusal: Refusal, standing: Standing) -> (Refused, Busy) {
    match refusal {
        Refusal::PerUid { limit } => {
            let (whose, key) = match standing {
                Standing::Outsider => (
                    "an account without a profile",
                    "limits.connections_per_ineligible_uid",
                ),
                _ => ("one account", "limits.connections_per_account"),
            };
            (
                Refused::Account,
                Busy {
                    error: ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too_many_connections",
                        format!(
                            "this account already holds {limit} connections to profiled, the most \
                             {whose} may hold ({key}); close idle ones (they close by themselves \
                             after limits.idle_timeout) and retry"
                        ),
                    ),
                },
            )
        }
        Refusal::Full { limit } => (
            Refused::Full,
            Busy {
                error: ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_busy",
                    format!(
                        "profiled holds the {limit} connections it accepts from accounts like this \
                         one (limits.connections_total, less limits.connections_reserved kept for \
                         root and admins); retry shortly"
                    ),
                ),
            },
        ),
    }
}

/// An event stream refused: the caller holds `limit` already.
pub fn stream_refused(limit: usize) -> Busy {
    Busy {
        error: ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            format!(
                "this account already has {limit} event streams open \
                 (limits.event_streams_per_account); close one and retry"
            ),
        ),
    }
}

/// The middleware (inside the TCP guard, which has authenticated the
/// request): moves the connection out of the lobby to the account its
/// token names, or refuses the request and closes the connection when that
/// account holds its budget. Requests without a token (login, health)
/// leave the connection in the lobby.
pub async fn bind(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let ext = req.extensions();
    let (Some(place), Some(peer)) = (ext.get::<Arc<Place>>().cloned(), ext.get::<Peer>().copied())
    else {
        return next.run(req).await;
    };
    // The connection's earlier request bound it: no standing to look up.
    if place.is_bound_to(peer.uid) {
        return next.run(req).await;
    }
    let checked = ext.get::<Checked>().copied();
    let standing = st.standing(peer.uid, checked).await;
    let limits = st.config().limits.connections;
    let quota = Quota::connection(&limits, st.budgets.ceiling, standing);
    match place.bind(peer.uid, &st.budgets.tcp, quota) {
        Ok(()) => next.run(req).await,
        Err(refusal) => {
            let (what, busy) = connection_refused(refusal, standing);
            st.budgets
                .reports
                .refused(Listener::Tcp, what, Some(peer.uid), &busy.error.detail);
            busy.response()
        }
    }
}
