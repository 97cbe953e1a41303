//! Audit events: stored, queryable, and emitted as structured `tracing` events.

pub use tessera_store::EventKind;
use tessera_store::{AuditEvent, AuditQuery};

use super::{ClientInfo, ServiceError, Tessera};

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
            kind,
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
        Ok(self.store.audit_events(&query).await?)
    }
}
