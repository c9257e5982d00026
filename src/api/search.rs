//! `/v1/search`: ranked full-text hits in the caller's own index.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use super::extract::{ApiQuery, Caller};
use super::{ApiError, AppState, blocking, page_size};
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
) -> Result<Json<Hits>, ApiError> {
    let limit = page_size(q.limit, st.config().limits.max_page_size);
    let query = match q.q.as_deref().map(str::trim) {
        Some(text) if !text.is_empty() => text.to_owned(),
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_query",
                "q: give the words to search for, e.g. /v1/search?q=migration",
            ));
        }
    };
    let state_dir = st.config().paths.state_dir.clone();
    blocking(move || {
        st.with_store(&caller, q.user.as_deref(), |s| {
            let hits = search::query::search(&state_dir, s.dir().account(), &query, limit)?;
            s.audit_access("search", "index");
            Ok(Json(hits))
        })
    })
    .await
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
