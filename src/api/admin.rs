//! `/v1/health`, `/v1/me`, and the admin's `/v1/profiles`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::extract::{AdminCaller, ApiJson, ApiPath, ApiQuery, Caller, UserQuery};
use super::{ApiError, AppState, blocking};
use crate::accounts::{self, Account, Eligibility, UserId};
use crate::profile::{AdoptReport, ProfileListing, ProfileState, Provenance};
use crate::store::Problem;

#[derive(Serialize)]
pub(super) struct Health {
    status: &'static str,
    version: &'static str,
    /// How changes are watched; a reached inotify limit shows here.
    watch: crate::watch::StatusReport,
    /// How agent runs are contained.
    agents: AgentsHealth,
}

/// How agent runs are contained: `cgroup` (every process a run starts is
/// killed at its end), `process-group` (a process that leaves the group
/// can outlive its run; `detail` says why there are no cgroups), or
/// `starting`.
#[derive(Serialize)]
struct AgentsHealth {
    containment: &'static str,
    detail: String,
}

pub(super) async fn health(State(st): State<Arc<AppState>>) -> Json<Health> {
    let agents = match st.agents.containment() {
        Some(Ok(tree)) => AgentsHealth {
            containment: "cgroup",
            detail: tree.display().to_string(),
        },
        Some(Err(why)) => AgentsHealth {
            containment: "process-group",
            detail: format!(
                "{why}; a process an agent detaches from its process group can outlive its run"
            ),
        },
        None => AgentsHealth {
            containment: "starting",
            detail: String::new(),
        },
    };
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        watch: st.watch.report(),
        agents,
    })
}

/// What `/v1/me` answers.
#[derive(Serialize, Deserialize, Debug)]
pub struct Me {
    /// The account.
    pub user: String,
    /// Its uid.
    pub uid: UserId,
    /// `user` or `admin`.
    pub role: String,
    /// The profile directory, when the account has one.
    pub profile: Option<String>,
    /// Why it has no profile, when it has none.
    pub note: Option<String>,
    /// Files in the profile that need fixing.
    pub problems: Vec<Problem>,
    /// When the watcher polls the profile instead of watching all of it
    /// (e.g. over its watch budget): why, and what it means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<String>,
}

pub(super) async fn me(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UserQuery>,
) -> Result<Json<Me>, ApiError> {
    let role = if caller.admin { "admin" } else { "user" }.to_owned();
    let acting_on_self = q.user.as_deref().is_none_or(|u| u == caller.account.name);
    if acting_on_self && let Some(reason) = &caller.ineligible {
        return Ok(Json(Me {
            user: caller.account.name.clone(),
            uid: caller.account.uid,
            role,
            profile: None,
            note: Some(format!("{reason}; admins name a profile with --user NAME")),
            problems: Vec::new(),
            watch: None,
        }));
    }
    let config = st.config();
    blocking(move || {
        st.with_store(&caller, q.user.as_deref(), |s| {
            let account = s.dir().account();
            s.audit_access("profile.status", &account.name);
            let role = if acting_on_self || !config.policy.is_admin(account)? {
                role
            } else {
                "admin".to_owned()
            };
            Ok(Json(Me {
                user: account.name.clone(),
                uid: account.uid,
                role,
                profile: Some(
                    config
                        .paths
                        .profiles_dir
                        .join(&account.name)
                        .display()
                        .to_string(),
                ),
                note: None,
                problems: super::credentials::problems(&config.paths.state_dir, s),
                watch: st.watch.polled_note(&account.name),
            }))
        })
    })
    .await
}

/// One row of `GET /v1/profiles`.
#[derive(Serialize, Deserialize, Debug)]
pub struct ProfileRow {
    /// The directory name.
    pub user: String,
    /// The directory's owner.
    pub owner_uid: UserId,
    /// `ok`, `unclaimed`, `conflict`, `no_account`, `ineligible` or `not_a_directory`.
    pub state: String,
    /// What the state means, for a person.
    pub detail: String,
}

pub(super) async fn list_profiles(
    State(st): State<Arc<AppState>>,
    AdminCaller(_): AdminCaller,
) -> Result<Json<Vec<ProfileRow>>, ApiError> {
    blocking(move || {
        let policy = st.config().policy.clone();
        let rows = st
            .root
            .list()?
            .into_iter()
            .map(|l| row(l, &policy))
            .collect::<Result<Vec<_>, ApiError>>()?;
        Ok(Json(rows))
    })
    .await
}

