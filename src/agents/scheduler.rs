//! The scheduler: starts cycles at their slots (intervals aligned to the
//! Unix epoch, or cron times, UTC, so daemons sharing a lock directory pick
//! the same slots) and single runs when watched paths change (debounced).
//! At shutdown it starts nothing more and waits for what runs (runs get
//! `shutdown_grace`).
//!
//! Runs hold slots: at most `max_parallel_agents` of the admins' agents at
//! a time, and as many again of the users' own agents, from a pool of
//! their own. A user's own agent may run up to `max_user_timeout` and
//! every user may declare one, so from one shared pool a couple of users
//! could keep every slot and hold up the admins' agents (rule 9: the
//! admins keep theirs). Within the users' pool one user holds at most one
//! slot for long: her agents all need her profile's lock, and a run that
//! finds it busy gives its slot back at once.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinSet;

use super::decl::Schedule;
use super::{Agent, Owner, Trigger, agents_for, credsdir, cycle, eligible_accounts, users_of};
use crate::accounts::{self, Snapshot};
use crate::api::AppState;
use crate::store::Wait;
use crate::watch::Body;

/// How often the scheduler looks at the clock and agents.d.
const TICK: Duration = Duration::from_millis(200);

/// How long past `shutdown_grace` a stop waits for the runs in progress:
/// more than a run's own limits after its kill (the cgroup's empty-wait,
/// the helper's grace and reaping, the cgroup's removal), so it only
/// matters if something other than the run itself is stuck.
const JOIN_SLACK: Duration = Duration::from_secs(45);

/// Starts the scheduler; the handle ends once a stop was requested
/// ([`super::Agents::request_stop`]) and every run has ended.
pub fn start(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    // The admins' agents before this returns, so the API (started after
    // it) never answers "no admin agent named …" for an agent in agents.d
    // just because the scheduler's task has not run yet.
    state.agents.refresh_admin(&state.config().paths.agents_dir);
    tokio::spawn(run(state))
}

/// The agents in force for each user with a profile, for triggers and
/// users' own schedules.
type InForce = HashMap<String, Vec<Agent>>;

async fn run(state: Arc<AppState>) {
    let config = state.config();
    state.agents.start_guard();
    {
        let st = state.clone();
        let runtime_dir = config.paths.runtime_dir.clone();
        // Removing a previous life's cgroups may wait for their processes.
        let _ = tokio::task::spawn_blocking(move || {
            st.agents.setup(&runtime_dir);
        })
        .await;
        state.agents.tree_started();
    }
    credsdir::remove_stale(&config.paths.runtime_dir.join("credentials"));
    let slots = Slots {
        admin: Arc::new(Semaphore::new(config.agents.max_parallel_agents)),
        users: Arc::new(Semaphore::new(config.agents.max_parallel_agents)),
    };
    let mut tasks = JoinSet::new();
    let mut events = state.events.subscribe("", None).live;
    let mut pending: HashMap<(String, String), (Instant, String)> = HashMap::new();
    // Triggered runs that found their profile busy come back here.
    let (retry, mut retries) = tokio::sync::mpsc::unbounded_channel::<Retry>();
    let mut in_force = refresh_all(&state).await;
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if state.agents.stopping() {
                    break;
                }
                let config = state.config();
                if state.agents.refresh_admin(&config.paths.agents_dir) {
                    in_force = refresh_all(&state).await;
                }
                while tasks.try_join_next().is_some() {}
                start_due_cycles(&state, &in_force, &slots, &mut tasks);
                start_due_triggers(&state, &in_force, &slots, &mut tasks, &mut pending, &retry);
            }
            Some((agent, user, path)) = retries.recv() => {
                let due = Instant::now() + state.config().agents.debounce;
                // A newer change of the same agent and user supersedes it.
                pending.entry((agent, user)).or_insert((due, path));
            }
            event = events.recv() => match event {
                Ok(e) => {
                    let Body::Change(change) = &e.body else { continue };
                    // Knowledge changes concern no profile.
                    let Some(user) = e.profile() else { continue };
                    // A profile new since the last look, or new settings.
                    if change.kind == crate::watch::Kind::Settings || !in_force.contains_key(user) {
                        let st = state.clone();
                        let name = user.to_owned();
                        if let Ok(Some(agents)) = tokio::task::spawn_blocking(move || agents_of_user(&st, &name)).await {
                            in_force.insert(user.to_owned(), agents);
                        }
                    }
                    let debounce = state.config().agents.debounce;
                    for agent in in_force.get(user).into_iter().flatten() {
                        if matches_any(&agent.spec.on_change, &change.path) {
                            pending.insert(
                                (agent.key(), user.to_owned()),
                                (Instant::now() + debounce, change.path.clone()),
                            );
                        }
                    }
                }
                Err(RecvError::Lagged(n)) => tracing::warn!("agents: {n} path changes were missed (the event queue overflowed); their triggers did not fire"),
                Err(RecvError::Closed) => break,
            }
        }
    }
    tracing::info!("agents: waiting for {} run(s) in progress", tasks.len());
    // Each run ends within its own hard limits (runner.rs); this one bounds
    // the wait whatever else a cycle might be stuck on, so a stop always
    // ends. Manual runs live in the same cgroup tree: waited for too.
    let limit = state.config().agents.shutdown_grace + JOIN_SLACK;
    let joined = tokio::time::timeout(limit, async {
        while tasks.join_next().await.is_some() {}
        state.agents.manual.ended().await;
    })
    .await;
    if joined.is_err() {
        tracing::error!(
            "agents: {} run(s) had not ended {limit:?} after the stop was requested; the daemon stops without them (the agent guard kills their cgroups when it exits)",
            tasks.len()
        );
        tasks.detach_all();
    }
    state.agents.tree_stopped();
}

