//! The HTTP API (v1): JSON in and out, errors as problem+json. See
//! docs/API.md for every route.
//!
//! Every handler runs its file work on the blocking pool (fsync, NSS) and
//! reaches a profile only through [`AppState::with_store`], which decides
//! whose profile the request may touch (rule 4). The one shortcut: a
//! listing of the caller's own profile is answered from its in-memory view
//! ([`AppState::own_view`]), which opens no file.

mod accounting;
mod admin;
mod agents;
mod auth;
pub mod conn_budget;
mod credentials;
mod events;
mod extract;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzz;
mod guard;
mod identity;
mod knowledge;
mod memories;
mod observe;
mod persona;
mod problem;
pub mod routes;
mod search;
mod settings;
mod tasks;

pub use admin::{Me, ProfileChange, ProfileRow};
pub use auth::{NewToken, TokenInfo};
pub use extract::{Caller, ClientAddr, Peer, identify};
pub use identity::{Checked, Identities};
pub use observe::document as openapi_document;
pub use problem::ApiError;
pub use settings::{ModelView, SettingsReport, SettingsView};

use std::sync::{Arc, RwLock};

use axum::Json;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::{Router, middleware};
use tokio::sync::Semaphore;

use crate::accounts::{self, Eligibility, UserId};
use crate::audit::{self, Auditor, SystemLog};
use crate::auth::ratelimit::RateLimiter;
use crate::auth::throttle::Throttle;
use crate::auth::tokens::TokenStore;
use crate::budget::{self, Budgets, Standing};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::profile::{AdoptReport, ProfileDir, ProfilesRoot, Provenance};
use crate::store::{ProfileView, Store, Views};
use crate::timefmt;
use crate::usage::Usage;
use crate::watch::EventHub;

/// The listeners that share the descriptor limit: the socket and TCP.
const LISTENERS: usize = 2;

/// What every request shares.
pub struct AppState {
    config: RwLock<Arc<Config>>,
    root: ProfilesRoot,
    system_log: SystemLog,
    /// Logins, sessions, limits and counters.
    pub auth: AuthState,
    /// Profile changes found by the watcher, for `/v1/events`.
    pub events: EventHub,
    /// The in-memory view of each profile listed so far.
    views: Views,
    /// Agent declarations, last and next runs, the stop flag.
    pub agents: crate::agents::Agents,
    /// Each profile's last valid profile.toml (rule 7).
    pub settings: crate::store::SettingsInForce,
    /// The shared knowledge hub.
    pub knowledge: crate::store::KnowledgeHub,
    /// How the watcher watches (a reached inotify limit shows here).
    pub watch: Arc<crate::watch::Status>,
    /// Connections and event streams each caller holds (rule 9).
    pub budgets: Budgets,
    /// The searches each account has running.
    pub search: crate::search::budget::Budget,
}

/// The state of logins and request accounting.
pub struct AuthState {
    /// Sessions and personal tokens.
    pub tokens: TokenStore,
    /// Failed-login delays.
    pub throttle: Throttle,
    /// Per-account request rates.
    pub rate: RateLimiter,
    /// PAM conversations allowed at once.
    pub pam_slots: Semaphore,
    /// Request counts not yet written to the usage logs.
    pub usage: Usage,
    /// Counters for /v1/metrics.
    pub metrics: Metrics,
    /// The name service's recent answers about callers.
    pub identities: Identities,
}

