//! Request extractors: the presented token, the authenticated session, bodies, client info.
//!
//! Every rejection is a [`Problem`], so malformed input never yields axum's plain-text errors.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use serde::de::DeserializeOwned;
use tessera_core::names;

use super::cookie::SessionCookie;
use super::problem::Problem;
use super::{AppState, HttpSettings};
use crate::config::TokenFormat;
use crate::service::{ClientInfo, DpopRefusal, Identity, PresentedProof, ServiceError};

/// How a token was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `Authorization: Bearer`.
    Bearer,
    /// `Authorization: DPoP`, with a DPoP proof (RFC 9449 §7.1).
    Dpop,
    /// The session cookie.
    Cookie,
}

/// The token a request carries, if any, with the default cookie name. Tokens are read from the
/// `Authorization` header or the session cookie only — never from the URL.
pub fn presented_token(headers: &HeaderMap) -> Option<(String, Via)> {
    presented_token_with(headers, &SessionCookie::default())
}

/// The token a request carries, reading the cookie this deployment uses.
pub(super) fn presented_token_with(
    headers: &HeaderMap,
    cookie: &SessionCookie,
) -> Option<(String, Via)> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some((token.trim().to_owned(), Via::Bearer));
        }
        if scheme.eq_ignore_ascii_case("dpop") {
            return Some((token.trim().to_owned(), Via::Dpop));
        }
    }
    cookie.read(headers).map(|token| (token, Via::Cookie))
}

/// The request a DPoP proof must name, and the client for the audit log: what
/// [`authenticate`] needs when the token is DPoP-bound.
pub(super) struct ProofContext {
    /// The proof's expected `htm`.
    pub method: String,
    /// The proof's expected `htu`; `None` when the request does not say where it was sent
    /// (then no proof can be checked, and a bound token is refused).
    pub url: Option<String>,
    /// Who sent it.
    pub client: ClientInfo,
}

/// The request's `DPoP` header: `None` without one; refused when repeated or not text
/// (RFC 9449 §4.3: exactly one).
pub(super) fn dpop_header(headers: &HeaderMap) -> Result<Option<&str>, Problem> {
    let mut values = headers.get_all("dpop").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let malformed = || {
        Problem::from(ServiceError::Dpop(DpopRefusal::Proof(
            tessera_core::dpop::DpopError::Malformed,
        )))
    };
    if values.next().is_some() {
        return Err(malformed());
    }
    value.to_str().map(Some).map_err(|_| malformed())
}

/// This server's own URL for `path`, as a client addressed it: what a DPoP proof sent here
/// names as `htu` (`public_url`, else the request's own origin, see [`super::ops::public_base`]).
pub(super) fn own_url(parts: &Parts, state: &AppState) -> Option<String> {
    let base = super::ops::public_base(state, &parts.headers, &parts.extensions)?;
    Some(format!(
        "{}{}",
        base.trim_end_matches('/'),
        parts.uri.path()
    ))
}

/// The proof context of a request made to this server (not one a proxy asks about).
pub(super) fn own_proof_context(parts: &Parts, state: &AppState) -> ProofContext {
    ProofContext {
        method: parts.method.as_str().to_owned(),
        url: own_url(parts, state),
        client: client_info(parts, state),
    }
}

/// Authenticates the token a request carries. A DPoP-bound token also needs a proof by its
/// key for the request `context` names (read only then); without a context (pages that
/// only read cookies) a bound token is refused.
pub(super) async fn authenticate(
    headers: &HeaderMap,
    state: &AppState,
    context: Option<&(dyn Fn() -> ProofContext + Sync)>,
) -> Result<Authenticated, Problem> {
    let Some((token, via)) = presented_token_with(headers, &state.http.cookie) else {
        return Err(Problem::from(ServiceError::Unauthenticated).for_bearer(true));
    };
    let result = match state.service.authenticate(&token).await {
        Ok(identity) if identity.jkt.is_some() || via == Via::Dpop => {
            check_binding(headers, state, identity, &token, via, context).await
        }
        other => other,
    };
    match result {
        Ok(identity) if authz_names_valid(&identity) => Ok(Authenticated { identity, via }),
        // Fail closed: a role stored before the charset (`editor,admin`, CR/LF) would be
        // misread once joined into `X-Tessera-Roles` or could not be sent at all. 403, not
        // 401: logging in again yields the same roles; an administrator must correct them.
        Ok(_) => Err(Problem::from(ServiceError::Forbidden(
            "the session's roles or permissions break the naming rules; \
             an administrator must correct them"
                .into(),
        ))
        .for_bearer(via != Via::Cookie)),
        Err(error) => Err(Problem::from(error).for_bearer(via != Via::Cookie)),
    }
}

