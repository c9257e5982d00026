//! Connection and event-stream budgets (rule 9): every local account is a
//! possible attacker, so what one caller may hold open at once is counted
//! per uid, and root and admins keep a reserve no one else can take.
//!
//! The budgets come from `[limits]` (docs/CONFIG.md); the server asks for a
//! [`Slot`] per connection, the event route for one per stream, and a slot
//! gives its place back when dropped. This module knows nothing of HTTP:
//! the layers above turn a [`Refusal`] into a closed connection or a
//! problem+json answer.

mod lobby;
mod report;

pub use lobby::{Lobby, Place, Ticket};
pub use report::{Listener, Open, Refused, Reports};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::accounts::UserId;
use crate::config::Connections;

// The fixed constants of the budgets; what an admin may want to change is
// in `[limits]` (config::Connections, docs/CONFIG.md).

/// Descriptors kept for the daemon's own work (profile files, indexes,
/// watches, agents' pipes, locks, the TCP lobby, refusals being answered):
/// half the limit, at most this many.
const OWN_DESCRIPTORS: u64 = 1024;

/// Refused connections answered at once per listener; past that, a refused
/// connection is closed without an answer, so refusing never costs more
/// descriptors than this.
pub const REFUSING_AT_ONCE: usize = 16;

/// How long a refused connection may take to send the request its refusal
/// answers.
pub const REFUSAL_WAIT: Duration = Duration::from_secs(2);

/// How long a refused client is asked to wait before it retries
/// (`Retry-After`, seconds).
pub const RETRY_AFTER_SECS: u32 = 2;

/// At most one log line per caller and reason this often.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// Callers whose last logged refusal is remembered; beyond this many, those
/// logged more than [`LOG_EVERY`] ago are forgotten.
const LOGGED_CALLERS: usize = 1024;

/// What a caller may hold, from who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// uid 0: no per-uid cap, and the reserve.
    Root,
    /// An admin: the per-account cap, and the reserve.
    Admin,
    /// An eligible account: the per-account cap.
    Member,
    /// Anyone else (a system account, a uid without an account, or one the
    /// name service could not answer for): the small per-uid cap.
    Outsider,
}

/// How much one admission may take: at most `per_uid` for its uid and at
/// most `total` for everyone together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// The caller's own cap; `None` for root.
    pub per_uid: Option<usize>,
    /// The pool's cap as this caller may use it (the reserve included or
    /// not).
    pub total: usize,
}

impl Quota {
    /// The quota of a connection by a caller of `standing`, within a
    /// listener's `ceiling` (what the descriptor limit allows).
    pub fn connection(limits: &Connections, ceiling: usize, standing: Standing) -> Quota {
        let total = limits.total.min(ceiling);
        let shared = total.saturating_sub(limits.reserved);
        match standing {
            Standing::Root => Quota {
                per_uid: None,
                total,
            },
            Standing::Admin => Quota {
                per_uid: Some(limits.per_account),
                total,
            },
            Standing::Member => Quota {
                per_uid: Some(limits.per_account),
                total: shared,
            },
            Standing::Outsider => Quota {
                per_uid: Some(limits.per_ineligible_uid),
                total: shared,
            },
        }
    }

    /// The quota of an event stream: root is not capped, everyone else
    /// by `event_streams_per_account` (streams are connections too, so
    /// the connection budgets bound their total).
    pub fn stream(limits: &Connections, standing: Standing) -> Quota {
        Quota {
            per_uid: (standing != Standing::Root).then_some(limits.event_streams_per_account),
            total: usize::MAX,
        }
    }
}

/// Why an admission was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The caller already holds its own cap.
    PerUid {
        /// That cap.
        limit: usize,
    },
    /// Everyone together holds the pool's cap (as this caller may use it).
    Full {
        /// That cap.
        limit: usize,
    },
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_uid: HashMap<UserId, usize>,
}

/// Places held at once, per uid and in all.
#[derive(Debug, Default)]
pub struct Pool {
    counts: Mutex<Counts>,
}

impl Pool {
    /// A place for `uid` within `quota`, given back when the slot drops.
    pub fn admit(self: &Arc<Self>, uid: UserId, quota: Quota) -> Result<Slot, Refusal> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let held = c.by_uid.get(&uid).copied().unwrap_or(0);
        if let Some(limit) = quota.per_uid
            && held >= limit
        {
            return Err(Refusal::PerUid { limit });
        }
        if c.total >= quota.total {
            return Err(Refusal::Full { limit: quota.total });
        }
        c.total += 1;
        c.by_uid.insert(uid, held + 1);
        Ok(Slot {
            pool: self.clone(),
            uid,
        })
    }

    /// Places held now, in all.
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    fn release(&self, uid: UserId) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        // An entry per uid that holds something, and no more: the map
        // cannot grow with every uid that ever connected.
        if let Some(n) = c.by_uid.get_mut(&uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.by_uid.remove(&uid);
            }
        }
    }
}

/// One place in a [`Pool`], held by `uid` until dropped.
#[derive(Debug)]
pub struct Slot {
    pool: Arc<Pool>,
    uid: UserId,
}

