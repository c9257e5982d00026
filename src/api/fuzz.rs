//! The fuzz targets' way into the request types (feature `fuzzing`): every
//! JSON body and query string a route accepts, decoded by the same axum
//! extractors the server runs (serde_json's nesting limit of 128, the
//! body limit of `limits.max_body_bytes`).

use axum::Json;
use axum::extract::Query;
use axum::http::Uri;
use serde::de::DeserializeOwned;

use super::extract::UserQuery;
use super::{admin, agents, auth, credentials, knowledge, memories, search, tasks};
use crate::creds::NewKey;
use crate::store::{MemoryUpdate, NewKnowledge, NewMemory, NewTask, Persona, TaskPatch};

/// The default `limits.max_body_bytes`: larger bodies never reach a parser.
const MAX_BODY: usize = 1 << 20;

fn body<T: DeserializeOwned>(bytes: &[u8]) {
    let _ = Json::<T>::from_bytes(bytes);
}

/// `data`'s first byte picks a request type, the rest is its body.
pub(crate) fn request(data: &[u8]) {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    if bytes.len() > MAX_BODY {
        return;
    }
    match pick % 11 {
        0 => body::<auth::LoginRequest>(bytes),
        1 => body::<auth::TokenRequest>(bytes),
        2 => body::<admin::CreateProfile>(bytes),
        3 => body::<credentials::Recipients>(bytes),
        4 => body::<NewKey>(bytes),
        5 => body::<NewMemory>(bytes),
        6 => body::<MemoryUpdate>(bytes),
        7 => body::<NewTask>(bytes),
        8 => body::<TaskPatch>(bytes),
        9 => body::<NewKnowledge>(bytes),
        _ => body::<Persona>(bytes),
    }
}

fn query<T: DeserializeOwned>(uri: &Uri) {
    let _ = Query::<T>::try_from_uri(uri);
}

/// `data` as the query string of every route's query type.
pub(crate) fn query_string(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // What hyper would not accept as a request target never reaches axum.
    let Ok(uri) = format!("/v1/x?{text}").parse::<Uri>() else {
        return;
    };
    query::<UserQuery>(&uri);
    query::<memories::ListQuery>(&uri);
    query::<tasks::ListQuery>(&uri);
    query::<knowledge::ListQuery>(&uri);
    query::<agents::RunQuery>(&uri);
    query::<agents::RunsQuery>(&uri);
    query::<search::SearchQuery>(&uri);
}
