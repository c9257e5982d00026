//! Errors as RFC 9457 `application/problem+json`, each with a stable `code`
//! that clients may match on (listed in docs/API.md).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::{accounts, profile, store};

/// An API error: HTTP status, stable code and a sentence for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `not_found`.
    pub code: &'static str,
    /// What went wrong and what to do.
    pub detail: String,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'a str,
    status: u16,
    code: &'a str,
    detail: &'a str,
}

impl ApiError {
    /// An error with `status`, `code` and `detail`.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            detail: detail.into(),
        }
    }

    /// 403 with `code`.
    pub fn forbidden(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, code, detail)
    }

    /// 404 `not_found`.
    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// 500 `internal`; the detail is logged, the client gets a generic text
    /// (an internal error may name paths outside the caller's profile).
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        tracing::error!("internal error: {detail}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "profiled hit an internal error; the daemon's log (journalctl -u profiled) has the details",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            kind: "about:blank",
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            code: self.code,
            detail: &self.detail,
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut resp = (self.status, json).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        resp
    }
}

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> ApiError {
        match e {
            store::Error::NotFound { .. } => ApiError::not_found(e.to_string()),
            store::Error::Invalid { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_record",
                e.to_string(),
            ),
            store::Error::Input { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_input",
                e.to_string(),
            ),
            store::Error::Forbidden { .. } => ApiError::forbidden("not_author", e.to_string()),
            store::Error::Profile(e) => e.into(),
        }
    }
}

impl From<profile::Error> for ApiError {
    fn from(e: profile::Error) -> ApiError {
        match e {
            profile::Error::NotFound { .. } => ApiError::not_found(e.to_string()),
            profile::Error::Refused { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unsafe_file",
                e.to_string(),
            ),
            profile::Error::Conflict { .. } => {
                ApiError::new(StatusCode::CONFLICT, "profile_conflict", e.to_string())
            }
            profile::Error::BadPath { .. } | profile::Error::UnsafeRoot { .. } => {
                ApiError::internal(e)
            }
            profile::Error::Io { .. } => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "io_error", e.to_string())
            }
        }
    }
}

impl From<accounts::Error> for ApiError {
    fn from(e: accounts::Error) -> ApiError {
        match e {
            accounts::Error::InvalidName(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_user", e.to_string())
            }
            accounts::Error::Nss { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "nss_unavailable",
                e.to_string(),
            ),
        }
    }
}
