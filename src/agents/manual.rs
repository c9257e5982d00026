//! Manual runs (`POST /v1/agents/{name}/run`): budgeted per account and
//! run on threads of their own (rule 9).
//!
//! A manual run used to wait for the user's lock and then run on the API's
//! shared blocking pool. A client that closed its connection got its
//! connection budget back while the thread went on, so one user could
//! fill the pool with runs and lock waits and freeze every handler's
//! blocking work, root's included. Now:
//!
//! - at most one manual run of an agent per account is in flight, and at
//!   most [`PER_ACCOUNT`] across her agents: beyond that the request is
//!   refused at once (`409 agent_busy`);
//! - the wait for a busy profile lock is an asynchronous sleep between
//!   tries, part of the request: it costs no thread, and it ends when the
//!   client leaves (the ticket goes with it);
//! - once the lock is taken the run goes to a thread of its own, from a
//!   bounded count ([`SHARED_THREADS`], and [`ADMIN_RESERVE`] more that only
//!   admins' requests may use), never the API's blocking pool; the ticket
//!   goes with the thread, so a client that leaves does not give its
//!   budget back while the run goes on.
//!
//! Counts are per target account: an admin's `?user=alice` counts against
//! alice's profile, which is what it keeps busy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::catalog::Agent;
use super::runlog::Run;
use super::{Trigger, cycle, locks};
use crate::accounts::{Account, Snapshot};
use crate::api::AppState;

/// Manual runs in flight per account, across her agents.
pub const PER_ACCOUNT: usize = 2;
/// Threads for manual runs anyone may start.
pub const SHARED_THREADS: usize = 32;
/// Threads only admins' requests may use once the shared ones are taken.
pub const ADMIN_RESERVE: usize = 8;
/// How often a waiting request tries the user's lock again.
const RETRY: Duration = Duration::from_millis(100);

/// Why a manual run was not started.
#[derive(Debug)]
pub enum Refused {
    /// This agent already has a manual run in flight for this account, or
    /// the account is at [`PER_ACCOUNT`].
    Busy(String),
    /// Every thread for manual runs is taken.
    Saturated(String),
    /// The run could not start (no thread, or the profile is gone).
    Failed(String),
}

/// The manual runs in flight.
#[derive(Default)]
pub struct Manual {
    inflight: Mutex<InFlight>,
    idle: tokio::sync::Notify,
}

#[derive(Default)]
struct InFlight {
    /// Agent keys in flight, by account name.
    by_user: HashMap<String, Vec<String>>,
    /// Threads taken from the shared count and from the admins' reserve.
    shared: usize,
    reserve: usize,
}

impl InFlight {
    fn is_empty(&self) -> bool {
        self.by_user.is_empty()
    }
}

/// Which count a ticket's thread comes from.
#[derive(Clone, Copy, Debug)]
enum Pool {
    Shared,
    Reserve,
}

fn locked(m: &Mutex<InFlight>) -> MutexGuard<'_, InFlight> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Manual {
    /// Waits until no manual run is in flight (the daemon's stop).
    pub async fn ended(&self) {
        loop {
            let notified = self.idle.notified();
            if locked(&self.inflight).is_empty() {
                return;
            }
            notified.await;
        }
    }
}

/// One manual run's place in the budget; given back on drop.
struct Ticket {
    state: Arc<AppState>,
    user: String,
    key: String,
    pool: Pool,
}