fn row(l: ProfileListing, policy: &accounts::Policy) -> Result<ProfileRow, ApiError> {
    let (state, detail) = if l.state == ProfileState::NotADirectory {
        (
            "not_a_directory",
            "not a directory; it is never used as a profile".to_owned(),
        )
    } else {
        match accounts::by_name(&l.name) {
            // A name that cannot be an account, or no such account.
            Err(accounts::Error::InvalidName(_)) | Ok(None) => (
                "no_account",
                "no account has this name; archive or remove the directory".to_owned(),
            ),
            Err(e) => return Err(e.into()),
            Ok(Some(account)) => match policy.eligibility(&account)? {
                Eligibility::Ineligible(reason) => ("ineligible", reason),
                Eligibility::Eligible if l.owner == account.uid => ("ok", String::new()),
                Eligibility::Eligible if l.owner == UserId::ROOT => (
                    "unclaimed",
                    "owned by root; adopted on the account's first request".to_owned(),
                ),
                Eligibility::Eligible => (
                    "conflict",
                    format!(
                        "owned by uid {}, not {} (uid {}); `profilectl profile adopt {}` hands it over",
                        l.owner, account.name, account.uid, account.name
                    ),
                ),
            },
        }
    };
    Ok(ProfileRow {
        user: l.name,
        owner_uid: l.owner,
        state: state.to_owned(),
        detail,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateProfile {
    user: String,
}

/// What creating or adopting a profile answers.
#[derive(Serialize, Deserialize, Debug)]
pub struct ProfileChange {
    /// The account.
    pub user: String,
    /// `created`, `existing` or `adopted`.
    pub outcome: String,
    /// The owner before an adoption.
    pub previous_owner: Option<UserId>,
    /// Entries repaired by an adoption.
    pub repaired: usize,
    /// Entries an adoption left alone, with reasons.
    pub skipped: Vec<String>,
}

impl ProfileChange {
    fn new(account: &Account, outcome: &str) -> ProfileChange {
        ProfileChange {
            user: account.name.clone(),
            outcome: outcome.to_owned(),
            previous_owner: None,
            repaired: 0,
            skipped: Vec::new(),
        }
    }

    fn adopted(account: &Account, report: AdoptReport) -> ProfileChange {
        ProfileChange {
            user: account.name.clone(),
            outcome: "adopted".to_owned(),
            previous_owner: report.previous_owner,
            repaired: report.repaired,
            skipped: report.skipped,
        }
    }
}

fn eligible_account(st: &AppState, name: &str) -> Result<Account, ApiError> {
    let account = accounts::by_name(name)?
        .ok_or_else(|| ApiError::not_found(format!("no account named {name:?}")))?;
    if let Eligibility::Ineligible(reason) = st.config().policy.eligibility(&account)? {
        return Err(ApiError::new(StatusCode::CONFLICT, "not_eligible", reason));
    }
    Ok(account)
}

pub(super) async fn create_profile(
    State(st): State<Arc<AppState>>,
    AdminCaller(caller): AdminCaller,
    ApiJson(body): ApiJson<CreateProfile>,
) -> Result<(StatusCode, Json<ProfileChange>), ApiError> {
    blocking(move || {
        let account = eligible_account(&st, &body.user)?;
        let (profile, provenance) = st.root.ensure_profile(&account)?;
        st.audit_provenance(&caller.account.name, &profile, &provenance);
        let (status, change) = match provenance {
            Provenance::Created => (StatusCode::CREATED, ProfileChange::new(&account, "created")),
            Provenance::Existing => (StatusCode::OK, ProfileChange::new(&account, "existing")),
            Provenance::Adopted(report) => {
                (StatusCode::OK, ProfileChange::adopted(&account, report))
            }
        };
        Ok((status, Json(change)))
    })
    .await
}

pub(super) async fn adopt_profile(
    State(st): State<Arc<AppState>>,
    AdminCaller(caller): AdminCaller,
    ApiPath(user): ApiPath<String>,
) -> Result<Json<ProfileChange>, ApiError> {
    blocking(move || {
        let account = eligible_account(&st, &user)?;
        let report = st.root.adopt(&account)?;
        let (profile, _) = st.root.open_profile(&account)?.ok_or_else(|| {
            ApiError::internal(format!("{user}'s profile vanished while being adopted"))
        })?;
        st.audit_provenance(
            &caller.account.name,
            &profile,
            &Provenance::Adopted(report.clone()),
        );
        Ok(Json(ProfileChange::adopted(&account, report)))
    })
    .await
}
