//! The API document (`GET /openapi.json`): OpenAPI 3.1, generated.
//!
//! Each operation is declared in a `#[utoipa::path]` attribute on its handler, and
//! `utoipa_axum` registers the handler's route from that same attribute (see `super::api`), so
//! every route the router serves is documented and nothing else is. Request and response bodies
//! are the handlers' own types (`#[derive(ToSchema)]`); what is common to the whole document
//! (info, tags, security schemes, the problem schema and the problem responses many operations
//! share) is declared here. [`finish`] adds the little utoipa cannot express.

use std::sync::LazyLock;

use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaFormat, SchemaType, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, OpenApi as Document, Ref, RefOr, Response, ResponseBuilder,
};
use utoipa::{Modify, OpenApi, PartialSchema, ToResponse, ToSchema};

use super::cookie::COOKIE_NAME;

/// The one-line summary of the API (`info.summary`, which utoipa's `Info` does not carry).
const SUMMARY: &str =
    "Session tokens: login, cookie or bearer delivery, verification, renewal, revocation.";

/// What the document says besides its operations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tessera",
        description = "Errors are RFC 9457 problem details (`application/problem+json`) with a \
            stable `code`. Responses that carry a token or session data have \
            `Cache-Control: no-store`. Cookie-authenticated state-changing requests (and every \
            login) sent cross-site are refused with 403 `cross_site_request`. Tokens are never \
            accepted from the URL.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    servers((url = "/", description = "This server (`/openapi.json` names it per request).")),
    tags(
        (name = "sessions", description = "Login, renewal, the caller's own sessions, logout."),
        (name = "factors", description = "The caller's second factors: TOTP and recovery codes."),
        (name = "passkeys", description = "The caller's passkeys (WebAuthn), and signing in \
            or stepping up with one."),
        (name = "forward auth", description = "`/v1/verify` for nginx, Caddy and Traefik."),
        (name = "keys", description = "Public verification keys."),
        (name = "operations", description = "Health, readiness, metrics and this document."),
        (name = "admin",
            description = "Users, sessions, keys and the audit log, for the `admin` role."),
        (name = "pages",
            description = "Server-rendered HTML for browsers (login form, account page)."),
    ),
    components(
        schemas(super::problem::ProblemBody, Username, RoleName, PermissionName),
        responses(
            StoreUnavailable,
            Unauthenticated,
            CrossSiteCookie,
            AdminUnauthenticated,
            AdminForbidden,
            NotFound,
            BadRequest,
            UnsupportedMediaType,
            InvalidBody,
            BodyTimeout,
            BodyTooLarge,
            BodyNotJson,
            PageUnavailable,
            PageRedirect,
            PageCrossSite,
        ),
    ),
    modifiers(&SecuritySchemes),
)]
pub(super) struct Base;

/// The two ways to present a session token, and a back-end service's introspection secret.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearerAuth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A JWT access token or an opaque `tsr_…` token."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "introspectionSecret",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A back-end service's introspection secret (`tsri_…`), whose SHA-256 is \
                         in `introspection_secret_digests`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "cookieAuth",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                COOKIE_NAME,
                "The session cookie set at login.",
            ))),
        );
    }
}

/// The document, built once: the router's document, finished. Its `servers` names `/` (this
/// server, relative); [`json_for`] names the server's URL.
fn document() -> &'static serde_json::Value {
    static DOCUMENT: LazyLock<serde_json::Value> =
        LazyLock::new(|| finish(super::api().into_openapi()));
    &DOCUMENT
}

/// The document with its server relative (`/`).
pub(super) fn json() -> &'static str {
    static JSON: LazyLock<String> = LazyLock::new(|| to_json(document()));
    &JSON
}

/// The document as `/openapi.json` serves it, naming `server` (an origin, maybe with a path)
/// as its one server.
pub(super) fn json_for(server: &str) -> String {
    let mut document = document().clone();
    document["servers"] = serde_json::json!([{ "url": server, "description": "This server." }]);
    to_json(&document)
}

fn to_json(document: &serde_json::Value) -> String {
    serde_json::to_string_pretty(document).unwrap_or_else(|error| {
        tracing::error!(%error, "the API document could not be written");
        String::from("{}")
    })
}

