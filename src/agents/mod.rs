//! Agents: declarations (agents.d and profile.toml), the scheduler
//! (intervals, cron expressions, path triggers), cycles under flock locks,
//! the external-process runner of rule 3 and the built-ins' dispatch.
//! See docs/CONFIG.md for the declaration format and docs/DESIGN.md, "An agent run".

pub mod builtin;
pub mod catalog;
pub mod cgroup;
pub mod credsdir;
pub mod cycle;
pub mod decl;
pub mod guard;
pub mod locks;
pub mod manual;
pub mod plan;
pub mod runlog;
pub mod runner;
mod scheduler;
mod spawn;

pub use catalog::{Agent, Owner};
pub use cycle::CycleOutcome;
pub use runlog::Run;
pub use scheduler::start;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::accounts::{Account, Eligibility, Snapshot};
use crate::api::AppState;
use crate::audit::Auditor;
use crate::profile::{ProfileDir, ProfileState};
use crate::store::{Store, Wait};

/// What started a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The schedule, for the slot (Unix seconds) it names.
    Schedule(i64),
    /// Someone asked (`POST /v1/agents/{name}/run`).
    Manual,
    /// A path matching `on_change` changed.
    Change(String),
}

impl Trigger {
    /// As written in the run log.
    pub fn label(&self) -> String {
        match self {
            Trigger::Schedule(_) => "schedule".into(),
            Trigger::Manual => "manual".into(),
            Trigger::Change(path) => format!("change:{path}"),
        }
    }

    /// The scheduled slot, for scheduled cycles.
    pub fn slot(&self) -> Option<i64> {
        match self {
            Trigger::Schedule(s) => Some(*s),
            _ => None,
        }
    }
}

/// The agents' shared state: declarations, last runs, next runs, the stop
/// flag.
#[derive(Default)]
pub struct Agents {
    admin: Mutex<catalog::AdminAgents>,
    last: Mutex<HashMap<(String, String), Run>>,
    next: Mutex<HashMap<String, i64>>,
    stop: AtomicBool,
    guard: std::sync::OnceLock<Option<guard::Guard>>,
    setup: std::sync::OnceLock<runner::Setup>,
    /// The manual runs in flight (their budget).
    pub manual: manual::Manual,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Agents {
    /// Whether the daemon is stopping (cycles end after the current user).
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Asks runs and cycles to end (SIGTERM).
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn stop_flag(&self) -> &AtomicBool {
        &self.stop
    }

    /// Starts the agent guard (once; the daemon does at start-up).
    pub fn start_guard(&self) {
        self.guard.get_or_init(guard::Guard::spawn);
    }

    fn guard(&self) -> Option<&guard::Guard> {
        self.guard.get().and_then(Option::as_ref)
    }

    /// The helper and the cgroup tree, found (and the tree cleaned of a
    /// previous life's runs) on first use; the scheduler asks at start-up.
    pub fn setup(&self, runtime_dir: &std::path::Path) -> &runner::Setup {
        self.setup.get_or_init(|| runner::Setup::new(runtime_dir))
    }

    /// Tells the guard of the cgroup tree (it removes the tree if the
    /// daemon is killed), or at the daemon's stop removes it: both only
    /// once no run is in it.
    pub fn tree_started(&self) {
        if let (Some(g), Some(tree)) =
            (self.guard(), self.setup.get().and_then(runner::Setup::tree))
        {
            g.watch(&guard::Target::Tree(tree.path().to_owned()));
        }
    }

    /// Removes the cgroup tree at the daemon's stop (every run has ended).
    pub fn tree_stopped(&self) {
        if let Some(tree) = self.setup.get().and_then(runner::Setup::tree) {
            tree.remove_if_empty();
        }
    }

    /// How runs are contained, once known (`None` before the scheduler
    /// started): the cgroup tree, or why process groups are used.
    pub fn containment(&self) -> Option<Result<&std::path::Path, &str>> {
        self.setup.get().map(runner::Setup::containment)
    }

    /// Re-reads agents.d where it changed.
    pub fn refresh_admin(&self, dir: &std::path::Path) -> bool {
        locked(&self.admin).refresh(dir)
    }

    /// The admins' agents in force.
    pub fn admin_agents(&self) -> std::collections::BTreeMap<String, Agent> {
        locked(&self.admin).agents()
    }

    /// What is wrong in agents.d (`file:line: reason` each).
    pub fn admin_problems(&self) -> Vec<String> {
        locked(&self.admin).problems()
    }

    fn record(&self, agent: &Agent, run: &Run) {
        locked(&self.last).insert((agent.key(), run.user.clone()), run.clone());
    }

    /// The last run of `agent` for `user` seen by this daemon.
    pub fn last_run(&self, agent: &Agent, user: &str) -> Option<Run> {
        locked(&self.last)
            .get(&(agent.key(), user.to_owned()))
            .cloned()
    }

    /// When the next scheduled cycle of `agent` starts (Unix seconds).
    pub fn next_run(&self, agent: &Agent) -> Option<i64> {
        locked(&self.next).get(&agent.key()).copied()
    }

    fn set_next(&self, key: String, at: i64) {
        locked(&self.next).insert(key, at);
    }
}

/// The agents that run for `account` (whose profile is `profile`), and
/// what is wrong in their profile.toml's `[agents]`; a profile.toml still
/// being written is waited for as `wait` says (a request waits, the
/// scheduler never does).
pub fn agents_for(state: &AppState, profile: &ProfileDir, wait: Wait) -> (Vec<Agent>, Vec<String>) {
    let user = profile.account().name.clone();
    let auditor = Auditor::daemon(state.system_log(), "profiled");
    // An invalid profile.toml keeps its last good agents and overrides in
    // force (rule 7); its problem is reported beside them.
    let in_force = state.settings.read(&Store::new(profile, &auditor), wait);
    let (own, problem) = (
        in_force.settings.agents.clone(),
        in_force.problem.map(|p| p.to_string()),
    );
    let (agents, mut problems) = catalog::for_user(&state.agents.admin_agents(), &user, &own);
    problems.extend(problem);
    let limits = &state.config().agents;
    for agent in &agents {
        if let (Owner::User(_), Some(asked)) = (&agent.owner, agent.spec.timeout)
            && asked > limits.max_user_timeout
        {
            problems.push(format!(
                "profile.toml: agents.{}: timeout = {asked:?} is above the administrator's limit ([agents] max_user_timeout = {:?}); its runs are stopped after {:?}",
                agent.name, limits.max_user_timeout, limits.max_user_timeout
            ));
        }
    }
    (agents, problems)
}

/// How long a run of `agent` may last: its declared timeout or the
/// default, and for a user's own agent at most `max_user_timeout`.
pub fn timeout_of(agent: &Agent, limits: &crate::config::Agents) -> std::time::Duration {
    let asked = agent.spec.timeout.unwrap_or(limits.default_timeout);
    match agent.owner {
        Owner::User(_) => asked.min(limits.max_user_timeout),
        Owner::Admin => asked,
    }
}

/// Every eligible account whose profile directory it owns, by name, as the
/// account database stands now (`accounts`, one snapshot for the whole
/// listing). No profile is held open: a daemon that holds one directory per
/// profile pays for every one of them in each agent it starts (the child
/// gets a copy of the descriptor table and closes it again at exec), which
/// made a cycle O(N²).
pub fn eligible_accounts(state: &AppState, accounts: &Snapshot) -> Vec<Account> {
    let config = state.config();
    let listing = match state.root().list() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot list the profiles: {e}");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for entry in listing {
        if entry.state != ProfileState::Directory {
            continue;
        }
        let Ok(Some(account)) = accounts.by_name(&entry.name) else {
            continue;
        };
        // The listing's owner is a first sieve; whoever opens the profile
        // checks the owner again on the open handle.
        if entry.owner != account.uid {
            continue;
        }
        if matches!(
            config.policy.eligibility_in(&account, accounts),
            Ok(Eligibility::Eligible)
        ) {
            out.push(account);
        }
    }
    out
}

