//! `routerctl`: the operator's tool for routerd boxes.
//!
//! Files and keys: `config validate|show|example`, `keygen`, `pubkey`.
//! A box, over its serial line (`--port`): `status`, `plan`, `apply`,
//! `config get`, `claims list|add|remove`, `key show|generate|import`,
//! `key psk show|import|generate`, `logs`, `reboot`. And `completions`, `man`.
//!
//! Exit codes (PRODUCT.md, "Contracts"): 0 success, 1 a check or command
//! failed (e.g. the configuration has errors), 2 bad usage or unreadable input.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod box_cmd;
mod client;
mod config_cmd;
mod doctor;
mod import_wg;
mod keys;
mod lab;

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
        Failure { code: EXIT_USAGE, message: message.into() }
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
        routerctl checks configurations before they reach a box, provisions boxes over their \
        serial line (plan, then an atomic apply), and shows what they are doing.",
    after_long_help = "Examples:\n  \
        routerctl config example hybrid-onprem > onprem.toml\n  \
        routerctl config validate onprem.toml\n  \
        routerctl config show onprem.toml --json\n  \
        wg genkey | routerctl pubkey\n  \
        routerctl apply onprem.toml --port unix:/tmp/onprem.sock\n  \
        routerctl status --port /dev/ttyUSB0 --json\n\n\
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
            before applying a configuration, for the platform that runs it (--for image|host).",
        after_long_help = "Examples:\n  \
            routerctl config example cloud > cloud.toml\n  \
            routerctl config validate cloud.toml --for host\n  \
            routerctl config show cloud.toml"
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
    /// Show a box's ports, tunnel, peers, claims and drop counters
    #[command(after_long_help = "Examples:\n  routerctl status --port unix:/tmp/onprem.sock\n  \
        routerctl status --port /dev/ttyUSB0 --json | jq '.status.claims'")]
    Status {
        #[command(flatten)]
        conn: box_cmd::Conn,
        /// Print one JSON document {schema, port, status}
        #[arg(long)]
        json: bool,
        /// Remember the drop counters now, so the next status shows drops since
        #[arg(long)]
        mark: bool,
    },
    /// Show what applying a file would change on a box (changes nothing)
    #[command(long_about = "Send the file to the box as a plan: the box validates it, binds it to its NICs, \
        builds it beside the running configuration and reports what would change (by claim address, \
        peer and port name), which keys it would generate and every warning. Nothing changes.")]
    Plan {
        /// The TOML file, or `-` for stdin
        file: PathBuf,
        #[command(flatten)]
        conn: box_cmd::Conn,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Apply a file on a box: shows the plan, then swaps it in atomically
    #[command(
        long_about = "Validate the file here, show the box's plan, then apply. The apply is atomic: \
        the box builds the whole new configuration beside the running one and swaps only when every \
        step succeeded; on any error the running configuration is untouched and the error names the \
        field. Keys the configuration names (`device:wg0`) are generated on the box; their public \
        halves are printed for the other box's configuration.",
        after_long_help = "Examples:\n  routerctl apply onprem.toml --port unix:/tmp/onprem.sock --yes\n  \
        routerctl apply onprem.toml --port /dev/ttyUSB0\n\n\
        Exit codes: 0 applied, 1 not applied (declined, unreachable, refused by the box), 2 invalid file."
    )]
    Apply {
        /// The TOML file, or `-` for stdin
        file: PathBuf,
        #[command(flatten)]
        conn: box_cmd::Conn,
        /// Apply without asking
        #[arg(long, short)]
        yes: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// List, add and remove claims on a running box
    #[command(subcommand)]
    Claims(box_cmd::ClaimsCommand),
    /// The box's WireGuard keys: private keys (only public halves leave the box) and preshared keys (`key psk`)
    #[command(subcommand)]
    Key(box_cmd::KeyCommand),
    /// Follow the box's console log through a provisioning session
    Logs {
        #[command(flatten)]
        conn: box_cmd::Conn,
        /// Stop after this many seconds (default: until interrupted)
        #[arg(long, value_name = "SECONDS")]
        r#for: Option<u64>,
        /// One JSON object per line
        #[arg(long)]
        json: bool,
    },
    /// Where the box keeps its configuration and keys across reboots
    #[command(subcommand)]
    Storage(box_cmd::StorageCommand),
    /// Reboot a box
    Reboot {
        #[command(flatten)]
        conn: box_cmd::Conn,
        /// Reboot without asking
        #[arg(long)]
        yes: bool,
    },
    /// Check a box end to end and say what is wrong (pass/warn/fail per claim and peer)
    #[command(subcommand)]
    Doctor(DoctorCommand),
    /// Run seed 000's two boxes in QEMU on this machine: provision, doctor, traffic
    #[command(
        long_about = "Boot two routerd boxes in QEMU, join their WAN ports through a simulated underlay \
        (routing, NAT, optional latency and loss), put simulated hosts on their LANs, generate keys on \
        the boxes, provision both over their serial sockets, run doctor hybrid on both, then send \
        traffic. No root needed.\n\n\
        --scenario hybrid (seed 000, the default): an on-prem box capturing with proxy-ARP and a cloud \
        box with provider-secondary-ip (behind 1:1 NAT) share one subnet through the embedded shared \
        claim list; ping and a TCP transfer each way with the clamped MSS (1380) shown; the cloud box's \
        public address moves.\n\n\
        --scenario two-site (seed 003): roz and wro run the shipped two-site-roz.toml and \
        two-site-wro.toml (only the peers' keys filled in); roz is static behind its ISP router, wro \
        takes its WAN address by DHCP behind NAT, both find each other by DNS name; VMs on each lan1 \
        talk through VXLAN inside WireGuard (MSS 1330, MTU 1370, bigger frames dropped and counted); \
        then wro's public address and DNS record change and the lab times the recovery, no apply.",
        after_long_help = "Examples:\n  routerctl lab --once\n  routerctl lab --keep\n  \
        routerctl lab --once --variant wrong-peer-key   # doctor names the handshake failure\n  \
        routerctl lab --scenario two-site --once\n  \
        routerctl lab --scenario two-site --once --variant dns-never-resolves   # doctor names the lookup\n\n\
        Exit codes with --once: 0 every doctor check passed and the traffic arrived intact, 1 otherwise."
    )]
    Lab(lab::LabArgs),
    /// Print a shell completion script (bash, zsh, fish, …)
    #[command(after_long_help = "Example:\n  routerctl completions bash > /etc/bash_completion.d/routerctl")]
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff)
    #[command(after_long_help = "Example:\n  routerctl man | man -l -")]
    Man,
}

