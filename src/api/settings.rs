//! `GET /v1/settings`: the settings in force (the last `profile.toml` that
//! validated, rule 7) and what is wrong with the file on disk, if anything.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::extract::{ApiQuery, Caller, UserQuery};
use super::{ApiError, AppState, blocking};
use crate::store::{Problem, UserSettings};

/// What `GET /v1/settings` answers.
#[derive(Serialize, Deserialize, Debug)]
pub struct SettingsReport {
    /// The settings that apply now.
    pub settings: SettingsView,
    /// Why `profile.toml` on disk is not what applies (file, line,
    /// reason); `null` when it is.
    pub problem: Option<Problem>,
}

/// The settings in force, as shown.
#[derive(Serialize, Deserialize, Debug)]
pub struct SettingsView {
    /// The name the assistant calls the user.
    pub display_name: Option<String>,
    /// IANA time zone.
    pub timezone: Option<String>,
    /// The model agents use.
    pub model: Option<ModelView>,
    /// The names of the user's own agent declarations and overrides.
    pub agents: Vec<String>,
}

/// `[model]`, as shown (the key itself lives in credentials).
#[derive(Serialize, Deserialize, Debug)]
pub struct ModelView {
    /// The credential name holding the key.
    pub provider: Option<String>,
    /// The endpoint's base URL.
    pub base_url: Option<String>,
    /// The model name.
    pub name: Option<String>,
}

impl From<&UserSettings> for SettingsView {
    fn from(s: &UserSettings) -> SettingsView {
        SettingsView {
            display_name: s.display_name.clone(),
            timezone: s.timezone.clone(),
            model: s.model.as_ref().map(|m| ModelView {
                provider: m.provider.clone(),
                base_url: m.base_url.clone(),
                name: m.name.clone(),
            }),
            agents: s.agents.0.keys().cloned().collect(),
        }
    }
}

pub(super) async fn show(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UserQuery>,
) -> Result<Json<SettingsReport>, ApiError> {
    blocking(move || {
        st.with_store(&caller, q.user.as_deref(), |s| {
            s.audit_access("settings.read", "profile.toml");
            let in_force = st.settings.get(s);
            Ok(Json(SettingsReport {
                settings: SettingsView::from(in_force.settings.as_ref()),
                problem: in_force.problem,
            }))
        })
    })
    .await
}
