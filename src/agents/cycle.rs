//! Cycles: one agent over its users, up to `cycle_parallel` at a time,
//! under the agent's lock and each user's lock; and the single run of one
//! agent for one user.
//!
//! Everything here is blocking and runs on threads that live for the
//! whole cycle (the runner's parent-death signal is tied to the thread
//! that starts a run).

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use serde_json::json;

use super::catalog::Agent;
use super::credsdir::RunCredentials;
use super::decl::Action;
use super::locks::{self, Held};
use super::runlog::{self, Run};
use super::runner::{self, Exit, Launch, SAFE_PATH};
use super::{Trigger, builtin};
use crate::accounts::{Account, Snapshot};
use crate::api::AppState;
use crate::creds::Vault;
use crate::profile::ProfileDir;

/// How a cycle went.
#[derive(Debug, PartialEq, Eq)]
pub enum CycleOutcome {
    /// It ran; this many users were run (others were done already).
    Ran(usize),
    /// Another cycle of the agent held its lock.
    Busy,
    /// The slot was done already (by another daemon).
    AlreadyDone,
    /// It could not start.
    Failed(String),
}

/// Runs `agent` over `users` (sorted here by name), found in `accounts`
/// (the cycle's snapshot, which also gives each run its groups). A
/// scheduled cycle (`trigger` with a slot) only tries the lock and skips
/// users the slot's stamp lists; a manual one waits for the lock within
/// `lock_wait`. Each profile is opened just before its run and closed
/// after it: every descriptor the daemon holds is copied into each agent
/// it starts and closed again at exec.
pub fn run_cycle(
    state: &AppState,
    agent: &Agent,
    mut users: Vec<Account>,
    accounts: &Snapshot,
    trigger: &Trigger,
) -> CycleOutcome {
    let config = state.config();
    let lock_path = config
        .paths
        .lock_dir
        .join(format!("agent-{}.lock", agent.key()));
    let held = match trigger.slot() {
        Some(_) => locks::try_lock(&lock_path),
        None => locks::lock_within(&lock_path, config.agents.lock_wait),
    };
    let mut held = match held {
        Ok(Some(h)) => h,
        Ok(None) => {
            tracing::info!(
                "agent {}: a cycle is still running (lock {} held); this {} is skipped",
                agent.key(),
                lock_path.display(),
                trigger.label()
            );
            return CycleOutcome::Busy;
        }
        Err(e) => return CycleOutcome::Failed(e),
    };
    let done = match trigger.slot() {
        Some(slot) => match stamped(&mut held, slot) {
            Ok(Some(done)) => done,
            Ok(None) => return CycleOutcome::AlreadyDone,
            Err(e) => return CycleOutcome::Failed(e),
        },
        None => BTreeSet::new(),
    };
    users.sort_by(|a, b| a.name.cmp(&b.name));
    users.retain(|a| !done.contains(&a.name));
    // Up to `cycle_parallel` users at once, each under her own lock: the
    // daemon never waits on one user's process while the others wait
    // behind it (rule 3). A user who stops her run's processes holds one
    // place until the run's timeout; the others go on beside her.
    let width = config.agents.cycle_parallel.max(1);
    let ran = AtomicUsize::new(0);
    let stamp = Mutex::new(&mut held);
    // A user whose profile is busy (another agent holds her lock) is not
    // waited for: waiting at one user would hold a place and the agent's
    // lock. She is tried again once the others are done, then recorded as
    // skipped.
    let deferred = over_users(
        state,
        agent,
        accounts,
        trigger,
        users,
        width,
        Pass::First,
        &ran,
        &stamp,
    );
    over_users(
        state,
        agent,
        accounts,
        trigger,
        deferred,
        width,
        Pass::Again,
        &ran,
        &stamp,
    );
    CycleOutcome::Ran(ran.into_inner())
}

