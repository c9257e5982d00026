//! How many searches each account may have running at once.
//!
//! A search runs on tokio's blocking pool, which every request shares and
//! which has a fixed number of threads. A search that a client gives up on
//! keeps running, so one account firing searches and hanging up could
//! otherwise fill the pool and the CPU while everyone else waits. Each uid
//! gets a few running searches; one more is refused at once (429) without
//! taking a thread.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::accounts::UserId;

/// Searches one account may have running at once.
pub const PER_ACCOUNT: usize = 2;
/// The longest a search matches before it answers with what it found.
pub const TIME: Duration = Duration::from_secs(2);

/// The running searches of every account.
#[derive(Debug, Default)]
pub struct Budget {
    running: Arc<Mutex<HashMap<UserId, usize>>>,
}

/// One running search; its slot is given back when it is dropped.
#[derive(Debug)]
pub struct Slot {
    running: Arc<Mutex<HashMap<UserId, usize>>>,
    uid: UserId,
}

/// The account already has [`PER_ACCOUNT`] searches running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "this account already has {running} searches running, the most at once; \
     wait for one to answer before starting another"
)]
pub struct Busy {
    /// How many are running.
    pub running: usize,
}

impl Budget {
    /// A slot for one search by `uid`, or [`Busy`].
    pub fn start(&self, uid: UserId) -> Result<Slot, Busy> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let n = running.entry(uid).or_insert(0);
        if *n >= PER_ACCOUNT {
            return Err(Busy { running: *n });
        }
        *n += 1;
        Ok(Slot {
            running: self.running.clone(),
            uid,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = running.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                running.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_account_has_its_own_slots() {
        let b = Budget::default();
        let (alice, bob) = (UserId(1001), UserId(1002));
        let a1 = b.start(alice);
        let a2 = b.start(alice);
        assert!(a1.is_ok() && a2.is_ok());
        assert_eq!(b.start(alice).err(), Some(Busy { running: 2 }));
        assert!(b.start(bob).is_ok(), "bob is not alice");
        drop(a1);
        assert!(
            b.start(alice).is_ok(),
            "a finished search gives its slot back"
        );
    }
}