/// The generated document as JSON, with what utoipa cannot express added; everything else
/// is generated:
/// - `info.summary` (OpenAPI 3.1; utoipa's `Info` has no such field);
/// - unique operation ids where one handler serves several methods (`/v1/verify`): utoipa
///   gives each method's operation the handler's one id, and ids must be unique, so each gets
///   its method appended (`verifyGet`, `verifyHead`, …).
pub(super) fn finish(document: Document) -> serde_json::Value {
    let mut value = serde_json::to_value(document).unwrap_or_default();
    if let Some(info) = value.get_mut("info").and_then(|i| i.as_object_mut()) {
        info.insert("summary".into(), SUMMARY.into());
    }
    let paths = value.get_mut("paths").and_then(|p| p.as_object_mut());
    for item in paths.into_iter().flat_map(|paths| paths.values_mut()) {
        let Some(operations) = item.as_object_mut() else {
            continue;
        };
        let ids: Vec<&str> = operations
            .values()
            .filter_map(|op| op.get("operationId")?.as_str())
            .collect();
        let shared = ids.len() > 1 && ids.iter().all(|id| *id == ids[0]);
        if !shared {
            continue;
        }
        for (method, operation) in operations.iter_mut() {
            let Some(id) = operation.get("operationId").and_then(|id| id.as_str()) else {
                continue;
            };
            let mut suffix = method.chars();
            let suffix: String = suffix
                .next()
                .map(|first| first.to_ascii_uppercase())
                .into_iter()
                .chain(suffix)
                .collect();
            operation["operationId"] = format!("{id}{suffix}").into();
        }
    }
    value
}

// ------------------------------------------------------------------------ names

/// Documents a string type by a schema of its own (a name the handlers check by hand).
macro_rules! string_schema {
    ($(#[$doc:meta])* $name:ident => $schema:expr) => {
        $(#[$doc])*
        pub(super) struct $name;

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                $schema.into()
            }
        }

        impl ToSchema for $name {
            fn name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
        }
    };
}

string_schema!(
    /// A username, as `tessera_core::names` accepts it.
    Username => ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::Custom("username".into())))
        .min_length(Some(1))
        .max_length(Some(tessera_core::names::MAX_USERNAME_BYTES))
        .description(Some(
            "A username: at most 256 bytes of UTF-8 in its NFC form (`format: username`; JSON \
             Schema counts characters, so the byte limit and the character rule below are this \
             description's). Stored and compared in Unicode NFC (a name typed decomposed names \
             the same account); no leading or trailing space; control, format (zero-width, \
             bidi), other invisible, private-use and unassigned characters and spaces other \
             than U+0020 are refused with 400 `bad_request`. `cli` and `system` (any case) are \
             reserved for the audit log and cannot be created.",
        ))
);

string_schema!(
    /// A role name.
    RoleName => authz_name()
);

string_schema!(
    /// A permission name (the same rule as roles).
    PermissionName => authz_name()
);

/// Roles and permissions: `tessera_core::names::is_authz_name`.
fn authz_name() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(tessera_core::names::MAX_AUTHZ_NAME_BYTES))
        .pattern(Some("^[A-Za-z0-9._:/-]{1,64}$"))
        .description(Some(
            "Roles and permissions: 1 to 64 bytes of ASCII letters, digits and `._:-/` (no \
             comma, space or control character); anything else is refused with 400 \
             `bad_request`.",
        ))
}

/// A string schema with a date-time format (RFC 3339 timestamps).
pub(super) fn date_time() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::DateTime,
        )))
}

/// An RFC 3339 timestamp or `null`.
pub(super) fn optional_date_time() -> RefOr<Schema> {
    date_time()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .into()
}

// ------------------------------------------------------------------------ shared responses

/// A problem response: `description`, an `application/problem+json` body, and `headers`
/// (`(name, description)`, each an integer when it is `Retry-After`, else a string).
fn problem_response(description: &str, headers: &[(&str, &str)]) -> Response {
    let mut response = ResponseBuilder::new().description(description).content(
        "application/problem+json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Problem")))
            .build(),
    );
    for (name, text) in headers {
        let schema = if *name == "Retry-After" {
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0))
        } else {
            ObjectBuilder::new().schema_type(Type::String)
        };
        response = response.header(
            *name,
            HeaderBuilder::new()
                .schema(Some(schema))
                .description(Some(*text))
                .build(),
        );
    }
    response.build()
}

const RETRY_AFTER: (&str, &str) = ("Retry-After", "Seconds to wait before retrying.");
const WWW_AUTHENTICATE: (&str, &str) = (
    "WWW-Authenticate",
    "`Bearer`, or `Bearer error=\"invalid_token\"` (RFC 6750) for a bad bearer token.",
);

/// Declares a response component: a type whose `ToResponse` is `$response`, named after it.
macro_rules! response_component {
    ($(#[$doc:meta])* $name:ident => $response:expr) => {
        $(#[$doc])*
        pub(super) struct $name;

        impl<'r> ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                (stringify!($name), $response.into())
            }
        }
    };
}