impl AppState {
    /// State over an opened profiles root, token store and knowledge
    /// directory.
    pub fn new(
        config: Config,
        root: ProfilesRoot,
        tokens: TokenStore,
        knowledge: crate::profile::SharedDir,
    ) -> AppState {
        let system_log = SystemLog::new(config.paths.audit_dir());
        let knowledge = crate::store::KnowledgeHub::new(knowledge, system_log.clone());
        let watch = Arc::new(crate::watch::Status::new(config.watch.mode));
        let auth = AuthState {
            tokens,
            throttle: Throttle::default(),
            rate: RateLimiter::default(),
            pam_slots: Semaphore::new(config.auth.max_concurrent_logins),
            usage: Usage::default(),
            metrics: Metrics::default(),
            identities: Identities::new(Some(root.path())),
        };
        AppState {
            config: RwLock::new(Arc::new(config)),
            root,
            system_log,
            auth,
            events: EventHub::default(),
            views: Views::default(),
            agents: crate::agents::Agents::default(),
            settings: crate::store::SettingsInForce::default(),
            knowledge,
            watch,
            budgets: Budgets::new(budget::descriptor_ceiling(LISTENERS)),
            search: crate::search::budget::Budget::default(),
        }
    }

    /// What `uid` may hold open: from what the name service already told
    /// when it can, asking it (off the async threads) otherwise.
    pub async fn standing(self: &Arc<Self>, uid: UserId, checked: Option<Checked>) -> Standing {
        let ids = &self.auth.identities;
        let config = self.config();
        let checked = checked.unwrap_or_else(|| ids.check());
        if let Some(known) = ids.peek_standing(checked, uid, &config.policy) {
            return known;
        }
        let st = self.clone();
        tokio::task::spawn_blocking(move || st.auth.identities.standing(uid, &config.policy))
            .await
            // Fail closed: the small budget.
            .unwrap_or(Standing::Outsider)
    }