impl Ticket {
    fn take(
        state: &Arc<AppState>,
        user: &str,
        agent: &Agent,
        admin: bool,
    ) -> Result<Ticket, Refused> {
        let key = agent.key();
        let manual = &state.agents.manual;
        let mut inflight = locked(&manual.inflight);
        let mine = inflight.by_user.get(user).map_or(&[][..], Vec::as_slice);
        if mine.contains(&key) {
            return Err(Refused::Busy(format!(
                "a manual run of agent {:?} for {user} is already in progress; wait for it to end (`profilectl agent runs {}` shows it when it has) instead of starting it again",
                agent.name, agent.name
            )));
        }
        if mine.len() >= PER_ACCOUNT {
            return Err(Refused::Busy(format!(
                "{user} already has {PER_ACCOUNT} manual agent runs in progress ({}); wait for one to end before starting another",
                mine.join(", ")
            )));
        }
        let pool = if inflight.shared < SHARED_THREADS {
            inflight.shared += 1;
            Pool::Shared
        } else if admin && inflight.reserve < ADMIN_RESERVE {
            inflight.reserve += 1;
            Pool::Reserve
        } else {
            return Err(Refused::Saturated(format!(
                "all {SHARED_THREADS} places for manual agent runs are taken; try again in a while"
            )));
        };
        inflight
            .by_user
            .entry(user.to_owned())
            .or_default()
            .push(key.clone());
        Ok(Ticket {
            state: state.clone(),
            user: user.to_owned(),
            key,
            pool,
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let manual = &self.state.agents.manual;
        let mut inflight = locked(&manual.inflight);
        match self.pool {
            Pool::Shared => inflight.shared = inflight.shared.saturating_sub(1),
            Pool::Reserve => inflight.reserve = inflight.reserve.saturating_sub(1),
        }
        if let Some(keys) = inflight.by_user.get_mut(&self.user) {
            if let Some(at) = keys.iter().position(|k| *k == self.key) {
                keys.swap_remove(at);
            }
            if keys.is_empty() {
                inflight.by_user.remove(&self.user);
            }
        }
        if inflight.is_empty() {
            manual.idle.notify_waiters();
        }
    }
}

/// Runs `agent` for `account` now (someone asked; `admin` when the caller
/// is an admin): takes a place in the budget or is refused at once, waits
/// for the user's lock (at most `lock_wait`, asynchronously: the wait ends
/// if the caller goes away), then runs on a thread of its own and answers
/// the run. A profile that stayed busy is recorded as a skipped run.
pub async fn run(
    state: Arc<AppState>,
    agent: Agent,
    account: Account,
    admin: bool,
) -> Result<Run, Refused> {
    let ticket = Ticket::take(&state, &account.name, &agent, admin)?;
    let wait = state.config().agents.lock_wait;
    let deadline = Instant::now() + wait;
    let lock = loop {
        match cycle::try_user_lock(&state, &account) {
            Ok(Some(held)) => break Ok(Some(held)),
            // The daemon's stop ends the wait too: it waits for manual runs.
            Ok(None) if Instant::now() >= deadline || state.agents.stopping() => break Ok(None),
            Ok(None) => tokio::time::sleep(RETRY).await,
            Err(e) => break Err(e),
        }
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let st = state.clone();
    std::thread::Builder::new()
        .name("agent-manual".into())
        .spawn(move || {
            // Held until the run ends, whether or not anyone still waits
            // for its answer.
            let _ticket = ticket;
            let _ = tx.send(run_on_thread(&st, &agent, &account, lock, wait));
        })
        .map_err(|e| Refused::Failed(format!("cannot start a thread for the run: {e}")))?;
    rx.await.unwrap_or_else(|_| {
        Err(Refused::Failed(
            "the run's thread ended without an answer; the daemon's log has the details".into(),
        ))
    })
}

fn run_on_thread(
    state: &AppState,
    agent: &Agent,
    account: &Account,
    lock: Result<Option<locks::Held>, String>,
    wait: Duration,
) -> Result<Run, Refused> {
    let profile = match state.root().open_owned(account) {
        Ok(Some(p)) => p,
        Ok(None) => {
            return Err(Refused::Failed(format!(
                "{}'s profile is gone or changed owner; nothing was run",
                account.name
            )));
        }
        Err(e) => return Err(Refused::Failed(e.to_string())),
    };
    let trigger = Trigger::Manual;
    Ok(match lock {
        Ok(Some(held)) => cycle::run_user(
            state,
            agent,
            &profile,
            &Snapshot::new(),
            &trigger,
            true,
            held,
        ),
        Ok(None) => cycle::record_skipped(
            state,
            agent,
            &profile,
            &trigger,
            format!(
                "another agent kept {}'s profile busy for {wait:?}; this run was skipped",
                account.name
            ),
        ),
        Err(e) => cycle::record_error(state, agent, &profile, &trigger, e),
    })
}

/// Runs a whole cycle of `agent` now (an admin's `?all=true`) on a thread
/// of its own, not the API's blocking pool: a cycle may wait `lock_wait`
/// for the agent's lock and then run for every user.
pub async fn cycle(state: Arc<AppState>, agent: Agent) -> Result<super::CycleOutcome, Refused> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("agent-cycle".into())
        .spawn(move || {
            let _ = tx.send(super::run_cycle_now(&state, &agent));
        })
        .map_err(|e| Refused::Failed(format!("cannot start a thread for the cycle: {e}")))?;
    rx.await.map_err(|_| {
        Refused::Failed(
            "the cycle's thread ended without an answer; the daemon's log has the details".into(),
        )
    })
}
