//! Operator endpoints: Prometheus metrics and the OpenAPI document.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(metrics))
        .routes(routes!(openapi))
}

/// `GET /metrics`: every metric in the Prometheus text exposition format (0.0.4).
///
/// # Security
/// Counters and gauges only, labelled from fixed sets: nothing here identifies a user or a
/// session. Still, operators should let only their scraper reach it (it reveals traffic).
#[utoipa::path(
    get, path = "/metrics", operation_id = "metrics", tag = "operations",
    summary = "Prometheus metrics",
    description = "The Prometheus text exposition format 0.0.4. No label carries a username, \
        token, session id or address.",
    responses(
        (status = 200, body = String, content_type = "text/plain; version=0.0.4; charset=utf-8",
            description = "Every metric."),
    ),
)]
async fn metrics(State(state): State<AppState>) -> Response {
    let body = state
        .metrics
        .render(|| state.service.count_live_sessions())
        .await;
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// This document
#[utoipa::path(
    get, path = "/openapi.json", operation_id = "openapi", tag = "operations",
    responses((status = 200, body = Object, description = "OpenAPI 3.1.")),
)]
async fn openapi(State(state): State<AppState>, request: Request) -> Response {
    let server = public_base(&state, request.headers(), request.extensions());
    let mut response = match &server {
        Some(server) => super::openapi::json_for(server).into_response(),
        None => super::openapi::json().into_response(),
    };
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    cache_as_public(&state, &mut response);
    response
}

/// Marks a public document that names this server's URL as cacheable for five minutes.
/// Named from the request (no `public_url`), it differs by the headers that named it, and a
/// shared cache must keep one copy per value.
pub(super) fn cache_as_public(state: &AppState, response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    if state.http.public_url.is_none() {
        headers.insert(
            header::VARY,
            HeaderValue::from_static("Host, X-Forwarded-Host, X-Forwarded-Proto"),
        );
    }
}

/// The URL this server is reached at, as `/openapi.json` and the issuer metadata name it:
/// the configured `public_url`, else this server's origin as the request shows it; `None`
/// when the request names no usable host.
///
/// # Security
/// `Host` is the client's to choose: a client can only make the document it receives name
/// the host it asked for (the same rule, [`super::protect::own_origin`], that the cross-site check
/// uses: `X-Forwarded-*` only from trusted proxies, no URL syntax in the host). `Vary` keeps a
/// shared cache from handing one client's version to another; `public_url` removes the
/// question.
pub(super) fn public_base(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    extensions: &axum::http::Extensions,
) -> Option<String> {
    if let Some(url) = &state.http.public_url {
        return Some(url.clone());
    }
    let peer = super::extract::peer_ip(extensions);
    super::protect::own_origin(headers, peer, &state.http)
        .map(|origin| origin.ascii_serialization())
}

#[cfg(test)]
mod tests {
    use crate::service::EventKind;

    fn document() -> serde_json::Value {
        serde_json::from_str(super::super::openapi::json()).unwrap()
    }

    #[test]
    fn the_openapi_document_is_json_of_version_3_1() {
        let doc = document();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
        assert!(doc["paths"].as_object().is_some_and(|p| !p.is_empty()));
    }

    /// The document's audit kinds (query and events) are the service's, all of them:
    /// schemathesis sends every listed value and checks every answered one.
    #[test]
    fn the_documented_audit_kinds_are_the_service_s() {
        let doc = document();
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
        let events = &doc["paths"]["/v1/admin/audit"]["get"]["responses"]["200"]["content"]["application/json"]
            ["schema"]["properties"]["events"]["items"]["$ref"];
        let name = events
            .as_str()
            .unwrap()
            .trim_start_matches("#/components/schemas/");
        let event = &doc["components"]["schemas"][name];
        assert_eq!(event["properties"]["kind"]["enum"], kind["schema"]["enum"]);
    }
}
