//! `GET /v1/events`: the caller's profile changes as server-sent events,
//! with catch-up through `Last-Event-ID` and heartbeats.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::watch;

use super::extract::{ApiQuery, Caller, ClientAddr, UserQuery};
use super::{ApiError, AppState, blocking, conn_budget};
use crate::accounts::UserId;
use crate::budget::{Listener, Quota, Refused, Slot, Standing};
use crate::watch::{Catchup, Event};

/// Comment lines this often keep idle connections (and proxies) open.
const HEARTBEAT: Duration = Duration::from_secs(15);

pub(super) async fn stream(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UserQuery>,
    client: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, Response> {
    // A stream holds its connection for as long as the client likes: each
    // account may hold only so many (rule 9), counted against the caller,
    // not the profile watched.
    let uid = caller.account.uid;
    let standing = if uid == UserId::ROOT {
        Standing::Root
    } else if caller.admin {
        Standing::Admin
    } else {
        Standing::Member
    };
    let limits = st.config().limits.connections;
    let slot = st
        .budgets
        .streams
        .admit(uid, Quota::stream(&limits, standing))
        .map_err(|_| {
            let busy = conn_budget::stream_refused(limits.event_streams_per_account);
            let listener = if client.is_some() {
                Listener::Tcp
            } else {
                Listener::Unix
            };
            st.budgets
                .reports
                .refused(listener, Refused::Stream, Some(uid), &busy.error.detail);
            busy.response()
        })?;
    open(st, caller, q, headers, slot)
        .await
        .map_err(IntoResponse::into_response)
}

async fn open(
    st: Arc<AppState>,
    caller: Caller,
    q: UserQuery,
    headers: HeaderMap,
    slot: Slot,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let last = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_last_event_id",
                        "Last-Event-ID must be the id of an event this stream sent (a number)",
                    )
                })?,
        ),
    };
    let s = st.clone();
    // Decides whose changes this stream may carry (rule 4); an admin's
    // `?user=` is audited like any other read of another profile.
    let user = blocking(move || {
        s.with_store(&caller, q.user.as_deref(), |store| {
            store.audit_access("events.watch", "events");
            Ok(store.dir().account().name.clone())
        })
    })
    .await?;
    let sub = st.events.subscribe(&user, last);
    let mut feed = Feed {
        state: st.clone(),
        user,
        last: sub.newest,
        pending: VecDeque::new(),
        live: sub.live,
        closed: st.events.closed(),
        _slot: slot,
    };
    feed.queue(sub.catchup);
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        let next = feed.next().await?;
        Some((Ok(next), feed))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(HEARTBEAT)))
}

/// One client's view of the hub.
struct Feed {
    state: Arc<AppState>,
    user: String,
    /// The last id of this profile's events sent, to catch up after lagging.
    last: u64,
    pending: VecDeque<SseEvent>,
    live: broadcast::Receiver<Arc<Event>>,
    closed: watch::Receiver<bool>,
    /// The stream's place in the caller's budget, given back when the
    /// client goes (the stream is dropped).
    _slot: Slot,
}

impl Feed {
    fn queue(&mut self, catchup: Catchup) {
        match catchup {
            Catchup::Events(events) => {
                for e in events {
                    if let Some(id) = e.id_for(&self.user) {
                        self.last = id;
                        self.pending.push_back(sse(&e, id));
                    }
                }
            }
            Catchup::Resync => self.pending.push_back(
                SseEvent::default().event("resync").data(
                    serde_json::json!({
                        "type": "resync",
                        "reason": "events were missed (the gap is older than the daemon keeps, \
                                   or the daemon restarted); reload what you show",
                    })
                    .to_string(),
                ),
            ),
        }
    }

    /// The next event for this client; `None` when the daemon stops.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            if *self.closed.borrow() {
                return None;
            }
            tokio::select! {
                got = self.live.recv() => match got {
                    Ok(e) => if let Some(id) = e.id_for(&self.user) {
                        self.last = id;
                        return Some(sse(&e, id));
                    },
                    // A slow client fell behind the live channel: take the
                    // rest from the buffer (or resync), never skip silently.
                    Err(RecvError::Lagged(_)) => {
                        let sub = self.state.events.subscribe(&self.user, Some(self.last));
                        self.live = sub.live;
                        self.queue(sub.catchup);
                    }
                    Err(RecvError::Closed) => return None,
                },
                _ = self.closed.changed() => return None,
            }
        }
    }
}

/// `e` as sent on a stream where its id is `id`.
fn sse(e: &Event, id: u64) -> SseEvent {
    SseEvent::default()
        .id(id.to_string())
        .event(e.event_type.as_str())
        .data(e.json_with_id(id))
}
