//! Failed-login throttling: per account and per client address, with
//! delays that double after a few free attempts. An account's own failures
//! never delay another account. The listener is loopback only, so every
//! client has the same address and an address cannot tell one local user
//! from another: a client-wide block would let anyone lock everybody out.
//! The client count is therefore kept per (address, account): it bounds
//! guesses at one account from one place, never other accounts' logins.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures are forgotten after this long without a new one.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// The first delay once the free attempts are used up.
const FIRST_DELAY: Duration = Duration::from_secs(1);
/// Entries kept per map; beyond it the stalest is dropped, so a flood of
/// made-up user names cannot grow memory without bound.
const MAX_ENTRIES: usize = 10_000;

#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

/// The login throttle.
#[derive(Debug)]
pub struct Throttle {
    accounts: Mutex<HashMap<String, Failures>>,
    clients: Mutex<HashMap<String, Failures>>,
}

/// The limits the throttle applies.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Failures per account before delays start.
    pub account_free: u32,
    /// Failures per client before delays start.
    pub client_free: u32,
    /// The longest delay.
    pub max_delay: Duration,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            accounts: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
        }
    }
}

impl Throttle {
    /// `Err(retry_after)` while `user` or `client` must wait.
    pub fn check(&self, user: &str, client: &str, now: Instant) -> Result<(), Duration> {
        let wait = |map: &Mutex<HashMap<String, Failures>>, key: &str| {
            let map = map.lock().unwrap_or_else(|p| p.into_inner());
            map.get(key)
                .and_then(|f| f.blocked_until)
                .and_then(|until| until.checked_duration_since(now))
                .filter(|d| !d.is_zero())
        };
        let client = client_key(client, user);
        match wait(&self.accounts, user).max(wait(&self.clients, &client)) {
            Some(d) => Err(d),
            None => Ok(()),
        }
    }

    /// Records a failed login of `user` from `client`.
    pub fn failed(&self, user: &str, client: &str, policy: Policy, now: Instant) {
        bump(
            &self.accounts,
            user,
            policy.account_free,
            policy.max_delay,
            now,
        );
        bump(
            &self.clients,
            client,
            policy.client_free,
            policy.max_delay,
            now,
        );
    }

    /// Records a successful login: the account's slate is wiped (the
    /// client's is not, or one good login would reset a spray).
    pub fn succeeded(&self, user: &str) {
        self.accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(user);
    }
}

fn client_key(client: &str, user: &str) -> String {
    format!("{client} {user}")
}

fn bump(map: &Mutex<HashMap<String, Failures>>, key: &str, free: u32, max: Duration, now: Instant) {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    if map.len() >= MAX_ENTRIES
        && !map.contains_key(key)
        && let Some(stalest) = map
            .iter()
            .min_by_key(|(_, f)| f.last)
            .map(|(k, _)| k.clone())
    {
        map.remove(&stalest);
    }
    let entry = map.entry(key.to_owned()).or_insert(Failures {
        count: 0,
        last: now,
        blocked_until: None,
    });
    if now.duration_since(entry.last) > FORGET_AFTER {
        entry.count = 0;
    }
    entry.count = entry.count.saturating_add(1);
    entry.last = now;
    if entry.count > free {
        let doublings = (entry.count - free - 1).min(20);
        let delay = FIRST_DELAY.saturating_mul(1 << doublings).min(max);
        entry.blocked_until = Some(now + delay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        account_free: 3,
        client_free: 10,
        max_delay: Duration::from_secs(60),
    };

    #[test]
    fn delays_start_after_the_free_attempts_and_double() {
        let t = Throttle::default();
        let now = Instant::now();
        for _ in 0..3 {
            assert!(t.check("alice", "c", now).is_ok());
            t.failed("alice", "c", POLICY, now);
        }
        assert!(t.check("alice", "c", now).is_ok());
        t.failed("alice", "c", POLICY, now);
        assert_eq!(t.check("alice", "c", now), Err(Duration::from_secs(1)));
        t.failed("alice", "c", POLICY, now);
        assert_eq!(t.check("alice", "c", now), Err(Duration::from_secs(2)));
        // Another account from the same client is not delayed.
        assert!(t.check("bob", "c", now).is_ok());
        // The delay passes.
        assert!(t.check("alice", "c", now + Duration::from_secs(3)).is_ok());
        t.succeeded("alice");
        t.failed("alice", "c", POLICY, now);
        assert!(t.check("alice", "c", now).is_ok());
    }

    #[test]
    fn a_spray_across_accounts_never_blocks_another_account() {
        let t = Throttle::default();
        let now = Instant::now();
        for i in 0..50 {
            t.failed(&format!("user{i}"), "127.0.0.1", POLICY, now);
        }
        assert!(t.check("bob", "127.0.0.1", now).is_ok());
    }
}
