//! `/v1/persona`: the persona core.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use super::extract::{ApiJson, ApiQuery, Caller, UserQuery};
use super::{ApiError, AppState, blocking};
use crate::store::Persona;

pub(super) async fn show(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UserQuery>,
) -> Result<Json<Persona>, ApiError> {
    blocking(move || {
        st.with_store(&caller, q.user.as_deref(), |s| {
            let p = s.persona()?;
            s.audit_access("persona.read", "persona/core.toml");
            Ok(Json(p))
        })
    })
    .await
}

pub(super) async fn replace(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UserQuery>,
    ApiJson(persona): ApiJson<Persona>,
) -> Result<Json<Persona>, ApiError> {
    blocking(move || {
        st.with_store(&caller, q.user.as_deref(), |s| {
            Ok(Json(s.set_persona(&persona)?))
        })
    })
    .await
}
