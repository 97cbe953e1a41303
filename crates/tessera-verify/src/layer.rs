//! The tower layer: verify every request before it reaches the routes behind it.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::rejection::Rejection;
use crate::session::Session;
use crate::verifier::Verifier;

/// What a route behind the layer requires of the session besides a valid token.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Role(String),
    Permission(String),
    Assurance(tessera_token::Requirement),
}

/// A tower [`Layer`] that verifies the token of every request before the inner service sees
/// it: a refused request gets the problem+json answer of its [`Rejection`]; an accepted one
/// carries its [`Session`] in the request's extensions, where the [`Session`] extractor
/// takes it without verifying again.
///
/// Made by [`Verifier::layer`]; [`require_role`](VerifyLayer::require_role) and
/// [`require_permission`](VerifyLayer::require_permission) add guards (403 `forbidden` when
/// the session lacks them), [`optional`](VerifyLayer::optional) lets requests without any
/// token through.
///
/// # Examples
/// ```
/// use axum::{Router, routing::get};
/// use tessera_verify::{Session, Verifier};
///
/// fn routes(verifier: &Verifier) -> Router {
///     let admin = Router::new()
///         .route("/admin/stats", get(|| async { "stats" }))
///         .layer(verifier.layer().require_role("admin"));
///     Router::new()
///         .route("/me", get(|s: Session| async move { s.name().to_owned() }))
///         .layer(verifier.layer())
///         .merge(admin)
///         .with_state(verifier.clone())
/// }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct VerifyLayer {
    verifier: Verifier,
    requirements: Arc<Vec<Requirement>>,
    optional: bool,
}

impl VerifyLayer {
    /// A layer that requires a valid token on every request.
    pub fn new(verifier: Verifier) -> VerifyLayer {
        VerifyLayer {
            verifier,
            requirements: Arc::new(Vec::new()),
            optional: false,
        }
    }

    /// Also require the session to hold `role` (403 `forbidden` otherwise).
    pub fn require_role(self, role: impl Into<String>) -> VerifyLayer {
        self.require(Requirement::Role(role.into()))
    }

    /// Also require the session to hold `permission` (403 `forbidden` otherwise).
    pub fn require_permission(self, permission: impl Into<String>) -> VerifyLayer {
        self.require(Requirement::Permission(permission.into()))
    }

    /// Also require a sign-in with a second factor (AAL2): a password-only session gets 401
    /// `step_up_required` (RFC 9470), to step up at tessera and retry.
    pub fn require_second_factor(self) -> VerifyLayer {
        self.require(Requirement::Assurance(tessera_token::Requirement {
            aal: Some(tessera_token::Aal::Aal2),
            max_age: None,
        }))
    }

    /// Also require a sign-in at most `max_age` old (whole seconds): an older session gets
    /// 401 `step_up_required`, to sign in again at tessera and retry.
    pub fn require_recent_sign_in(self, max_age: std::time::Duration) -> VerifyLayer {
        let seconds = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
        self.require(Requirement::Assurance(tessera_token::Requirement {
            aal: None,
            max_age: Some(seconds),
        }))
    }

    /// Let requests without any token through (without a [`Session`]); a token that is
    /// present but refused is still answered 401. Ignored when a role or permission is
    /// required.
    pub fn optional(mut self) -> VerifyLayer {
        self.optional = true;
        self
    }

    fn require(mut self, requirement: Requirement) -> VerifyLayer {
        Arc::make_mut(&mut self.requirements).push(requirement);
        self
    }

    /// Checks a request: the session to attach, if any, or the rejection.
    async fn check(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Option<Session>, Rejection> {
        let target = (method.as_str(), uri.path());
        let session = self
            .verifier
            .authenticate_request(Some(target), headers)
            .await?;
        let Some(session) = session else {
            return if self.optional && self.requirements.is_empty() {
                Ok(None)
            } else {
                self.verifier.authenticate(headers).await.map(Some)
            };
        };
        for requirement in self.requirements.iter() {
            match requirement {
                Requirement::Role(role) => session.require_role(role)?,
                Requirement::Permission(permission) => session.require_permission(permission)?,
                Requirement::Assurance(required) => {
                    // The challenge goes to bearer clients, as the server's does.
                    let bearer = headers.contains_key(axum::http::header::AUTHORIZATION);
                    session
                        .require_assurance(required, self.verifier.now())
                        .map_err(|rejection| rejection.for_bearer(bearer))?;
                }
            }
        }
        Ok(Some(session))
    }
}

impl<S> Layer<S> for VerifyLayer {
    type Service = VerifyService<S>;

    fn layer(&self, inner: S) -> VerifyService<S> {
        VerifyService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`VerifyLayer`] wraps around the inner service.
#[derive(Debug, Clone)]
pub struct VerifyService<S> {
    inner: S,
    layer: VerifyLayer,
}

impl<S> Service<Request> for VerifyService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        // The clone that was polled ready serves this request (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let checked = layer
                .check(request.method(), request.uri(), request.headers())
                .await;
            match checked {
                Ok(session) => {
                    if let Some(session) = session {
                        request.extensions_mut().insert(session);
                    }
                    inner.call(request).await
                }
                Err(rejection) => Ok(rejection.into_response()),
            }
        })
    }
}

impl Verifier {
    /// A layer that verifies every request's token (see [`VerifyLayer`]).
    pub fn layer(&self) -> VerifyLayer {
        VerifyLayer::new(self.clone())
    }
}
