//! The event hub: numbers changes, keeps the last ones for clients that
//! reconnect (`Last-Event-ID`) and fans them out to live streams.
//!
//! Each stream counts its own events: a profile's own events and the events
//! shared with everyone (knowledge). The id of an event in `user`'s stream
//! is `start + (user's own events before it) + (shared events before it)`,
//! so every stream's ids go up by one per event it carries, ids reveal
//! nothing of other accounts' activity, and a shared event stored once has
//! a known id in every stream (also the stream of an account that had no
//! events yet when it was published).

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
    /// Whose streams carry it, and its id in each.
    #[serde(skip)]
    pub audience: Audience,
    /// `kind.action`, e.g. `memory.updated`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the watcher saw it (RFC 3339).
    pub time: String,
    /// What happened.
    #[serde(flatten)]
    pub body: Body,
}

/// Whose streams carry an event.
#[derive(Clone, Debug)]
pub enum Audience {
    /// The stream of one profile (its owner's, and admins watching it).
    Profile {
        /// The account.
        user: String,
        /// The event's id in that stream.
        id: u64,
    },
    /// Every stream (knowledge changes).
    Everyone {
        /// The event's id in the streams of accounts that had events of
        /// their own before it.
        ids: HashMap<String, u64>,
        /// Its id in every other stream.
        base: u64,
    },
}

impl Event {
    /// The event's id in `user`'s stream, or `None` when that stream does
    /// not carry it. Ids increase by one per event a stream carries; ids of
    /// a later daemon run are larger.
    pub fn id_for(&self, user: &str) -> Option<u64> {
        match &self.audience {
            Audience::Profile { user: u, id } => (u == user).then_some(*id),
            Audience::Everyone { ids, base } => Some(ids.get(user).copied().unwrap_or(*base)),
        }
    }

    /// The profile the event concerns; `None` for shared events.
    pub fn profile(&self) -> Option<&str> {
        match &self.audience {
            Audience::Profile { user, .. } => Some(user),
            Audience::Everyone { .. } => None,
        }
    }

    /// The event as sent to a stream: its JSON with the stream's `id`.
    pub fn json_with_id(&self, id: u64) -> String {
        #[derive(Serialize)]
        struct Numbered<'a> {
            id: u64,
            #[serde(flatten)]
            event: &'a Event,
        }
        serde_json::to_string(&Numbered { id, event: self }).unwrap_or_default()
    }
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
    /// The last events of every profile, and the shared ones, oldest first.
    events: VecDeque<Arc<Event>>,
    /// Per profile: how many events of its own it had.
    own: HashMap<String, u64>,
    /// How many shared events there were.
    shared: u64,
    /// Per profile: the highest id of its own events dropped from the buffer.
    dropped: HashMap<String, u64>,
    /// The last shared event dropped from the buffer.
    dropped_shared: Option<Arc<Event>>,
    /// The first id of every stream in this run.
    start: u64,
}

impl Ring {
    /// The id `user`'s stream gives its next event.
    fn next_id(&self, user: &str) -> u64 {
        self.start + self.own.get(user).copied().unwrap_or(0) + self.shared
    }

    /// The highest id of `user`'s stream no longer in the buffer (`start -
    /// 1` when none was dropped).
    fn floor(&self, user: &str) -> u64 {
        let own = self.dropped.get(user).copied();
        let shared = self.dropped_shared.as_ref().and_then(|e| e.id_for(user));
        own.max(shared).unwrap_or(self.start - 1)
    }

    /// Keeps `event`, dropping the oldest when the buffer is full.
    fn keep(&mut self, event: Arc<Event>) {
        if self.events.len() == BUFFER
            && let Some(old) = self.events.pop_front()
        {
            match &old.audience {
                Audience::Profile { user, id } => {
                    self.dropped.insert(user.clone(), *id);
                }
                Audience::Everyone { .. } => self.dropped_shared = Some(old.clone()),
            }
        }
        self.events.push_back(event);
    }
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
                own: HashMap::new(),
                shared: 0,
                dropped: HashMap::new(),
                dropped_shared: None,
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

    /// Numbers `change`, keeps it and sends it to every live stream (each
    /// keeps its profile's changes only).
    pub fn publish(&self, change: Change) {
        let event_type = format!("{}.{}", change.kind.as_str(), change.action.as_str());
        let user = change.user.clone();
        self.publish_body(user, event_type, Body::Change(change));
    }

