//! `tessera`: the session-token server and its administration commands.
//!
//! - [`args`]: the command line's shape (clap definitions).
//! - [`serve`]: `tessera serve`.
//! - [`commands`]: the commands on the store, one module per group.
//! - [`output`]: how records are printed (tables, JSON).
//! - this file: dispatch, and how errors end the process.

mod args;
mod commands;
mod output;
mod serve;

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser};
use tessera_core::opaque::{self, OpaqueKind};
use tessera_server::config::{Config, ConfigError, StoreUrl};
use tessera_server::{Builder, builder};

use crate::args::{Cli, Command, ConfigCommand, GenerateCommand};

/// mimalloc instead of glibc's allocator: a request allocates ~100 small blocks, and glibc's
/// `malloc`/`free` were ~30 % of the server's user-space instructions (docs/performance.md).
/// Its v2 line: v3's aligned allocation (what Rust's allocator interface asks for) took a slower
/// path, ~0.3–0.5 k instructions more per request.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
            eprintln!("tessera: error: {}", error_line(&error));
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

/// The error and its causes on one line, outermost first, separated by `: `. A cause whose
/// text ends what the line already says (an error that prints its source, like `{0}` over a
/// `#[from]`) is left out, so no reason is given twice.
fn error_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
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
    check_data_dir(&config)?;
    match cli.command {
        Command::Serve(args) => serve::run(config, config_file, &args).await,
        Command::Config(_) | Command::Generate(_) => Ok(()),
        Command::Migrate => {
            let (what, migrated) = builder::migrate(&config).await?;
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
            let server = serve::build(Builder::new(config.clone()).existing_store_only()).await?;
            eprintln!("tessera: store: {}", builder::describe(&config));
            commands::run(server.service(), command).await
        }
    }
}

/// The data directory (SQLite store, generated master key) must be a directory if it exists;
/// said plainly rather than as the operating system's "File exists".
fn check_data_dir(config: &Config) -> Result<()> {
    let used = !matches!(config.store, Some(StoreUrl::Postgres(_)));
    if used && config.data.exists() && !config.data.is_dir() {
        bail!(
            "the data directory {} is a file, not a directory: give --data (or `data` in the \
             configuration) the directory where tessera keeps its data",
            config.data.display()
        );
    }
    Ok(())
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
        GenerateCommand::IntrospectionSecret => {
            let secret = opaque::generate(OpaqueKind::Introspection)
                .context("the system random number generator failed")?;
            writeln!(
                out,
                "secret (give it to the service, once; tessera does not keep it):\n  {}\n\
                 tessera.toml:\n  introspection_secret_digests = [\"{}\"]",
                secret.token,
                secret.hash.to_hex()
            )
            .context("cannot write the secret")?;
        }
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

#[cfg(test)]
mod tests {
    use super::error_line;

    /// An error that prints its source's text and also returns it as its source.
    #[derive(Debug)]
    struct Repeats(std::io::Error);

    impl std::fmt::Display for Repeats {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}", self.0)
        }
    }

    impl std::error::Error for Repeats {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_reason_is_given_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let error = anyhow::Error::new(Repeats(io)).context("cannot read config file x");
        assert_eq!(
            error_line(&error),
            "cannot read config file x: no such file"
        );
    }

    #[test]
    fn distinct_causes_are_all_kept() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let error = anyhow::Error::new(io)
            .context("cannot open")
            .context("cannot start");
        assert_eq!(
            error_line(&error),
            "cannot start: cannot open: no such file"
        );
    }
}
