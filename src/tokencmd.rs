//! `quern token`: the coordinator's token file (hashed bearer tokens and their roles).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Subcommand;
use protocol::auth::{Role, TokenFile};

/// Token commands.
#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a token and print it (once: the file keeps only its hash). A running coordinator
    /// picks it up without a restart.
    Create {
        /// admin (everything), submit (jobs, schedules, binaries; and read), read (status,
        /// lists, logs, web UI and API), or worker (for worker daemons).
        #[arg(long)]
        role: String,
        /// A name for people: who or what uses it.
        #[arg(long)]
        name: String,
        /// The token file.
        #[arg(long, default_value = ".quern/coordinator/tokens.json")]
        tokens: PathBuf,
    },
    /// List the tokens: id, name, role, when made (never the tokens).
    List {
        /// The token file.
        #[arg(long, default_value = ".quern/coordinator/tokens.json")]
        tokens: PathBuf,
        #[command(flatten)]
        output: crate::output::OutputArgs,
    },
    /// Revoke a token by id or name; a running coordinator refuses it from the next call.
    Revoke {
        /// Its id (as `list` shows) or name.
        token: String,
        /// The token file.
        #[arg(long, default_value = ".quern/coordinator/tokens.json")]
        tokens: PathBuf,
    },
}

/// Runs a `quern token` command.
///
/// # Errors
/// A bad role, an unknown token, or an unreadable token file.
pub fn run(cmd: TokenCommand) -> Result<u8> {
    match cmd {
        TokenCommand::Create { role, name, tokens } => {
            let Some(role) = Role::parse(&role) else {
                bail!("unknown role {role:?}: expected admin, submit, read or worker");
            };
            if name.is_empty() || name.chars().any(char::is_control) {
                bail!("a token name must be non-empty, without control characters");
            }
            let mut file = TokenFile::load(&tokens)?;
            if file.tokens.iter().any(|t| t.name == name) {
                bail!("a token named {name:?} exists; revoke it or choose another name");
            }
            let token = file.create(role, &name)?;
            file.save(&tokens)?;
            eprintln!(
                "created {role} token {name:?} in {} (shown once; keep it secret):",
                tokens.display()
            );
            println!("{token}");
        }
        TokenCommand::List { tokens, output } => {
            let file = TokenFile::load(&tokens)?;
            if output.json() {
                crate::output::print_json(&serde_json::Value::Array(
                    file.tokens
                        .iter()
                        .map(|t| {
                            serde_json::json!({"id": t.id, "name": t.name, "role": t.role.to_string(), "created": t.created})
                        })
                        .collect(),
                ));
                return Ok(0);
            }
            println!("{:<18} {:<8} {:<12} name", "id", "role", "created");
            for t in &file.tokens {
                println!("{:<18} {:<8} {:<12} {}", t.id, t.role, t.created, t.name);
            }
        }
        TokenCommand::Revoke { token, tokens } => {
            let mut file = TokenFile::load(&tokens)?;
            let gone = file.revoke(&token)?;
            file.save(&tokens)?;
            println!("revoked {} token {:?} ({})", gone.role, gone.name, gone.id);
        }
    }
    Ok(0)
}
