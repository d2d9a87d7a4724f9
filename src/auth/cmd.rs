//! `fastk token create` and `fastk token list`: the tokens file from the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::tokens::{self, Scope, TokenFile};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a random token, print it once on stdout, and append its SHA-256, scopes and
    /// symbol patterns to the tokens file (made with mode 0600 if missing). A running
    /// server picks the new entry up within a second.
    Create {
        /// The token's name: what logs and audit lines show, and the Handshake user.
        #[arg(long)]
        name: String,
        /// Comma-separated scopes: read, write, admin.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Comma-separated symbol patterns (`*` any run, `?` one character); every
        /// symbol when left out.
        #[arg(long, value_delimiter = ',')]
        symbols: Vec<String>,
        /// The tokens file (`auth.tokens_file` of the server).
        #[arg(long)]
        tokens_file: PathBuf,
    },
    /// The tokens in the file: name, scopes and symbol patterns (never a secret).
    List {
        #[arg(long)]
        tokens_file: PathBuf,
    },
}

pub fn run(cmd: TokenCommand) -> ExitCode {
    match cmd {
        TokenCommand::Create {
            name,
            scopes,
            symbols,
            tokens_file,
        } => {
            let mut parsed = Vec::new();
            for s in &scopes {
                match Scope::parse(s) {
                    Some(sc) => parsed.push(sc),
                    None => {
                        eprintln!("error: unknown scope {s:?}: use read, write, admin");
                        return ExitCode::from(2);
                    }
                }
            }
            let symbols = (!symbols.is_empty()).then_some(symbols);
            match tokens::create(&tokens_file, &name, &parsed, symbols) {
                Ok(token) => {
                    println!("{token}");
                    eprintln!(
                        "token {name:?} added; it is shown only now (the file keeps its SHA-256)"
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {}", e.message);
                    ExitCode::FAILURE
                }
            }
        }
        TokenCommand::List { tokens_file } => match TokenFile::read(&tokens_file) {
            Ok(f) => {
                for t in f.token {
                    let symbols = t.symbols.map_or_else(|| "*".into(), |s| s.join(","));
                    println!("{}\t{}\t{}", t.name, t.scopes, symbols);
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {}", e.message);
                ExitCode::FAILURE
            }
        },
    }
}
