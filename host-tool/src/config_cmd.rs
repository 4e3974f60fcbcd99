//! `routerctl config …`: validate, show and example, on files (no box needed).
//!
//! `validate` and `show` run the same `config_schema::validate_for()` the box
//! runs before applying, as the box named in the file (`device.side`) sees it
//! and for the platform that will run it (`--for image|host`, the image by
//! default): what they accept, that box runs.

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};

use clap::{Subcommand, ValueEnum};
use config_schema::budget::{self, Carrier};
use config_schema::human::{self, MAX_TOML_LEN};
use config_schema::{validate_for, ClaimAction, Config, MssClamp, Platform, PortAddress, PortRole, Problem, Report, Severity};
use serde_json::{json, Value};

use crate::{plural, Failure, EXIT_FAILED, EXIT_USAGE};

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Turn a wg-quick .conf file into a routerd configuration (its [[wireguard]] and [[peers]])
    #[command(
        long_about = "Read a wg-quick configuration (the file `wg-quick up` uses, comments, BOM and all) and \
            print a whole routerd configuration on stdout: its [[wireguard]] and [[peers]] sections from the \
            file, and the [device] and [[ports]] a wg-quick file does not describe, with valid placeholders \
            marked FILL IN (the box's name and side; wan0 by DHCP). Fill those in, then `routerctl config \
            validate` it. Peers are named from `# Name = …` comments (in or above [Peer]). The private key is \
            not copied: the box makes its own (`private_key = \"device:NAME\"`). Anything routerd cannot \
            express (IPv6, DNS, PostUp, …) is listed on stderr.",
        after_long_help = "Examples:\n  routerctl config import-wg /etc/wireguard/wg0.conf > onprem.toml   # then edit the FILL IN lines\n  \
            routerctl config import-wg wg0.conf --sections >> onprem.toml   # a file with its [device] and ports\n  \
            routerctl config import-wg wg0.conf --json | jq '.fill_in'\n\n\
            JSON: {schema, file, tunnel, config, fill_in: [{path, what}], notes, private_key_copied: false}.\n\
            Exit codes: 0 converted, 2 the file cannot be read or is not a wg-quick configuration (the line is named)."
    )]
    ImportWg {
        /// The wg-quick file, or `-` for stdin
        file: PathBuf,
        /// The tunnel's name (default: the file name without .conf)
        #[arg(long)]
        name: Option<String>,
        /// Print only the [[wireguard]] and [[peers]] sections, to append to a file that has [device] and ports
        #[arg(long, conflicts_with = "json")]
        sections: bool,
        /// Print one JSON document: {schema, file, tunnel, config, fill_in, notes}
        #[arg(long)]
        json: bool,
    },
    /// Print the configuration the box runs now (what `apply` last made
    /// it run), or say that it runs none; or a kept generation's
    #[command(after_long_help = "Examples:\n  routerctl config get --port unix:/tmp/onprem.sock > running.toml\n  \
        routerctl config get --generation 12 --port /dev/ttyUSB0 > gen12.toml   # one `config history` lists\n\n\
        Exit codes: 0 printed, 1 the box runs none, or does not keep that generation (the kept ones are named).")]
    Get {
        /// A kept generation instead of the running configuration
        #[arg(long, value_name = "N")]
        generation: Option<u64>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// List the configurations the box keeps: generation, when, what made it, size, hash
    #[command(
        long_about = "List the last configurations the box applied (up to 8, as its store's space allows; the \
        oldest go first): the generation number, when it was applied (the box's clock, UTC), what made it \
        (apply, claim add/remove ADDR, rollback to N, revert of N, …), the size of its wire form and a short \
        hash (CRC-32C of it, 8 hex digits), which one runs (*), and which is waiting for `routerctl confirm`.",
        after_long_help = "Examples:\n  routerctl config history --port /dev/ttyUSB0\n  \
        routerctl config history --port unix:/tmp/onprem.sock --json | jq '.generations[] | select(.running)'\n\n\
        JSON: {schema, port, running, pending_confirm, generations: [{generation, applied_unix_ms, applied_utc, what, \
        origin, size, hash, confirmed, running, pending}]}."
    )]
    History {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Check a configuration file and list every problem
    #[command(
        long_about = "Check a configuration file the way the box will before applying it, and list \
            every problem (not just the first) with its path, value and a hint.\n\n\
            The file is checked as the box it describes: `device.side` decides which claims this \
            box captures and which it delivers locally. Warnings do not make a file invalid.\n\n\
            It is checked for the platform that will run it (--for): the image (the default) or \
            routerd-host. Each refuses what it cannot run yet, naming the field: the image's \
            underlay is IPv4, so IPv6 endpoints are refused for it (routerd-host runs them), and it \
            needs [dns] servers or a DHCP WAN to resolve endpoints given by name. Neither runs a \
            second [[wireguard]], or a LAN port without an address that no segment bridges.",
        after_long_help = "Examples:\n  \
            routerctl config validate onprem.toml\n  \
            routerctl config validate cloud.toml --for host\n  \
            routerctl config validate - < onprem.toml\n  \
            routerctl config validate onprem.toml --json | jq '.problems[] | .path'\n\n\
            Exit codes: 0 valid (warnings allowed), 1 errors found, \
            2 the file cannot be read or is not a configuration (TOML error with line and field)."
    )]
    Validate {
        /// The TOML file, or `-` for stdin
        file: PathBuf,
        /// The platform that will run it
        #[arg(long = "for", value_enum, default_value_t = ForPlatform::Image)]
        platform: ForPlatform,
        /// Print one JSON document: {valid, platform, errors, warnings, problems: [{severity, code, path, value, message, hint}]}
        #[arg(long)]
        json: bool,
    },
    /// Show the normalized configuration, what the box does with each claim, and the MTU/MSS budget
    #[command(
        long_about = "Print the configuration with every default filled in, and what this box does \
            with each claim of the shared claim list: capture it (proxy-arp on a LAN port, or \
            packets handed over by the provider) and deliver it to a peer over a tunnel, or \
            deliver it locally. Also prints the MTU/MSS budget: underlay − 80 (WireGuard) = tunnel, \
            tunnel − 50 (VXLAN) = segment, MTU − 40 = the auto MSS clamp.\n\n\
            The human output is valid TOML: the explanation is in comments above the normalized file.",
        after_long_help = "Examples:\n  \
            routerctl config show onprem.toml\n  \
            routerctl config show onprem.toml --json | jq '.claims'\n\n\
            Exit codes: 0 shown, 1 shown but the configuration has errors (see `config validate`), \
            2 the file cannot be read or parsed."
    )]
    Show {
        /// The TOML file, or `-` for stdin
        file: PathBuf,
        /// The platform that will run it (for the validation summary)
        #[arg(long = "for", value_enum, default_value_t = ForPlatform::Image)]
        platform: ForPlatform,
        /// Print one JSON document: {config, claims, budget, validation}
        #[arg(long)]
        json: bool,
    },
    /// Print a complete, commented example configuration
    #[command(
        long_about = "Print one of the shipped example configurations, commented field by field. \
            The pair for a same-subnet hybrid (an on-prem LAN and an Azure VNet sharing one subnet) \
            shares one claim list; the pair for two sites, one overlay (WireGuard underlay, VXLAN overlay, \
            MTU 1370) shows peers by DNS name.",
        after_long_help = "Examples:\n  \
            routerctl config example hybrid-onprem > onprem.toml\n  \
            routerctl config example cloud --json"
    )]
    Example {
        /// Which example
        #[arg(value_enum)]
        which: Example,
        /// Print the example's configuration as JSON instead of commented TOML
        #[arg(long)]
        json: bool,
    },
}

