//! Deletions held back for a moment. Some editors (vim with its backup
//! copy, for one) move the original away before writing the new file, so a
//! record vanishes briefly on every save; if it comes back within the grace
//! period the pair is one `updated`, not `deleted` then `created`.

use std::time::{Duration, Instant};

use super::{Action, Change};

/// How long a deletion waits for the file to come back.
pub const GRACE: Duration = Duration::from_millis(100);

/// The deletions not reported yet.
#[derive(Default)]
pub struct Held {
    deletions: Vec<(Instant, Change)>,
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
            out.push(c);
        }
        out
    }

    /// The deletions whose grace period is over, oldest first.
    pub fn due(&mut self, now: Instant) -> Vec<Change> {
        let (due, keep): (Vec<_>, Vec<_>) = self.deletions.drain(..).partition(|(t, _)| *t <= now);
        self.deletions = keep;
        due.into_iter().map(|(_, c)| c).collect()
    }

    /// When the next held deletion is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.deletions.iter().map(|(t, _)| *t).min()
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
}
