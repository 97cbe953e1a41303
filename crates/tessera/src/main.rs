//! `tessera`: the session-token server and its administration commands.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use tessera_server::clock::{SystemClock, rfc3339};
use tessera_server::config::Config;
use tessera_server::master_key::{self, MasterKeySource};
use tessera_server::service::{Settings, Tessera};
use tessera_store::Store;
use tessera_store_sqlite::SqliteStore;

/// Session tokens done right: login, JWT or opaque tokens, cookies, forward auth, revocation.
#[derive(Parser)]
#[command(name = "tessera", version, about)]
struct Cli {
    /// TOML configuration file (env: TESSERA_CONFIG).
    #[arg(long, global = true, env = "TESSERA_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory holding the embedded SQLite store (default ./tessera-data).
    #[arg(long, global = true)]
    data: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    #[command(flatten)]
    Admin(AdminCommand),
}

/// Commands that work on the store directly (the server may be running).
#[derive(Subcommand)]
enum AdminCommand {
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// List and revoke sessions.
    #[command(subcommand)]
    Session(SessionCommand),
    /// List and rotate signing keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Inspect tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<String>,
    /// PEM certificate chain for HTTPS.
    #[arg(long, requires = "tls_key", conflicts_with = "tls_self_signed")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve HTTPS with a generated self-signed certificate (local use).
    #[arg(long)]
    tls_self_signed: bool,
    /// Plain HTTP is allowed off loopback because a TLS-terminating proxy is in front.
    #[arg(long)]
    behind_proxy: bool,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user. Without --password-stdin a random password is generated and printed.
    Add {
        /// Username.
        name: String,
        /// Role to grant (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Permission to grant directly (repeatable).
        #[arg(long = "permission")]
        permissions: Vec<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List,
    /// Show one user.
    Show {
        /// Username.
        name: String,
    },
    /// Delete a user and all their sessions.
    Remove {
        /// Username.
        name: String,
    },
    /// Set a user's password (revokes their sessions). Without --password-stdin a random
    /// password is generated and printed.
    Passwd {
        /// Username.
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Replace a user's roles (revokes their sessions so no token keeps the old roles).
    SetRoles {
        /// Username.
        name: String,
        /// The new roles (none clears them).
        roles: Vec<String>,
    },
}

#[derive(Subcommand)]
enum SessionCommand {
    /// List live sessions.
    List {
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a session by id, or every session of a user.
    Revoke {
        /// Session id.
        #[arg(required_unless_present = "user", conflicts_with = "user")]
        id: Option<String>,
        /// Revoke every session of this user.
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// List signing keys.
    List,
    /// Create a new signing key; the old one verifies until its tokens expire.
    Rotate,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Decode and verify a token; print its claims and session record.
    Inspect {
        /// The token.
        token: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tessera: error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tessera: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let mut config = Config::load(cli.config.as_deref(), std::env::vars())?;
    if let Some(data) = cli.data {
        config.data = data;
    }
    match cli.command {
        Command::Serve(args) => {
            apply_serve_flags(&mut config, &args);
            config.validate()?;
            init_logging();
            serve(config).await
        }
        Command::Admin(command) => {
            let service = open(&config).await?;
            match command {
                AdminCommand::User(cmd) => user_command(&service, cmd).await,
                AdminCommand::Session(cmd) => session_command(&service, cmd).await,
                AdminCommand::Key(cmd) => key_command(&service, cmd).await,
                AdminCommand::Token(TokenCommand::Inspect { token }) => {
                    inspect(&service, &token).await
                }
            }
        }
    }
}

fn apply_serve_flags(config: &mut Config, args: &ServeArgs) {
    if let Some(listen) = &args.listen {
        config.listen = listen.clone();
    }
    if args.tls_cert.is_some() {
        config.tls_cert = args.tls_cert.clone();
        config.tls_key = args.tls_key.clone();
        config.tls_self_signed = false;
    }
    if args.tls_self_signed {
        config.tls_self_signed = true;
        config.tls_cert = None;
        config.tls_key = None;
    }
    if args.behind_proxy {
        config.behind_proxy = true;
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Opens the embedded store in the data directory and builds the service.
async fn open(config: &Config) -> Result<Arc<Tessera>> {
    create_private_dir(&config.data)?;
    let path = config.data.join("tessera.db");
    let store =
        SqliteStore::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let store_has_keys = !store
        .signing_keys()
        .await
        .context("cannot read the signing keys")?
        .is_empty();
    let env_key = std::env::var(master_key::ENV_VAR).ok();
    let (master, source) = master_key::resolve(config, env_key.as_deref(), store_has_keys)?;
    if let MasterKeySource::Generated(path) = &source {
        eprintln!(
            "tessera: generated a master key for the signing keys in {}; without it they \
             cannot be decrypted. To keep it away from the data, move it and set \
             master_key_file, or use {}",
            path.display(),
            master_key::ENV_VAR
        );
    }
    let service = Tessera::new(
        Arc::new(store),
        Settings::from_config(config),
        master,
        Arc::new(SystemClock),
    )
    .await
    .with_context(|| format!("cannot start the service (master key from {source})"))?;
    Ok(Arc::new(service))
}

/// The data directory holds password hashes and signing keys: owner-only access.
fn create_private_dir(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", dir.display()))?;
    }
    Ok(())
}

async fn serve(config: Config) -> Result<()> {
    tessera_server::serve::check_transport(&config)?;
    let service = open(&config).await?;
    ensure_admin(&service).await?;
    let scheme = if config.serves_tls() { "https" } else { "http" };
    tessera_server::serve::run(
        &config,
        service,
        |addr| tracing::info!("tessera listening on {scheme}://{addr}"),
        shutdown_signal(),
    )
    .await?;
    tracing::info!("tessera stopped");
    Ok(())
}

/// On first start (no user at all) creates `admin`, with `TESSERA_ADMIN_PASSWORD` or a random
/// password printed once on stderr.
async fn ensure_admin(service: &Tessera) -> Result<()> {
    if service.store().count_users().await? > 0 {
        return Ok(());
    }
    let (password, generated) = match std::env::var("TESSERA_ADMIN_PASSWORD") {
        Ok(p) if !p.is_empty() => (p, false),
        _ => (random_password()?, true),
    };
    service
        .create_user("admin", &password, vec!["admin".into()], Vec::new())
        .await?;
    if generated {
        eprintln!("tessera: created user \"admin\" with password: {password}");
        eprintln!(
            "tessera: this password is shown once; change it with `tessera user passwd admin`"
        );
    } else {
        eprintln!("tessera: created user \"admin\" with the password from TESSERA_ADMIN_PASSWORD");
    }
    Ok(())
}

/// 128 random bits, base64url: a password nobody will guess.
fn random_password() -> Result<String> {
    Ok(tessera_core::random::id()?)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

fn read_password(from_stdin: bool) -> Result<(String, bool)> {
    if !from_stdin {
        return Ok((random_password()?, true));
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        bail!("no password on standard input");
    }
    Ok((password, false))
}

async fn user_command(service: &Tessera, cmd: UserCommand) -> Result<()> {
    match cmd {
        UserCommand::Add {
            name,
            roles,
            permissions,
            password_stdin,
        } => {
            let (password, generated) = read_password(password_stdin)?;
            let user = service
                .create_user(&name, &password, roles, permissions)
                .await?;
            println!("created user {} (id {})", user.username, user.id);
            if generated {
                println!("password: {password}");
            }
        }
        UserCommand::List => {
            for user in service.users().await? {
                println!(
                    "{}\t{}\troles={}\t{}",
                    user.username,
                    user.id,
                    user.roles.join(","),
                    if user.disabled { "disabled" } else { "active" }
                );
            }
        }
        UserCommand::Show { name } => {
            let user = service.user(&name).await?;
            let sessions = service.list_sessions(Some(&name)).await?;
            let value = serde_json::json!({
                "id": user.id,
                "username": user.username,
                "roles": user.roles,
                "permissions": user.permissions,
                "effective_permissions": service.settings().roles.effective(&user.roles, &user.permissions),
                "disabled": user.disabled,
                "created_at": rfc3339(user.created_at),
                "live_sessions": sessions.len(),
            });
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        UserCommand::Remove { name } => {
            service.remove_user(&name).await?;
            println!("removed user {name} and all their sessions");
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            let (password, generated) = read_password(password_stdin)?;
            service.set_password(&name, &password).await?;
            println!("password of {name} changed; their sessions were revoked");
            if generated {
                println!("password: {password}");
            }
        }
        UserCommand::SetRoles { name, roles } => {
            let user = service.set_roles(&name, roles).await?;
            println!(
                "roles of {name}: {}; their sessions were revoked",
                user.roles.join(",")
            );
        }
    }
    Ok(())
}

async fn session_command(service: &Tessera, cmd: SessionCommand) -> Result<()> {
    match cmd {
        SessionCommand::List { user } => {
            let users: std::collections::HashMap<String, String> = service
                .users()
                .await?
                .into_iter()
                .map(|u| (u.id, u.username))
                .collect();
            for s in service.list_sessions(user.as_deref()).await? {
                println!(
                    "{}\t{}\tcreated={}\tlast_seen={}\tip={}",
                    s.id,
                    users.get(&s.user_id).map(String::as_str).unwrap_or("?"),
                    rfc3339(s.times.created_at),
                    rfc3339(s.times.last_seen_at),
                    s.ip.as_deref().unwrap_or("-"),
                );
            }
        }
        SessionCommand::Revoke { id: Some(id), .. } => {
            service.revoke_session(&id).await?;
            println!("revoked session {id}");
        }
        SessionCommand::Revoke {
            user: Some(user), ..
        } => {
            let count = service.revoke_user(&user).await?;
            println!("revoked {count} session(s) of {user}");
        }
        SessionCommand::Revoke { .. } => bail!("give a session id or --user NAME"),
    }
    Ok(())
}

async fn key_command(service: &Tessera, cmd: KeyCommand) -> Result<()> {
    match cmd {
        KeyCommand::List => {
            for key in service.signing_keys().await? {
                let status = match key.retired_at {
                    None => "current".to_owned(),
                    Some(at) => format!("retired {}", rfc3339(at)),
                };
                println!(
                    "{}\t{}\tcreated={}\t{}",
                    key.kid,
                    key.algorithm,
                    rfc3339(key.created_at),
                    status
                );
            }
        }
        KeyCommand::Rotate => {
            let key = service.rotate_key().await?;
            println!(
                "new signing key {} ({}); previous keys verify until their tokens expire",
                key.kid, key.algorithm
            );
        }
    }
    Ok(())
}

async fn inspect(service: &Tessera, token: &str) -> Result<()> {
    let inspection = service.inspect(token).await?;
    let session = inspection.session.map(|r| {
        serde_json::json!({
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
    let value = serde_json::json!({
        "status": inspection.status,
        "claims": inspection.claims.map(|c| serde_json::to_value(c).unwrap_or_default()),
        "session": session,
    });
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}