/// `--for`: the platform a file is checked for.
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum ForPlatform {
    /// The bare-metal image (routerd)
    Image,
    /// The Linux host build (routerd-host)
    #[value(alias = "routerd-host")]
    Host,
}

impl From<ForPlatform> for Platform {
    fn from(p: ForPlatform) -> Platform {
        match p {
            ForPlatform::Image => Platform::Image,
            ForPlatform::Host => Platform::Host,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Example {
    /// Same-subnet hybrid, the on-prem box (proxy-arp capture, dials the cloud)
    #[value(alias = "onprem")]
    HybridOnprem,
    /// Same-subnet hybrid, the Azure box (provider-secondary-ip capture)
    #[value(alias = "cloud")]
    HybridCloud,
    /// Two sites: the site with the static IP
    #[value(alias = "two-site", alias = "roz")]
    TwoSiteRoz,
    /// Two sites: the site with the dynamic IP
    #[value(alias = "wro")]
    TwoSiteWro,
}

impl Example {
    fn text(self) -> &'static str {
        match self {
            Example::HybridOnprem => {
                include_str!("../../config-schema/examples/hybrid-onprem.toml")
            }
            Example::HybridCloud => include_str!("../../config-schema/examples/hybrid-cloud.toml"),
            Example::TwoSiteRoz => include_str!("../../config-schema/examples/two-site-roz.toml"),
            Example::TwoSiteWro => include_str!("../../config-schema/examples/two-site-wro.toml"),
        }
    }
}

pub fn run(cmd: ConfigCommand, conn: &crate::box_cmd::Conn) -> Result<u8, Failure> {
    match cmd {
        ConfigCommand::Get { generation: Some(n), json } => crate::generations::config_get_generation(conn, n, json),
        ConfigCommand::Get { generation: None, json } => crate::box_cmd::config_get(conn, json),
        ConfigCommand::History { json } => crate::generations::history(conn, json),
        ConfigCommand::ImportWg { file, name, sections, json } => import_wg_cmd(&file, name.as_deref(), sections, json),
        ConfigCommand::Validate { file, platform, json } => validate_cmd(&file, platform.into(), json),
        ConfigCommand::Show { file, platform, json } => show_cmd(&file, platform.into(), json),
        ConfigCommand::Example { which, json } => {
            if json {
                let config =
                    human::from_toml(which.text()).map_err(|e| Failure { code: EXIT_FAILED, message: format!("built-in example: {e}") })?;
                print_json(&json!({ "config": config }))
            } else {
                print!("{}", which.text());
                Ok(0)
            }
        }
    }
}

/// Why a file could not be turned into a `Config` (always exit 2).
struct LoadError {
    kind: &'static str,
    line: Option<usize>,
    column: Option<usize>,
    message: String,
    report: String,
}

fn display_name(file: &Path) -> String {
    if file == Path::new("-") {
        "<stdin>".to_string()
    } else {
        file.display().to_string()
    }
}

fn read_text(file: &Path) -> Result<String, LoadError> {
    let io = |what: String| LoadError { kind: "io", line: None, column: None, report: what.clone(), message: what };
    let mut bytes = Vec::new();
    // Read one byte past the limit so an oversized file is recognised
    // without reading all of it.
    let limit = MAX_TOML_LEN as u64 + 1;
    let result = if file == Path::new("-") {
        std::io::stdin().take(limit).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(limit).read_to_end(&mut bytes))
    };
    result.map_err(|e| io(format!("cannot read {}: {e}", display_name(file))))?;
    if bytes.len() > MAX_TOML_LEN {
        return Err(io(format!("{} is larger than {MAX_TOML_LEN} bytes; that is not a configuration file", display_name(file))));
    }
    String::from_utf8(bytes).map_err(|e| LoadError {
        kind: "parse",
        line: None,
        column: None,
        message: format!("the file is not UTF-8 text (invalid byte at offset {})", e.utf8_error().valid_up_to()),
        report: format!("the file is not UTF-8 text (invalid byte at offset {})", e.utf8_error().valid_up_to()),
    })
}

fn load(file: &Path) -> Result<Config, LoadError> {
    let text = read_text(file)?;
    human::from_toml(&text).map_err(|e| LoadError {
        kind: "parse",
        line: e.line,
        column: e.column,
        message: e.message.clone(),
        report: e.report.clone(),
    })
}

/// Reports a load error: JSON on stdout when asked, text on stderr; exit 2.
fn load_failure(file: &Path, e: LoadError, as_json: bool) -> Result<u8, Failure> {
    if as_json {
        print_json(&json!({
            "file": display_name(file),
            "valid": false,
            "error": { "kind": e.kind, "line": e.line, "column": e.column, "message": e.message },
        }))?;
        return Ok(EXIT_USAGE);
    }
    let at = match (e.kind, e.line, e.column) {
        ("io", _, _) => String::new(), // the message already names the file
        (_, Some(l), Some(c)) => format!("{}:{l}:{c}: ", display_name(file)),
        _ => format!("{}: ", display_name(file)),
    };
    let mut message = format!("{at}{}", e.message);
    if e.kind == "parse" && e.report.contains('\n') {
        message = format!("{message}\n{}", e.report.trim_end());
    }
    Err(Failure { code: EXIT_USAGE, message })
}

fn print_json(value: &Value) -> Result<u8, Failure> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| Failure { code: EXIT_FAILED, message: format!("cannot format JSON: {e}") })?;
    println!("{text}");
    Ok(0)
}

