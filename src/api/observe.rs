//! `/v1/metrics` and `/v1/openapi.json`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::routes::{self, Access};
use super::{AppState, blocking};
use crate::metrics::Gauges;

pub(super) async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let st2 = st.clone();
    let profiles = blocking(move || Ok(st2.root.list().map_or(0, |l| l.len())))
        .await
        .unwrap_or(0);
    let mut body = st.auth.metrics.render(Gauges {
        sessions: st.auth.tokens.live_sessions(),
        profiles,
    });
    body.push_str(&st.budgets.render_metrics());
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

pub(super) async fn openapi() -> Json<Value> {
    Json(document())
}

/// The OpenAPI 3.1 document of every route in [`routes::table`].
pub fn document() -> Value {
    let mut paths = Map::new();
    for spec in routes::specs() {
        let mut params: Vec<Value> = spec
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if spec.user_param {
            params.push(json!({
                "name": "user", "in": "query", "required": false,
                "description": "Act on this account's profile (admins only)",
                "schema": {"type": "string"}
            }));
        }
        let security = match spec.access {
            Access::Public => json!([]),
            Access::User | Access::Admin => {
                json!([{"bearer": []}, {"unix_peer": []}])
            }
        };
        let op = json!({
            "operationId": format!("{} {}", spec.method, spec.path),
            "summary": spec.summary,
            "x-access": format!("{:?}", spec.access).to_lowercase(),
            "parameters": params,
            "security": security,
            "responses": {
                "2XX": {"description": "Success (JSON)"},
                "default": {
                    "description": "An RFC 9457 problem with a stable `code`",
                    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
                }
            }
        });
        let entry = paths
            .entry(spec.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(methods) = entry {
            methods.insert(spec.method.as_str().to_ascii_lowercase(), op);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "profiled",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Per-account AI-assistant profiles on a shared Linux host. See docs/API.md."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "unix_peer": {"type": "http", "scheme": "peercred", "description": "On the Unix socket the kernel names the caller (SO_PEERCRED)"}
            },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "properties": {
                        "type": {"type": "string"}, "title": {"type": "string"},
                        "status": {"type": "integer"}, "code": {"type": "string"},
                        "detail": {"type": "string"}
                    }
                }
            }
        }
    })
}
