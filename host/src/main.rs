//! `routerd-host`: the routerd dataplane and WireGuard as a Linux userspace
//! router, for places the firmware image cannot boot (the cloud VM of the
//! same-subnet hybrid).
//!
//! LAN ports are TAP devices, the WAN port is a UDP socket on the WireGuard
//! listen port (see `wan.rs`), the configuration is the same TOML the image
//! and `routerctl` use. Exit codes: 0 clean stop, 1 the system refused
//! something, 2 bad usage or invalid configuration.

use routerd_host::{control, key, logger, router, setup, state};

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "routerd-host", version, about = "routerd as a Linux userspace router (TAP ports, WireGuard on a UDP socket)")]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// The box configuration (TOML, as `routerctl config validate` checks it).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Keep the WireGuard private key in FILE (created 0600 with a new key if
    /// missing). Without it (and without --state-dir) a new key is generated
    /// on every start. With --state-dir an existing FILE (and NAME.psk
    /// beside it) is imported into the store once, for a slot the store
    /// has no key for, and is never written or created.
    #[arg(long, value_name = "PATH")]
    key_file: Option<PathBuf>,

    /// Keep the box's state in DIR/state (DIR made 0700 if missing): the
    /// image's power-loss-safe store holding its record — configuration,
    /// keys, generation, starts, clock floor — saved after every change and
    /// every 15 min. At start the saved configuration runs (--config then
    /// only opens the ports, and is applied when nothing was saved). A
    /// damaged or foreign state file is never overwritten: routerd-host
    /// exits 1 and says to move it away.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// Serve the provisioning protocol on a unix socket (mode 0600), so
    /// `routerctl --port unix:PATH status|plan|apply|claims|key|logs|doctor
    /// hybrid` work as on a box's serial line. A configuration applied there
    /// runs until routerd-host stops (the --config file is not rewritten); a
    /// key made there is written to --key-file.
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,

    /// TAP device name of a LAN port: `--port lan0=tap-lan0` (repeatable).
    /// Default: the tap prefix followed by the port name.
    #[arg(long = "port", value_name = "NAME=IFNAME", value_parser = parse_port_map)]
    ports: Vec<(String, String)>,

    /// Prefix of TAP device names (`--tap-prefix rd-` makes `rd-lan0`).
    #[arg(long, value_name = "PREFIX", default_value = "")]
    tap_prefix: String,

    /// Address the WireGuard socket binds to. Default `::` (IPv4 and IPv6),
    /// or `0.0.0.0` when IPv6 is disabled.
    #[arg(long, value_name = "IP")]
    wan_bind: Option<IpAddr>,

    /// A TUN device for IPv4 on the WAN port that is not WireGuard: claims
    /// delivered onto the WAN subnet go out through it, and the kernel can
    /// route provider-secondary-ip captured traffic into it.
    #[arg(long, value_name = "IFNAME")]
    wan_tun: Option<String>,

    /// Seconds between Linux checks (captured addresses, ip_forward, firewall).
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86400))]
    check_every: u64,

    /// Re-resolve a peer endpoint given by DNS name once no handshake has
    /// succeeded for this many seconds (a site behind a dynamic IP moved);
    /// a name that never resolved is retried every 30 s (or this, if less).
    #[arg(long, value_name = "SECONDS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86400))]
    reresolve_after: u64,

    /// Only report captured addresses the OS holds and missing delivery
    /// routes; do not remove or install anything.
    #[arg(long)]
    report_only: bool,

    /// More log output (-v debug).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the public key of a key file (created if missing), like `wg pubkey`.
    Pubkey {
        #[arg(long, value_name = "PATH")]
        key_file: PathBuf,
    },
}

