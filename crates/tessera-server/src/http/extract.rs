//! Request extractors: the presented token, the authenticated session, bodies, client info.
//!
//! Every rejection is a [`Problem`], so malformed input never yields axum's plain-text errors.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;

use super::AppState;
use super::problem::Problem;
use crate::service::{ClientInfo, Identity, ServiceError};

/// Name of the session cookie. The `__Host-` prefix makes browsers insist on `Secure`,
/// `Path=/` and no `Domain`, so no sibling subdomain can set or shadow it.
pub const COOKIE_NAME: &str = "__Host-tessera";

/// How a token was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `Authorization: Bearer`.
    Bearer,
    /// The session cookie.
    Cookie,
}

/// The token a request carries, if any. Tokens are read from the `Authorization` header or
/// the session cookie only — never from the URL.
pub fn presented_token(headers: &HeaderMap) -> Option<(String, Via)> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some((token.trim().to_owned(), Via::Bearer));
        }
    }
    session_cookie(headers).map(|token| (token, Via::Cookie))
}

/// The value of the session cookie, from any `Cookie` header.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.trim_matches('"').to_owned())
}

/// An authenticated request: the session, and how its token came.
pub struct Authenticated {
    /// Whose session.
    pub identity: Identity,
    /// How the token was presented.
    pub via: Via,
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let Some((token, via)) = presented_token(&parts.headers) else {
            return Err(Problem::from(ServiceError::Unauthenticated).for_bearer(true));
        };
        match state.service.authenticate(&token).await {
            Ok(identity) => Ok(Authenticated { identity, via }),
            Err(error) => Err(Problem::from(error).for_bearer(via == Via::Bearer)),
        }
    }
}

impl FromRequestParts<AppState> for ClientInfo {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(ClientInfo {
            ip: client_ip(&parts.headers, peer, state).map(|ip| ip.to_string()),
            user_agent: parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        })
    }
}

/// The client address: the peer, or the last `X-Forwarded-For` hop added by a trusted proxy.
///
/// # Security
/// `X-Forwarded-For` is read only when the direct peer is a configured trusted proxy;
/// otherwise anyone could choose their apparent address.
pub fn client_ip(headers: &HeaderMap, peer: Option<IpAddr>, state: &AppState) -> Option<IpAddr> {
    let peer = peer?;
    if !(state.http.behind_proxy && state.http.trusted_proxies.contains(&peer)) {
        return Some(peer);
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    // The right-most hop not itself a trusted proxy is the client.
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !state.http.trusted_proxies.contains(ip))
        .or(Some(peer))
}

/// A request body in JSON, or form-encoded where `FORM` is true, read within the body limit.
pub struct Body<T, const FORM: bool = false>(pub T);

/// Which encoding a body arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    /// `application/json`.
    Json,
    /// `application/x-www-form-urlencoded`.
    Form,
}

impl<T: DeserializeOwned, const FORM: bool> FromRequest<AppState> for Body<T, FORM> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Problem> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // The media type is checked before the body is read.
        let kind = body_kind(content_type.as_deref(), FORM)?;
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                Problem::payload_too_large()
            } else {
                Problem::bad_request("the request body could not be read")
            }
        })?;
        decode_body(kind, &bytes).map(Body)
    }
}

/// Parses a request body as the handlers do: JSON, or form-encoded when `form_allowed`
/// (login only), chosen by `content_type`. Every failure is a 4xx [`Problem`].
pub fn parse_body<T: DeserializeOwned>(
    content_type: Option<&str>,
    form_allowed: bool,
    bytes: &[u8],
) -> Result<T, Problem> {
    decode_body(body_kind(content_type, form_allowed)?, bytes)
}

fn body_kind(content_type: Option<&str>, form_allowed: bool) -> Result<BodyKind, Problem> {
    let media_type = content_type
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    match media_type.as_str() {
        "application/json" => Ok(BodyKind::Json),
        "application/x-www-form-urlencoded" if form_allowed => Ok(BodyKind::Form),
        _ => Err(Problem::unsupported_media_type()),
    }
}

fn decode_body<T: DeserializeOwned>(kind: BodyKind, bytes: &[u8]) -> Result<T, Problem> {
    match kind {
        BodyKind::Json => serde_json::from_slice(bytes)
            .map_err(|e| Problem::bad_request(format!("invalid JSON body: {e}"))),
        BodyKind::Form => serde_urlencoded::from_bytes(bytes)
            .map_err(|e| Problem::bad_request(format!("invalid form body: {e}"))),
    }
}
