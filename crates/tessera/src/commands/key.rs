//! `tessera key …`.

use anyhow::Result;
use serde_json::json;
use tessera_server::clock::rfc3339;
use tessera_server::service::{Actor, Tessera};

use crate::args::KeyCommand;
use crate::output::{Row, print_list};

pub(super) async fn run(service: &Tessera, cmd: KeyCommand) -> Result<()> {
    match cmd {
        KeyCommand::List { format } => {
            let rows = service
                .signing_keys()
                .await?
                .into_iter()
                .map(|key| {
                    let status = match key.retired_at {
                        None => "current".to_owned(),
                        Some(at) => format!("retired {}", rfc3339(at)),
                    };
                    Row {
                        cells: vec![
                            key.kid.clone(),
                            key.algorithm.to_string(),
                            format!("created={}", rfc3339(key.created_at)),
                            status,
                        ],
                        // Never the key material, not even the public half: `kid` finds it in
                        // the JWKS.
                        json: json!({
                            "kid": key.kid,
                            "algorithm": key.algorithm.to_string(),
                            "created_at": rfc3339(key.created_at),
                            "retired_at": key.retired_at.map(rfc3339),
                        }),
                    }
                })
                .collect();
            print_list(format, &["kid", "algorithm", "created", "status"], rows)?;
        }
        KeyCommand::Rotate => {
            let key = service.rotate_key(&Actor::cli()).await?;
            println!(
                "new signing key {} ({}); previous keys verify until their tokens expire",
                key.kid, key.algorithm
            );
        }
    }
    Ok(())
}