/// Runs `agent` for `users`, up to `width` at once (this thread and
/// `width - 1` more, scoped: the cycle ends when its last run has). Each
/// run done is written to the cycle's `stamp` (scheduled cycles) and
/// counted in `ran`. Answers the users whose profile was busy in the
/// first pass; in the second they are recorded as skipped.
#[allow(clippy::too_many_arguments)]
fn over_users(
    state: &AppState,
    agent: &Agent,
    accounts: &Snapshot,
    trigger: &Trigger,
    users: Vec<Account>,
    width: usize,
    pass: Pass,
    ran: &AtomicUsize,
    stamp: &Mutex<&mut Held>,
) -> Vec<Account> {
    let turns = Turns {
        state,
        agent,
        accounts,
        trigger,
        pass,
        ran,
        stamp,
        queue: Mutex::new(users.into()),
        deferred: Mutex::new(Vec::new()),
    };
    let helpers = width.min(locked(&turns.queue).len()).saturating_sub(1);
    std::thread::scope(|s| {
        for _ in 0..helpers {
            let spawned = std::thread::Builder::new()
                .name("agent-cycle".into())
                .spawn_scoped(s, || turns.work());
            if let Err(e) = spawned {
                // Fewer at once, not fewer users: this thread works too.
                tracing::warn!(
                    "agent {}: cannot start another thread for the cycle ({e}); fewer users run at once",
                    agent.key()
                );
                break;
            }
        }
        turns.work();
    });
    turns
        .deferred
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
}

/// One pass of a cycle, shared by the threads that run it.
struct Turns<'a, 'h> {
    state: &'a AppState,
    agent: &'a Agent,
    accounts: &'a Snapshot,
    trigger: &'a Trigger,
    pass: Pass,
    ran: &'a AtomicUsize,
    stamp: &'a Mutex<&'h mut Held>,
    queue: Mutex<VecDeque<Account>>,
    deferred: Mutex<Vec<Account>>,
}

impl Turns<'_, '_> {
    /// Takes users from the queue until it is empty (or the daemon stops).
    fn work(&self) {
        let mut last_profile = None;
        loop {
            let Some(account) = locked(&self.queue).pop_front() else {
                break;
            };
            if self.state.agents.stopping() {
                tracing::info!(
                    "agent {}: stopping; the cycle ends before {}",
                    self.agent.key(),
                    account.name
                );
                break;
            }
            if let Some(profile) = self.one(account) {
                last_profile = Some(profile);
            }
        }
        if let Some(profile) = &last_profile {
            runlog::sync_all(profile);
        }
    }

    /// `account`'s turn; answers her profile when a run was recorded in it.
    fn one(&self, account: Account) -> Option<ProfileDir> {
        let (state, agent, trigger) = (self.state, self.agent, self.trigger);
        let profile = match state.root().open_owned(&account) {
            Ok(Some(p)) => p,
            Ok(None) => {
                tracing::info!(
                    "agent {}: {}'s profile is gone or changed owner since the cycle began; skipped",
                    agent.key(),
                    account.name
                );
                return None;
            }
            Err(e) => {
                tracing::error!(
                    "agent {}: cannot open {}'s profile: {e}",
                    agent.key(),
                    account.name
                );
                return None;
            }
        };
        let lock = match try_user_lock(state, &account) {
            Ok(Some(lock)) => lock,
            Ok(None) if self.pass == Pass::First => {
                locked(&self.deferred).push(account);
                return None;
            }
            Ok(None) => {
                record_skipped(
                    state,
                    agent,
                    &profile,
                    trigger,
                    format!(
                        "another agent kept {}'s profile busy during the whole cycle (tried at her turn and again after the other users); this run was skipped, the next cycle tries again",
                        account.name
                    ),
                );
                return Some(profile);
            }
            Err(e) => {
                record_error(state, agent, &profile, trigger, e);
                return None;
            }
        };
        run_user(state, agent, &profile, self.accounts, trigger, false, lock);
        self.ran.fetch_add(1, Ordering::Relaxed);
        if trigger.slot().is_some()
            && let Err(e) = locked(self.stamp).done(&account.name)
        {
            tracing::error!("agent {}: {e}", agent.key());
        }
        Some(profile)
    }
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A cycle's first pass over its users, or its second over those whose
/// profile was busy.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    First,
    Again,
}