/// The users a cycle of `agent` covers, by name: for an admin's agent every
/// eligible profile that did not switch it off, for a user's agent that
/// user. Each profile is opened only while it is looked at; a profile.toml
/// still being written is waited for as `wait` says (an admin's request
/// waits, a scheduled cycle does not).
pub fn users_of(state: &AppState, agent: &Agent, accounts: &Snapshot, wait: Wait) -> Vec<Account> {
    eligible_accounts(state, accounts)
        .into_iter()
        .filter(|account| {
            let mine = match &agent.owner {
                Owner::User(u) => *u == account.name,
                Owner::Admin => true,
            };
            mine && matches!(
                state.root().open_owned(account),
                Ok(Some(profile)) if has_agent(state, &profile, agent, wait)
            )
        })
        .collect()
}

fn has_agent(state: &AppState, profile: &ProfileDir, agent: &Agent, wait: Wait) -> bool {
    agents_for(state, profile, wait)
        .0
        .iter()
        .any(|a| a.key() == agent.key())
}

/// Runs a whole cycle of `agent` now (an admin's request).
pub fn run_cycle_now(state: &AppState, agent: &Agent) -> CycleOutcome {
    let started = std::time::Instant::now();
    let accounts = Snapshot::new();
    let users = users_of(state, agent, &accounts, Wait::UntilSettled);
    let listed = started.elapsed();
    let outcome = cycle::run_cycle(state, agent, users, &accounts, &Trigger::Manual);
    tracing::info!(
        "agent {}: manual cycle {outcome:?} in {:?} (finding its users took {listed:?})",
        agent.key(),
        started.elapsed()
    );
    outcome
}

/// Runs `agent` for `profile`'s account now if its profile is free (a
/// triggered run, which holds a scheduler slot and so must not wait on the
/// user); `None` when another agent holds the profile: the caller tries
/// again later.
pub fn try_run_now(
    state: &AppState,
    agent: &Agent,
    profile: &ProfileDir,
    trigger: &Trigger,
) -> Option<Run> {
    match cycle::try_user_lock(state, profile.account()) {
        Ok(Some(lock)) => Some(run_locked(state, agent, profile, trigger, lock)),
        Ok(None) => None,
        Err(e) => Some(cycle::record_error(state, agent, profile, trigger, e)),
    }
}

fn run_locked(
    state: &AppState,
    agent: &Agent,
    profile: &ProfileDir,
    trigger: &Trigger,
    user_lock: locks::Held,
) -> Run {
    cycle::run_user(
        state,
        agent,
        profile,
        &Snapshot::new(),
        trigger,
        true,
        user_lock,
    )
}
