//! `routerctl`: the operator's tool for routerd boxes.
//!
//! Files and keys: `config validate|show|example|import-wg`, `keygen`
//! (`genkey`), `genpsk`, `pubkey`. A box, over its serial line (`--port`,
//! before or after the command, or `ROUTERCTL_PORT`): `status`, `show`,
//! `plan`, `apply [--confirm MINUTES]`, `confirm`, `config get
//! [--generation N]`, `config history`, `rollback`, `claims
//! list|add|remove`, `key show|generate|import`, `key psk
//! show|import|generate`, `logs`, `capture`, `bgp summary|routes`, `reboot`, `reset`, `doctor hybrid`. And
//! `completions`, `man`, `lab`.
//!
//! Exit codes (PRODUCT.md, "Contracts"): 0 success, 1 a check or command
//! failed (e.g. the configuration has errors, wherever they are found: here
//! by `config validate`, `plan` and `apply`, or by the box), 2 bad usage or
//! input that cannot be read or parsed.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// Every `print!`/`println!` below and in the modules goes through `out`,
// which turns a closed stdout (`routerctl … | head`) into a quiet end
// instead of a panic; see out.rs for why this and not SIGPIPE. Defined
// before the modules so their `print!` is this one.
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::out::write_fmt(format_args!($($arg)*))
    };
}

