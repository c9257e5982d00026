//! `/v1/search`: ranked full-text hits in the caller's own index.
//!
//! The query text is checked against [`search::limits`] before anything
//! else, and each account has [`search::budget::PER_ACCOUNT`] searches
//! running at most (rule 8 and rule 9).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::too_many;
use super::extract::{ApiQuery, Caller};
use super::{ApiError, AppState, blocking, page_size};
use crate::search::limits::QueryText;
use crate::search::{self, query::Hits};

#[derive(Debug, Deserialize)]
pub(super) struct SearchQuery {
    user: Option<String>,
    q: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn search(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> Result<Json<Hits>, Response> {
    let limit = page_size(q.limit, st.config().limits.max_page_size);
    let query = match q.q.as_deref().map(str::trim) {
        Some(text) if !text.is_empty() => QueryText::new(text).map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "query_too_complex", e.to_string())
                .into_response()
        })?,
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_query",
                "q: give the words to search for, e.g. /v1/search?q=migration",
            )
            .into_response());
        }
    };
    // Taken before the blocking pool is, and moved into the work so the
    // slot is held while it runs, even after the client hung up.
    let slot = st
        .search
        .start(caller.account.uid)
        .map_err(|busy| too_many("search_busy", &busy.to_string(), Duration::from_secs(1)))?;
    let state_dir = st.config().paths.state_dir.clone();
    blocking(move || {
        let _slot = slot;
        st.with_store(&caller, q.user.as_deref(), |s| {
            let hits = search::query::search(
                &state_dir,
                s.dir().account(),
                &query,
                limit,
                search::budget::TIME,
            )?;
            s.audit_access("search", "index");
            Ok(Json(hits))
        })
    })
    .await
    .map_err(IntoResponse::into_response)
}

impl From<search::Error> for ApiError {
    fn from(e: search::Error) -> ApiError {
        match e {
            search::Error::BadQuery { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.to_string())
            }
            other => ApiError::internal(other),
        }
    }
}
