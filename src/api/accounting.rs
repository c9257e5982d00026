//! Per-request bookkeeping on both transports: the account's request rate
//! (429 with `Retry-After`), the daily usage count and the metrics.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use super::auth::too_many;
use super::extract::Peer;
use super::identity::Checked;
use crate::accounts::UserId;

/// The middleware (a route layer, so the matched route is known).
pub async fn accounting(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    // Both are cheap clones (a shared string, a standard method).
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let method = req.method().clone();
    let method = method.as_str();
    if let Some(peer) = req.extensions().get::<Peer>().copied()
        && peer.uid != UserId::ROOT
    {
        let limits = &st.config().limits;
        let rate = if limits.rate_overrides.is_empty() {
            limits.rate
        } else {
            // Overrides are by name; only then is the name worth a lookup.
            let ids = &st.auth.identities;
            let checked = match req.extensions().get::<Checked>() {
                Some(c) => *c,
                None => ids.check(),
            };
            let account = match ids.peek_account(checked, peer.uid) {
                Some(known) => known,
                None => {
                    let s = st.clone();
                    tokio::task::spawn_blocking(move || s.auth.identities.account(peer.uid))
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .flatten()
                }
            };
            account.map_or(limits.rate, |a| limits.rate_of(&a.name))
        };
        if let Err(wait) = st.auth.rate.take(peer.uid, rate, Instant::now()) {
            st.auth.metrics.request(method, route, 429);
            return too_many(
                "rate_limited",
                "too many requests for this account (limits.requests_per_second)",
                wait,
            );
        }
        st.auth.usage.request(peer.uid);
    }
    let resp = next.run(req).await;
    st.auth
        .metrics
        .request(method, route, resp.status().as_u16());
    resp
}