fn problem_json(p: &Problem) -> Value {
    json!({
        "severity": p.severity.as_str(),
        "code": p.code.as_str(),
        "path": p.path.as_str(),
        "value": p.value.as_str(),
        "message": p.message.as_str(),
        "hint": p.hint.as_str(),
    })
}

fn validation_json(report: &Report, platform: Platform) -> Value {
    json!({
        "valid": report.is_valid(),
        "platform": platform.as_str(),
        "errors": report.errors,
        "warnings": report.warnings,
        "omitted": report.omitted,
        "problems": report.problems.iter().map(problem_json).collect::<Vec<_>>(),
    })
}

fn problem_text(p: &Problem) -> String {
    let mut s = format!("{}[{}] {}", p.severity.as_str(), p.code.as_str(), p);
    if !p.value.is_empty() && !p.message.contains(p.value.as_str()) {
        let _ = write!(s, "\n  value: {}", p.value);
    }
    let _ = write!(s, "\n  hint: {}", p.hint);
    s
}

fn validate_cmd(file: &Path, platform: Platform, as_json: bool) -> Result<u8, Failure> {
    let config = match load(file) {
        Ok(c) => c,
        Err(e) => return load_failure(file, e, as_json),
    };
    let report = validate_for(&config, platform);
    let code = if report.is_valid() { 0 } else { EXIT_FAILED };
    if as_json {
        let mut doc = validation_json(&report, platform);
        doc["file"] = json!(display_name(file));
        doc["device"] = json!({ "name": config.device.name.as_str(), "side": config.device.side.as_str() });
        doc["schema_hash"] = json!(format!("{:#018x}", config_schema::SCHEMA_HASH));
        print_json(&doc)?;
        return Ok(code);
    }
    let verdict = if report.is_valid() { "valid" } else { "INVALID" };
    println!(
        "{}: {verdict} (device {}, side {}, for {}): {}, {}",
        display_name(file),
        config.device.name,
        config.device.side,
        platform.subject(),
        plural(report.errors, "error"),
        plural(report.warnings, "warning"),
    );
    // Errors first: they are what stops an apply.
    let mut problems: Vec<&Problem> = report.problems.iter().collect();
    problems.sort_by_key(|p| std::cmp::Reverse(p.severity));
    for p in problems {
        println!("\n{}", problem_text(p));
    }
    if report.omitted > 0 {
        println!("\n… and {} more not shown; fix these first.", plural(report.omitted, "problem"));
    }
    Ok(code)
}

