//! Audit events: stored, queryable, and emitted as structured `tracing` events.

use tessera_store::{AuditEvent, AuditQuery};

use super::{ClientInfo, ServiceError, Tessera};

/// What happened. The string form (`login.succeeded`, …) is what is stored and queried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// A login succeeded.
    LoginSucceeded,
    /// A login failed (wrong password, unknown or disabled user).
    LoginFailed,
    /// A login was refused by throttling.
    LoginThrottled,
    /// A signed-in user's current password was wrong (password change, re-authentication).
    ReauthFailed,
    /// A current-password check was refused by throttling.
    ReauthThrottled,
    /// A session ended by logout.
    Logout,
    /// A refresh token was exchanged.
    Refresh,
    /// A spent refresh token was replayed: theft assumed, session revoked.
    RefreshReplayed,
    /// A session was revoked (by its owner, an admin or the CLI).
    SessionRevoked,
    /// A password was changed (by its owner) or reset (by an admin).
    PasswordChanged,
    /// A user was created.
    UserCreated,
    /// A user's roles or permissions changed.
    UserUpdated,
    /// A user was disabled (or enabled again: see the event's detail).
    UserDisabled,
    /// A user was deleted.
    UserDeleted,
    /// The signing key was rotated.
    KeyRotated,
}

impl EventKind {
    /// Every kind, for validation and documentation.
    pub const ALL: [EventKind; 15] = [
        EventKind::LoginSucceeded,
        EventKind::LoginFailed,
        EventKind::LoginThrottled,
        EventKind::ReauthFailed,
        EventKind::ReauthThrottled,
        EventKind::Logout,
        EventKind::Refresh,
        EventKind::RefreshReplayed,
        EventKind::SessionRevoked,
        EventKind::PasswordChanged,
        EventKind::UserCreated,
        EventKind::UserUpdated,
        EventKind::UserDisabled,
        EventKind::UserDeleted,
        EventKind::KeyRotated,
    ];

    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::LoginSucceeded => "login.succeeded",
            EventKind::LoginFailed => "login.failed",
            EventKind::LoginThrottled => "login.throttled",
            EventKind::ReauthFailed => "reauth.failed",
            EventKind::ReauthThrottled => "reauth.throttled",
            EventKind::Logout => "logout",
            EventKind::Refresh => "refresh",
            EventKind::RefreshReplayed => "refresh.replayed",
            EventKind::SessionRevoked => "session.revoked",
            EventKind::PasswordChanged => "password.changed",
            EventKind::UserCreated => "user.created",
            EventKind::UserUpdated => "user.updated",
            EventKind::UserDisabled => "user.disabled",
            EventKind::UserDeleted => "user.deleted",
            EventKind::KeyRotated => "key.rotated",
        }
    }
}

/// Who is acting and from where: a user of the HTTP API, or the command line.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    /// The acting username (`cli` for the command line; `None` when unauthenticated).
    pub actor: Option<String>,
    /// Client address and user agent.
    pub client: ClientInfo,
}

impl Actor {
    /// The command line, run by an operator on the host.
    pub fn cli() -> Actor {
        Actor {
            actor: Some(tessera_core::names::CLI_ACTOR.into()),
            client: ClientInfo::default(),
        }
    }

    /// A request by `username` from `client`.
    pub fn user(username: &str, client: ClientInfo) -> Actor {
        Actor {
            actor: Some(username.to_owned()),
            client,
        }
    }
}

/// An event as JSON, as the admin API and webhooks show it.
pub fn event_json(event: &AuditEvent) -> serde_json::Value {
    serde_json::json!({
        "id": event.id,
        "at": crate::clock::rfc3339(event.at),
        "kind": event.kind,
        "actor": event.actor,
        "subject": event.subject,
        "session_id": event.session_id,
        "ip": event.ip,
        "user_agent": event.user_agent,
        "detail": event.detail,
    })
}

/// The details of one event, besides its kind and context.
#[derive(Debug, Default)]
pub(crate) struct Details<'a> {
    pub subject: Option<&'a str>,
    pub session_id: Option<&'a str>,
    pub detail: Option<String>,
}

impl<'a> Details<'a> {
    /// An event about `subject`'s session `session_id`.
    pub(crate) fn session(subject: &'a str, session_id: &'a str) -> Details<'a> {
        Details {
            subject: Some(subject),
            session_id: Some(session_id),
            detail: None,
        }
    }

    /// An event about `subject`, with a detail.
    pub(crate) fn about(subject: &'a str, detail: Option<String>) -> Details<'a> {
        Details {
            subject: Some(subject),
            session_id: None,
            detail,
        }
    }
}

impl Tessera {
    /// Records an event. A failure to store it is logged, never turned into a failure of the
    /// operation it describes (which has already happened).
    pub(crate) async fn audit(&self, kind: EventKind, ctx: &Actor, details: Details<'_>) {
        let event = AuditEvent {
            id: 0,
            at: self.now(),
            kind: kind.as_str().to_owned(),
            actor: ctx.actor.clone(),
            subject: details.subject.map(str::to_owned),
            session_id: details.session_id.map(str::to_owned),
            ip: ctx.client.ip.clone(),
            user_agent: ctx.client.user_agent.clone(),
            detail: details.detail,
        };
        tracing::info!(
            target: "tessera::audit",
            kind = %event.kind,
            actor = event.actor.as_deref(),
            subject = event.subject.as_deref(),
            session = event.session_id.as_deref(),
            ip = event.ip.as_deref(),
            detail = event.detail.as_deref(),
            "audit"
        );
        if let Err(error) = self.store.append_audit(&event).await {
            tracing::error!(%error, kind = %event.kind, "audit event could not be stored");
        }
        self.webhooks.publish(&event);
    }

    /// Audit events matching `query`, newest first (at most 1000).
    pub async fn audit_events(
        &self,
        mut query: AuditQuery,
    ) -> Result<Vec<AuditEvent>, ServiceError> {
        if query.limit == 0 || query.limit > 1000 {
            query.limit = query.limit.clamp(1, 1000);
        }
        if let Some(kind) = &query.kind
            && !EventKind::ALL.iter().any(|k| k.as_str() == kind)
        {
            return Err(ServiceError::BadRequest(format!(
                "unknown audit event kind {kind:?}"
            )));
        }
        Ok(self.store.audit_events(&query).await?)
    }
}
