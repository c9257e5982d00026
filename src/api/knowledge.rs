//! `/v1/knowledge`: the shared knowledge hub. Every eligible account (and
//! every admin) reads it; eligible accounts add entries, which are files
//! they own; an entry is removed by its author or an admin.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::extract::{ApiJson, ApiPath, ApiQuery, Caller};
use super::{ApiError, AppState, blocking, created, page_size};
use crate::accounts::{self, Account};
use crate::audit::Auditor;
use crate::store::{KnowledgeEntry, NewKnowledge, Page};

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    limit: Option<usize>,
    before: Option<String>,
}

/// The account an entry is written as: only an eligible account, whose
/// file ownership is what attributes the entry.
fn author(caller: &Caller) -> Result<&Account, ApiError> {
    match &caller.ineligible {
        None => Ok(&caller.account),
        Some(reason) => Err(ApiError::forbidden(
            "no_own_profile",
            format!(
                "{reason}, so it cannot author knowledge entries (an entry is attributed to \
                 the account that owns its file); add it as an eligible account"
            ),
        )),
    }
}

pub(super) async fn create(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(new): ApiJson<NewKnowledge>,
) -> Result<(StatusCode, HeaderMap, Json<KnowledgeEntry>), ApiError> {
    let account = author(&caller)?.clone();
    let entry = blocking(move || Ok(st.knowledge.create(&account, new)?)).await?;
    Ok(created(&format!("/v1/knowledge/{}", entry.id), entry))
}

pub(super) async fn list(
    State(st): State<Arc<AppState>>,
    _caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<KnowledgeEntry>>, ApiError> {
    let config = st.config();
    let limit = page_size(q.limit, config.limits.max_page_size);
    blocking(move || {
        Ok(Json(st.knowledge.list(
            &config.policy,
            limit,
            q.before.as_deref(),
        )?))
    })
    .await
}

pub(super) async fn show(
    State(st): State<Arc<AppState>>,
    _caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<KnowledgeEntry>, ApiError> {
    let config = st.config();
    blocking(move || Ok(Json(st.knowledge.get(&config.policy, &id)?))).await
}

pub(super) async fn remove(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    blocking(move || {
        let removed = st.knowledge.remove(&id, &caller.account, caller.admin)?;
        // An admin's removal of another's entry goes to the author's own
        // log too (rule 4); the system log has it already.
        if removed.owner != caller.account.uid
            && let Some(name) = &removed.author
            && let Ok(Some(account)) = accounts::by_name(name)
            && let Ok(Some(profile)) = st.root().open_owned(&account)
        {
            Auditor {
                system: st.system_log(),
                actor: &caller.account.name,
                on_behalf: false,
            }
            .record(&profile, "knowledge.delete", &id, "ok");
        }
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
