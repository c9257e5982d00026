//! The event hub: numbers changes, keeps the last ones for clients that
//! reconnect (`Last-Event-ID`) and fans them out to live streams.

use std::collections::{HashMap, VecDeque};
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
    /// Increases by one per event of the same profile (each profile counts
    /// on its own, so ids say nothing of other accounts' activity); ids of
    /// a later daemon run are larger.
    pub id: u64,
    /// `kind.action`, e.g. `memory.updated`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the watcher saw it (RFC 3339).
    pub time: String,
    /// Whose profile it concerns (streams filter on it).
    #[serde(skip)]
    pub user: String,
    /// What happened.
    #[serde(flatten)]
    pub body: Body,
}

/// What an event carries.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Body {
    /// A record file changed.
    Change(Change),
    /// Anything else (agent runs): a JSON object, `user` included.
    Other(serde_json::Map<String, serde_json::Value>),
}

/// What a subscriber missed since the id it last saw.
#[derive(Debug)]
pub enum Catchup {
    /// The profile's events after that id, oldest first.
    Events(Vec<Arc<Event>>),
    /// The gap is older than the buffer (or the id is from nowhere): the
    /// client must reload what it shows.
    Resync,
}

/// A new subscriber's start.
pub struct Subscription {
    /// What it missed.
    pub catchup: Catchup,
    /// The live events, from now on.
    pub live: broadcast::Receiver<Arc<Event>>,
    /// The id of the profile's latest event so far (where a subscriber that
    /// falls behind resumes).
    pub newest: u64,
}

struct Ring {
    /// The last events of every profile, oldest first.
    events: VecDeque<Arc<Event>>,
    /// Per profile: the id its next event gets.
    next: HashMap<String, u64>,
    /// Per profile: the highest id dropped from the buffer.
    dropped: HashMap<String, u64>,
    /// The first id of every profile in this run.
    start: u64,
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
            .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
            .max(1);
        let (live, _) = broadcast::channel(1024);
        EventHub {
            ring: Mutex::new(Ring {
                events: VecDeque::with_capacity(BUFFER),
                next: HashMap::new(),
                dropped: HashMap::new(),
                start,
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
        let event_type = format!("{}.{}", change.kind.as_str(), change.action.as_str());
        let user = change.user.clone();
        self.publish_body(user, event_type, Body::Change(change));
    }

    /// Publishes an event that is not a file change (`agent.started`) on
    /// `user`'s stream; `fields` become the event's JSON (with `user`).
    pub fn publish_other(
        &self,
        user: &str,
        event_type: &str,
        mut fields: serde_json::Map<String, serde_json::Value>,
    ) {
        fields.insert("user".into(), user.into());
        self.publish_body(user.to_owned(), event_type.to_owned(), Body::Other(fields));
    }

    fn publish_body(&self, user: String, event_type: String, body: Body) {
        let mut ring = self.ring();
        let start = ring.start;
        let next = ring.next.entry(user.clone()).or_insert(start);
        let id = *next;
        *next += 1;
        let event = Arc::new(Event {
            id,
            event_type,
            time: timefmt::now_rfc3339(),
            user,
            body,
        });
        if ring.events.len() == BUFFER
            && let Some(old) = ring.events.pop_front()
        {
            ring.dropped.insert(old.user.clone(), old.id);
        }
        ring.events.push_back(event.clone());
        // Sent under the lock, so a subscriber sees each event exactly once:
        // either in its catch-up or live. No receivers is fine.
        let _ = self.live.send(event);
    }

    /// Subscribes to live events (of every profile: filter them by user);
    /// with `last`, also returns `user`'s events after that id.
    pub fn subscribe(&self, user: &str, last: Option<u64>) -> Subscription {
        let ring = self.ring();
        let live = self.live.subscribe();
        let next = ring.next.get(user).copied().unwrap_or(ring.start);
        let newest = next - 1;
        let catchup = match last {
            None => Catchup::Events(Vec::new()),
            // Every id up to the floor is gone (dropped, or from an
            // earlier run).
            Some(last)
                if last >= next
                    || last < ring.dropped.get(user).copied().unwrap_or(ring.start - 1) =>
            {
                Catchup::Resync
            }
            Some(last) => Catchup::Events(
                ring.events
                    .iter()
                    .filter(|e| e.user == user && e.id > last)
                    .cloned()
                    .collect(),
            ),
        };
        Subscription {
            catchup,
            live,
            newest,
        }
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

    fn change(user: &str, n: usize) -> Change {
        Change {
            user: user.into(),
            kind: Kind::Memory,
            action: Action::Created,
            record: Some(format!("evt-{n}")),
            path: format!("memory/episodic/2026/11/evt-{n}.md"),
            problem: None,
        }
    }

    fn ids(s: Subscription) -> Option<Vec<u64>> {
        match s.catchup {
            Catchup::Events(ev) => Some(ev.iter().map(|e| e.id).collect()),
            Catchup::Resync => None,
        }
    }

    #[test]
    fn reconnecting_gets_what_it_missed_or_resync() {
        let hub = EventHub::default();
        hub.publish(change("alice", 0));
        let first = hub.ring().events[0].id;
        hub.publish(change("bob", 1));
        hub.publish(change("alice", 2));
        hub.publish(change("alice", 3));
        // alice's ids count her events only: bob's leave no gap.
        assert_eq!(
            ids(hub.subscribe("alice", Some(first))),
            Some(vec![first + 1, first + 2])
        );
        assert_eq!(ids(hub.subscribe("alice", Some(first + 2))), Some(vec![]));
        assert_eq!(ids(hub.subscribe("alice", Some(1))), None);
        assert_eq!(ids(hub.subscribe("alice", Some(first + 99))), None);
        // Someone with no events yet, resuming from the start of this run.
        assert_eq!(ids(hub.subscribe("carol", Some(first - 1))), Some(vec![]));
        for n in 0..BUFFER {
            hub.publish(change("bob", n));
        }
        assert_eq!(ids(hub.subscribe("alice", Some(first))), None);
        assert_eq!(ids(hub.subscribe("alice", Some(first + 2))), Some(vec![]));
    }
}