/// The scheduler's slots: the admins' agents' and the users' own agents'.
struct Slots {
    admin: Arc<Semaphore>,
    users: Arc<Semaphore>,
}

impl Slots {
    /// A slot for a run of `agent`, from its owner's pool, if one is free.
    fn try_take(&self, agent: &Agent) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let pool = match agent.owner {
            Owner::Admin => &self.admin,
            Owner::User(_) => &self.users,
        };
        pool.clone().try_acquire_owned().ok()
    }
}

/// The agents in force for every eligible profile.
async fn refresh_all(state: &Arc<AppState>) -> InForce {
    let st = state.clone();
    tokio::task::spawn_blocking(move || {
        eligible_accounts(&st, &Snapshot::new())
            .into_iter()
            .filter_map(|account| {
                let profile = st.root().open_owned(&account).ok()??;
                Some((account.name, agents_for(&st, &profile, Wait::No).0))
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}

fn agents_of_user(state: &AppState, user: &str) -> Option<Vec<Agent>> {
    let account = accounts::by_name(user).ok()??;
    let profile = state.root().open_owned(&account).ok()??;
    Some(agents_for(state, &profile, Wait::No).0)
}

/// Every agent with a schedule, once: the admins' and the users' own.
fn scheduled(state: &AppState, in_force: &InForce) -> Vec<Agent> {
    let mut out: Vec<Agent> = state.agents.admin_agents().into_values().collect();
    for agents in in_force.values() {
        out.extend(
            agents
                .iter()
                .filter(|a| matches!(a.owner, Owner::User(_)))
                .cloned(),
        );
    }
    out.retain(|a| a.spec.schedule.is_some());
    out
}

fn start_due_cycles(
    state: &Arc<AppState>,
    in_force: &InForce,
    slots: &Slots,
    tasks: &mut JoinSet<()>,
) {
    let now = now_secs();
    for agent in scheduled(state, in_force) {
        let Some(schedule) = &agent.spec.schedule else {
            continue;
        };
        let Some(due) = state.agents.next_run(&agent) else {
            if let Some(next) = next_slot(schedule, now) {
                state.agents.set_next(agent.key(), next);
            }
            continue;
        };
        if now < due {
            continue;
        }
        let Some(permit) = slots.try_take(&agent) else {
            tracing::info!(
                "agent {}: max_parallel_agents cycles are running; its cycle waits",
                agent.key()
            );
            continue;
        };
        if let Some(next) = next_slot(schedule, now) {
            state.agents.set_next(agent.key(), next);
        }
        let st = state.clone();
        tasks.spawn_blocking(move || {
            let _permit = permit;
            let started = Instant::now();
            let accounts = Snapshot::new();
            let users = users_of(&st, &agent, &accounts, Wait::No);
            match cycle::run_cycle(&st, &agent, users, &accounts, &Trigger::Schedule(due)) {
                cycle::CycleOutcome::Failed(e) => {
                    tracing::error!("agent {}: the cycle could not run: {e}", agent.key());
                }
                outcome => tracing::info!(
                    "agent {}: cycle of slot {due}: {outcome:?} in {:?}",
                    agent.key(),
                    started.elapsed()
                ),
            }
        });
    }
}

/// A triggered run to try again: agent key, user, changed path.
type Retry = (String, String, String);

fn start_due_triggers(
    state: &Arc<AppState>,
    in_force: &InForce,
    slots: &Slots,
    tasks: &mut JoinSet<()>,
    pending: &mut HashMap<(String, String), (Instant, String)>,
    retry: &tokio::sync::mpsc::UnboundedSender<Retry>,
) {
    let now = Instant::now();
    let due: Vec<_> = pending
        .iter()
        .filter(|(_, (at, _))| *at <= now)
        .map(|(k, _)| k.clone())
        .collect();
    for key in due {
        let Some(agent) = in_force
            .get(&key.1)
            .and_then(|v| v.iter().find(|a| a.key() == key.0))
            .cloned()
        else {
            pending.remove(&key);
            continue;
        };
        // No free slot in its pool: it stays pending for the next tick.
        let Some(permit) = slots.try_take(&agent) else {
            continue;
        };
        let Some((_, path)) = pending.remove(&key) else {
            continue;
        };
        let (_, user) = key;
        let st = state.clone();
        let retry = retry.clone();
        tasks.spawn_blocking(move || {
            let _permit = permit;
            let Ok(Some(account)) = accounts::by_name(&user) else {
                return;
            };
            let Ok(Some(profile)) = st.root().open_owned(&account) else {
                return;
            };
            // Her profile is busy: the slot is not held waiting for it;
            // the trigger comes back after the debounce.
            if super::try_run_now(&st, &agent, &profile, &Trigger::Change(path.clone())).is_none() {
                let _ = retry.send((agent.key(), user, path));
            }
        });
    }
}

/// Whether `path` matches one of `globs` (`*` stays within a directory,
/// `**` crosses them).
fn matches_any(globs: &[String], path: &str) -> bool {
    globs.iter().any(|g| {
        globset::GlobBuilder::new(g)
            .literal_separator(true)
            .build()
            .is_ok_and(|g| g.compile_matcher().is_match(path))
    })
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The first slot of `schedule` after `after` (Unix seconds).
pub fn next_slot(schedule: &Schedule, after: i64) -> Option<i64> {
    match schedule {
        Schedule::Every(d) => {
            let d = i64::try_from(d.as_secs()).ok()?.max(1);
            Some((after / d + 1) * d)
        }
        Schedule::Cron(expr) => {
            let cron = croner::Cron::from_str(expr).ok()?;
            let t = chrono::DateTime::from_timestamp(after, 0)?;
            cron.find_next_occurrence(&t, false)
                .ok()
                .map(|n| n.timestamp())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_aligned_and_cron_times_are_found() {
        let every = Schedule::Every(Duration::from_secs(900));
        assert_eq!(next_slot(&every, 1000), Some(1800));
        assert_eq!(next_slot(&every, 1800), Some(2700));
        let cron = Schedule::Cron("*/5 * * * *".into());
        assert_eq!(next_slot(&cron, 0), Some(300));
        assert_eq!(next_slot(&cron, 300), Some(600));
        assert!(matches_any(
            &["memory/inbox/**".into()],
            "memory/inbox/a/b.md"
        ));
        assert!(!matches_any(&["memory/*".into()], "memory/inbox/a.md"));
    }
}