/// One claim as this box sees it.
struct ClaimView {
    json: Value,
    line: String,
}

fn mss_text(clamp: MssClamp, auto: Option<u16>) -> (Option<u16>, &'static str) {
    match (clamp, auto) {
        (MssClamp::Value(v), _) => (Some(v), "fixed"),
        (MssClamp::Auto, Some(a)) => (Some(a), "auto"),
        (MssClamp::Auto, None) => (None, "auto"),
    }
}

fn claim_views(config: &Config) -> Vec<ClaimView> {
    config
        .claims
        .iter()
        .map(|claim| {
            let tb = budget::claim_tunnel_budget(config, &claim.delivery.tunnel);
            let (mss, source) = mss_text(claim.mss_clamp, tb.map(|b| b.auto_mss));
            let mss_line = match mss {
                Some(v) => format!("MSS clamp {v} ({source})"),
                None => "MSS clamp auto (no tunnel to derive it from)".to_string(),
            };
            let mut json = json!({
                "address": claim.address.to_string(),
                "owner": claim.owner.as_str(),
                "mss_clamp": mss,
                "mss_clamp_source": source,
            });
            let line = match config.claim_action(claim) {
                ClaimAction::Capture { method, port, tunnel, peer } => {
                    let method_s = match method {
                        config_schema::CaptureMethod::ProxyArp => "proxy-arp",
                        config_schema::CaptureMethod::ProviderSecondaryIp => "provider-secondary-ip",
                    };
                    json["action"] = json!("capture");
                    json["capture"] = json!({ "method": method_s, "port": port.as_str() });
                    json["delivery"] = json!({ "tunnel": tunnel.as_str(), "peer": peer.as_str() });
                    json["gratuitous_arp"] = json!(claim.gratuitous_arp_count());
                    let how = match method {
                        config_schema::CaptureMethod::ProxyArp => {
                            format!("capture via proxy-arp on {port} ({} gratuitous ARPs)", claim.gratuitous_arp_count())
                        }
                        config_schema::CaptureMethod::ProviderSecondaryIp => {
                            format!("capture: provider delivers it on {port} (never held or answered locally)")
                        }
                    };
                    format!("{how} → deliver to peer {peer} over {tunnel}; {mss_line}")
                }
                ClaimAction::DeliverLocally { port } => {
                    json["action"] = json!("deliver-locally");
                    json["local_port"] = json!(port.map(|p| p.as_str()));
                    match port {
                        Some(p) => format!("deliver locally on {p} (the host lives on this side); {mss_line}"),
                        None => format!("deliver locally, but no port found (see validate); {mss_line}"),
                    }
                }
            };
            let line = format!("{:<18} owner {:<10} {line}", claim.address.to_string(), claim.owner.as_str());
            ClaimView { json, line }
        })
        .collect()
}

