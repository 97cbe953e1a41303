//! `tessera`: the session-token server and its administration commands.

use std::future::Future;
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, CommandFactory, Parser, Subcommand};
use tessera_server::clock::rfc3339;
use tessera_server::config::{Config, ConfigError, LogFormat};
use tessera_server::master_key::{self, MasterKeySource};
use tessera_server::serve::Listener;
use tessera_server::service::{Actor, Tessera};
use tessera_server::{Builder, Server, builder};
use tessera_store::AuditQuery;

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
    /// Apply pending schema migrations of the store and print its schema version.
    Migrate,
    /// Print shell completions or the man page (for packagers).
    #[command(subcommand)]
    Generate(GenerateCommand),
    /// Print the default configuration or check a configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    #[command(flatten)]
    Admin(AdminCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print every configuration key with its help, environment variable and default, as a
    /// TOML file that loads back as the defaults.
    Defaults,
    /// Load FILE and the `TESSERA_*` environment and check every value: prints OK, or names
    /// the file, line, column and key of the first problem and exits with 2.
    Check {
        /// The configuration file.
        file: PathBuf,
    },
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
    /// Show audit events, newest first.
    Audit {
        /// Only events where this user acted or was acted upon.
        #[arg(long)]
        user: Option<String>,
        /// Only events of this kind (e.g. login.failed, session.revoked).
        #[arg(long)]
        kind: Option<String>,
        /// At most this many events.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Subcommand)]
enum GenerateCommand {
    /// Shell completions for bash, zsh, fish, elvish or powershell.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// The man page (roff), e.g. `tessera generate man > tessera.1`.
    Man,
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
        /// Username (stored in Unicode NFC; no invisible characters; not `cli` or `system`).
        #[arg(value_parser = new_username)]
        name: String,
        /// Role to grant (repeatable; ASCII letters, digits and `._:-/`, 1 to 64 bytes).
        #[arg(long = "role", value_parser = role_name)]
        roles: Vec<String>,
        /// Permission to grant directly (repeatable; the same charset as roles).
        #[arg(long = "permission", value_parser = permission_name)]
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
        /// The new roles (none clears them; ASCII letters, digits and `._:-/`).
        #[arg(value_parser = role_name)]
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

// Names are checked while parsing the command line, so a bad one is a usage error (exit 2)
// with the rule it broke; the service checks them again for every other way in.

fn new_username(name: &str) -> Result<String, tessera_core::names::NameError> {
    tessera_core::names::new_username(name)
}

fn role_name(name: &str) -> Result<String, tessera_core::names::NameError> {
    tessera_core::names::check_role(name).map(|()| name.to_owned())
}

fn permission_name(name: &str) -> Result<String, tessera_core::names::NameError> {
    tessera_core::names::check_permission(name).map(|()| name.to_owned())
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
            // An invalid configuration is a usage error, like a bad flag.
            let invalid = error
                .downcast_ref::<ConfigError>()
                .is_some_and(|e| e.problem().is_some());
            if invalid {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    // Answered before the configuration is loaded: they must work whatever it holds.
    match &cli.command {
        Command::Config(command) => return config_command(command),
        Command::Generate(what) => return generate(what),
        _ => {}
    }
    let config_file = cli.config.clone();
    let mut config = Config::load(cli.config.as_deref(), std::env::vars())?;
    if let Some(data) = cli.data {
        config.data = data;
    }
    match cli.command {
        Command::Serve(args) => {
            apply_serve_flags(&mut config, &args);
            config.validate()?;
            init_logging(config.log_format);
            // Handlers are installed now, before anything is bound: a SIGTERM sent as soon as
            // the server is up must start a graceful shutdown, not kill the process.
            let shutdown = shutdown_signal()?;
            serve(config, config_file, shutdown).await
        }
        Command::Config(_) | Command::Generate(_) => Ok(()),
        Command::Migrate => {
            let (what, migrated) = tessera_server::builder::migrate(&config).await?;
            if migrated.from == migrated.to {
                println!("{what}: schema version {} is up to date", migrated.to);
            } else {
                println!(
                    "{what}: migrated schema from version {} to {}",
                    migrated.from, migrated.to
                );
            }
            Ok(())
        }
        Command::Admin(command) => {
            // Pointed at the wrong directory, an administration command must not start a
            // fresh store (with a new master key) and answer as if nothing were amiss.
            let server = build(Builder::new(config.clone()).existing_store_only()).await?;
            eprintln!("tessera: store: {}", builder::describe(&config));
            let service = server.service();
            match command {
                AdminCommand::User(cmd) => user_command(service, cmd).await,
                AdminCommand::Session(cmd) => session_command(service, cmd).await,
                AdminCommand::Key(cmd) => key_command(service, cmd).await,
                AdminCommand::Token(TokenCommand::Inspect { token }) => {
                    inspect(service, &token).await
                }
                AdminCommand::Audit { user, kind, limit } => {
                    let query = AuditQuery {
                        user,
                        kind,
                        limit,
                        ..AuditQuery::default()
                    };
                    audit(service, query).await
                }
            }
        }
    }
}

/// Writes completions or the man page, generated from the command line's own definitions.
fn generate(what: &GenerateCommand) -> Result<()> {
    let mut command = Cli::command();
    let mut out = std::io::stdout().lock();
    match what {
        GenerateCommand::Completions { shell } => {
            clap_complete::generate(*shell, &mut command, "tessera", &mut out);
        }
        GenerateCommand::Man => clap_mangen::Man::new(command)
            .render(&mut out)
            .context("cannot write the man page")?,
    }
    Ok(())
}

fn config_command(command: &ConfigCommand) -> Result<()> {
    match command {
        ConfigCommand::Defaults => print!("{}", Config::defaults_toml()),
        ConfigCommand::Check { file } => {
            Config::load(Some(file), std::env::vars())?;
            println!("{}: OK", file.display());
        }
    }
    Ok(())
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

/// Logs to stderr, as text or JSON lines, filtered by `RUST_LOG` (default `info`).
///
/// # Security
/// tessera's own events never carry a password, a token or a cookie. Panics are routed through
/// the same subscriber (so JSON stays JSON) with their message and location only.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(ToString::to_string);
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned());
        tracing::error!(?location, ?message, "panic");
    }));
}

