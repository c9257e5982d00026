//! The event hub: numbers changes, keeps the last ones for clients that
//! reconnect (`Last-Event-ID`) and fans them out to live streams.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use tokio::sync::{broadcast, watch};

use super::Change;
use crate::timefmt;

/// How many events are kept for clients that reconnect.
pub const BUFFER: usize = 10_000;

/// A change as it is streamed: numbered and timed.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// Increases by one per event; ids of a later daemon run are larger.
    pub id: u64,
    /// `kind.action`, e.g. `memory.updated`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the watcher saw it (RFC 3339).
    pub time: String,
    /// What changed.
    #[serde(flatten)]
    pub change: Change,
}

/// What a subscriber missed since the id it last saw.
#[derive(Debug)]
pub enum Catchup {
    /// The events after that id, oldest first (every user's: filter them).
    Events(Vec<Arc<Event>>),
    /// The gap is older than the buffer (or the id is from nowhere): the
    /// client must reload what it shows.
    Resync,
}

struct Ring {
    events: VecDeque<Arc<Event>>,
    /// The id the next event gets.
    next: u64,
}

/// Numbered changes, buffered and broadcast.
pub struct EventHub {
    ring: Mutex<Ring>,
    live: broadcast::Sender<Arc<Event>>,
    closed: watch::Sender<bool>,
}

impl Default for EventHub {
    fn default() -> Self {
        // Ids start at the start time in microseconds, so a client holding
        // an id from an earlier run is told to resync instead of being
        // matched against unrelated events.
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2));
        let (live, _) = broadcast::channel(1024);
        EventHub {
            ring: Mutex::new(Ring {
                events: VecDeque::with_capacity(BUFFER),
                next: start,
            }),
            live,
            closed: watch::channel(false).0,
        }
    }
}

impl EventHub {
    fn ring(&self) -> MutexGuard<'_, Ring> {
        match self.ring.lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Numbers `change`, keeps it and sends it to every live stream.
    pub fn publish(&self, change: Change) {
        let mut ring = self.ring();
        let event = Arc::new(Event {
            id: ring.next,
            event_type: format!("{}.{}", change.kind.as_str(), change.action.as_str()),
            time: timefmt::now_rfc3339(),
            change,
        });
        ring.next += 1;
        if ring.events.len() == BUFFER {
            ring.events.pop_front();
        }
        ring.events.push_back(event.clone());
        // Sent under the lock, so a subscriber sees each event exactly once:
        // either in its catch-up or live. No receivers is fine.
        let _ = self.live.send(event);
    }

    /// Subscribes to live events; with `last`, also returns what came after
    /// that id.
    pub fn subscribe(&self, last: Option<u64>) -> (Catchup, broadcast::Receiver<Arc<Event>>) {
        let ring = self.ring();
        let rx = self.live.subscribe();
        let Some(last) = last else {
            return (Catchup::Events(Vec::new()), rx);
        };
        let oldest = ring.next - ring.events.len() as u64;
        if last >= ring.next || last.saturating_add(1) < oldest {
            return (Catchup::Resync, rx);
        }
        let skip = usize::try_from(last + 1 - oldest).unwrap_or(usize::MAX);
        (
            Catchup::Events(ring.events.iter().skip(skip).cloned().collect()),
            rx,
        )
    }

    /// Ends every stream (at shutdown, so requests in flight can finish).
    pub fn close(&self) {
        let _ = self.closed.send(true);
    }

    /// Turns true when the streams must end.
    pub fn closed(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::{Action, Kind};

    fn change(n: u32) -> Change {
        Change {
            user: "alice".into(),
            kind: Kind::Memory,
            action: Action::Created,
            record: Some(format!("evt-{n}")),
            path: format!("memory/episodic/2026/11/evt-{n}.md"),
        }
    }

    #[test]
    fn reconnecting_gets_what_it_missed_or_resync() {
        let hub = EventHub::default();
        hub.publish(change(0));
        let (_, _rx) = hub.subscribe(None);
        let first = hub.ring().events[0].id;
        hub.publish(change(1));
        hub.publish(change(2));
        match hub.subscribe(Some(first)).0 {
            Catchup::Events(ev) => {
                let ids: Vec<_> = ev.iter().map(|e| e.id).collect();
                assert_eq!(ids, vec![first + 1, first + 2]);
            }
            Catchup::Resync => panic!("no resync expected"),
        }
        assert!(matches!(hub.subscribe(Some(1)).0, Catchup::Resync));
        assert!(matches!(hub.subscribe(Some(first + 99)).0, Catchup::Resync));
        match hub.subscribe(Some(first + 2)).0 {
            Catchup::Events(ev) => assert!(ev.is_empty()),
            Catchup::Resync => panic!("no resync expected"),
        }
        for n in 0..BUFFER as u32 {
            hub.publish(change(n));
        }
        assert!(matches!(hub.subscribe(Some(first)).0, Catchup::Resync));
    }
}