fn budget_views(config: &Config) -> (Value, Vec<String>) {
    let underlay = budget::underlay_mtu(config);
    let mut lines = vec![format!("underlay MTU {underlay} (smallest WAN port)")];
    let tunnels: Vec<Value> = config
        .wireguard
        .iter()
        .map(|t| {
            let b = budget::tunnel_budget(config, t);
            let fit = if b.fits() { "fits" } else { "DOES NOT FIT" };
            lines.push(format!(
                "tunnel {}: MTU {} {fit} {} − {} (WireGuard) = {}; auto MSS {} − 40 = {}",
                t.name,
                b.mtu,
                b.underlay_mtu,
                budget::WIREGUARD_OVERHEAD,
                b.max_mtu,
                b.effective_mtu,
                b.auto_mss
            ));
            json!({
                "name": t.name.as_str(), "mtu": b.mtu, "max_mtu": b.max_mtu,
                "effective_mtu": b.effective_mtu, "auto_mss": b.auto_mss, "fits": b.fits(),
            })
        })
        .collect();
    let segments: Vec<Value> = config
        .segments
        .iter()
        .map(|s| {
            let b = budget::segment_budget(config, s);
            let carrier = match b.carrier {
                Carrier::Tunnel(t) => format!("tunnel {t}"),
                Carrier::Underlay => "underlay".to_string(),
            };
            let (mss, source) = mss_text(s.mss_clamp, Some(b.auto_mss));
            let fit = if b.fits() { "fits" } else { "DOES NOT FIT" };
            lines.push(format!(
                "segment {} (VNI {}): MTU {} {fit} {} ({carrier}) − {} (VXLAN) = {}; MSS clamp {} ({source})",
                s.name,
                s.vni,
                b.mtu,
                b.carrier_mtu,
                budget::VXLAN_OVERHEAD,
                b.max_mtu,
                mss.unwrap_or(b.auto_mss)
            ));
            json!({
                "name": s.name.as_str(), "carrier": carrier, "carrier_mtu": b.carrier_mtu,
                "mtu": b.mtu, "max_mtu": b.max_mtu, "effective_mtu": b.effective_mtu,
                "auto_mss": b.auto_mss, "mss_clamp": mss, "mss_clamp_source": source, "fits": b.fits(),
            })
        })
        .collect();
    (
        json!({ "underlay_mtu": underlay, "wireguard_overhead": budget::WIREGUARD_OVERHEAD,
                "vxlan_overhead": budget::VXLAN_OVERHEAD, "tunnels": tunnels, "segments": segments }),
        lines,
    )
}