/// The lock of `account`'s profile (one agent at a time in a profile).
fn user_lock_path(state: &AppState, account: &Account) -> std::path::PathBuf {
    state
        .config()
        .paths
        .lock_dir
        .join(format!("user-{}.lock", account.name))
}

/// Takes `account`'s profile lock if it is free; `Ok(None)` when another
/// agent holds it.
pub fn try_user_lock(state: &AppState, account: &Account) -> Result<Option<Held>, String> {
    locks::try_lock(&user_lock_path(state, account))
}

/// The users already done in `slot`, starting its stamp if it is new;
/// `None` when a later slot was stamped already.
fn stamped(held: &mut Held, slot: i64) -> Result<Option<BTreeSet<String>>, String> {
    match held.stamp() {
        (Some(s), done) if s == slot => Ok(Some(done)),
        (Some(s), _) if s > slot => Ok(None),
        _ => {
            held.begin(slot)?;
            Ok(Some(BTreeSet::new()))
        }
    }
}

/// A run record for `agent` in `profile`, not started yet.
fn new_run(agent: &Agent, profile: &ProfileDir, trigger: &Trigger) -> Run {
    Run {
        run_id: ulid::Ulid::generate().to_string(),
        agent: agent.name.clone(),
        user: profile.account().name.clone(),
        trigger: trigger.label(),
        slot: trigger.slot(),
        start: runlog::precise_now(),
        end: String::new(),
        duration_ms: 0,
        status: String::new(),
        exit_code: None,
        signal: None,
        error: None,
        output: String::new(),
        notes: Vec::new(),
        daemon_pid: std::process::id(),
    }
}

/// Records a run of `agent` in `profile` that did not happen because the
/// profile was busy; `reason` says so in the run list.
pub fn record_skipped(
    state: &AppState,
    agent: &Agent,
    profile: &ProfileDir,
    trigger: &Trigger,
    reason: String,
) -> Run {
    let mut run = new_run(agent, profile, trigger);
    run.status = "skipped".into();
    run.error = Some(reason);
    finish(state, agent, profile, run, Instant::now(), false)
}

/// Records a run of `agent` in `profile` that could not start: `e` says
/// why.
pub fn record_error(
    state: &AppState,
    agent: &Agent,
    profile: &ProfileDir,
    trigger: &Trigger,
    e: String,
) -> Run {
    let mut run = new_run(agent, profile, trigger);
    run.status = "error".into();
    run.error = Some(e);
    finish(state, agent, profile, run, Instant::now(), false)
}

/// Runs `agent` for `profile`'s account under the user's lock (`_lock`,
/// taken by the caller), records the run in the profile's log (synced now
/// when `durable`; a cycle syncs once at its end) and the status, and
/// tells the user's event stream. The account's groups come from
/// `accounts`.
pub fn run_user(
    state: &AppState,
    agent: &Agent,
    profile: &ProfileDir,
    accounts: &Snapshot,
    trigger: &Trigger,
    durable: bool,
    _lock: Held,
) -> Run {
    let account = profile.account();
    let started = Instant::now();
    let mut run = new_run(agent, profile, trigger);
    state.events.publish_other(
        &account.name,
        "agent.started",
        object(json!({"agent": agent.name, "run_id": run.run_id, "trigger": run.trigger})),
    );
    match &agent.spec.action {
        Action::Command(argv) => {
            external(state, agent, profile, accounts, argv, &mut run);
        }
        Action::Builtin(which) => match builtin::run(state, *which, profile) {
            Ok(summary) => {
                run.status = "ok".into();
                run.output = summary;
            }
            Err(e) => {
                run.status = "error".into();
                run.error = Some(e);
            }
        },
    }
    finish(state, agent, profile, run, started, durable)
}

/// Ends `run`: its end time, the log line, the event and the status.
fn finish(
    state: &AppState,
    agent: &Agent,
    profile: &ProfileDir,
    mut run: Run,
    started: Instant,
    durable: bool,
) -> Run {
    let account = profile.account();
    run.end = runlog::precise_now();
    run.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    if let Err(e) = runlog::append(profile, &run, durable) {
        tracing::error!(
            "agent {}: cannot write {}'s run log: {e}",
            agent.name,
            account.name
        );
    }
    state.events.publish_other(
        &account.name,
        "agent.finished",
        object(json!({
            "agent": agent.name,
            "run_id": run.run_id,
            "status": run.status,
            "exit_code": run.exit_code,
        })),
    );
    state.agents.record(agent, &run);
    run
}