fn parse_port_map(s: &str) -> Result<(String, String), String> {
    let (name, ifname) = s.split_once('=').ok_or_else(|| format!("{s:?}: write NAME=IFNAME, e.g. lan0=tap-lan0"))?;
    if name.is_empty() || ifname.is_empty() {
        return Err(format!("{s:?}: write NAME=IFNAME, e.g. lan0=tap-lan0"));
    }
    Ok((name.to_string(), ifname.to_string()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logger::init(if cli.verbose > 0 { log::LevelFilter::Debug } else { log::LevelFilter::Info });
    match &cli.command {
        Some(Command::Pubkey { key_file }) => match key::load(key_file, true) {
            Ok((k, _)) => {
                println!("{}", k.public_key().to_base64().as_str());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("routerd-host: {}", e.message);
                ExitCode::from(e.code as u8)
            }
        },
        None => match run(&cli) {
            Ok(()) => ExitCode::SUCCESS,
            Err((code, message)) => {
                eprintln!("routerd-host: {message}");
                ExitCode::from(code as u8)
            }
        },
    }
}

fn run(cli: &Cli) -> Result<(), (i32, String)> {
    let Some(path) = &cli.config else {
        return Err((2, "--config FILE is required (or: routerd-host pubkey --key-file PATH)".into()));
    };
    let cfg = setup::load(path).map_err(|e| (e.code, e.message))?;
    let key = match &cli.key_file {
        // The store keeps the key: adopt a file that exists, make none.
        Some(p) if cli.state_dir.is_some() => key::load_existing(p).map_err(|e| (e.code, e.message))?,
        Some(p) => {
            let (k, created) = key::load(p, true).map_err(|e| (e.code, e.message))?;
            if created {
                log::info!("wg: new private key written to {}", p.display());
            }
            Some(k)
        }
        // The node makes one on the first apply (RAM only).
        None => None,
    };
    let opts = setup::PortOptions {
        map: cli.ports.iter().cloned().collect::<HashMap<_, _>>(),
        tap_prefix: cli.tap_prefix.clone(),
        wan_bind: cli.wan_bind,
        wan_tun: cli.wan_tun.clone(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(4)
        .build()
        .map_err(|e| (1, format!("tokio runtime: {e}")))?;
    rt.block_on(async {
        // The socket first: a second routerd-host for the same box stops
        // here, with the reason, before it touches any port.
        let control = match &cli.control {
            Some(p) => Some(control::Control::bind(p).map_err(|e| (1, format!("--control {}: {e}", p.display())))?),
            None => None,
        };
        // The state next: a state file it must not touch stops it here too.
        let state = match &cli.state_dir {
            Some(dir) => Some(state::State::open(dir).map_err(|m| (1, m))?),
            None => {
                log::warn!("state: no --state-dir: configuration and keys applied here will not survive a restart");
                None
            }
        };
        // AsyncFd registration needs the runtime, so the ports open in here.
        let (opened, wan) = setup::open(&cfg, &opts).map_err(|e| (e.code, e.message))?;
        for p in &opened.ports {
            match &p.tap {
                Some(t) => {
                    log::info!("port {}: TAP {}, our MAC {}", p.name, t.name(), routerd_dataplane::MacText(routerd_dataplane::Mac(p.mac)))
                }
                None => log::info!("port {}: WAN (UDP socket), MAC {}", p.name, routerd_dataplane::MacText(routerd_dataplane::Mac(p.mac))),
            }
        }
        if let Ok(a) = wan.local_addr() {
            log::info!("wan: WireGuard socket on {a}{}", if wan.dual_stack() { " (IPv4 and IPv6)" } else { "" });
        }
        let loop_opts = router::LoopOptions {
            linux_every: Duration::from_secs(cli.check_every),
            enforce: !cli.report_only,
            key_file: cli.key_file.clone(),
            reresolve_after: Duration::from_secs(cli.reresolve_after),
        };
        let name = cfg.device.name.as_str().to_string();
        let mut r = router::Router::new(opened, wan, cfg, key, loop_opts, state).map_err(|e| (2, format!("{}: {e}", path.display())))?;
        match r.public_key() {
            Some(public) => {
                log::info!("wg: public key {}", public.to_base64().as_str());
                println!("public key {}", public.to_base64().as_str());
            }
            None => log::info!("wg: no tunnel configured"),
        }
        let calls = match control {
            Some(c) => {
                log::info!("control: provisioning on unix:{} (routerctl --port unix:{})", c.path().display(), c.path().display());
                let (tx, rx) = tokio::sync::mpsc::channel(4);
                tokio::spawn(c.serve(tx, r.device_name()));
                Some(rx)
            }
            None => None,
        };
        log::info!("{name} running; SIGUSR1 prints status, SIGINT/SIGTERM stop");
        r.run(calls).await.map_err(|e| (1, format!("signals: {e}")))?;
        log::info!("stopping");
        eprint!("{}", r.status_text());
        Ok(())
    })
}
