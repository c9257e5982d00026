//! Every route in one table: the router is built from it and so is the
//! OpenAPI document, so the two cannot drift apart.

use std::sync::Arc;

use axum::http::Method;
use axum::routing::{MethodRouter, delete, get, patch, post, put};

use super::{
    AppState, admin, agents, auth, credentials, events, knowledge, memories, observe, persona,
    search, settings, tasks,
};

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, with no credentials (TCP too).
    Public,
    /// Any eligible account, on its own profile (admins: `?user=`).
    User,
    /// Admins only.
    Admin,
}

/// One route as documented.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The HTTP method.
    pub method: Method,
    /// The path template, `{name}` for parameters.
    pub path: &'static str,
    /// One line on what it does.
    pub summary: &'static str,
    /// Who may call it.
    pub access: Access,
    /// Whether `?user=NAME` is accepted (admins acting on another profile).
    pub user_param: bool,
}

type Handler = MethodRouter<Arc<AppState>>;

fn spec(
    method: Method,
    path: &'static str,
    access: Access,
    user_param: bool,
    summary: &'static str,
) -> Spec {
    Spec {
        method,
        path,
        summary,
        access,
        user_param,
    }
}

/// The table: each route's description and handler.
pub fn table() -> Vec<(Spec, Handler)> {
    use Access::{Admin, Public, User};
    use Method as M;
    vec![
        (
            spec(M::GET, "/v1/health", Public, false, "Liveness and version"),
            get(admin::health),
        ),
        (
            spec(
                M::GET,
                "/v1/metrics",
                Public,
                false,
                "Prometheus text metrics",
            ),
            get(observe::metrics),
        ),
        (
            spec(M::GET, "/v1/openapi.json", Public, false, "This document"),
            get(observe::openapi),
        ),
        (
            spec(
                M::POST,
                "/v1/auth/login",
                Public,
                false,
                "Log in with the Linux password (PAM); answers a session token (no cookie)",
            ),
            post(auth::login),
        ),
        (
            spec(
                M::POST,
                "/v1/auth/logout",
                User,
                false,
                "End the session this request carries",
            ),
            post(auth::logout),
        ),
        (
            spec(
                M::GET,
                "/v1/me",
                User,
                true,
                "Who you are, your profile and its problems",
            ),
            get(admin::me),
        ),
        (
            spec(
                M::POST,
                "/v1/tokens",
                User,
                false,
                "Create a personal token (shown once)",
            ),
            post(auth::create_token),
        ),
        (
            spec(
                M::GET,
                "/v1/tokens",
                User,
                true,
                "List your sessions and tokens (never the secrets)",
            ),
            get(auth::list_tokens),
        ),
        (
            spec(
                M::DELETE,
                "/v1/tokens",
                User,
                true,
                "Revoke all your sessions and tokens",
            ),
            delete(auth::revoke_all_tokens),
        ),
        (
            spec(
                M::DELETE,
                "/v1/tokens/{id}",
                User,
                true,
                "Revoke one session or token",
            ),
            delete(auth::revoke_token),
        ),
        (
            spec(
                M::GET,
                "/v1/events",
                User,
                true,
                "Your profile's changes as server-sent events (Last-Event-ID to catch up)",
            ),
            get(events::stream),
        ),
        (
            spec(M::POST, "/v1/memories", User, true, "Capture a memory"),
            post(memories::create),
        ),
        (
            spec(
                M::GET,
                "/v1/memories",
                User,
                true,
                "List memories, newest first (limit, before)",
            ),
            get(memories::list),
        ),
        (
            spec(M::GET, "/v1/memories/{id}", User, true, "One memory"),
            get(memories::show),
        ),
        (
            spec(
                M::PUT,
                "/v1/memories/{id}",
                User,
                true,
                "Replace a memory's text and tags",
            ),
            put(memories::update),
        ),
        (
            spec(
                M::DELETE,
                "/v1/memories/{id}",
                User,
                true,
                "Delete a memory",
            ),
            delete(memories::remove),
        ),
        (
            spec(M::POST, "/v1/tasks", User, true, "Add a task"),
            post(tasks::create),
        ),
        (
            spec(
                M::GET,
                "/v1/tasks",
                User,
                true,
                "List tasks (status, limit, before)",
            ),
            get(tasks::list),
        ),
        (
            spec(M::GET, "/v1/tasks/{id}", User, true, "One task"),
            get(tasks::show),
        ),
        (
            spec(M::PATCH, "/v1/tasks/{id}", User, true, "Change a task"),
            patch(tasks::update),
        ),
        (
            spec(M::DELETE, "/v1/tasks/{id}", User, true, "Delete a task"),
            delete(tasks::remove),
        ),
        (
            spec(M::GET, "/v1/persona", User, true, "The persona core"),
            get(persona::show),
        ),
        (
            spec(
                M::PUT,
                "/v1/persona",
                User,
                true,
                "Replace the persona core",
            ),
            put(persona::replace),
        ),
        (
            spec(
                M::GET,
                "/v1/credentials",
                User,
                true,
                "Your provider keys: names and metadata, never the secrets",
            ),
            get(credentials::list),
        ),
        (
            spec(
                M::PUT,
                "/v1/credentials/recipients",
                User,
                false,
                "Set your own age or ssh-ed25519 recipients of credentials.age",
            ),
            put(credentials::set_recipients),
        ),
        (
            spec(
                M::POST,
                "/v1/credentials/reset",
                User,
                false,
                "Set a broken credentials.age aside and start afresh",
            ),
            post(credentials::reset),
        ),
        (
            spec(
                M::PUT,
                "/v1/credentials/{provider}",
                User,
                false,
                "Set the key of a provider",
            ),
            put(credentials::set),
        ),
        (
            spec(
                M::DELETE,
                "/v1/credentials/{provider}",
                User,
                true,
                "Delete the key of a provider",
            ),
            delete(credentials::remove),
        ),
        (
            spec(
                M::POST,
                "/v1/credentials/{provider}/reveal",
                User,
                false,
                "Show your own secret (owner only, audited)",
            ),
            post(credentials::reveal),
        ),
        (
            spec(
                M::GET,
                "/v1/host/credentials",
                Admin,
                false,
                "The host's fallback keys: names and metadata",
            ),
            get(credentials::host_list),
        ),
        (
            spec(
                M::PUT,
                "/v1/host/credentials/{provider}",
                Admin,
                false,
                "Set a host fallback key",
            ),
            put(credentials::host_set),
        ),
        (
            spec(
                M::DELETE,
                "/v1/host/credentials/{provider}",
                Admin,
                false,
                "Delete a host fallback key",
            ),
            delete(credentials::host_remove),
        ),
        (
            spec(
                M::GET,
                "/v1/profiles",
                Admin,
                false,
                "Every directory in the profiles root with its state",
            ),
            get(admin::list_profiles),
        ),
        (
            spec(
                M::POST,
                "/v1/profiles",
                Admin,
                false,
                "Create (or adopt) a profile for an eligible account",
            ),
            post(admin::create_profile),
        ),
        (
            spec(
                M::POST,
                "/v1/profiles/{user}/adopt",
                Admin,
                false,
                "Hand a conflicting profile to the current account",
            ),
            post(admin::adopt_profile),
        ),
        // Search (issue #6, built-in agents).
        (
            spec(
                M::GET,
                "/v1/search",
                User,
                true,
                "Ranked full-text hits in your memories and tasks (q, limit)",
            ),
            get(search::search),
        ),
        // Agents (issue #6).
        (
            spec(
                M::GET,
                "/v1/agents",
                User,
                true,
                "The agents that run for you, with your last run and the next",
            ),
            get(agents::list),
        ),
        (
            spec(
                M::POST,
                "/v1/agents/{name}/run",
                User,
                true,
                "Run an agent for yourself now (admins: ?all=true runs a whole cycle)",
            ),
            post(agents::run),
        ),
        (
            spec(
                M::GET,
                "/v1/agents/{name}/runs",
                User,
                true,
                "Your runs of an agent, newest first (?limit=)",
            ),
            get(agents::runs),
        ),
        // Settings in force and the knowledge hub (issue #5).
        (
            spec(
                M::GET,
                "/v1/settings",
                User,
                true,
                "The settings in force (the last valid profile.toml) and the file's problem, if any",
            ),
            get(settings::show),
        ),
        (
            spec(
                M::POST,
                "/v1/knowledge",
                User,
                false,
                "Add a knowledge entry, written as a file you own",
            ),
            post(knowledge::create),
        ),
        (
            spec(
                M::GET,
                "/v1/knowledge",
                User,
                false,
                "The shared knowledge entries, newest first (limit, before)",
            ),
            get(knowledge::list),
        ),
        (
            spec(
                M::GET,
                "/v1/knowledge/{id}",
                User,
                false,
                "One knowledge entry",
            ),
            get(knowledge::show),
        ),
        (
            spec(
                M::DELETE,
                "/v1/knowledge/{id}",
                User,
                false,
                "Remove a knowledge entry (its author, or an admin: audited)",
            ),
            delete(knowledge::remove),
        ),
    ]
}

/// The descriptions alone.
pub fn specs() -> Vec<Spec> {
    table().into_iter().map(|(s, _)| s).collect()
}
