//! The commands that work on the store, one module per group.

mod audit;
mod key;
mod session;
mod token;
mod user;

use std::io::BufRead;

use anyhow::{Context, Result, bail};
use tessera_server::service::Tessera;

use crate::args::{AdminCommand, TokenCommand};

/// Runs one administration command against the store behind `service`.
pub async fn run(service: &Tessera, command: AdminCommand) -> Result<()> {
    match command {
        AdminCommand::User(cmd) => user::run(service, cmd).await,
        AdminCommand::Session(cmd) => session::run(service, cmd).await,
        AdminCommand::Key(cmd) => key::run(service, cmd).await,
        AdminCommand::Token(TokenCommand::Inspect { token, format }) => {
            token::inspect(service, token, format).await
        }
        AdminCommand::Audit(args) => audit::run(service, args).await,
    }
}

/// The first line of standard input, without its line break; `what` names it in errors.
fn stdin_line(what: &str) -> Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .with_context(|| format!("cannot read the {what} from standard input"))?;
    let line = line.trim_end_matches(['\n', '\r']).to_owned();
    if line.is_empty() {
        bail!("no {what} on standard input");
    }
    Ok(line)
}