    /// Numbers `change` in every stream, keeps it once and sends it to
    /// every live stream (knowledge changes, which every eligible account
    /// sees).
    pub fn publish_shared(&self, change: Change) {
        let event_type = format!("{}.{}", change.kind.as_str(), change.action.as_str());
        let mut ring = self.ring();
        let k = ring.shared;
        let base = ring.start + k;
        let ids = ring
            .own
            .iter()
            .map(|(u, n)| (u.clone(), base + n))
            .collect();
        ring.shared += 1;
        let event = Arc::new(Event {
            audience: Audience::Everyone { ids, base },
            event_type,
            time: timefmt::now_rfc3339(),
            body: Body::Change(change),
        });
        ring.keep(event.clone());
        // Under the lock, as in `publish_body`.
        let _ = self.live.send(event);
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
        let id = ring.next_id(&user);
        *ring.own.entry(user.clone()).or_insert(0) += 1;
        let event = Arc::new(Event {
            audience: Audience::Profile { user, id },
            event_type,
            time: timefmt::now_rfc3339(),
            body,
        });
        ring.keep(event.clone());
        // Sent under the lock, so a subscriber sees each event exactly once:
        // either in its catch-up or live. No receivers is fine.
        let _ = self.live.send(event);
    }

    /// Subscribes to live events (of every profile: filter them with
    /// [`Event::id_for`]); with `last`, also returns the events of `user`'s
    /// stream after that id.
    pub fn subscribe(&self, user: &str, last: Option<u64>) -> Subscription {
        let ring = self.ring();
        let live = self.live.subscribe();
        let next = ring.next_id(user);
        let newest = next - 1;
        let catchup = match last {
            None => Catchup::Events(Vec::new()),
            // Every id up to the floor is gone (dropped, or from an
            // earlier run).
            Some(last) if last >= next || last < ring.floor(user) => Catchup::Resync,
            Some(last) => Catchup::Events(
                ring.events
                    .iter()
                    .filter(|e| e.id_for(user).is_some_and(|id| id > last))
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
            author: None,
        }
    }

    fn knowledge(n: usize) -> Change {
        Change {
            user: String::new(),
            kind: Kind::Knowledge,
            action: Action::Created,
            record: Some(format!("kn-{n}")),
            path: format!("kn-{n}.md"),
            problem: None,
            author: Some("alice".into()),
        }
    }

    fn ids_of(user: &str, s: Subscription) -> Option<Vec<u64>> {
        match s.catchup {
            Catchup::Events(ev) => Some(ev.iter().filter_map(|e| e.id_for(user)).collect()),
            Catchup::Resync => None,
        }
    }

    fn ids(s: Subscription) -> Option<Vec<u64>> {
        ids_of("alice", s)
    }

    #[test]
    fn reconnecting_gets_what_it_missed_or_resync() {
        let hub = EventHub::default();
        hub.publish(change("alice", 0));
        let first = hub.ring().events[0].id_for("alice").unwrap_or(0);
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

    #[test]
    fn shared_events_are_numbered_in_every_stream_without_gaps() {
        let hub = EventHub::default();
        let start = hub.ring().start;
        hub.publish(change("alice", 0)); // alice: start
        hub.publish_shared(knowledge(1)); // alice: start+1, others: start
        hub.publish(change("bob", 2)); // bob: start+1
        hub.publish_shared(knowledge(3)); // alice: start+2, bob: start+2, others: start+1
        hub.publish(change("alice", 4)); // alice: start+3
        assert_eq!(
            ids_of("alice", hub.subscribe("alice", Some(start - 1))),
            Some(vec![start, start + 1, start + 2, start + 3])
        );
        assert_eq!(
            ids_of("bob", hub.subscribe("bob", Some(start - 1))),
            Some(vec![start, start + 1, start + 2])
        );
        // An account with no events of its own sees the shared ones only,
        // numbered from the start; so does one that subscribes later.
        assert_eq!(
            ids_of("carol", hub.subscribe("carol", Some(start - 1))),
            Some(vec![start, start + 1])
        );
        assert_eq!(hub.subscribe("carol", None).newest, start + 1);
        assert_eq!(hub.subscribe("alice", None).newest, start + 3);
        // Resuming in the middle of the shared events.
        assert_eq!(
            ids_of("bob", hub.subscribe("bob", Some(start + 1))),
            Some(vec![start + 2])
        );
        // Once the buffer has dropped a shared event, a client older than
        // it must resync, whoever it is.
        for n in 0..BUFFER {
            hub.publish(change("dave", n));
        }
        assert_eq!(ids_of("carol", hub.subscribe("carol", Some(start))), None);
        assert_eq!(
            ids_of("carol", hub.subscribe("carol", Some(start + 1))),
            Some(vec![])
        );
    }
}
