//! [`Session`] as an axum extractor: the session the layer verified for this request, or the
//! request's token verified now by the application's [`Verifier`].

use axum::extract::{FromRef, FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;

use crate::rejection::{Rejection, RejectionKind};
use crate::session::Session;
use crate::verifier::Verifier;

impl<S> FromRequestParts<S> for Session
where
    S: Send + Sync,
    Verifier: FromRef<S>,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Session, Rejection> {
        match <Session as OptionalFromRequestParts<S>>::from_request_parts(parts, state).await? {
            Some(session) => Ok(session),
            None => Err(RejectionKind::Unauthenticated.into()),
        }
    }
}

impl<S> OptionalFromRequestParts<S> for Session
where
    S: Send + Sync,
    Verifier: FromRef<S>,
{
    type Rejection = Rejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Session>, Rejection> {
        if let Some(session) = parts.extensions.get::<Session>() {
            return Ok(Some(session.clone()));
        }
        let verifier = Verifier::from_ref(state);
        let target = (parts.method.as_str(), parts.uri.path());
        let session = verifier
            .authenticate_request(Some(target), &parts.headers)
            .await?;
        if let Some(session) = &session {
            parts.extensions.insert(session.clone());
        }
        Ok(session)
    }
}
