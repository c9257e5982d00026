//! Changes held back for a moment. Some editors (vim with its backup
//! copy, for one) move the original away before writing the new file, so a
//! record vanishes briefly on every save; if it comes back within the grace
//! period the pair is one `updated`, not `deleted` then `created`. And a
//! change of `profile.toml` is reported once the file has settled
//! (`store::SETTLE` after its last change), so it is judged whole, not
//! half written.

use std::time::{Duration, Instant};

use super::{Action, Change, Kind};
use crate::store::SETTLE;

/// How long a deletion waits for the file to come back.
pub const GRACE: Duration = Duration::from_millis(100);

/// The deletions not reported yet.
#[derive(Default)]
pub struct Held {
    deletions: Vec<(Instant, Change)>,
    /// At most one per profile: a later change replaces it and its time.
    settings: Vec<(Instant, Change)>,
}

impl Held {
    /// What of `changes` to report now; deletions are held until `now +
    /// GRACE`, and a creation of a held path becomes an update.
    pub fn merge(&mut self, changes: Vec<Change>, now: Instant) -> Vec<Change> {
        let mut out = Vec::new();
        for mut c in changes {
            if c.action == Action::Deleted {
                self.deletions.push((now + GRACE, c));
                continue;
            }
            if c.action == Action::Created
                && let Some(i) = self
                    .deletions
                    .iter()
                    .position(|(_, d)| d.user == c.user && d.path == c.path)
            {
                self.deletions.remove(i);
                c.action = Action::Updated;
            }
            if c.kind == Kind::Settings {
                if let Some(i) = self.settings.iter().position(|(_, s)| s.user == c.user) {
                    let (_, earlier) = self.settings.remove(i);
                    if earlier.action == Action::Created {
                        c.action = Action::Created;
                    }
                }
                self.settings.push((now + SETTLE, c));
                continue;
            }
            out.push(c);
        }
        out
    }

    /// The deletions whose grace period is over, oldest first.
    pub fn due(&mut self, now: Instant) -> Vec<Change> {
        let mut due = Vec::new();
        for held in [&mut self.deletions, &mut self.settings] {
            let (now_due, keep): (Vec<_>, Vec<_>) = held.drain(..).partition(|(t, _)| *t <= now);
            *held = keep;
            due.extend(now_due.into_iter().map(|(_, c)| c));
        }
        due
    }

    /// When the next held change is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.deletions
            .iter()
            .chain(&self.settings)
            .map(|(t, _)| *t)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::Kind;

    fn change(action: Action) -> Change {
        Change {
            user: "alice".into(),
            kind: Kind::Memory,
            action,
            record: Some("evt-1".into()),
            path: "memory/episodic/2026/11/evt-1.md".into(),
            problem: None,
            author: None,
        }
    }

    #[test]
    fn a_file_that_comes_back_is_an_update_and_one_that_does_not_is_deleted() {
        let mut held = Held::default();
        let t0 = Instant::now();
        assert!(held.merge(vec![change(Action::Deleted)], t0).is_empty());
        let out = held.merge(vec![change(Action::Created)], t0);
        assert_eq!(out, vec![change(Action::Updated)]);
        assert!(held.next_due().is_none());

        assert!(held.merge(vec![change(Action::Deleted)], t0).is_empty());
        assert!(held.due(t0).is_empty());
        assert_eq!(held.due(t0 + GRACE), vec![change(Action::Deleted)]);
        assert!(held.next_due().is_none());
    }

    #[test]
    fn a_settings_change_is_reported_once_the_file_settles() {
        let settings = |action| Change {
            kind: Kind::Settings,
            record: None,
            path: "profile.toml".into(),
            ..change(action)
        };
        let mut held = Held::default();
        let t0 = Instant::now();
        assert!(held.merge(vec![settings(Action::Created)], t0).is_empty());
        let t1 = t0 + SETTLE / 2;
        // Written again: one change, due SETTLE after the last, and still
        // a creation.
        assert!(held.merge(vec![settings(Action::Updated)], t1).is_empty());
        assert!(held.due(t0 + SETTLE).is_empty());
        assert_eq!(held.next_due(), Some(t1 + SETTLE));
        assert_eq!(held.due(t1 + SETTLE), vec![settings(Action::Created)]);
        assert!(held.next_due().is_none());
    }
}