fn port_line(p: &config_schema::Port) -> String {
    let role = match p.role {
        PortRole::Lan => "lan",
        PortRole::Wan => "wan",
    };
    let addr = match p.address {
        Some(PortAddress::Dhcp) => "dhcp".to_string(),
        Some(PortAddress::Static(c)) => c.to_string(),
        None => "no address (layer 2)".to_string(),
    };
    let gw = p.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
    format!("{} {role} {addr}{gw}, MTU {}", p.name, p.mtu)
}

/// Where the box gets the DNS servers for peer endpoints given by name.
fn dns_line(config: &Config, platform: Platform) -> String {
    let servers = config.dns.servers.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ");
    let dhcp_wan = config.ports.iter().find(|p| p.role == PortRole::Wan && p.address == Some(PortAddress::Dhcp));
    match (platform, servers.is_empty(), dhcp_wan) {
        (Platform::Host, true, _) => "the host's resolver (/etc/resolv.conf)".to_string(),
        (Platform::Host, false, _) => format!("the host's resolver (/etc/resolv.conf); [dns] servers {servers} are not used"),
        (Platform::Image, false, Some(p)) => format!("{servers}, tried in order (before {}'s DHCP lease's)", p.name),
        (Platform::Image, false, None) => format!("{servers}, tried in order"),
        (Platform::Image, true, Some(p)) => format!("from {}'s DHCP lease", p.name),
        (Platform::Image, true, None) => "none: no [dns] servers and no DHCP WAN".to_string(),
    }
}