    /// The profiles root.
    pub fn root(&self) -> &ProfilesRoot {
        &self.root
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        match self.config.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts a new, already validated config in force.
    pub fn set_config(&self, config: Config) {
        let new = Arc::new(config);
        match self.config.write() {
            Ok(mut c) => *c = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }

    /// The system audit log.
    pub fn system_log(&self) -> &SystemLog {
        &self.system_log
    }

    /// Runs `f` on the store of the profile the request may act on: the
    /// caller's own (provisioned on first use), or with `?user=NAME`
    /// another's, for admins only.
    pub fn with_store<T>(
        &self,
        caller: &Caller,
        user: Option<&str>,
        f: impl FnOnce(&Store<'_>) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let (profile, on_behalf) = self.target(caller, user)?;
        let auditor = Auditor {
            system: &self.system_log,
            actor: &caller.account.name,
            on_behalf,
        };
        let view = self.views.of(&profile)?;
        f(&Store::new(&profile, &auditor).with_view(view))
    }

    /// The caller's own profile's view, for a listing answered from memory
    /// on the async thread (no file opened, no blocking pool): only when
    /// the request acts on the caller's own profile (`?user=` absent or
    /// naming the caller) and the caller has one. Anything else, and a view
    /// not walked yet, goes through [`AppState::with_store`].
    pub fn own_view(&self, caller: &Caller, user: Option<&str>) -> Option<Arc<ProfileView>> {
        if caller.ineligible.is_some() || user.is_some_and(|u| u != caller.account.name) {
            return None;
        }
        // Read before the directory is looked at, so a change made after
        // this request's check is never taken for verified.
        let generation = self.auth.identities.profiles_generation();
        self.views.get(&self.root, &caller.account, generation)
    }

    /// The watcher saw the file `rel` of `user`'s profile change: its view
    /// re-reads it, before the change is published, so a client that got
    /// the event lists the change.
    pub fn refresh_view(&self, user: &str, rel: &str) {
        self.views.refresh(&self.root, user, rel, &self.system_log);
    }

    /// Events may have been lost: every view is walked again on its next
    /// listing.
    pub fn clear_views(&self) {
        self.views.clear();
    }

    fn target(&self, caller: &Caller, user: Option<&str>) -> Result<(ProfileDir, bool), ApiError> {
        match user {
            Some(name) if name != caller.account.name => {
                if !caller.admin {
                    return Err(ApiError::forbidden(
                        "forbidden_user",
                        "only admins may act on another account's profile (?user= / --user)",
                    ));
                }
                let account = accounts::by_name(name)?
                    .ok_or_else(|| ApiError::not_found(format!("no account named {name:?}")))?;
                if let Eligibility::Ineligible(reason) =
                    self.config().policy.eligibility(&account)?
                {
                    return Err(ApiError::new(StatusCode::CONFLICT, "not_eligible", reason));
                }
                let (profile, provenance) = self.root.open_profile(&account)?.ok_or_else(|| {
                    ApiError::new(
                        StatusCode::NOT_FOUND,
                        "no_profile",
                        format!(
                            "{name} has no profile yet; create it with `profilectl profile create {name}`"
                        ),
                    )
                })?;
                self.audit_provenance(&caller.account.name, &profile, &provenance);
                Ok((profile, true))
            }
            _ => {
                if let Some(reason) = &caller.ineligible {
                    return Err(ApiError::forbidden(
                        "no_own_profile",
                        format!(
                            "{reason}, so it has no profile of its own; as an admin, name one with --user NAME"
                        ),
                    ));
                }
                let (profile, provenance) = self.root.ensure_profile(&caller.account)?;
                self.audit_provenance(&caller.account.name, &profile, &provenance);
                Ok((profile, false))
            }
        }
    }

    /// Records the creation or adoption of `profile` in its own log and in
    /// the system log; an existing profile records nothing.
    fn audit_provenance(&self, actor: &str, profile: &ProfileDir, provenance: &Provenance) {
        let (action, result) = match provenance {
            Provenance::Existing => return,
            Provenance::Created => ("profile.create", "ok".to_owned()),
            Provenance::Adopted(report) => ("profile.adopt", adoption_result(report)),
        };
        crate::creds::provision(&self.config().paths.state_dir, profile);
        let user = profile.account().name.as_str();
        Auditor {
            system: &self.system_log,
            actor,
            on_behalf: false,
        }
        .record(profile, action, user, &result);
        self.system_log.append(&audit::Line {
            time: timefmt::now_rfc3339(),
            actor,
            user,
            action,
            target: user,
            result: &result,
        });
    }
}

/// The audit result of an adoption: what changed and what was left.
fn adoption_result(report: &AdoptReport) -> String {
    let mut out = format!(
        "ok: previous owner uid {}, {} entries repaired",
        report.previous_owner.map_or(0, |u| u.0),
        report.repaired
    );
    if !report.skipped.is_empty() {
        out.push_str(&format!(
            "; left as they were: {}",
            report.skipped.join("; ")
        ));
    }
    out
}

/// Runs blocking work (file I/O, NSS, fsync) off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

/// The v1 router over `state`, as served on the Unix socket (the kernel
/// names the caller).
pub fn router(state: Arc<AppState>) -> Router {
    let body_limit = state.config().limits.max_body_bytes;
    routes::table()
        .into_iter()
        .fold(Router::new(), |r, (spec, handler)| {
            r.route(spec.path, handler)
        })
        .fallback(no_route)
        .method_not_allowed_fallback(no_method)
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            accounting::accounting,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// The router as served on loopback TCP listening on `port`: the same
/// routes behind the Host, Origin and credential checks.
pub fn tcp_router(state: Arc<AppState>, port: u16) -> Router {
    router(state.clone())
        // Inside the guard: it runs once the request is authenticated.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            conn_budget::bind,
        ))
        .layer(middleware::from_fn_with_state(
            guard::TcpGuard { state, port },
            guard::tcp_guard,
        ))
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route {}; see docs/API.md", uri.path()))
}

async fn no_method(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not accept {method}; see docs/API.md", uri.path()),
    )
}

/// A 201 answer with the new resource's `Location`.
fn created<T>(location: &str, body: T) -> (StatusCode, HeaderMap, Json<T>) {
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, v);
    }
    (StatusCode::CREATED, headers, Json(body))
}

/// A listing page already rendered as JSON (from a profile's view).
fn json_page(json: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json,
    )
        .into_response()
}

/// Clamps a requested page size to `1..=max`, defaulting to 50.
fn page_size(requested: Option<usize>, max: usize) -> usize {
    requested.unwrap_or(50).clamp(1, max.max(1))
}
