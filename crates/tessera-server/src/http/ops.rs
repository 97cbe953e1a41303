//! Operator endpoints: Prometheus metrics and the OpenAPI document.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;

/// The OpenAPI 3.1 description of the whole HTTP API, checked against the router by the
/// integration tests (every documented operation exists, every route is documented).
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

/// `GET /metrics`: every metric in the Prometheus text exposition format (0.0.4).
///
/// # Security
/// Counters and gauges only, labelled from fixed sets: nothing here identifies a user or a
/// session. Still, operators should let only their scraper reach it (it reveals traffic).
async fn metrics(State(state): State<AppState>) -> Response {
    let body = state.metrics.render(&state.service).await;
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// `GET /openapi.json`: the API description.
async fn openapi() -> Response {
    let mut response = OPENAPI_JSON.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // Public and the same for everyone: caching is safe.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::OPENAPI_JSON;
    use crate::service::EventKind;

    #[test]
    fn the_openapi_document_is_json_of_version_3_1() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
        assert!(doc["paths"].as_object().is_some_and(|p| !p.is_empty()));
    }

    /// The document's audit kinds (query and events) are the service's, all of them:
    /// schemathesis sends every listed value and checks every answered one.
    #[test]
    fn the_documented_audit_kinds_are_the_service_s() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        let parameters = doc["paths"]["/v1/admin/audit"]["get"]["parameters"]
            .as_array()
            .unwrap();
        let kind = parameters.iter().find(|p| p["name"] == "kind").unwrap();
        let documented: Vec<&str> = kind["schema"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        let served: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(documented, served);
        assert_eq!(
            doc["components"]["schemas"]["AuditEvent"]["properties"]["kind"]["enum"],
            kind["schema"]["enum"]
        );
    }
}
