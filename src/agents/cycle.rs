//! Cycles: one agent over its users, one user at a time, under the agent's
//! lock and each user's lock; and the single run of one agent for one user.
//!
//! Everything here is blocking and runs on a thread that lives for the
//! whole cycle (the runner's parent-death signal is tied to it).

use std::collections::BTreeSet;
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
    let mut ran = 0;
    let mut last_profile = None;
    for account in users {
        if done.contains(&account.name) {
            continue;
        }
        if state.agents.stopping() {
            tracing::info!(
                "agent {}: stopping; the cycle ends before {}",
                agent.key(),
                account.name
            );
            break;
        }
        let profile = match state.root().open_owned(&account) {
            Ok(Some(p)) => p,
            Ok(None) => {
                tracing::info!(
                    "agent {}: {}'s profile is gone or changed owner since the cycle began; skipped",
                    agent.key(),
                    account.name
                );
                continue;
            }
            Err(e) => {
                tracing::error!(
                    "agent {}: cannot open {}'s profile: {e}",
                    agent.key(),
                    account.name
                );
                continue;
            }
        };
        run_user(state, agent, &profile, accounts, trigger, false);
        ran += 1;
        if trigger.slot().is_some()
            && let Err(e) = held.done(&account.name)
        {
            tracing::error!("agent {}: {e}", agent.key());
        }
        last_profile = Some(profile);
    }
    if let Some(profile) = &last_profile {
        runlog::sync_all(profile);
    }
    CycleOutcome::Ran(ran)
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

/// Runs `agent` for `profile`'s account under the user's lock, records the
/// run in the profile's log (synced now when `durable`; a cycle syncs once
/// at its end) and the status, and tells the user's event stream. The
/// account's groups come from `accounts`.
pub fn run_user(
    state: &AppState,
    agent: &Agent,
    profile: &ProfileDir,
    accounts: &Snapshot,
    trigger: &Trigger,
    durable: bool,
) -> Run {
    let account = profile.account();
    let config = state.config();
    let run_id = ulid::Ulid::generate().to_string();
    let started = Instant::now();
    let start = runlog::precise_now();
    let mut run = Run {
        run_id: run_id.clone(),
        agent: agent.name.clone(),
        user: account.name.clone(),
        trigger: trigger.label(),
        slot: trigger.slot(),
        start,
        end: String::new(),
        duration_ms: 0,
        status: String::new(),
        exit_code: None,
        signal: None,
        error: None,
        output: String::new(),
        notes: Vec::new(),
        daemon_pid: std::process::id(),
    };
    let user_lock = config
        .paths
        .lock_dir
        .join(format!("user-{}.lock", account.name));
    match locks::lock_within(&user_lock, config.agents.lock_wait) {
        Ok(Some(_held)) => {
            state.events.publish_other(
                &account.name,
                "agent.started",
                object(json!({"agent": agent.name, "run_id": run_id, "trigger": run.trigger})),
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
        }
        Ok(None) => {
            run.status = "skipped".into();
            run.error = Some(format!(
                "another agent kept {}'s profile busy for {:?}; this run was skipped",
                account.name, config.agents.lock_wait
            ));
        }
        Err(e) => {
            run.status = "error".into();
            run.error = Some(e);
        }
    }
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
    let outcome = runner::run(&Launch {
        argv,
        account,
        groups: &groups,
        workdir: profile.dir_fd(),
        env: &env,
        timeout: spec.timeout.unwrap_or(config.agents.default_timeout),
        kill_grace: config.agents.kill_grace,
        output_limit: config.agents.output_limit,
        stop: state.agents.stop_flag(),
        guard: state.agents.guard(),
        shutdown_grace: config.agents.shutdown_grace,
    });
    // The secrets in the environment die with `env`; zero them first.
    for (_, value) in &mut env {
        zeroize::Zeroize::zeroize(value);
    }
    run.output = outcome.output;
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
                "ran past its timeout of {:?}; its process group was killed",
                spec.timeout.unwrap_or(config.agents.default_timeout)
            ));
        }
        Exit::Stopped => {
            run.status = "stopped".into();
            run.error =
                Some("the daemon stopped; the run was killed after the grace period".into());
        }
        Exit::NotStarted(e) => fail(run, e),
    }
}
