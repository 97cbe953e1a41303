//! `tessera token inspect`.

use std::io::IsTerminal;

use anyhow::Result;
use serde_json::json;
use tessera_server::clock::rfc3339;
use tessera_server::service::Tessera;

use super::stdin_line;
use crate::output::{RecordFormat, print_record};

/// Decodes and verifies a token (from standard input unless given), then prints its claims
/// and session record.
pub(super) async fn inspect(
    service: &Tessera,
    token: Option<String>,
    format: RecordFormat,
) -> Result<()> {
    let token = match token {
        None => read_token()?,
        Some(token) if token == "-" => read_token()?,
        Some(token) => {
            // A bearer credential on argv is readable by every local user (`ps`) and lands in
            // shell history; say so, but keep working for the scripts that do it.
            eprintln!(
                "tessera: warning: a token on the command line is visible in `ps` and shell \
                 history; give it on standard input instead: tessera token inspect - < FILE"
            );
            token
        }
    };
    let inspection = service.inspect(token.trim()).await?;
    let session = inspection.session.map(|r| {
        json!({
            "id": r.session.id,
            "user": { "id": r.user.id, "username": r.user.username },
            "roles": r.user.roles,
            "created_at": rfc3339(r.session.times.created_at),
            "last_seen_at": rfc3339(r.session.times.last_seen_at),
            "idle_expires_at": rfc3339(r.session.times.idle_expires_at),
            "expires_at": rfc3339(r.session.times.absolute_expires_at),
            "revoked_at": r.session.times.revoked_at.map(rfc3339),
        })
    });
    let claims = match inspection.claims {
        Some(claims) => Some(serde_json::to_value(claims)?),
        None => None,
    };
    let value = json!({
        "status": inspection.status,
        "claims": claims,
        "session": session,
    });
    print_record(format, &value)
}

/// The token from standard input; at a terminal, says what is awaited rather than hang silently.
fn read_token() -> Result<String> {
    if std::io::stdin().is_terminal() {
        eprintln!("tessera: paste the token and press Enter");
    }
    stdin_line("token")
}
