//! `/v1/tasks`: add, list (by status), show, patch, delete.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::extract::{ApiJson, ApiPath, ApiQuery, Caller, UserQuery};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, blocking, created, json_page, page_size};
use crate::store::{NewTask, Task, TaskPatch, TaskStatus};

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    user: Option<String>,
    status: Option<TaskStatus>,
    limit: Option<usize>,
    before: Option<String>,
}

pub(super) async fn create(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UserQuery>,
    ApiJson(new): ApiJson<NewTask>,
) -> Result<(StatusCode, HeaderMap, Json<Task>), ApiError> {
    let task =
        blocking(move || st.with_store(&caller, q.user.as_deref(), |s| Ok(s.create_task(new)?)))
            .await?;
    Ok(created(&format!("/v1/tasks/{}", task.id), task))
}

pub(super) async fn list(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = page_size(q.limit, st.config().limits.max_page_size);
    if let Some(page) = st
        .own_view(&caller, q.user.as_deref())
        .and_then(|v| v.tasks_page(q.status, limit, q.before.as_deref()))
    {
        return Ok(json_page(page));
    }
    blocking(move || {
        st.with_store(&caller, q.user.as_deref(), |s| {
            let page = s.list_tasks(q.status, limit, q.before.as_deref())?;
            s.audit_access("task.list", "tasks");
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
) -> Result<Json<Task>, ApiError> {
    blocking(move || {
        st.with_store(&caller, q.user.as_deref(), |s| {
            let t = s.get_task(&id)?;
            s.audit_access("task.read", &id);
            Ok(Json(t))
        })
    })
    .await
}

pub(super) async fn update(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<UserQuery>,
    ApiJson(patch): ApiJson<TaskPatch>,
) -> Result<Json<Task>, ApiError> {
    blocking(move || {
        st.with_store(&caller, q.user.as_deref(), |s| {
            Ok(Json(s.update_task(&id, patch)?))
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
            s.delete_task(&id)?;
            Ok(StatusCode::NO_CONTENT)
        })
    })
    .await
}
