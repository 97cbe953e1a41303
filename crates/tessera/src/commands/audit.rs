//! `tessera audit`.

use anyhow::Result;
use tessera_server::clock::rfc3339;
use tessera_server::service::{Tessera, event_json};
use tessera_store::AuditQuery;

use crate::args::AuditArgs;
use crate::output::{Row, print_list};

pub(super) async fn run(service: &Tessera, args: AuditArgs) -> Result<()> {
    // `--limit 0` asks for no events; the store reads a limit of 0 as 1.
    let events = if args.limit == 0 {
        Vec::new()
    } else {
        let query = AuditQuery {
            user: args.user,
            kind: args.kind.as_deref().map(str::parse).transpose()?,
            limit: args.limit,
            ..AuditQuery::default()
        };
        service.audit_events(query).await?
    };
    let rows = events
        .iter()
        .map(|event| Row {
            cells: vec![
                rfc3339(event.at),
                event.kind.to_string(),
                format!("actor={}", event.actor.as_deref().unwrap_or("-")),
                format!("subject={}", event.subject.as_deref().unwrap_or("-")),
                format!("session={}", event.session_id.as_deref().unwrap_or("-")),
                format!("ip={}", event.ip.as_deref().unwrap_or("-")),
                event.detail.clone().unwrap_or_default(),
            ],
            // The same fields as the admin API and the webhooks.
            json: event_json(event),
        })
        .collect();
    print_list(
        args.format,
        &["at", "kind", "actor", "subject", "session", "ip", "detail"],
        rows,
    )
}
