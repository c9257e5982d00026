//! `/v1/agents`: the agents that run for a user, their last and next runs,
//! running one now, and its run log.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::extract::{ApiPath, ApiQuery, Caller};
use super::{ApiError, AppState, blocking, page_size};
use crate::agents::decl::{Action, Schedule};
use crate::agents::{self, Agent, CycleOutcome, Owner, Run, manual, runlog};
use crate::store::Wait;
use crate::timefmt;

/// One agent as `GET /v1/agents` shows it.
#[derive(Debug, Serialize)]
pub struct AgentStatus {
    /// Its name.
    pub name: String,
    /// `admin` (agents.d) or `user` (your profile.toml).
    pub declared_by: &'static str,
    /// `builtin:ingest` or the program it runs.
    pub runs: String,
    /// `every 15m`, `cron */5 * * * *`, or absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Path globs that trigger it.
    pub on_change: Vec<String>,
    /// Whether you may switch it off.
    pub required: bool,
    /// What it is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Your last run of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run: Option<Run>,
    /// When its next scheduled cycle starts (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_run: Option<String>,
}

/// `GET /v1/agents`.
#[derive(Debug, Serialize)]
pub struct AgentList {
    /// The agents that run for you.
    pub agents: Vec<AgentStatus>,
    /// What is wrong in your `[agents]` (and, for admins, in agents.d).
    pub problems: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RunQuery {
    user: Option<String>,
    #[serde(default)]
    all: bool,
}

#[derive(Debug, Deserialize)]
pub(super) struct RunsQuery {
    user: Option<String>,
    limit: Option<usize>,
}

/// The answer to a whole cycle run by an admin.
#[derive(Debug, Serialize)]
pub struct CycleAnswer {
    /// The agent.
    pub agent: String,
    /// `ran` or `busy`.
    pub result: &'static str,
    /// Users run.
    pub users: usize,
}

fn status_of(st: &AppState, agent: &Agent, profile: &crate::profile::ProfileDir) -> AgentStatus {
    let last_run = runlog::newest(profile, &agent.name, 1)
        .ok()
        .and_then(|mut v| v.pop())
        .or_else(|| st.agents.last_run(agent, &profile.account().name));
    AgentStatus {
        name: agent.name.clone(),
        declared_by: match agent.owner {
            Owner::Admin => "admin",
            Owner::User(_) => "user",
        },
        runs: match &agent.spec.action {
            Action::Builtin(b) => format!("builtin:{}", b.as_str()),
            Action::Command(argv) => argv.first().cloned().unwrap_or_default(),
        },
        schedule: agent.spec.schedule.as_ref().map(|s| match s {
            Schedule::Every(d) => format!("every {}s", d.as_secs()),
            Schedule::Cron(c) => format!("cron {c}"),
        }),
        on_change: agent.spec.on_change.clone(),
        required: agent.spec.required,
        description: agent.spec.description.clone(),
        last_run,
        next_run: st.agents.next_run(agent).and_then(|t| {
            time::OffsetDateTime::from_unix_timestamp(t)
                .ok()
                .map(timefmt::rfc3339)
        }),
    }
}

fn find(agents: Vec<Agent>, name: &str) -> Result<Agent, ApiError> {
    agents.into_iter().find(|a| a.name == name).ok_or_else(|| {
        ApiError::not_found(format!(
            "no agent named {name:?} runs for this profile; see `profilectl agent list`"
        ))
    })
}

pub(super) async fn list(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<RunsQuery>,
) -> Result<Json<AgentList>, ApiError> {
    blocking(move || {
        let admin = caller.admin;
        st.with_store(&caller, q.user.as_deref(), |s| {
            let (agents, mut problems) = agents::agents_for(&st, s.dir(), Wait::UntilSettled);
            if admin {
                problems.extend(st.agents.admin_problems());
            }
            s.audit_access("agent.list", "agents");
            Ok(Json(AgentList {
                agents: agents.iter().map(|a| status_of(&st, a, s.dir())).collect(),
                problems,
            }))
        })
    })
    .await
}

pub(super) async fn run(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<RunQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if q.all {
        if !caller.admin {
            return Err(ApiError::forbidden(
                "forbidden_cycle",
                "only admins may run a whole cycle (?all=true); run it for yourself without it",
            ));
        }
        let agent = st.agents.admin_agents().remove(&name).ok_or_else(|| {
            ApiError::not_found(format!("no admin agent named {name:?} (agents.d)"))
        })?;
        let answer = match manual::cycle(st, agent).await.map_err(refused)? {
            CycleOutcome::Ran(users) => CycleAnswer {
                agent: name,
                result: "ran",
                users,
            },
            CycleOutcome::Busy | CycleOutcome::AlreadyDone => CycleAnswer {
                agent: name,
                result: "busy",
                users: 0,
            },
            CycleOutcome::Failed(e) => return Err(ApiError::internal(e)),
        };
        return serde_json::to_value(answer)
            .map(Json)
            .map_err(ApiError::internal);
    }
    let admin = caller.admin;
    let (agent, account) = {
        let st = st.clone();
        blocking(move || {
            st.with_store(&caller, q.user.as_deref(), |s| {
                let agent = find(
                    agents::agents_for(&st, s.dir(), Wait::UntilSettled).0,
                    &name,
                )?;
                s.audit_access("agent.run", &name);
                Ok((agent, s.dir().account().clone()))
            })
        })
        .await?
    };
    // The run is not blocking work of the handler's: it has a budget and
    // threads of its own (agents::manual).
    let run = manual::run(st, agent, account, admin)
        .await
        .map_err(refused)?;
    serde_json::to_value(run)
        .map(Json)
        .map_err(ApiError::internal)
}

/// The answer to a manual run or cycle that did not start.
fn refused(r: manual::Refused) -> ApiError {
    match r {
        manual::Refused::Busy(why) => ApiError::new(StatusCode::CONFLICT, "agent_busy", why),
        manual::Refused::Saturated(why) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "agent_runs_saturated", why)
        }
        manual::Refused::Failed(why) => ApiError::internal(why),
    }
}

pub(super) async fn runs(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<RunsQuery>,
) -> Result<Json<Vec<Run>>, ApiError> {
    let limit = page_size(q.limit, st.config().limits.max_page_size);
    blocking(move || {
        st.with_store(&caller, q.user.as_deref(), |s| {
            let agent = find(
                agents::agents_for(&st, s.dir(), Wait::UntilSettled).0,
                &name,
            )?;
            s.audit_access("agent.runs", &name);
            Ok(Json(runlog::newest(s.dir(), &agent.name, limit)?))
        })
    })
    .await
}
