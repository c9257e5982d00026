//! The TCP lobby: connections that have not authenticated yet.
//!
//! On loopback every local user is 127.0.0.1, so a budget per client
//! address would be one budget for everyone. Instead, connections that
//! have not shown a valid token share one small lobby, and a connection
//! leaves it for its account's own budget as soon as a request on it
//! authenticates ([`Place::bind`]). When the lobby is full, a newcomer
//! pushes out the connection idle longest, or, when every one has a request
//! in progress, the one whose request began first. A newcomer is never
//! refused: idle connections, however many, only churn the lobby, and
//! requests that never finish (a login whose body never comes) cannot keep
//! it full either. The cost is that a slow unauthenticated request (a
//! login) may be cut off by a flood of newcomers; a request with a valid
//! token leaves the lobby as soon as its headers are read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

use super::{Pool, Quota, Refusal, Slot};
use crate::accounts::UserId;

#[derive(Debug)]
struct Entry {
    /// When it last had nothing to do (entered, or answered a request).
    idle_since: Instant,
    /// When its request in progress began, if one is.
    busy_since: Option<Instant>,
    evict: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Waiting {
    next: u64,
    entries: HashMap<u64, Entry>,
}

/// Connections not yet bound to an account.
#[derive(Debug, Default)]
pub struct Lobby {
    waiting: Mutex<Waiting>,
}

/// What happened when a connection entered.
#[derive(Debug)]
pub struct Ticket {
    lobby: Arc<Lobby>,
    id: u64,
    /// Woken when the connection is pushed out.
    pub eviction: Arc<Notify>,
    /// Whether another connection was pushed out to make room.
    pub pushed_out: bool,
}

impl Lobby {
    /// A place among at most `limit` waiting connections, pushing out
    /// another when full (the longest idle, else the oldest request).
    pub fn enter(self: &Arc<Self>, limit: usize, now: Instant) -> Ticket {
        let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let mut pushed_out = false;
        while w.entries.len() >= limit.max(1) {
            // Idle ones first (`false` sorts first), longest idle first;
            // then the request that began first.
            let victim = w
                .entries
                .iter()
                .min_by_key(|(_, e)| (e.busy_since.is_some(), e.busy_since.unwrap_or(e.idle_since)))
                .map(|(id, _)| *id);
            let Some(e) = victim.and_then(|v| w.entries.remove(&v)) else {
                break;
            };
            // Stored if the connection is not waiting on it right now.
            e.evict.notify_one();
            pushed_out = true;
        }
        let id = w.next;
        w.next += 1;
        let eviction = Arc::new(Notify::new());
        w.entries.insert(
            id,
            Entry {
                idle_since: now,
                busy_since: None,
                evict: eviction.clone(),
            },
        );
        Ticket {
            lobby: self.clone(),
            id,
            eviction,
            pushed_out,
        }
    }

    /// Connections waiting now.
    pub fn open(&self) -> usize {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .len()
    }

    fn mark(&self, id: u64, busy_since: Option<Instant>, now: Instant) {
        let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = w.entries.get_mut(&id) {
            e.busy_since = busy_since;
            e.idle_since = now;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut w = self.lobby.waiting.lock().unwrap_or_else(|p| p.into_inner());
        w.entries.remove(&self.id);
    }
}

/// Where a TCP connection is counted: in the lobby until a request on it
/// authenticates, then against that account.
#[derive(Debug)]
pub struct Place {
    ticket: Mutex<Option<Ticket>>,
    bound: Mutex<Option<Slot>>,
}

impl Place {
    /// A connection counted in the lobby by `ticket`.
    pub fn new(ticket: Ticket) -> Place {
        Place {
            ticket: Mutex::new(Some(ticket)),
            bound: Mutex::new(None),
        }
    }

    /// A request began on the connection (it is pushed out only after
    /// every idle one).
    pub fn request_started(&self, now: Instant) {
        if let Some(t) = &*self.ticket.lock().unwrap_or_else(|p| p.into_inner()) {
            t.lobby.mark(t.id, Some(now), now);
        }
    }

    /// The request's answer is out: the connection is idle again.
    pub fn request_ended(&self, now: Instant) {
        if let Some(t) = &*self.ticket.lock().unwrap_or_else(|p| p.into_inner()) {
            t.lobby.mark(t.id, None, now);
        }
    }

    /// Whether the connection counts against `uid` already: binding it to
    /// `uid` again would change nothing (the usual keep-alive request).
    pub fn is_bound_to(&self, uid: UserId) -> bool {
        self.bound
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|s| s.uid() == uid)
    }

    /// A request on the connection authenticated as `uid`: from now on the
    /// connection counts against `uid` in `pool` (leaving the lobby, or the
    /// account it was bound to before). Refused when `uid` holds its
    /// quota; the connection then stays where it was.
    pub fn bind(&self, uid: UserId, pool: &Arc<Pool>, quota: Quota) -> Result<(), Refusal> {
        let mut bound = self.bound.lock().unwrap_or_else(|p| p.into_inner());
        if bound.as_ref().is_some_and(|s| s.uid() == uid) {
            return Ok(());
        }
        let slot = pool.admit(uid, quota)?;
        *bound = Some(slot);
        drop(bound);
        // Out of the lobby: its place there is free for a newcomer.
        self.ticket.lock().unwrap_or_else(|p| p.into_inner()).take();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_lobby_pushes_out_the_longest_idle_then_the_oldest_request() {
        let lobby = Arc::<Lobby>::default();
        let t0 = Instant::now();
        let ms = |n| t0 + std::time::Duration::from_millis(n);
        let a = Place::new(lobby.enter(2, ms(0)));
        let b = lobby.enter(2, ms(1));
        assert!(!b.pushed_out);
        // `a` is busy: `b`, idle, is pushed out although it came later.
        a.request_started(ms(2));
        let c = lobby.enter(2, ms(3));
        assert!(c.pushed_out);
        let mut b_out = std::pin::pin!(b.eviction.notified());
        assert!(b_out.as_mut().enable(), "b was not told");
        assert_eq!(lobby.open(), 2);
        // Both busy: the request that began first goes.
        let c = Place::new(c);
        c.request_started(ms(4));
        let d = lobby.enter(2, ms(5));
        assert!(d.pushed_out);
        assert_eq!(lobby.open(), 2);
        a.request_ended(ms(6));
        c.request_ended(ms(6));
    }

    #[test]
    fn binding_leaves_the_lobby_and_counts_against_the_account() {
        let lobby = Arc::<Lobby>::default();
        let pool = Arc::<Pool>::default();
        let quota = Quota {
            per_uid: Some(1),
            total: 10,
        };
        let now = Instant::now();
        let places: Vec<Place> = (0..2).map(|_| Place::new(lobby.enter(5, now))).collect();
        assert_eq!(lobby.open(), 2);
        assert_eq!(places[0].bind(UserId(1000), &pool, quota), Ok(()));
        assert_eq!(places[0].bind(UserId(1000), &pool, quota), Ok(()));
        assert_eq!((lobby.open(), pool.open()), (1, 1));
        assert_eq!(
            places[1].bind(UserId(1000), &pool, quota),
            Err(Refusal::PerUid { limit: 1 })
        );
        assert_eq!(places[1].bind(UserId(1001), &pool, quota), Ok(()));
        assert_eq!((lobby.open(), pool.open()), (0, 2));
        drop(places);
        assert_eq!(pool.open(), 0);
    }
}