macro_rules! println {
    () => {
        $crate::out::write_fmt(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::out::write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod bgp_cmd;
mod box_cmd;
mod capture_cmd;
mod client;
mod config_cmd;
mod conntrack_cmd;
mod doctor;
mod generations;
mod image;
mod import_wg;
mod keys;
mod lab;
mod out;
mod progress;
mod show;
mod upgrade_cmd;

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

/// `1 error`, `2 errors`: a count and its noun, for every message that counts.
pub fn plural(n: usize, word: &str) -> String {
    match n {
        1 => format!("1 {word}"),
        n => format!("{n} {word}s"),
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
        routerctl status --port /dev/ttyUSB0 --json\n  \
        ROUTERCTL_PORT=unix:/tmp/onprem.sock routerctl show\n\n\
        Exit codes: 0 success, 1 a check failed (e.g. errors in the configuration, found here or by the \
        box), 2 bad usage or a file that cannot be read or parsed."
)]
struct Cli {
    // How to reach a box (global: before or after the command, or ROUTERCTL_PORT).
    #[command(flatten)]
    conn: box_cmd::Conn,
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
        visible_alias = "genkey",
        long_about = "Print a new random WireGuard private key in base64, exactly like `wg genkey`.\n\n\
            Normally the box generates its own key and never sends it out (`private_key = \"device:wg0\"` \
            in the configuration); use keygen for test peers or for keys you import on purpose.",
        after_long_help = "Example:\n  routerctl keygen | tee peer.key | routerctl pubkey > peer.pub"
    )]
    Keygen,
    /// Print a new random preshared key (like `wg genpsk`)
    #[command(
        long_about = "Print a new random 32-byte WireGuard preshared key in base64, exactly like `wg genpsk`, \
            from the operating system's random source.\n\n\
            A box can make its own (`preshared_key = \"device:NAME\"`, then `routerctl key psk show NAME`); use \
            genpsk for a key you give both sides yourself (`routerctl key psk import NAME`, wg-quick's \
            PresharedKey).",
        after_long_help = "Example:\n  routerctl genpsk > pair.psk && routerctl key psk import cloud-psk --from-file pair.psk --yes --port /dev/ttyUSB0"
    )]
    Genpsk,
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
        /// Print one JSON document {schema, port, status}
        #[arg(long)]
        json: bool,
        /// Remember the drop counters now, so the next status shows drops since
        #[arg(long)]
        mark: bool,
    },
    /// Show the box's WireGuard interface and peers like `wg show` (or `show dump`)
    #[command(
        long_about = "Show the box's WireGuard interface and its peers in the layout of `wg show`: \
            public key, listening port, then per peer (most recent handshake first) its name, endpoint, \
            allowed IPs, latest handshake, transfer and persistent keepalive. The private key never \
            leaves the box: it is shown as (hidden).\n\n\
            `show dump` prints the same as `wg show dump`, tab-separated for scripts: the interface \
            (private key (hidden), public key, listening port, fwmark off), then one line per peer \
            (public key, preshared key (hidden) or (none), endpoint, allowed IPs, latest handshake as \
            unix time (0: never), bytes received, bytes sent, persistent keepalive or off).",
        after_long_help = "Examples:\n  routerctl show --port /dev/ttyUSB0\n  \
            routerctl --port unix:/tmp/onprem.sock show dump | cut -f1,5\n  \
            routerctl show --port /dev/ttyUSB0 --json | jq '.peers[] | {name, last_handshake_ms_ago}'\n\n\
            JSON: {schema, port, interface, peers} with the peers exactly as `routerctl status --json` has them.\n\
            Exit codes: 0 shown, 1 the box is unreachable or runs no WireGuard interface."
    )]
    Show {
        /// `dump`: tab-separated, like `wg show dump`
        #[arg(value_enum)]
        view: Option<show::View>,
        /// Print one JSON document {schema, port, interface, peers}
        #[arg(long)]
        json: bool,
    },
    /// Show what applying a file would change on a box (changes nothing)
    #[command(
        long_about = "Validate the file here, then send it to the box as a plan: the box validates it, binds it \
        to its NICs, builds it beside the running configuration and reports what would change (by claim \
        address, peer and port name), which keys it would generate and every warning. Nothing changes.",
        after_long_help = "Example:\n  routerctl plan onprem.toml --port unix:/tmp/onprem.sock\n\n\
        Exit codes (as `config validate`): 0 the box would apply it, 1 it would not (the configuration has \
        errors, found here or by the box; the box is unreachable), 2 the file cannot be read or parsed."
    )]
    Plan {
        /// The TOML file, or `-` for stdin
        file: PathBuf,
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
        routerctl apply onprem.toml --port /dev/ttyUSB0\n  \
        routerctl apply risky.toml --confirm 5 --port /dev/ttyUSB0   # then, if you can still reach it: routerctl confirm\n\n\
        With --confirm MINUTES (1 to 60) the apply is on trial (VyOS's commit-confirm): unless `routerctl \
        confirm` reaches the box in time, it goes back to the last confirmed generation by itself, and \
        a box restarted on trial comes back on that one too. Another apply on trial is part of the \
        trial: the target stays the last confirmed generation; --confirm again restarts the timer.\n\n\
        Exit codes (as `config validate`): 0 applied, 1 not applied (the configuration has errors, found \
        here or by the box; declined; unreachable), 2 the file cannot be read or parsed, or no --yes \
        without a terminal."
    )]
    Apply {
        /// The TOML file, or `-` for stdin
        file: PathBuf,
        /// Apply without asking
        #[arg(long, short)]
        yes: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
        /// On trial: revert by itself unless `routerctl confirm` comes within MINUTES (1-60)
        #[arg(long, value_name = "MINUTES", value_parser = clap::value_parser!(u32).range(1..=60))]
        confirm: Option<u32>,
        /// --confirm in seconds (5-3600), for tests
        #[arg(long, value_name = "SECONDS", hide = true, conflicts_with = "confirm", value_parser = clap::value_parser!(u32).range(5..=3600))]
        confirm_seconds: Option<u32>,
    },
    /// Keep what `apply --confirm` put on trial (else the box reverts by itself)
    #[command(
        after_long_help = "Example:\n  routerctl apply new.toml --confirm 5 --port /dev/ttyUSB0 && routerctl confirm --port /dev/ttyUSB0\n\n\
        Exit codes: 0 confirmed, 1 nothing was waiting for confirmation (or the box is unreachable)."
    )]
    Confirm {
        /// Print JSON {schema, confirmed, generation}
        #[arg(long)]
        json: bool,
    },
    /// Apply an earlier generation again (default: the one before the running one)
    #[command(
        long_about = "Apply a configuration the box kept (`routerctl config history` lists them) again, through \
        the same atomic path as an apply: the runtime state (claims in conflict, ARP cache, counters) is \
        carried across and the keys stay as they are. It shows the plan first (what changes, like `plan`) \
        and becomes a new generation (\"rollback to N\").",
        after_long_help = "Examples:\n  routerctl rollback --port /dev/ttyUSB0            # to the previous generation\n  \
        routerctl rollback 12 --yes --port unix:/tmp/onprem.sock\n\n\
        Exit codes: 0 rolled back, 1 not (a generation the box no longer keeps — the kept ones are named; a \
        configuration this firmware refuses; declined; unreachable), 2 no --yes without a terminal."
    )]
    Rollback {
        /// The generation to go back to (default: the one before the running one)
        generation: Option<u64>,
        /// Roll back without asking
        #[arg(long, short)]
        yes: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// List, add and remove claims on a running box
    #[command(subcommand)]
    Claims(box_cmd::ClaimsCommand),
    /// Tracked flows of SNAT and the firewall (`conntrack list`)
    #[command(subcommand)]
    Conntrack(conntrack_cmd::ConntrackCommand),
    /// BGP EVPN: sessions and VNIs (`bgp summary`), routes (`bgp routes`), like FRR's show bgp
    #[command(
        subcommand,
        long_about = "The box's BGP EVPN service ([bgp] and segments with control = \"evpn\"): `bgp summary` \
            shows the sessions and each VNI's learned VTEPs, like FRR's `show bgp summary`; `bgp routes` lists the \
            type-2 and type-3 routes, received and the box's own, like `show bgp l2vpn evpn route`.",
        after_long_help = "Examples:\n  routerctl bgp summary --port /dev/ttyUSB0\n  \
            routerctl bgp routes --vni 100 --port /dev/ttyUSB0\n\n\
            A box without [bgp] answers: it runs no BGP (exit code 1); see CONFIG.md for the section."
    )]
    Bgp(bgp_cmd::BgpCommand),
    /// The box's WireGuard keys: private keys (only public halves leave the box) and preshared keys (`key psk`)
    #[command(subcommand)]
    Key(box_cmd::KeyCommand),
    /// Follow the box's console log through a provisioning session
    Logs {
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
        /// Reboot without asking
        #[arg(long)]
        yes: bool,
    },
    /// Factory reset: the box forgets its configuration, history and keys, and erases its store
    #[command(
        long_about = "Factory reset. The box stops forwarding and forgets its configuration, every kept \
        generation and every key slot; its store is erased (both record slots zeroed on the disk, so no \
        key stays there). The next apply makes new keys: the other sites must be given the new public \
        key. --device must name the box (its configured device name; \"\" for an unconfigured one): \
        routerctl asks the box first and sends nothing to a box with another name.\n\n\
        A box you cannot reach this way: boot it once with `routerd.reset=factory` on its kernel command \
        line (the store is erased before anything is restored), then remove the option.",
        after_long_help = "Examples:\n  routerctl reset --yes --device edge --port /dev/ttyUSB0\n  \
        routerctl reset --yes --device \"\" --port unix:/tmp/box.sock   # an unconfigured box\n\n\
        Exit codes: 0 reset, 1 not (another box, refused, unreachable), 2 no --yes."
    )]
    Reset {
        /// Required: everything on the box is lost
        #[arg(long)]
        yes: bool,
        /// The box's device name, as `routerctl status` shows it ("" when unconfigured)
        #[arg(long, value_name = "NAME")]
        device: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Check a box end to end and say what is wrong (pass/warn/fail per claim and peer)
    #[command(
        subcommand_required = false,
        after_long_help = "`routerctl doctor` runs every area the box has (today all of them are in `hybrid`: \
        claims, peers, MSS, loops, WAN exposure, drops, storage, DHCP, DNS, segments).\n\nExamples:\n  \
        routerctl doctor --port unix:/tmp/onprem.sock\n  routerctl doctor --json | jq '.checks[] | select(.status != \"pass\")'"
    )]
    Doctor(DoctorArgs),
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
        Exit codes: 0 every doctor check passed and the traffic arrived intact, 1 otherwise (with or without --once)."
    )]
    Lab(lab::LabArgs),
    /// Build bootable images of the box (raw, qcow2 for Proxmox, live ISO)
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Write an image to a USB stick or disk, then verify it
    Flash(image::flash::FlashArgs),
    /// Install a new firmware in the box's other slot, boot it on trial, wait for it to confirm
    #[command(long_about = upgrade_cmd::LONG_ABOUT, after_long_help = upgrade_cmd::AFTER_HELP)]
    Upgrade(upgrade_cmd::UpgradeArgs),
    /// Print a shell completion script (bash, zsh, fish, …)
    #[command(after_long_help = "Example:\n  routerctl completions bash > /etc/bash_completion.d/routerctl")]
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff)
    #[command(after_long_help = "Example:\n  routerctl man | man -l -")]
    Man,
    /// Capture frames on the box into a pcap file for Wireshark/tcpdump (or stdout)
    #[command(long_about = capture_cmd::LONG_ABOUT, after_long_help = capture_cmd::AFTER_HELP)]
    Capture(capture_cmd::CaptureArgs),
}

