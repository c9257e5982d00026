//! Failed-login throttling: per account and per client, with delays that
//! double after a few free attempts. An account's own failures never delay
//! another account.
//!
//! A client is the account that owns the connecting socket where the
//! kernel says so, else the address ([`Client`]). Its count is kept per
//! (client, account): it bounds one client's guesses at one account, and
//! never touches other accounts' logins or other clients' (a client-wide
//! block would let anyone whose connections fall back to the shared
//! address bucket lock everybody out). Both the check and the count reach
//! a client's record through [`Attempt`], the one place its key is made.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::client::Client;

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

/// The name a login tried, as the throttle counts it: case variants of one
/// name (which SSSD may accept as the same account) share one count.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AccountKey(String);

impl AccountKey {
    /// The key of the user name `name`.
    pub fn of(name: &str) -> AccountKey {
        AccountKey(name.to_lowercase())
    }
}

/// One login attempt: which account, from which client.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Attempt {
    account: AccountKey,
    client: Client,
}

impl Attempt {
    /// An attempt at the account named `name` from `client`.
    pub fn new(name: &str, client: Client) -> Attempt {
        Attempt {
            account: AccountKey::of(name),
            client,
        }
    }
}

/// The login throttle.
#[derive(Debug)]
pub struct Throttle {
    accounts: Mutex<HashMap<AccountKey, Failures>>,
    /// Keyed by the whole attempt: (client, account).
    clients: Mutex<HashMap<Attempt, Failures>>,
}

/// The limits the throttle applies.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Failures per account before delays start.
    pub account_free: u32,
    /// Failures per client (at one account) before delays start.
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
    /// `Err(retry_after)` while the attempt's account or client must wait.
    pub fn check(&self, attempt: &Attempt, now: Instant) -> Result<(), Duration> {
        match wait(&self.accounts, &attempt.account, now).max(wait(&self.clients, attempt, now)) {
            Some(d) => Err(d),
            None => Ok(()),
        }
    }

    /// Records a failed attempt.
    pub fn failed(&self, attempt: &Attempt, policy: Policy, now: Instant) {
        bump(
            &self.accounts,
            &attempt.account,
            policy.account_free,
            policy.max_delay,
            now,
        );
        bump(
            &self.clients,
            attempt,
            policy.client_free,
            policy.max_delay,
            now,
        );
    }

    /// Records a successful attempt: the account's count and this client's
    /// count at the account are wiped. Other clients' counts at the account
    /// are not, or the account's owner logging in would reset the count of
    /// whoever is guessing her password.
    pub fn succeeded(&self, attempt: &Attempt) {
        self.accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&attempt.account);
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(attempt);
    }
}

/// How long `key` must still wait, if it must.
fn wait<K: Eq + Hash>(
    map: &Mutex<HashMap<K, Failures>>,
    key: &K,
    now: Instant,
) -> Option<Duration> {
    let map = map.lock().unwrap_or_else(|p| p.into_inner());
    map.get(key)
        .and_then(|f| f.blocked_until)
        .and_then(|until| until.checked_duration_since(now))
        .filter(|d| !d.is_zero())
}

fn bump<K: Eq + Hash + Clone>(
    map: &Mutex<HashMap<K, Failures>>,
    key: &K,
    free: u32,
    max: Duration,
    now: Instant,
) {
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
    let entry = map.entry(key.clone()).or_insert(Failures {
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
    use crate::accounts::UserId;

    const POLICY: Policy = Policy {
        account_free: 3,
        client_free: 10,
        max_delay: Duration::from_secs(60),
    };

    const ROOT: Client = Client::Account(UserId(0));

    #[test]
    fn delays_start_after_the_free_attempts_and_double() {
        let t = Throttle::default();
        let now = Instant::now();
        let alice = Attempt::new("alice", ROOT);
        for _ in 0..3 {
            assert!(t.check(&alice, now).is_ok());
            t.failed(&alice, POLICY, now);
        }
        assert!(t.check(&alice, now).is_ok());
        t.failed(&alice, POLICY, now);
        assert_eq!(t.check(&alice, now), Err(Duration::from_secs(1)));
        t.failed(&alice, POLICY, now);
        assert_eq!(t.check(&alice, now), Err(Duration::from_secs(2)));
        // Another account from the same client is not delayed; case
        // variants of a name are the same account.
        assert!(t.check(&Attempt::new("bob", ROOT), now).is_ok());
        assert!(t.check(&Attempt::new("ALICE", ROOT), now).is_err());
        // The delay passes.
        assert!(t.check(&alice, now + Duration::from_secs(3)).is_ok());
        t.succeeded(&alice);
        t.failed(&alice, POLICY, now);
        assert!(t.check(&alice, now).is_ok());
    }

    #[test]
    fn a_spray_across_accounts_never_blocks_another_account() {
        let t = Throttle::default();
        let now = Instant::now();
        let shared = Client::Address("127.0.0.1".parse().expect("ip"));
        for i in 0..50 {
            t.failed(&Attempt::new(&format!("user{i}"), shared), POLICY, now);
        }
        assert!(t.check(&Attempt::new("bob", shared), now).is_ok());
    }

    #[test]
    fn the_client_limit_holds_across_the_owners_own_logins() {
        let t = Throttle::default();
        let now = Instant::now();
        let guesser = Attempt::new("alice", Client::Account(UserId(1002)));
        let owner = Attempt::new("alice", Client::Account(UserId(1001)));
        let mut blocked = false;
        for i in 0..30 {
            blocked |= t.check(&guesser, now).is_err();
            t.failed(&guesser, POLICY, now);
            if i % 2 == 1 {
                // Her own logins clear the account's count, not the
                // guesser's.
                assert!(t.check(&owner, now).is_ok(), "alice held up at {i}");
                t.succeeded(&owner);
            }
        }
        assert!(blocked, "the guesser was never held up");
    }
}