fn object(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match v {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// Runs an external agent (rule 3) and fills `run` with its result.
fn external(
    state: &AppState,
    agent: &Agent,
    profile: &ProfileDir,
    accounts: &Snapshot,
    argv: &[String],
    run: &mut Run,
) {
    let account = profile.account();
    let config = state.config();
    let fail = |run: &mut Run, e: String| {
        run.status = "error".into();
        run.error = Some(e);
    };
    let groups = match accounts.groups(account) {
        Ok(g) => g,
        Err(e) => return fail(run, e.to_string()),
    };
    let profile_path = config.paths.profiles_dir.join(&account.name);
    let mut env = vec![
        ("HOME".to_owned(), account.home.display().to_string()),
        ("USER".to_owned(), account.name.clone()),
        ("LOGNAME".to_owned(), account.name.clone()),
        ("PATH".to_owned(), SAFE_PATH.to_owned()),
        ("SHELL".to_owned(), "/bin/sh".to_owned()),
        ("PROFILE_DIR".to_owned(), profile_path.display().to_string()),
        ("PROFILED_AGENT".to_owned(), agent.name.clone()),
        ("PROFILED_RUN_ID".to_owned(), run.run_id.clone()),
    ];
    let spec = &agent.spec;
    let _creds = if spec.credentials.is_empty() {
        None
    } else {
        let creds = Vault::open(&config.paths.state_dir)
            .map_err(|e| e.to_string())
            .and_then(|vault| {
                RunCredentials::prepare(
                    &vault,
                    profile,
                    &spec.credentials,
                    &config.paths.runtime_dir.join("credentials"),
                    &run.run_id,
                )
            });
        let creds = match creds {
            Ok(c) => c,
            Err(e) => return fail(run, format!("agent {}: {e}", agent.name)),
        };
        run.notes.extend_from_slice(creds.notes());
        env.push((
            "CREDENTIALS_DIRECTORY".to_owned(),
            creds.path().display().to_string(),
        ));
        for (var, provider) in &spec.env {
            if let Some(secret) = creds.secret(provider) {
                env.push((var.clone(), secret.expose().to_owned()));
            }
        }
        Some(creds)
    };
    let timeout = super::timeout_of(agent, &config.agents);
    let outcome = runner::run(&Launch {
        argv,
        account,
        groups: &groups,
        workdir: profile.dir_fd(),
        env: &env,
        run_id: &run.run_id,
        timeout,
        kill_grace: config.agents.kill_grace,
        output_limit: config.agents.output_limit,
        stop: state.agents.stop_flag(),
        guard: state.agents.guard(),
        shutdown_grace: config.agents.shutdown_grace,
        setup: state.agents.setup(&config.paths.runtime_dir),
    });
    // The secrets in the environment die with `env`; zero them first.
    for (_, value) in &mut env {
        zeroize::Zeroize::zeroize(value);
    }
    run.output = outcome.output;
    run.notes.extend(outcome.abandoned);
    match outcome.exit {
        Exit::Code(0) => {
            run.status = "ok".into();
            run.exit_code = Some(0);
        }
        Exit::Code(c) => {
            run.status = "failed".into();
            run.exit_code = Some(c);
        }
        Exit::Signal(s) => {
            run.status = "failed".into();
            run.signal = Some(s);
        }
        Exit::TimedOut => {
            run.status = "timeout".into();
            run.error = Some(format!(
                "ran past its timeout of {timeout:?}; all its processes were killed"
            ));
        }
        Exit::Stopped => {
            run.status = "stopped".into();
            run.error =
                Some("the daemon stopped; the run was killed after the grace period".into());
        }
        Exit::NotStarted(e) => fail(run, e),
        Exit::Unknown => {
            run.status = "failed".into();
            run.error = Some(
                "how the agent ended is unknown: the daemon stopped waiting for it (see notes)"
                    .into(),
            );
        }
    }
}