fn show_cmd(file: &Path, platform: Platform, as_json: bool) -> Result<u8, Failure> {
    let config = match load(file) {
        Ok(c) => c,
        Err(e) => return load_failure(file, e, as_json),
    };
    let report = validate_for(&config, platform);
    let code = if report.is_valid() { 0 } else { EXIT_FAILED };
    let claims = claim_views(&config);
    let (budget_json, budget_lines) = budget_views(&config);
    if as_json {
        print_json(&json!({
            "file": display_name(file),
            "schema_hash": format!("{:#018x}", config_schema::SCHEMA_HASH),
            "config": config,
            "claims": claims.iter().map(|c| c.json.clone()).collect::<Vec<_>>(),
            "budget": budget_json,
            "validation": validation_json(&report, platform),
        }))?;
        return Ok(code);
    }
    let toml =
        human::to_toml(&config).map_err(|e| Failure { code: EXIT_FAILED, message: format!("cannot format the configuration: {e}") })?;
    let mut out = String::new();
    let _ = writeln!(out, "# {} (side {}), from {}", config.device.name, config.device.side, display_name(file));
    let _ = writeln!(out, "#\n# ports:");
    for p in &config.ports {
        let _ = writeln!(out, "#   {}", port_line(p));
    }
    let _ = writeln!(out, "#\n# DNS servers (peer endpoints by name):");
    let _ = writeln!(out, "#   {}", dns_line(&config, platform));
    let _ = writeln!(out, "#\n# claims on this box:");
    if claims.is_empty() {
        let _ = writeln!(out, "#   (none)");
    }
    for c in &claims {
        let _ = writeln!(out, "#   {}", c.line);
    }
    let _ = writeln!(out, "#\n# MTU/MSS budget:");
    for l in &budget_lines {
        let _ = writeln!(out, "#   {l}");
    }
    let _ = writeln!(
        out,
        "#\n# validation for {}: {}, {}{}",
        platform.subject(),
        plural(report.errors, "error"),
        plural(report.warnings, "warning"),
        if report.problems.is_empty() { "" } else { " (details: routerctl config validate)" }
    );
    for p in report.problems.iter().filter(|p| p.severity == Severity::Error) {
        let _ = writeln!(out, "#   {p}");
    }
    let _ = writeln!(out, "#\n# normalized configuration (defaults filled in):\n");
    out.push_str(&toml);
    print!("{out}");
    if code != 0 {
        eprintln!(
            "routerctl: {} has {} for {}; run `routerctl config validate {} --for {platform}` for hints",
            display_name(file),
            plural(report.errors, "error"),
            platform.subject(),
            display_name(file)
        );
    }
    Ok(code)
}

fn import_wg_cmd(file: &Path, name: Option<&str>, sections: bool, as_json: bool) -> Result<u8, Failure> {
    let text = match read_text(file) {
        Ok(t) => t,
        Err(e) => return Err(Failure::usage(if e.kind == "io" { e.message } else { format!("{}: {}", display_name(file), e.message) })),
    };
    let stem = if file == Path::new("-") { None } else { file.file_stem().and_then(|s| s.to_str()) };
    let tunnel = name.or(stem).unwrap_or("wg0");
    config_schema::Name::new(tunnel).map_err(|e| Failure::usage(format!("tunnel name {tunnel:?}: {e}; give one with --name")))?;
    let got = crate::import_wg::import(&text, tunnel).map_err(|e| Failure::usage(format!("{}: {e}", display_name(file))))?;
    // What we print must be a configuration; a file beyond the box's limits
    // (too many peers or allowed IPs) is not one.
    let config = human::from_toml(&got.toml)
        .map_err(|e| Failure::usage(format!("{}: the imported configuration is not valid: {}", display_name(file), e.message)))?;
    let mut notes = got.notes.clone();
    if got.had_private_key {
        notes.insert(
            0,
            format!(
                "the file's PrivateKey was not copied; the box makes its own key. To keep the old key: \
                 routerctl key import {tunnel} --yes --port P < keyfile"
            ),
        );
    }
    // What the box would still refuse once the placeholders are filled in (IPv6 endpoints on the image, …).
    let report = validate_for(&config, Platform::Image);
    notes.extend(report.problems.iter().map(|p| format!("config validate: {}[{}] {p}", p.severity.as_str(), p.code.as_str())));
    if as_json {
        return print_json(&json!({
            "schema": 1,
            "file": display_name(file),
            "tunnel": tunnel,
            "config": config,
            "fill_in": got.fill_in.iter().map(|(path, what)| json!({ "path": path, "what": what })).collect::<Vec<_>>(),
            "notes": notes,
            "private_key_copied": false,
        }));
    }
    if sections {
        print!("{}", got.sections);
    } else {
        println!("# A routerd configuration imported from {} by `routerctl config import-wg`.", display_name(file));
        print!("{}", got.toml);
        eprintln!(
            "routerctl: fill in {} (marked FILL IN), then: routerctl config validate FILE",
            got.fill_in.iter().map(|(path, _)| *path).collect::<Vec<_>>().join(", ")
        );
    }
    for n in &notes {
        eprintln!("note: {n}");
    }
    Ok(0)
}