/// Assembles the server, telling the operator about a newly generated master key.
async fn build(builder: Builder) -> Result<Server> {
    let server = builder.build().await?;
    if let MasterKeySource::Generated(path) = server.master_key_source() {
        notice(&format!(
            "generated a master key for the signing keys in {}; without it they cannot be \
             decrypted. To keep it away from the data, move it and set master_key_file, or use {}",
            path.display(),
            master_key::ENV_VAR
        ));
    }
    Ok(server)
}

/// Something the operator must see once: a log event when logging is set up (so JSON logs
/// stay JSON on every line), else a line on stderr.
fn notice(text: &str) {
    if tracing::dispatcher::has_been_set() {
        tracing::warn!("{text}");
    } else {
        eprintln!("tessera: {text}");
    }
}

async fn serve(
    config: Config,
    config_file: Option<PathBuf>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    // Bound first: a start that cannot listen (port taken, bad certificate, plain HTTP off
    // loopback) fails before it creates a store, a key or a first user.
    let listener = Listener::bind(&config)?;
    let server = build(Builder::new(config.clone())).await?;
    ensure_admin(&server).await?;
    let scheme = if config.serves_tls() { "https" } else { "http" };
    tracing::info!(
        version = %env!("CARGO_PKG_VERSION"),
        store = %builder::describe(&config),
        algorithm = %config.jwt_algorithm,
        config = %config_file.as_deref().map_or("(none)".into(), |p| p.display().to_string()),
        "tessera listening on {scheme}://{}",
        listener.local_addr()
    );
    server.serve_on(listener, shutdown).await?;
    tracing::info!("tessera stopped");
    Ok(())
}

/// On first start (no user at all) creates `admin`, with `TESSERA_ADMIN_PASSWORD` or a random
/// password printed once on stderr.
async fn ensure_admin(server: &Server) -> Result<()> {
    let given = std::env::var("TESSERA_ADMIN_PASSWORD").ok();
    let Some(admin) = server.create_first_admin(given).await? else {
        return Ok(());
    };
    match admin.generated_password {
        Some(password) => {
            notice(&format!("created user \"admin\" with password: {password}"));
            notice("this password is shown once; change it with `tessera user passwd admin`");
        }
        None => notice("created user \"admin\" with the password from TESSERA_ADMIN_PASSWORD"),
    }
    Ok(())
}

/// 128 random bits, base64url: a password nobody will guess.
fn random_password() -> Result<String> {
    Ok(tessera_core::random::id()?)
}

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C). The handlers are installed when this is
/// called, not when the future is first polled.
#[cfg(unix)]
fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate =
        signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut interrupt =
        signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    Ok(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutdown requested");
    })
}

/// Resolves on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested");
    })
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
                .create_user(&Actor::cli(), &name, &password, roles, permissions)
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
            let key = service.rotate_key(&Actor::cli()).await?;
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

async fn audit(service: &Tessera, query: AuditQuery) -> Result<()> {
    for event in service.audit_events(query).await? {
        println!(
            "{}\t{}\tactor={}\tsubject={}\tsession={}\tip={}\t{}",
            rfc3339(event.at),
            event.kind,
            event.actor.as_deref().unwrap_or("-"),
            event.subject.as_deref().unwrap_or("-"),
            event.session_id.as_deref().unwrap_or("-"),
            event.ip.as_deref().unwrap_or("-"),
            event.detail.as_deref().unwrap_or(""),
        );
    }
    Ok(())
}
