//! `routerctl`: the operator's tool for routerd boxes.
//!
//! This first part works on files and keys only: `config validate`, `config
//! show`, `config example`, `keygen`, `pubkey`. Talking to a box over its
//! serial port comes with the provisioning protocol.
//!
//! Exit codes (PRODUCT.md, "Contracts"): 0 success, 1 a check or command
//! failed (e.g. the configuration has errors), 2 bad usage or unreadable input.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod config_cmd;
mod keys;

/// Exit code when a check or command failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code for bad usage or input that cannot be read or parsed.
pub const EXIT_USAGE: u8 = 2;

/// A command's failure: what to print on stderr and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }
}

#[derive(Parser)]
#[command(
    name = "routerctl",
    version,
    about = "Provision and diagnose routerd boxes",
    long_about = "Provision and diagnose routerd boxes.\n\n\
        routerd is firmware for a small router box that moves single /32 addresses \
        between sites over WireGuard (claims) and joins sites with VXLAN segments. \
        routerctl checks configurations before they reach a box and creates keys.",
    after_long_help = "Examples:\n  \
        routerctl config example hybrid-onprem > onprem.toml\n  \
        routerctl config validate onprem.toml\n  \
        routerctl config show onprem.toml --json\n  \
        wg genkey | routerctl pubkey\n\n\
        Exit codes: 0 success, 1 a check failed (e.g. errors in the configuration), \
        2 bad usage or a file that cannot be read or parsed."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check, explain and print configuration files
    #[command(
        subcommand,
        long_about = "Check, explain and print configuration files (TOML, one file per box). \
            Nothing here talks to a box: validate and show run the same checks the box runs \
            before applying a configuration.",
        after_long_help = "Examples:\n  \
            routerctl config example two-site > roz.toml\n  \
            routerctl config validate roz.toml\n  \
            routerctl config show roz.toml"
    )]
    Config(config_cmd::ConfigCommand),
    /// Print a new WireGuard private key (like `wg genkey`)
    #[command(
        long_about = "Print a new random WireGuard private key in base64, exactly like `wg genkey`.\n\n\
            Normally the box generates its own key and never sends it out (`private_key = \"device:wg0\"` \
            in the configuration); use keygen for test peers or for keys you import on purpose.",
        after_long_help = "Example:\n  routerctl keygen | tee peer.key | routerctl pubkey > peer.pub"
    )]
    Keygen,
    /// Read a private key on stdin, print its public key (like `wg pubkey`)
    #[command(
        long_about = "Read a base64 WireGuard private key on stdin and print the matching public key, \
            exactly like `wg pubkey`. The output goes into the other box's `[[peers]] public_key`.",
        after_long_help = "Example:\n  wg genkey | routerctl pubkey\n\n\
            Exit code 2 when stdin is not a 44-character base64 key."
    )]
    Pubkey,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Config(cmd) => config_cmd::run(cmd),
        Command::Keygen => keys::keygen(),
        Command::Pubkey => keys::pubkey(),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("routerctl: {}", f.message.trim_end());
            ExitCode::from(f.code)
        }
    }
}
