//! The command line's shape: every command, flag and argument, as clap definitions.
//! `tessera generate completions|man` renders these, so they are the one description of it.

use std::path::PathBuf;

use clap::builder::PossibleValuesParser;
use clap::{Args, Parser, Subcommand};
use tessera_server::service::EventKind;

use crate::output::{ListFormat, RecordFormat};

/// Where the help sends readers for everything the flags do not cover.
const CONFIG_REFERENCE: &str = "Every option is also a configuration key (TOML file given by \
--config or TESSERA_CONFIG) and a TESSERA_* environment variable. The reference: the README's \
\"Configuration\" section, or `tessera config defaults` (every key with its help and default).";

/// Session tokens done right: login, JWT or opaque tokens, cookies, forward auth, revocation.
#[derive(Parser)]
#[command(name = "tessera", version, about, after_help = CONFIG_REFERENCE)]
pub struct Cli {
    /// TOML configuration file.
    // The value is hidden: help must not echo whatever the environment holds.
    #[arg(long, global = true, env = "TESSERA_CONFIG", hide_env_values = true)]
    pub config: Option<PathBuf>,
    /// Data directory holding the embedded SQLite store (default ./tessera-data).
    #[arg(long, global = true)]
    pub data: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
#[derive(Subcommand)]
pub enum Command {
    /// Run the server.
    #[command(after_help = CONFIG_REFERENCE)]
    Serve(ServeArgs),
    /// Apply pending schema migrations of the store and print its schema version.
    Migrate,
    /// Print shell completions or the man page (for packagers).
    #[command(subcommand)]
    Generate(GenerateCommand),
    /// Print the default configuration or check a configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Commands on the store.
    #[command(flatten)]
    Admin(AdminCommand),
}

/// `tessera config …`.
#[derive(Subcommand)]
pub enum ConfigCommand {
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
pub enum AdminCommand {
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
    Audit(AuditArgs),
}

/// `tessera audit`.
#[derive(Args)]
pub struct AuditArgs {
    /// Only events where this user acted or was acted upon.
    #[arg(long)]
    pub user: Option<String>,
    /// Only events of this kind.
    #[arg(long, value_parser = PossibleValuesParser::new(EventKind::ALL.map(EventKind::as_str)))]
    pub kind: Option<String>,
    /// At most this many events (0 prints none).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    #[command(flatten)]
    pub format: ListFormat,
}

/// `tessera generate …`.
#[derive(Subcommand)]
pub enum GenerateCommand {
    /// Shell completions for bash, zsh, fish, elvish or powershell.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// The man page (roff), e.g. `tessera generate man > tessera.1`.
    Man,
    /// A secret for a back-end service to call `POST /v1/introspect` with, and the line that
    /// admits it in tessera's configuration (which keeps only its SHA-256).
    IntrospectionSecret,
}

/// `tessera serve`: flags that override the configuration.
#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long)]
    pub listen: Option<String>,
    /// PEM certificate chain for HTTPS.
    #[arg(long, requires = "tls_key", conflicts_with = "tls_self_signed")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve HTTPS with a generated self-signed certificate (local use).
    #[arg(long)]
    pub tls_self_signed: bool,
    /// Plain HTTP is allowed off loopback because a TLS-terminating proxy is in front.
    #[arg(long)]
    pub behind_proxy: bool,
}

/// `tessera user …`.
#[derive(Subcommand)]
pub enum UserCommand {
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
    List {
        #[command(flatten)]
        format: ListFormat,
    },
    /// Show one user.
    Show {
        /// Username.
        name: String,
        #[command(flatten)]
        format: RecordFormat,
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
    /// Replace a user's directly granted permissions (revokes their sessions so no token
    /// keeps the old ones).
    SetPermissions {
        /// Username.
        name: String,
        /// The new permissions (none clears them; the same charset as roles).
        #[arg(value_parser = permission_name)]
        permissions: Vec<String>,
    },
    /// Disable a user: they cannot log in, and their sessions are revoked.
    Disable {
        /// Username.
        name: String,
    },
    /// Enable a disabled user again (they log in anew; no session comes back).
    Enable {
        /// Username.
        name: String,
    },
    /// Show a user's second factors (TOTP state, recovery codes left).
    Factors {
        /// Username.
        name: String,
        #[command(flatten)]
        format: RecordFormat,
    },
    /// Remove every second factor of a user (a lost phone) and revoke their sessions; they
    /// sign in with the password and enrol again.
    ResetFactors {
        /// Username.
        name: String,
    },
}

/// `tessera session …`.
#[derive(Subcommand)]
pub enum SessionCommand {
    /// List live sessions.
    List {
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        format: ListFormat,
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

/// `tessera key …`.
#[derive(Subcommand)]
pub enum KeyCommand {
    /// List signing keys.
    List {
        #[command(flatten)]
        format: ListFormat,
    },
    /// Create a new signing key; the old one verifies until its tokens expire.
    Rotate,
}

/// `tessera token …`.
#[derive(Subcommand)]
pub enum TokenCommand {
    /// Decode and verify a token; print its claims and session record as JSON.
    Inspect {
        /// The token, or `-` (the default) to read it from the first line of standard input.
        /// A token given here is visible to other users in `ps` and kept in shell history.
        token: Option<String>,
        #[command(flatten)]
        format: RecordFormat,
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
