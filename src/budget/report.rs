//! What the budgets refused: one log line per caller and reason per
//! [`LOG_EVERY`](super::LOG_EVERY) (an attacker reconnecting in a loop must not flood the
//! journal), and counters for `/v1/metrics` (no uid or name appears
//! there: the metrics are public).

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::{LOG_EVERY, LOGGED_CALLERS};
use crate::accounts::UserId;

/// Where a connection came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Listener {
    /// The Unix socket.
    Unix,
    /// Loopback TCP.
    Tcp,
}

impl Listener {
    fn label(self) -> &'static str {
        match self {
            Listener::Unix => "unix",
            Listener::Tcp => "tcp",
        }
    }
}

/// What was refused, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refused {
    /// A connection: the caller holds its own cap.
    Account,
    /// A connection: the listener is full (for this caller).
    Full,
    /// An event stream: the account holds its cap.
    Stream,
}

impl Refused {
    const ALL: [Refused; 3] = [Refused::Account, Refused::Full, Refused::Stream];

    fn label(self) -> &'static str {
        match self {
            Refused::Account => "account",
            Refused::Full => "total",
            Refused::Stream => "event_streams",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A refusal as logged: where, what, and whose (`None`: not known yet).
type LogKey = (Listener, Refused, Option<UserId>);

/// What is open right now, for the gauges.
#[derive(Clone, Copy, Debug)]
pub struct Open {
    /// Connections on the socket.
    pub unix: usize,
    /// TCP connections, bound or in the lobby.
    pub tcp: usize,
    /// Event streams.
    pub streams: usize,
}

/// The refusals' counters and log memory.
#[derive(Debug, Default)]
pub struct Reports {
    unix: [AtomicU64; 3],
    tcp: [AtomicU64; 3],
    pushed_out: AtomicU64,
    /// When each caller's refusal was last logged.
    logged: Mutex<HashMap<LogKey, Instant>>,
}

impl Reports {
    /// Counts a refusal of `who` (`None`: not known yet, on TCP) and logs
    /// `why` unless the same was logged less than [`LOG_EVERY`] ago.
    pub fn refused(&self, listener: Listener, what: Refused, who: Option<UserId>, why: &str) {
        let counters = match listener {
            Listener::Unix => &self.unix,
            Listener::Tcp => &self.tcp,
        };
        counters[what.index()].fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        let key = (listener, what, who);
        if logged
            .get(&key)
            .is_some_and(|t| now.saturating_duration_since(*t) < LOG_EVERY)
        {
            return;
        }
        if logged.len() >= LOGGED_CALLERS {
            logged.retain(|_, t| now.saturating_duration_since(*t) < LOG_EVERY);
        }
        logged.insert(key, now);
        drop(logged);
        let caller = who.map_or_else(
            || "an unauthenticated client".to_owned(),
            |u| format!("uid {u}"),
        );
        tracing::warn!(
            "refused a {} {} from {caller}: {why} (logged once a minute per caller; \
             profiled_connections_refused_total counts them all)",
            listener.label(),
            if what == Refused::Stream {
                "event stream"
            } else {
                "connection"
            },
        );
    }

    /// Counts an idle unauthenticated TCP connection pushed out of the
    /// lobby for a newcomer.
    pub fn pushed_out(&self) {
        self.pushed_out.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text of the counters and of `open`.
    pub fn render(&self, open: Open) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP profiled_connections_refused_total Connections and event streams refused by the per-caller budgets, by listener and reason.\n\
             # TYPE profiled_connections_refused_total counter\n",
        );
        for (listener, counters) in [(Listener::Unix, &self.unix), (Listener::Tcp, &self.tcp)] {
            for what in Refused::ALL {
                let _ = writeln!(
                    out,
                    "profiled_connections_refused_total{{listener=\"{}\",reason=\"{}\"}} {}",
                    listener.label(),
                    what.label(),
                    counters[what.index()].load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP profiled_connections_pushed_out_total Idle unauthenticated TCP connections closed to make room for a new one.\n\
             # TYPE profiled_connections_pushed_out_total counter\n\
             profiled_connections_pushed_out_total {}",
            self.pushed_out.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP profiled_connections Open connections by listener.\n\
             # TYPE profiled_connections gauge\n\
             profiled_connections{{listener=\"unix\"}} {}\n\
             profiled_connections{{listener=\"tcp\"}} {}",
            open.unix, open.tcp
        );
        let _ = writeln!(
            out,
            "# HELP profiled_event_streams Open /v1/events streams.\n\
             # TYPE profiled_event_streams gauge\n\
             profiled_event_streams {}",
            open.streams
        );
        out
    }
}