/// Checks the DPoP binding of a token that is bound or presented as bound.
async fn check_binding(
    headers: &HeaderMap,
    state: &AppState,
    identity: Identity,
    token: &str,
    via: Via,
    context: Option<&(dyn Fn() -> ProofContext + Sync)>,
) -> Result<Identity, ServiceError> {
    let proof = match dpop_header(headers) {
        Ok(proof) => proof,
        Err(_) => return Err(DpopRefusal::Proof(tessera_core::dpop::DpopError::Malformed).into()),
    };
    let context = context.map(|context| context());
    let presented = match (&context, proof) {
        (
            Some(ProofContext {
                method,
                url: Some(url),
                ..
            }),
            Some(proof),
        ) => Some(PresentedProof { proof, method, url }),
        _ => None,
    };
    let client = context
        .as_ref()
        .map(|c| c.client.clone())
        .unwrap_or_default();
    state
        .service
        .check_token_binding(
            &identity,
            token,
            via == Via::Dpop,
            presented.as_ref(),
            &client,
        )
        .await?;
    Ok(identity)
}

/// True when every role and permission of `identity` keeps to `tessera_core::names`' charset.
pub(super) fn authz_names_valid(identity: &Identity) -> bool {
    identity.roles.iter().all(|r| names::is_authz_name(r))
        && identity.permissions.iter().all(|p| names::is_authz_name(p))
}

/// An authenticated request: the session, and how its token came.
pub(super) struct Authenticated {
    /// Whose session.
    pub identity: Identity,
    /// How the token was presented.
    pub via: Via,
}

impl Authenticated {
    /// The delivery new credentials for this session take: the way its token came.
    pub(super) fn delivery(&self) -> crate::service::Delivery {
        match self.via {
            Via::Cookie => crate::service::Delivery::Cookie,
            Via::Bearer | Via::Dpop => crate::service::Delivery::Bearer,
        }
    }

    /// The answer to a failure of a request made with this session: a 401 to a bearer
    /// request carries its `WWW-Authenticate` challenge (a step-up's included).
    pub(super) fn problem(&self, error: crate::service::ServiceError) -> Problem {
        Problem::from(error).for_bearer(self.via != Via::Cookie)
    }

    /// The answer to a failed re-authentication by this session (a password change, a
    /// step-up): a wrong password is 403, since the session is fine and only the proof was
    /// wrong (a 401 would make clients drop it); anything else as [`Authenticated::problem`].
    pub(super) fn proof_refused(&self, error: crate::service::ServiceError) -> Problem {
        match error {
            crate::service::ServiceError::InvalidCredentials => Problem::wrong_current_password(),
            other => self.problem(other),
        }
    }

    /// Renews a cookie session's JWT on use when it is due (such sessions cannot call
    /// `/v1/refresh`): the new cookie goes on `response`.
    pub(super) fn renew_cookie_jwt(
        &self,
        state: &AppState,
        response: &mut Response,
    ) -> Result<(), Problem> {
        if self.via != Via::Cookie || self.identity.format != TokenFormat::Jwt {
            return Ok(());
        }
        if let Some(credentials) = state.service.renew_jwt_if_due(&self.identity)? {
            state
                .http
                .cookie
                .issue(response.headers_mut(), &credentials, state.service.now());
        }
        Ok(())
    }
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let parts = &*parts;
        authenticate(
            &parts.headers,
            state,
            Some(&|| own_proof_context(parts, state)),
        )
        .await
    }
}

impl FromRequestParts<AppState> for ClientInfo {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        Ok(client_info(parts, state))
    }
}