#[derive(Subcommand)]
enum DoctorCommand {
    /// Same-subnet hybrid (seed 000): capture, delivery, peer, MSS, loops, WAN exposure, drops
    #[command(
        long_about = "Ask the box for its state and judge, per claim and per peer: capture \
        (proxy-ARP answering and not in conflict with a live host; provider-secondary-ip never held \
        or answered), delivery (the /32 goes to the named peer and its allowed IPs accept it; the \
        default route is not the tunnel), the peer (handshake within 180 s, warn after 135 s; \
        endpoint; bytes both ways), the MSS clamp and the MTU budget it came from, loop risk, WAN \
        exposure and drops since the last doctor run, with the top reasons named.",
        after_long_help = "Examples:\n  routerctl doctor hybrid --port unix:/tmp/onprem.sock\n  \
        routerctl doctor hybrid --port /dev/ttyUSB0 --json | jq '.checks[] | select(.result != \"pass\")'\n\n\
        JSON: {schema, port, device, side, result, summary, checks: [{id, subject, result: pass|warn|fail|skip, reason, hint}]}.\n\
        Exit codes: 0 nothing failed (warnings allowed), 1 a check failed or the box is unreachable."
    )]
    Hybrid {
        #[command(flatten)]
        conn: box_cmd::Conn,
        /// Print one JSON document
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Config(cmd) => config_cmd::run(cmd),
        Command::Keygen => keys::keygen(),
        Command::Pubkey => keys::pubkey(),
        Command::Status { conn, json, mark } => box_cmd::status(&conn, json, mark),
        Command::Plan { file, conn, json } => box_cmd::plan(&file, &conn, json),
        Command::Apply { file, conn, yes, json } => box_cmd::apply(&file, &conn, yes, json),
        Command::Claims(cmd) => box_cmd::claims(cmd),
        Command::Key(cmd) => box_cmd::key(cmd),
        Command::Logs { conn, r#for, json } => box_cmd::logs(&conn, r#for, json),
        Command::Reboot { conn, yes } => box_cmd::reboot(&conn, yes),
        Command::Storage(cmd) => box_cmd::storage(cmd),
        Command::Doctor(DoctorCommand::Hybrid { conn, json }) => doctor::run(&conn, json),
        Command::Lab(args) => lab::run(&args),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "routerctl", &mut std::io::stdout());
            Ok(0)
        }
        Command::Man => {
            let mut out = Vec::new();
            match clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut out) {
                Ok(()) => {
                    use std::io::Write;
                    let _ = std::io::stdout().write_all(&out);
                    Ok(0)
                }
                Err(e) => Err(Failure { code: EXIT_FAILED, message: format!("cannot render the man page: {e}") }),
            }
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("routerctl: {}", f.message.trim_end());
            ExitCode::from(f.code)
        }
    }
}
