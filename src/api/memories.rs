//! `/v1/memories`: capture, list, show, replace, delete.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::extract::{ApiJson, ApiPath, ApiQuery, Caller, UserQuery};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, blocking, created, json_page, page_size};
use crate::store::{Memory, MemoryUpdate, NewMemory};

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    user: Option<String>,
    limit: Option<usize>,
    before: Option<String>,
}

pub(super) async fn create(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UserQuery>,
    ApiJson(new): ApiJson<NewMemory>,
) -> Result<(StatusCode, HeaderMap, Json<Memory>), ApiError> {
    let memory =
        blocking(move || st.with_store(&caller, q.user.as_deref(), |s| Ok(s.create_memory(new)?)))
            .await?;
    Ok(created(&format!("/v1/memories/{}", memory.id), memory))
}

pub(super) async fn list(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = page_size(q.limit, st.config().limits.max_page_size);
    if let Some(page) = st
        .own_view(&caller, q.user.as_deref())
        .and_then(|v| v.memories_page(limit, q.before.as_deref()))
    {
        return Ok(json_page(page));
    }
    blocking(move || {
        st.with_store(&caller, q.user.as_deref(), |s| {
            let page = s.list_memories(limit, q.before.as_deref())?;
            s.audit_access("memory.list", "memories");
            Ok(Json(page).into_response())
        })
    })
    .await
}

pub(super) async fn show(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<UserQuery>,
) -> Result<Json<Memory>, ApiError> {
    blocking(move || {
        st.with_store(&caller, q.user.as_deref(), |s| {
            let m = s.get_memory(&id)?;
            s.audit_access("memory.read", &id);
            Ok(Json(m))
        })
    })
    .await
}

pub(super) async fn update(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<UserQuery>,
    ApiJson(update): ApiJson<MemoryUpdate>,
) -> Result<Json<Memory>, ApiError> {
    blocking(move || {
        st.with_store(&caller, q.user.as_deref(), |s| {
            Ok(Json(s.update_memory(&id, update)?))
        })
    })
    .await
}

pub(super) async fn remove(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<UserQuery>,
) -> Result<StatusCode, ApiError> {
    blocking(move || {
        st.with_store(&caller, q.user.as_deref(), |s| {
            s.delete_memory(&id)?;
            Ok(StatusCode::NO_CONTENT)
        })
    })
    .await
}