/// Where a request came from: the client address (see [`client_ip`]) and user agent.
pub(super) fn client_info(parts: &Parts, state: &AppState) -> ClientInfo {
    let peer = peer_ip(&parts.extensions);
    ClientInfo {
        ip: client_ip(&parts.headers, peer, state).map(|ip| ip.to_string()),
        user_agent: parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        dpop_jkt: None,
        device_key: None,
    }
}

/// The DPoP proof a request to this server carries (`DPoP` header), with the request it must
/// name: for the endpoints that issue tokens.
pub(super) struct RequestProof {
    proof: Option<String>,
    method: String,
    url: Option<String>,
}

impl RequestProof {
    /// The proof, ready to check; `None` without a `DPoP` header.
    pub(super) fn presented(&self) -> Result<Option<PresentedProof<'_>>, Problem> {
        let Some(proof) = &self.proof else {
            return Ok(None);
        };
        // Without a host, the URL the client addressed is unknown: no `htu` can match.
        let url = self.url.as_deref().ok_or_else(|| {
            Problem::from(ServiceError::Dpop(DpopRefusal::Proof(
                tessera_core::dpop::DpopError::Mismatch("htu"),
            )))
            .at_token_endpoint()
        })?;
        Ok(Some(PresentedProof {
            proof,
            method: &self.method,
            url,
        }))
    }
}

impl FromRequestParts<AppState> for RequestProof {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let proof = dpop_header(&parts.headers)
            .map_err(Problem::at_token_endpoint)?
            .map(str::to_owned);
        Ok(RequestProof {
            url: proof.as_ref().and_then(|_| own_url(parts, state)),
            method: parts.method.as_str().to_owned(),
            proof,
        })
    }
}

/// The client address: the peer, or the last `X-Forwarded-For` hop added by a trusted proxy;
/// `None` when that hop cannot be read.
///
/// # Security
/// `X-Forwarded-For` is read only when the direct peer is a configured trusted proxy;
/// otherwise anyone could choose their apparent address. Hops are walked from the right (the
/// ones our proxies appended) past trusted proxies; the first other hop is the client. A hop
/// that is not an address stops the walk with the address unknown: everything left of it
/// was written by someone we cannot vouch for, so skipping it would let the client choose.
pub(super) fn client_ip(
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    state: &AppState,
) -> Option<IpAddr> {
    let peer = peer?;
    if !forwarding_trusted(Some(peer), &state.http) {
        return Some(peer);
    }
    let values = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().ok())
        .collect::<Option<Vec<_>>>()?;
    let hops = values.iter().flat_map(|v| v.split(','));
    for hop in hops.rev() {
        let ip = forwarded_hop(hop)?;
        if !state.http.trusted_proxies.contains(&ip) {
            return Some(ip);
        }
    }
    // No header, or every hop is one of our proxies.
    Some(peer)
}

/// One `X-Forwarded-For` hop: `ip`, `ip:port`, `[v6]` or `[v6]:port` (proxies write all four).
fn forwarded_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|addr| addr.ip()))
        .ok()
        .or_else(|| {
            hop.strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<std::net::Ipv6Addr>()
                .ok()
                .map(IpAddr::V6)
        })
}

/// True when the direct peer is a proxy whose `X-Forwarded-*` headers are believed: tessera runs
/// `behind_proxy` and the peer is one of `trusted_proxies`.
pub(super) fn forwarding_trusted(peer: Option<IpAddr>, http: &HttpSettings) -> bool {
    peer.is_some_and(|peer| http.behind_proxy && http.trusted_proxies.contains(&peer))
}

/// The address of the direct peer, when the server recorded it.
pub(super) fn peer_ip(extensions: &axum::http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// A request body in JSON, or form-encoded where `FORM` is true, read within the body limit
/// and the body read timeout (408 `request_timeout` past it).
pub(super) struct Body<T, const FORM: bool = false>(pub T);

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
        // A client trickling its body must not hold a connection and a task for ever
        // (slowloris on the body); the header read has its own timeout in the server.
        let read = Bytes::from_request(req, state);
        let bytes = tokio::time::timeout(state.http.body_read_timeout, read)
            .await
            .map_err(|_| Problem::request_timeout())?
            .map_err(|rejection| {
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