impl Slot {
    /// Whose place it is.
    pub fn uid(&self) -> UserId {
        self.uid
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.pool.release(self.uid);
    }
}

/// Every budget the daemon keeps: one connection pool per listener, the
/// TCP lobby of connections not yet authenticated, the event streams, and
/// the refusals' log and counters.
#[derive(Debug)]
pub struct Budgets {
    /// Connections on the Unix socket, by peer uid.
    pub unix: Arc<Pool>,
    /// TCP connections bound to the account their token authenticated.
    pub tcp: Arc<Pool>,
    /// TCP connections not (yet) bound to an account.
    pub lobby: Arc<Lobby>,
    /// `/v1/events` streams, by the caller's uid, both listeners together.
    pub streams: Arc<Pool>,
    /// Refusals: logged once per caller per period, counted for metrics.
    pub reports: Reports,
    /// The most connections one listener may hold, whatever the config
    /// says: what the descriptor limit leaves after the daemon's own work.
    pub ceiling: usize,
}

impl Budgets {
    /// Budgets under a per-listener `ceiling`.
    pub fn new(ceiling: usize) -> Budgets {
        Budgets {
            unix: Arc::default(),
            tcp: Arc::default(),
            lobby: Arc::default(),
            streams: Arc::default(),
            reports: Reports::default(),
            ceiling,
        }
    }

    /// The metrics text of the budgets: open connections and streams, and
    /// refusals by listener and reason.
    pub fn render_metrics(&self) -> String {
        self.reports.render(Open {
            unix: self.unix.open(),
            tcp: self.tcp.open() + self.lobby.open(),
            streams: self.streams.open(),
        })
    }
}

/// The most connections each of `listeners` may hold so that, all full,
/// the daemon still has descriptors for its own work: the soft
/// `RLIMIT_NOFILE` (which the daemon raises to the hard limit at start)
/// less min(half of it, [`OWN_DESCRIPTORS`]), shared by the listeners.
pub fn descriptor_ceiling(listeners: usize) -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        // Unlimited: the kernel's own cap still applies; any sane total fits.
        .unwrap_or(u64::MAX / 2);
    let own = (limit / 2).min(OWN_DESCRIPTORS);
    let per = (limit - own) / u64::try_from(listeners.max(1)).unwrap_or(1);
    usize::try_from(per).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> Connections {
        Connections {
            per_account: 3,
            per_ineligible_uid: 1,
            total: 6,
            reserved: 2,
            unauthenticated: 2,
            event_streams_per_account: 2,
            idle_timeout: Duration::from_secs(30),
        }
    }

    #[test]
    fn each_uid_has_its_cap_and_the_reserve_is_for_root_and_admins() {
        let pool = Arc::<Pool>::default();
        let l = limits();
        let q = |s| Quota::connection(&l, usize::MAX, s);
        let (alice, bob, sys, admin) = (UserId(1000), UserId(1001), UserId(999), UserId(1002));
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(pool.admit(alice, q(Standing::Member)));
        }
        assert!(held.iter().all(Result::is_ok));
        assert_eq!(
            pool.admit(alice, q(Standing::Member)).err(),
            Some(Refusal::PerUid { limit: 3 })
        );
        held.push(pool.admit(sys, q(Standing::Outsider)));
        assert_eq!(
            pool.admit(sys, q(Standing::Outsider)).err(),
            Some(Refusal::PerUid { limit: 1 })
        );
        // 4 of 6 held: the last 2 are the reserve.
        assert_eq!(
            pool.admit(bob, q(Standing::Member)).err(),
            Some(Refusal::Full { limit: 4 })
        );
        held.push(pool.admit(admin, q(Standing::Admin)));
        held.push(pool.admit(UserId::ROOT, q(Standing::Root)));
        assert!(held.iter().all(Result::is_ok));
        assert_eq!(
            pool.admit(UserId::ROOT, q(Standing::Root)).err(),
            Some(Refusal::Full { limit: 6 })
        );
        // A slot dropped is a place back, for its own uid's count too.
        held.truncate(1);
        assert_eq!(pool.open(), 1);
        assert!(pool.admit(bob, q(Standing::Member)).is_ok());
    }

    #[test]
    fn full_listeners_leave_descriptors_for_the_daemons_own_work() {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX / 2);
        let ceiling = u64::try_from(descriptor_ceiling(2)).unwrap_or(u64::MAX);
        let own = limit - 2 * ceiling;
        assert!(own >= (limit / 2).min(OWN_DESCRIPTORS), "{own} of {limit}");
    }

    #[test]
    fn the_descriptor_ceiling_bounds_the_configured_total() {
        let l = limits();
        assert_eq!(Quota::connection(&l, 4, Standing::Root).total, 4);
        assert_eq!(Quota::connection(&l, 4, Standing::Member).total, 2);
        assert_eq!(Quota::stream(&l, Standing::Root).per_uid, None);
        assert_eq!(Quota::stream(&l, Standing::Outsider).per_uid, Some(2));
    }
}