/// Declares a problem response many operations share, as a component they refer to.
macro_rules! shared_response {
    ($name:ident, $description:expr $(, $header:expr)* $(,)?) => {
        response_component!(
            #[doc = concat!("The shared `", stringify!($name), "` problem response.")]
            $name => problem_response($description, &[$($header),*])
        );
    };
}

shared_response!(
    StoreUnavailable,
    "The session store is unreachable; nothing was decided (never read as a failed login). \
     Problem code: `store_unavailable`.",
    RETRY_AFTER,
);
shared_response!(
    Unauthenticated,
    "No valid session token. `unauthenticated` when none was presented (with \
     `WWW-Authenticate: Bearer`), otherwise `invalid_token`, `token_expired` or \
     `token_revoked` (bearer requests get `WWW-Authenticate: Bearer error=\"invalid_token\"`).",
    WWW_AUTHENTICATE,
);
shared_response!(
    CrossSiteCookie,
    "Sent cross-site with the session cookie. Problem codes: `cross_site_request`.",
);
shared_response!(
    AdminUnauthenticated,
    "No valid session token (`unauthenticated`, `invalid_token`, `token_expired`, \
     `token_revoked`), or, for a change, a sign-in older than `recent_authentication`: step \
     up first (`step_up_required`).",
    WWW_AUTHENTICATE,
);
shared_response!(
    AdminForbidden,
    "The caller lacks the `admin` role (`forbidden`), or a cookie request came cross-site \
     (`cross_site_request`).",
);
shared_response!(NotFound, "No such user or session (`not_found`).");
shared_response!(
    BadRequest,
    "Malformed body or parameters (`bad_request`, `unsupported_media_type`, \
     `payload_too_large`).",
);
shared_response!(
    UnsupportedMediaType,
    "The body is not JSON. Problem codes: `unsupported_media_type`.",
);
shared_response!(
    InvalidBody,
    "Malformed body or invalid values. Problem codes: `bad_request`.",
);
shared_response!(
    BodyTimeout,
    "The body did not arrive within `body_read_timeout`. Problem codes: `request_timeout`.",
);
shared_response!(
    BodyTooLarge,
    "The body exceeds 16 KiB. Problem codes: `payload_too_large`.",
);
shared_response!(
    BodyNotJson,
    "The body is not JSON (or, for login, form-encoded). Problem codes: \
     `unsupported_media_type`.",
);
shared_response!(
    PageCrossSite,
    "Sent cross-site with the session cookie (`cross_site_request`).",
);

response_component!(
    /// A page's answer when the store is unavailable: an HTML page.
    PageUnavailable => ResponseBuilder::new()
        .description("The store is unavailable.")
        .content(
            "text/html",
            ContentBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .build(),
        )
        .build()
);

response_component!(
    /// A page's redirect after a form post, or to the login page.
    PageRedirect => ResponseBuilder::new()
        .description("Redirect (`Location`): after the action, or to `/login` when not signed in.")
        .header(
            "Location",
            HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .build(),
        )
        .build()
);

/// Declares a group of shared responses an operation lists at once (`responses(Group)`), each
/// a reference to its component.
macro_rules! response_group {
    ($(#[$doc:meta])* $name:ident { $($status:literal => $response:ident),+ $(,)? }) => {
        $(#[$doc])*
        pub(super) struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<String, RefOr<Response>> {
                let reference = |name: &str| RefOr::Ref(Ref::from_response_name(name));
                [$(($status.to_string(), reference(stringify!($response)))),+]
                    .into_iter()
                    .collect()
            }
        }
    };
}

response_group!(
    /// What every admin operation may answer besides its own: no session, no `admin` role
    /// (or cross-site), store down.
    AdminProblems {
        "401" => AdminUnauthenticated,
        "403" => AdminForbidden,
        "503" => StoreUnavailable,
    }
);

response_group!(
    /// What reading a request body may answer: malformed, too slow, too large, not JSON.
    BodyProblems {
        "400" => InvalidBody,
        "408" => BodyTimeout,
        "413" => BodyTooLarge,
        "415" => BodyNotJson,
    }
);

response_group!(
    /// What an account page's form button answers: a redirect, a cross-site refusal, or the
    /// page saying the store is down.
    FormAnswers {
        "303" => PageRedirect,
        "403" => PageCrossSite,
        "503" => PageUnavailable,
    }
);

response_group!(
    /// What an operation of the caller's session may answer besides its own: no valid
    /// session, store down.
    SessionProblems {
        "401" => Unauthenticated,
        "503" => StoreUnavailable,
    }
);
