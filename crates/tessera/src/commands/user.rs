//! `tessera user …`.

use anyhow::Result;
use serde_json::{Value, json};
use tessera_server::clock::rfc3339;
use tessera_server::service::{Actor, Tessera, UserPatch};
use tessera_store::User;

use super::stdin_line;
use crate::args::UserCommand;
use crate::output::{Row, print_list, print_record};

pub(super) async fn run(service: &Tessera, cmd: UserCommand) -> Result<()> {
    match cmd {
        UserCommand::Add {
            name,
            roles,
            permissions,
            password_stdin,
        } => {
            let (password, generated) = read_password(password_stdin)?;
            let user = service
                .create_user(&Actor::cli(), &name, &password, roles, permissions)
                .await?;
            println!("created user {} (id {})", user.username, user.id);
            if generated {
                println!("password: {password}");
            }
        }
        UserCommand::List { format } => {
            let rows = service
                .users()
                .await?
                .iter()
                .map(|user| Row {
                    cells: vec![
                        user.username.clone(),
                        user.id.to_string(),
                        format!("roles={}", user.roles.join(",")),
                        status(user).to_owned(),
                    ],
                    json: user_json(user),
                })
                .collect();
            print_list(format, &["username", "id", "roles", "status"], rows)?;
        }
        UserCommand::Show { name, format } => {
            let user = service.user(&name).await?;
            let sessions = service.list_sessions(Some(&name)).await?;
            let mut value = user_json(&user);
            value["effective_permissions"] = json!(
                service
                    .settings()
                    .roles
                    .effective(&user.roles, &user.permissions)
            );
            value["live_sessions"] = json!(sessions.len());
            print_record(format, &value)?;
        }
        UserCommand::Remove { name } => {
            service.remove_user(&Actor::cli(), &name).await?;
            println!("removed user {name} and all their sessions");
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            let (password, generated) = read_password(password_stdin)?;
            service
                .set_password(&Actor::cli(), &name, &password)
                .await?;
            println!("password of {name} changed; their sessions were revoked");
            if generated {
                println!("password: {password}");
            }
        }
        UserCommand::SetRoles { name, roles } => {
            let user = service.set_roles(&Actor::cli(), &name, roles).await?;
            println!(
                "roles of {name}: {}; their sessions were revoked",
                user.roles.join(",")
            );
        }
        UserCommand::SetPermissions { name, permissions } => {
            let patch = UserPatch {
                permissions: Some(permissions),
                ..UserPatch::default()
            };
            let user = service.update_user(&Actor::cli(), &name, patch).await?;
            println!(
                "permissions of {name}: {}; their sessions were revoked",
                user.permissions.join(",")
            );
        }
        UserCommand::Disable { name } => {
            set_disabled(service, &name, true).await?;
            println!("disabled user {name}; their sessions were revoked");
        }
        UserCommand::Enable { name } => {
            set_disabled(service, &name, false).await?;
            println!("enabled user {name}");
        }
        UserCommand::Factors { name, format } => {
            let status = service.user_factors(&name).await?;
            print_record(format, &json!(status))?;
        }
        UserCommand::ResetFactors { name } => {
            let removed = service.reset_factors(&Actor::cli(), &name).await?;
            if removed {
                println!("removed the second factors of {name}; their sessions were revoked");
            } else {
                println!("{name} had no second factor; their sessions were revoked");
            }
        }
    }
    Ok(())
}

/// Disables or enables through the same service call as the admin API, which revokes the
/// user's sessions and audits the change.
async fn set_disabled(service: &Tessera, name: &str, disabled: bool) -> Result<()> {
    let patch = UserPatch {
        disabled: Some(disabled),
        ..UserPatch::default()
    };
    service.update_user(&Actor::cli(), name, patch).await?;
    Ok(())
}

fn status(user: &User) -> &'static str {
    if user.disabled { "disabled" } else { "active" }
}

/// A user with the fields the admin API shows (never the password hash).
fn user_json(user: &User) -> Value {
    json!({
        "id": user.id,
        "username": user.username,
        "roles": user.roles,
        "permissions": user.permissions,
        "disabled": user.disabled,
        "created_at": rfc3339(user.created_at),
    })
}

/// The password from standard input, or a generated one (then `true`).
fn read_password(from_stdin: bool) -> Result<(String, bool)> {
    if from_stdin {
        Ok((stdin_line("password")?, false))
    } else {
        // 128 random bits, base64url: a password nobody will guess.
        Ok((tessera_core::random::id()?, true))
    }
}
