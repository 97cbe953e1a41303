//! `DPoP-Nonce` (RFC 9449 §8): with `dpop_nonce` on, every answer to a request that carries a
//! DPoP proof offers the nonce the next proof must carry. A proof without it (or with one too
//! old) is refused with `use_dpop_nonce` by the checks themselves; this layer only hands the
//! nonce out, on the refusal too, so the client can retry at once.

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;

const DPOP: HeaderName = HeaderName::from_static("dpop");
const DPOP_NONCE: HeaderName = HeaderName::from_static("dpop-nonce");

/// Adds `DPoP-Nonce` to the answer of a request with a `DPoP` header.
pub(super) async fn offer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let with_proof = request.headers().contains_key(DPOP);
    let mut response = next.run(request).await;
    if with_proof
        && let Some(nonce) = state.service.dpop_nonce()
        && let Ok(value) = HeaderValue::from_str(&nonce)
    {
        response.headers_mut().insert(DPOP_NONCE, value);
    }
    response
}