#[derive(clap::Args)]
struct DoctorArgs {
    #[command(subcommand)]
    area: Option<DoctorCommand>,
    /// Print one JSON document (see `routerctl doctor hybrid --help` for its shape)
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum DoctorCommand {
    /// Same-subnet hybrid and two sites, one overlay: capture, delivery, peer, MSS, loops, WAN exposure, segments, drops
    #[command(
        long_about = "Ask the box for its state and judge, per claim and per peer: capture \
        (proxy-ARP answering and not in conflict with a live host; provider-secondary-ip never held \
        or answered), delivery (the /32 goes to the named peer and its allowed IPs accept it; the \
        default route is not the tunnel), the peer (handshake within 180 s, warn after 135 s; \
        endpoint; bytes both ways), the MSS clamp and the MTU budget it came from, loop risk, WAN \
        exposure and drops since the last doctor run, with the top reasons named. On a two-site box \
        (two sites, one overlay) also each VXLAN segment: bridge, remote VTEPs, MTU budget, FDB, drops.",
        after_long_help = "Examples:\n  routerctl doctor hybrid --port unix:/tmp/onprem.sock\n  \
        routerctl doctor hybrid --port /dev/ttyUSB0 --json | jq '.checks[] | select(.result != \"pass\")'\n\n\
        JSON (schema 2): {schema, port, device, side, result, summary, checks: [{id, subject, result: pass|warn|fail|skip, reason, hint, \
        area, status, detail, remedy}]} — the last four are the Go routerd's names (area = the id before its first dot, status = result, \
        detail = reason, remedy = hint), so its scripts work unchanged; \
        when the box cannot be asked: {schema, port, result: \"fail\", error: {kind, message}, summary, checks: []}.\n\
        Exit codes: 0 nothing failed (warnings allowed), 1 a check failed or the box is unreachable, 2 bad usage."
    )]
    Hybrid {
        /// Print one JSON document
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Every reading command has `--json`; clap accepted it as that flag.
    let json = std::env::args_os().any(|a| a == "--json");
    let conn = &cli.conn;
    let result = match cli.command {
        Command::Config(cmd) => config_cmd::run(cmd, conn),
        Command::Keygen => keys::keygen(),
        Command::Genpsk => keys::genpsk(),
        Command::Pubkey => keys::pubkey(),
        Command::Status { json, mark } => box_cmd::status(conn, json, mark),
        Command::Show { view, json } => show::run(conn, view.unwrap_or_default(), json),
        Command::Plan { file, json } => box_cmd::plan(&file, conn, json),
        Command::Apply { file, yes, json, confirm, confirm_seconds } => {
            let window_ms = confirm.map(|m| m * 60_000).or(confirm_seconds.map(|s| s * 1000));
            box_cmd::apply(&file, conn, yes, json, window_ms)
        }
        Command::Confirm { json } => generations::confirm(conn, json),
        Command::Rollback { generation, yes, json } => generations::rollback(conn, generation, yes, json),
        Command::Reset { yes, device, json } => generations::reset(conn, &device, yes, json),
        Command::Claims(cmd) => box_cmd::claims(cmd, conn),
        Command::Conntrack(cmd) => conntrack_cmd::run(cmd, conn),
        Command::Bgp(cmd) => bgp_cmd::run(cmd, conn),
        Command::Key(cmd) => box_cmd::key(cmd, conn),
        Command::Logs { r#for, json } => box_cmd::logs(conn, r#for, json),
        Command::Reboot { yes } => box_cmd::reboot(conn, yes),
        Command::Storage(cmd) => box_cmd::storage(cmd, conn),
        Command::Doctor(DoctorArgs { area: None, json }) => doctor::run(conn, json),
        Command::Doctor(DoctorArgs { area: Some(DoctorCommand::Hybrid { json: own }), json }) => doctor::run(conn, json || own),
        Command::Lab(args) => lab::run(&args),
        Command::Image(cmd) => image::run(cmd),
        Command::Flash(args) => image::flash::run(&args),
        Command::Upgrade(args) => upgrade_cmd::run(&args, conn),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "routerctl", &mut script);
            out::write_bytes(&script);
            Ok(0)
        }
        Command::Capture(args) => capture_cmd::run(args, conn),
        Command::Man => {
            let mut page = Vec::new();
            match clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut page) {
                Ok(()) => {
                    out::write_bytes(&page);
                    Ok(0)
                }
                Err(e) => Err(Failure { code: EXIT_FAILED, message: format!("cannot render the man page: {e}") }),
            }
        }
    };
    out::flush();
    match result {
        // Output that could not be written (not a reader that left): the
        // command did not do its job.
        Ok(0) if out::failed() => ExitCode::from(EXIT_FAILED),
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("routerctl: {}", f.message.trim_end());
            // `--json` asked for a document: a failure is one too (a script
            // reading stdout gets JSON, not nothing), unless the command
            // already printed its own.
            if json && !out::wrote() {
                let kind = if f.code == EXIT_USAGE { "usage" } else { "failed" };
                out::document(&serde_json::json!({
                    "schema": 1,
                    "port": conn.port(),
                    "result": "fail",
                    "error": { "kind": kind, "message": f.message.trim_end() },
                }));
            }
            ExitCode::from(f.code)
        }
    }
}
