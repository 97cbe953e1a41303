//! `tessera session …`.

use std::collections::HashMap;
use tessera_core::ids::UserId;

use anyhow::{Result, bail};
use serde_json::json;
use tessera_server::clock::rfc3339;
use tessera_server::service::{Actor, Tessera};

use crate::args::SessionCommand;
use crate::output::{Row, print_list};

pub(super) async fn run(service: &Tessera, cmd: SessionCommand) -> Result<()> {
    match cmd {
        SessionCommand::List { user, format } => {
            let usernames: HashMap<UserId, String> = service
                .users()
                .await?
                .into_iter()
                .map(|u| (u.id, u.username))
                .collect();
            let rows = service
                .list_sessions(user.as_deref())
                .await?
                .into_iter()
                .map(|s| {
                    let username = usernames.get(&s.user_id).cloned();
                    Row {
                        cells: vec![
                            s.id.to_string(),
                            username.clone().unwrap_or_else(|| "?".into()),
                            format!("created={}", rfc3339(s.times.created_at)),
                            format!("last_seen={}", rfc3339(s.times.last_seen_at)),
                            format!("ip={}", s.ip.as_deref().unwrap_or("-")),
                        ],
                        // The admin API's fields, plus the username.
                        json: json!({
                            "id": s.id,
                            "user_id": s.user_id,
                            "username": username,
                            "created_at": rfc3339(s.times.created_at),
                            "last_seen_at": rfc3339(s.times.last_seen_at),
                            "idle_expires_at": rfc3339(s.times.idle_expires_at),
                            "expires_at": rfc3339(s.times.absolute_expires_at),
                            "ip": s.ip,
                            "user_agent": s.user_agent,
                        }),
                    }
                })
                .collect();
            print_list(format, &["id", "user", "created", "last_seen", "ip"], rows)?;
        }
        SessionCommand::Revoke { id: Some(id), .. } => {
            service.revoke_session(&Actor::cli(), &id).await?;
            println!("revoked session {id}");
        }
        SessionCommand::Revoke {
            user: Some(user), ..
        } => {
            let count = service.revoke_user(&Actor::cli(), &user).await?;
            println!("revoked {count} session(s) of {user}");
        }
        SessionCommand::Revoke { .. } => bail!("give a session id or --user NAME"),
    }
    Ok(())
}
