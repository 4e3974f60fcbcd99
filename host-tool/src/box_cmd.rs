//! Commands that talk to a box over its serial line (or the host build's
//! control socket): status, plan, apply, claims, keys, logs, reboot.

use std::io::{IsTerminal, Read, Write};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use config_schema::{Capture, CaptureMethod, Claim, Config, Delivery, Ipv4Cidr, MssClamp, Name};
use routerd_provision::message::{
    ChangeKind, ClaimRole, ClaimState, Failure as BoxFailure, FailureKind, KeyInfo, Op, Outcome, Reply, Status,
};
use serde_json::{json, Value};

use crate::client::{Client, PortSpec};
use crate::{Failure, EXIT_FAILED, EXIT_USAGE};

/// How to reach the box. Global options: given before the command
/// (`routerctl --port P status`) or after it (`routerctl status --port P`),
/// or `ROUTERCTL_PORT`; commands that need no box ignore them.
#[derive(Args, Clone, Debug)]
pub struct Conn {
    /// The box's serial line: a tty (/dev/ttyUSB0), pty:/dev/pts/N, or
    /// unix:PATH (a QEMU `-serial unix:PATH,server=on` socket or the host
    /// build's control socket)
    #[arg(long, global = true, env = "ROUTERCTL_PORT", value_name = "PORT", help_heading = CONN_HEADING)]
    pub port: Option<String>,
    /// Line speed for a tty
    #[arg(long, global = true, default_value_t = 115_200, help_heading = CONN_HEADING)]
    pub baud: u32,
    /// How long to wait for each answer, in milliseconds (retried 3 times)
    #[arg(long, global = true, default_value_t = 3000, value_name = "MS", help_heading = CONN_HEADING)]
    pub timeout: u64,
}

const CONN_HEADING: &str = "Reaching a box (commands that talk to one)";

impl Conn {
    /// The port as given (empty when none was: [`Conn::connect`] refuses that first).
    pub fn port(&self) -> &str {
        self.port.as_deref().unwrap_or_default()
    }

    pub fn connect(&self) -> Result<Client, Failure> {
        let port = self.port.as_deref().ok_or_else(|| {
            Failure::usage(
                "which box? give --port PORT (before or after the command) or set ROUTERCTL_PORT: a tty (/dev/ttyUSB0), \
                 pty:/dev/pts/N or unix:PATH",
            )
        })?;
        let spec = PortSpec::parse(port).map_err(Failure::usage)?;
        let timeout = Duration::from_millis(self.timeout.max(50));
        progress(&format!("opening a session on {spec}"), || Client::connect(&spec, self.baud, timeout)).map_err(|e| failed(e.to_string()))
    }
}

pub fn failed(message: impl Into<String>) -> Failure {
    Failure { code: EXIT_FAILED, message: message.into() }
}

/// Runs `f`, showing a spinner on a terminal when it takes over a second.
pub fn progress<T>(what: &str, f: impl FnOnce() -> T) -> T {
    if !std::io::stderr().is_terminal() {
        return f();
    }
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let what = what.to_string();
    let spinner = std::thread::spawn(move || {
        let frames = ['|', '/', '-', '\\'];
        let mut shown = false;
        for i in 0..usize::MAX {
            std::thread::sleep(Duration::from_millis(100));
            if flag.load(Ordering::Acquire) {
                break;
            }
            if i >= 10 {
                eprint!("\r{} {what}… {:.1} s", frames[i % 4], i as f64 / 10.0);
                shown = true;
            }
        }
        if shown {
            eprint!("\r\x1b[2K");
        }
    });
    let r = f();
    done.store(true, Ordering::Release);
    let _ = spinner.join();
    r
}

/// Turns a box's refusal into the exit code and text (problems listed).
pub fn refusal(f: &BoxFailure) -> Failure {
    let s = format!("the box refused: {f}");
    let code = match f.kind {
        FailureKind::Invalid | FailureKind::Exists | FailureKind::NotFound => EXIT_USAGE,
        _ => EXIT_FAILED,
    };
    Failure { code, message: s }
}

/// A refused plan or apply: a configuration with errors exits 1 wherever
/// the errors are found, as `config validate` does (PRODUCT.md: "1 a check
/// or command failed (e.g. the configuration has errors)").
pub fn config_refusal(f: &BoxFailure) -> Failure {
    Failure { code: EXIT_FAILED, ..refusal(f) }
}

/// A refusal as JSON (exit code kept) or as an error.
pub fn refused_as(failure: Failure, f: &BoxFailure, json_out: bool, key: &str) -> Result<u8, Failure> {
    if json_out {
        print_json(&json!({ "schema": 1, key: false, "failure": to_json(f) }))?;
        return Ok(failure.code);
    }
    Err(failure)
}

fn refused(f: &BoxFailure, json_out: bool, key: &str) -> Result<u8, Failure> {
    refused_as(refusal(f), f, json_out, key)
}

pub fn unexpected(r: &Reply) -> Failure {
    failed(format!("unexpected answer from the box: {r:?}"))
}

pub fn print_json(v: &Value) -> Result<u8, Failure> {
    println!("{}", serde_json::to_string_pretty(v).map_err(|e| failed(format!("cannot format JSON: {e}")))?);
    Ok(0)
}

/// A message as JSON, with keys in base64 and MACs as `aa:bb:…`.
pub fn to_json<T: serde::Serialize>(v: &T) -> Value {
    fn fix(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, val) in m.iter_mut() {
                    match (k.as_str(), &*val) {
                        ("public_key", Value::Array(a)) if a.len() == 32 => *val = json!(key_b64(&bytes(a))),
                        ("mac" | "conflict_mac", Value::Array(a)) if a.len() == 6 => *val = json!(mac_text(&bytes(a))),
                        _ => fix(val),
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(fix),
            _ => {}
        }
    }
    fn bytes(a: &[Value]) -> Vec<u8> {
        a.iter().map(|x| x.as_u64().unwrap_or(0) as u8).collect()
    }
    let mut v = serde_json::to_value(v).unwrap_or(Value::Null);
    fix(&mut v);
    v
}

pub fn key_b64(k: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(k)
}

pub fn mac_text(m: &[u8]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn load_file(file: &Path) -> Result<Box<Config>, Failure> {
    let text = if file == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(|e| Failure::usage(format!("cannot read stdin: {e}")))?;
        s
    } else {
        std::fs::read_to_string(file).map_err(|e| Failure::usage(format!("cannot read {}: {e}", file.display())))?
    };
    let cfg = config_schema::human::from_toml(&text).map_err(|e| Failure::usage(format!("{}: {}", file.display(), e.report.trim_end())))?;
    // The box runs the same check; doing it here first saves a round trip
    // and keeps the line free of configurations that cannot apply. Errors
    // exit 1, as from `config validate`; only an unreadable file exits 2.
    let report = config_schema::validate(&cfg);
    if !report.is_valid() {
        let mut s = format!("{}: {}; nothing was sent to the box", file.display(), crate::plural(report.errors, "error"));
        for p in report.problems.iter().filter(|p| p.severity == config_schema::Severity::Error) {
            s.push_str(&format!("\n  error[{}] {p}\n    hint: {}", p.code.as_str(), p.hint));
        }
        s.push_str(&format!("\n(run `routerctl config validate {}` for the full report)", file.display()));
        return Err(failed(s));
    }
    Ok(Box::new(cfg))
}

// ---------------------------------------------------------------- status

/// Connects and reads the box's status; for `--json`, a failure becomes a
/// document `{schema, port, …empty, error: {kind, message}}` on stdout (with
/// `empty` the fields a success would have) and its exit code.
pub fn status_or_json_error(conn: &Conn, mark: bool, json_out: bool, empty: Value) -> Result<Result<(Client, Box<Status>), u8>, Failure> {
    let got = match conn.connect() {
        Ok(mut c) => get_status(&mut c, mark).map(|st| (c, st)).map_err(|f| ("box", f)),
        Err(f) => Err((if f.code == EXIT_USAGE { "usage" } else { "unreachable" }, f)),
    };
    match got {
        Ok(got) => Ok(Ok(got)),
        Err((kind, f)) if json_out => {
            let mut doc = json!({ "schema": 1, "port": conn.port() });
            if let (Value::Object(d), Value::Object(e)) = (&mut doc, empty) {
                d.extend(e);
            }
            doc["error"] = json!({ "kind": kind, "message": f.message.trim_end() });
            print_json(&doc)?;
            Ok(Err(f.code))
        }
        Err((_, f)) => Err(f),
    }
}

pub fn status(conn: &Conn, json_out: bool, mark: bool) -> Result<u8, Failure> {
    let (c, st) = match status_or_json_error(conn, mark, json_out, json!({ "status": null }))? {
        Ok(got) => got,
        Err(code) => return Ok(code),
    };
    let _ = c.close();
    if json_out {
        return print_json(&json!({ "schema": 1, "port": conn.port(), "status": to_json(&*st) }));
    }
    print!("{}", status_text(&st));
    Ok(0)
}

pub fn get_status(c: &mut Client, mark: bool) -> Result<Box<Status>, Failure> {
    match c.request(Op::Status { mark }).map_err(|e| failed(e.to_string()))? {
        Reply::Status(s) => Ok(s),
        Reply::Error(f) => Err(refusal(&f)),
        other => Err(unexpected(&other)),
    }
}

fn ago(ms: Option<u64>) -> String {
    match ms {
        None => "never".into(),
        Some(ms) if ms < 1000 => format!("{ms} ms ago"),
        Some(ms) => format!("{} s ago", ms / 1000),
    }
}

/// `2026-12-01 07:10:03 UTC` for milliseconds since the Unix epoch (the
/// civil-from-days arithmetic of `hal_x86::rtc`, which routerctl does not link).
pub fn utc_text(ms: u64) -> String {
    let secs = ms / 1000;
    let z = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let rem = secs % 86_400;
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Connection tracking, SNAT and the firewall's decisions, from the
/// counters the box reports where they run (`conntrack_*`, `nat_*`,
/// `fw_rule<i>`, `fw_policy<i>`, `fw_default`).
fn conntrack_text(st: &Status) -> String {
    let counter = |n: &str| st.counters.iter().find(|c| c.name.as_str() == n).map(|c| c.value);
    let (Some(flows), Some(cap)) = (counter("conntrack_flows"), counter("conntrack_capacity")) else { return String::new() };
    let v = |n: &str| counter(n).unwrap_or(0);
    let mut o = format!(
        "\nconntrack: {flows} of {cap} flows (tcp {}, udp {}, icmp {}); {} created, {} evicted, {} dropped by applies\n",
        v("conntrack_tcp"),
        v("conntrack_udp"),
        v("conntrack_icmp"),
        v("conntrack_created"),
        v("conntrack_evicted"),
        v("conntrack_dropped_on_apply")
    );
    o += &format!("  nat: {} flows translated, {} needed another source port\n", v("nat_flows"), v("nat_ports_rewritten"));
    let fw: Vec<String> =
        st.counters.iter().filter(|c| c.name.starts_with("fw_")).map(|c| format!("{} {}", &c.name.as_str()[3..], c.value)).collect();
    if !fw.is_empty() {
        o += &format!("  firewall decisions (new flows and packets to the box): {}\n", fw.join(", "));
    }
    o
}

pub fn status_text(st: &Status) -> String {
    let mut o = String::new();
    let up = st.uptime_ms / 1000;
    if st.configured {
        o += &format!(
            "{} (side {}), routerd {} build {}, up {}h{:02}m{:02}s, config applied {}\n",
            st.device,
            st.side,
            st.software,
            st.build,
            up / 3600,
            up / 60 % 60,
            up % 60,
            ago(st.applied_ms_ago)
        );
    } else {
        o += &format!("unconfigured box, routerd {} build {}, up {}s: not forwarding (routerctl apply FILE)\n", st.software, st.build, up);
    }
    if let Some(p) = &st.pending_confirm {
        let mut line = String::new();
        let _ = p.write_line(&mut line);
        o += line.trim_start();
    }
    o += &match st.wall_clock_ms {
        Some(ms) => format!("clock: {} (from {})\n", utc_text(ms), st.clock_source),
        None if st.clock_source.is_empty() => String::new(),
        None => format!("clock: none ({}): WireGuard timestamps count from boot\n", st.clock_source),
    };
    // The firmware slots of a box booted from a routerd disk.
    if let Some(fw) = &st.firmware {
        o += &format!("firmware: {}\n", crate::upgrade_cmd::slots_text(fw));
        o += &crate::upgrade_cmd::trial_lines(fw);
    }
    o += "\nports\n";
    for p in &st.ports {
        o += &format!(
            "  {:<6} {:<4} {}  link {:<4} {:<18} rx {} tx {} frames{}\n",
            p.name,
            p.role.map_or("-", |r| match r {
                config_schema::PortRole::Lan => "lan",
                config_schema::PortRole::Wan => "wan",
            }),
            mac_text(&p.mac),
            if p.link_up { "up" } else { "down" },
            p.address.map_or("-".to_string(), |a| a.to_string()),
            p.rx_frames,
            p.tx_frames,
            if p.rx_errors + p.tx_ring_full + p.rx_loans_out + p.rx_foreign_loans > 0 {
                let mut s = format!(", {} rx errors, {} tx ring full", p.rx_errors, p.tx_ring_full);
                if p.rx_loans_out + p.rx_foreign_loans > 0 {
                    s += &format!(", {} rx buffers on loan, {} foreign loans refused", p.rx_loans_out, p.rx_foreign_loans);
                }
                s
            } else {
                String::new()
            }
        );
    }
    if let Some(d) = &st.dhcp {
        let mut line = String::new();
        let _ = d.write_line(&mut line);
        o += &line;
    }
    if let Some(r) = &st.resolver {
        let servers: Vec<String> = r.servers.iter().map(|s| s.to_string()).collect();
        o += &format!("\ndns (servers {})\n", if servers.is_empty() { "none".to_string() } else { servers.join(", ") });
        for n in &r.names {
            o += &format!(
                "  {:<30} {:<15} resolved {}{}{}\n",
                n.name.as_str(),
                n.address.map_or("-".to_string(), |a| a.to_string()),
                ago(n.resolved_ms_ago),
                n.ttl_secs.map_or(String::new(), |t| format!(", ttl {t} s")),
                if n.error.is_empty() { String::new() } else { format!("; last lookup: {}", n.error) }
            );
        }
    }
    if let Some(t) = &st.tunnel {
        o += &format!(
            "\ntunnel {}: listen {}, mtu {} (underlay {}), public key {}\n",
            t.name,
            t.listen_port,
            t.mtu,
            t.underlay_mtu,
            key_b64(&t.public_key)
        );
    }
    for p in &st.peers {
        o += &format!(
            "  peer {}: endpoint {}{}, handshake {}, session {}, {} received, {} sent\n    public key {}, allowed ips {}, keepalive {}\n",
            p.name,
            p.endpoint.map_or("-".into(), |e| e.to_string()),
            if p.endpoint_configured.is_empty() { String::new() } else { format!(" (configured {})", p.endpoint_configured) },
            ago(p.last_handshake_ms_ago),
            if p.has_session { "up" } else { "none" },
            crate::show::bytes(p.rx_bytes),
            crate::show::bytes(p.tx_bytes),
            key_b64(&p.public_key),
            if p.allowed_ips.is_empty() {
                "none".to_string()
            } else {
                p.allowed_ips.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
            },
            p.persistent_keepalive.filter(|&k| k > 0).map_or("off".to_string(), |k| format!("every {k} s")),
        );
    }
    if let Some(l) = st.wireguard_load.filter(|l| {
        // Handshakes alone are a healthy tunnel, not load: no line for them.
        l.under_load || l.last_under_load_ms_ago.is_some() || l.cookie_replies_sent + l.cookies_received + l.refused_under_load > 0
    }) {
        o += &format!(
            "  handshake load: {}; {} cookie replies sent{}, {} cookies received, {} refused by rate limit{}, {} handshakes\n",
            if l.under_load { "under load now".to_string() } else { format!("last {}", ago(l.last_under_load_ms_ago)) },
            l.cookie_replies_sent,
            l.cookie_replies_sent_since_mark.map_or(String::new(), |n| format!(" ({n} since mark)")),
            l.cookies_received,
            l.refused_under_load,
            l.refused_under_load_since_mark.map_or(String::new(), |n| format!(" ({n} since mark)")),
            l.handshakes
        );
    }
    if !st.claims.is_empty() {
        o += "\nclaims\n";
        for c in &st.claims {
            o += &format!("  {}\n", claim_line(c));
        }
    }
    if !st.segments.is_empty() {
        // The dataplane counts VXLAN per box, not per segment.
        let counter = |n: &str| st.counters.iter().find(|c| c.name.as_str() == n).map_or(0, |c| c.value);
        let drops: Vec<String> =
            st.drops.iter().filter(|d| d.name.starts_with("vxlan_")).map(|d| format!("{} {}", d.name, d.value)).collect();
        o += &format!(
            "\nsegments (VXLAN, all segments: {} encapsulated, {} decapsulated, {} flooded; drops: {})\n",
            counter("vxlan_encap"),
            counter("vxlan_decap"),
            counter("vxlan_floods"),
            if drops.is_empty() { "none".to_string() } else { drops.join(", ") }
        );
        for g in &st.segments {
            let behind: Vec<String> = g.vteps.iter().map(|v| format!("{} {}", v.address, v.fdb_remote)).collect();
            o += &format!(
                "  {:<12} vni {:<8} on {:<6} udp {:<5}  fdb {} local, {} remote ({})\n",
                g.name.as_str(),
                g.vni,
                g.port.as_str(),
                g.udp_port,
                g.fdb_local,
                g.fdb_remote,
                behind.join(", ")
            );
        }
    }
    if let Some(b) = &st.bgp {
        o += &crate::bgp_cmd::status_block(b);
    }
    o += &conntrack_text(st);
    if !st.drops.is_empty() {
        let total: u64 = st.drops.iter().map(|d| d.value).sum();
        o += &format!("\ndrops ({total} since the box started forwarding)\n");
        let mut d: Vec<_> = st.drops.iter().collect();
        d.sort_by_key(|c| std::cmp::Reverse(c.value));
        for c in d {
            o += &format!("  {:<28} {}\n", c.name, c.value);
        }
    }
    if let Some(h) = &st.host {
        o += &format!(
            "\nlinux (routerd-host): {} checks, ip_forward {}, WireGuard socket {}, WAN TUN {}\n",
            h.checks,
            h.ip_forward.map_or("?", |f| if f { "1" } else { "0" }),
            h.wan_socket,
            if h.wan_tun.is_empty() { "none" } else { h.wan_tun.as_str() }
        );
        for r in &h.routes {
            o += &format!("  route {}/32: {}\n", r.address, r.detail);
        }
        for x in &h.held {
            if x.removed {
                o += &format!("  held by Linux {} s ago: {} on {} (removed)\n", x.seconds_ago, x.address, x.interface);
            } else {
                o += &format!("  held by Linux: {} on {} (NOT removed)\n", x.address, x.interface);
            }
        }
        if h.removals > 0 {
            o += &format!("  captured addresses removed since start: {} (last: {})\n", h.removals, h.last_event);
        }
        for d in &h.forward_drops {
            o += &format!("  forward path: {d}\n");
        }
        for e in &h.errors {
            o += &format!("  could not check: {e}\n");
        }
    }
    if let Some(g) = &st.storage {
        if st.host.is_some() {
            // routerd-host: `--state-dir`'s file, or nothing.
            if g.disk.is_empty() {
                o += "\nstorage: NONE — configuration and keys will not survive a restart (routerd-host --state-dir DIR)\n";
            } else {
                o += &format!(
                    "\nstorage: state file ({}), generation {}, start {}, saved {} ({} saves, {} failed){}\n",
                    g.note,
                    g.generation,
                    g.boots,
                    ago(g.saved_ms_ago),
                    g.saves,
                    g.save_errors,
                    if g.damaged_slots > 0 { format!(", {} damaged slot(s) found at start", g.damaged_slots) } else { String::new() }
                );
            }
        } else if g.disk.is_empty() {
            o += &format!(
                "\nstorage: NONE — configuration and keys will not survive a reboot (disks: {}; routerctl storage init --disk NAME --yes)\n",
                if g.disks.is_empty() { "none".to_string() } else { g.disks.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(", ") }
            );
        } else {
            o += &format!(
                "\nstorage: {} (ROUTERD-STATE, {} blocks at LBA {}), generation {}, boot {}, saved {} ({} saves, {} failed){}\n",
                g.disk,
                g.blocks,
                g.first_lba,
                g.generation,
                g.boots,
                ago(g.saved_ms_ago),
                g.saves,
                g.save_errors,
                if g.damaged_slots > 0 { format!(", {} damaged slot(s) found at boot", g.damaged_slots) } else { String::new() }
            );
        }
    }
    let s = st.serial;
    o += &format!(
        "\n{}: {} frames, {} sessions, {} not-a-frame runs, {} bad checksums, {} retransmits\n",
        if st.host.is_some() { "control socket (this connection)" } else { "serial" },
        s.frames,
        s.sessions,
        s.not_a_frame,
        s.bad_checksum,
        s.retransmits
    );
    o
}

fn claim_line(c: &routerd_provision::message::ClaimStatus) -> String {
    let role = match c.role {
        ClaimRole::ProxyArp => format!("proxy-arp on {}", c.port),
        ClaimRole::ProviderSecondaryIp => format!("provider-secondary-ip on {}", c.port),
        ClaimRole::LocalDelivery => format!("owned here, delivered on {}", c.port),
    };
    let state = match c.state {
        ClaimState::Active => "active".to_string(),
        ClaimState::Disabled => "disabled".to_string(),
        ClaimState::Probing => format!("probing ({} ARP probes sent)", c.probes_sent),
        ClaimState::Conflict => format!(
            "CONFLICT (live host {}, heard {}; {})",
            c.conflict_mac.map_or("?".into(), |m| mac_text(&m)),
            ago(c.live_host_heard_ms_ago),
            match c.next_probe_in_ms {
                Some(ms) => format!("probes again in {} s if it stays silent", ms.div_ceil(1000)),
                None => "waits for silence".into(),
            }
        ),
    };
    format!(
        "{:<15} {role}, via {}/{}, {state}, mss {}{}, out {} pkts / in {} pkts, {} ARP replies",
        c.address.to_string(),
        c.tunnel,
        c.peer,
        c.mss,
        if c.mss_auto { " (auto)" } else { "" },
        c.to_tunnel_packets,
        c.from_tunnel_packets,
        c.arp_replies
    )
}

// ---------------------------------------------------------------- plan / apply

pub fn outcome_text(o: &Outcome, applied: bool) -> String {
    let mut s = String::new();
    if o.changes.is_empty() {
        s += "no changes: the box already runs this configuration\n";
    }
    for c in &o.changes {
        let sign = match c.kind {
            ChangeKind::Add => '+',
            ChangeKind::Remove => '-',
            ChangeKind::Modify => '~',
        };
        s += &format!("  {sign} {} {}\n", c.section, c.subject);
    }
    if o.changes_omitted > 0 {
        s += &format!("  … and {} more\n", crate::plural(usize::from(o.changes_omitted), "change"));
    }
    if o.tunnel_restarts {
        s += "  WireGuard restarts: sessions re-handshake (one round trip)\n";
    }
    for k in &o.keys_created {
        s += &match (k.public_key, applied) {
            (Some(public), true) => format!(
                "  key {} was generated on the box: public key {}\n    (put it in the other box's [[peers]] public_key)\n",
                k.slot,
                key_b64(&public)
            ),
            (Some(_), false) => format!("  key {} will be generated on the box (its public key is printed after apply)\n", k.slot),
            (None, true) => format!(
                "  preshared key {0} was generated on the box; the peer needs the same key:\n    \
                 routerctl key psk show {0} --port … prints it (wg-quick: PresharedKey = …; \
                 another box: routerctl key psk import {0})\n",
                k.slot
            ),
            (None, false) => {
                format!("  preshared key {} will be generated on the box (the peer needs it too: routerctl key psk show)\n", k.slot)
            }
        };
    }
    if applied {
        return s;
    }
    for p in &o.problems {
        s += &format!("  warning[{}] {}: {}\n    hint: {}\n", p.code, p.path, p.message, p.hint);
    }
    s
}

pub fn plan(file: &Path, conn: &Conn, json_out: bool) -> Result<u8, Failure> {
    let cfg = load_file(file)?;
    let mut c = conn.connect()?;
    let r = c.request(Op::Plan(cfg)).map_err(|e| failed(e.to_string()))?;
    let _ = c.close();
    match r {
        Reply::Plan(o) => {
            if json_out {
                return print_json(&json!({ "schema": 1, "applies": true, "outcome": to_json(&*o) }));
            }
            println!("plan for {} on {}:", file.display(), conn.port());
            print!("{}", outcome_text(&o, false));
            Ok(0)
        }
        Reply::Error(f) => refused_as(config_refusal(&f), &f, json_out, "applies"),
        other => Err(unexpected(&other)),
    }
}

/// `apply FILE [--confirm MINUTES]`: `confirm_ms` puts it on trial.
pub fn apply(file: &Path, conn: &Conn, yes: bool, json_out: bool, confirm_ms: Option<u32>) -> Result<u8, Failure> {
    let cfg = load_file(file)?;
    let mut c = conn.connect()?;
    let plan = match c.request(Op::Plan(cfg.clone())).map_err(|e| failed(e.to_string()))? {
        Reply::Plan(o) => o,
        Reply::Error(f) => return refused_as(config_refusal(&f), &f, json_out, "applied"),
        other => return Err(unexpected(&other)),
    };
    if !json_out {
        println!("plan for {} on {}:", file.display(), conn.port());
        print!("{}", outcome_text(&plan, false));
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(Failure::usage("not applied: add --yes to apply without asking (stdin is not a terminal)"));
        }
        eprint!("apply? [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("not applied");
            return Ok(EXIT_FAILED);
        }
    }
    let timeout = Duration::from_millis(conn.timeout.max(50) * 3);
    let op = match confirm_ms {
        Some(window_ms) => Op::ApplyConfirm { config: cfg, window_ms },
        None => Op::Apply(cfg),
    };
    let r = progress("applying", || c.request_with(op, timeout)).map_err(|e| failed(e.to_string()))?;
    // On trial: what the box says about it (generation, target, time left).
    let pending = match (&r, confirm_ms) {
        (Reply::Applied(_), Some(_)) => get_status(&mut c, false).ok().and_then(|st| st.pending_confirm),
        _ => None,
    };
    let _ = c.close();
    match r {
        Reply::Applied(o) => {
            if json_out {
                return print_json(&json!({ "schema": 1, "applied": true, "outcome": to_json(&*o), "pending_confirm": to_json(&pending) }));
            }
            if !o.keys_created.is_empty() {
                let keys_only = Outcome { keys_created: o.keys_created.clone(), changes: Default::default(), ..Outcome::default() };
                print!("{}", outcome_text(&keys_only, true).replace("no changes: the box already runs this configuration\n", ""));
            }
            println!("applied: {} runs {}", conn.port(), file.display());
            if let Some(p) = pending {
                println!(
                    "on trial: generation {} reverts to {} in {} s unless you run `routerctl confirm --port {}`",
                    p.generation,
                    p.reverts_to,
                    p.left_ms.div_ceil(1000),
                    conn.port()
                );
            }
            Ok(0)
        }
        Reply::Error(f) => refused_as(config_refusal(&f), &f, json_out, "applied"),
        other => Err(unexpected(&other)),
    }
}

// ---------------------------------------------------------------- config get

pub fn config_get(conn: &Conn, json_out: bool) -> Result<u8, Failure> {
    let mut c = conn.connect()?;
    let r = c.request(Op::GetConfig).map_err(|e| failed(e.to_string()))?;
    let _ = c.close();
    match r {
        Reply::Config(None) => {
            if json_out {
                return print_json(&json!({ "config": null }));
            }
            Err(failed(format!("{} runs no configuration yet (routerctl apply FILE)", conn.port())))
        }
        Reply::Config(Some(cfg)) => {
            if json_out {
                return print_json(&json!({ "config": *cfg }));
            }
            print!("{}", config_schema::human::to_toml(&cfg).map_err(|e| failed(format!("cannot format TOML: {e}")))?);
            Ok(0)
        }
        Reply::Error(f) => Err(refusal(&f)),
        other => Err(unexpected(&other)),
    }
}

// ---------------------------------------------------------------- claims

#[derive(Subcommand)]
pub enum ClaimsCommand {
    /// List the box's claims with state and counters
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Add a claim to the running configuration (applied atomically)
    #[command(after_long_help = "Examples:\n  \
        routerctl claims add 10.20.0.52 --owner cloud --port unix:/tmp/onprem.sock\n  \
        routerctl claims add 10.20.0.10 --owner onprem --method provider-secondary-ip --on eth0 --port /dev/ttyUSB0\n\n\
        The tunnel defaults to the box's only WireGuard interface and the peer to the one whose \
        allowed IPs contain the address (cryptokey routing must allow it anyway).")]
    Add {
        /// The moved address (a.b.c.d or a.b.c.d/32)
        address: String,
        /// The side where the host really lives (compared with each box's `side`)
        #[arg(long)]
        owner: String,
        /// How the capturing box gets the packets
        #[arg(long, value_enum, default_value_t = Method::ProxyArp)]
        method: Method,
        /// The capturing box's port
        #[arg(long, default_value = "lan0", value_name = "PORT_NAME")]
        on: String,
        /// The WireGuard interface (default: the only one)
        #[arg(long)]
        tunnel: Option<String>,
        /// The delivery peer (default: the peer whose allowed IPs hold the address)
        #[arg(long)]
        peer: Option<String>,
        /// `auto` (tunnel MTU − 40) or a value
        #[arg(long, default_value = "auto")]
        mss: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove the claim for an address (applied atomically)
    Remove {
        address: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Capture a claim in conflict again once the live host is gone (the box probes first)
    #[command(after_long_help = "A proxy-ARP claim goes into conflict when a live host on the LAN uses its \
        address: the box stops answering ARP for it so the host is not hijacked. It clears by itself \
        when the host has been silent for the claim's conflict_hold (default 60 s) and ARP probes \
        for the address go unanswered. This command asks for those probes now. The box still \
        captures only if nobody answers; if the host is still there the command says who answered \
        and exits 1.\n\nExample:\n  routerctl claims clear-conflict 10.20.0.50 --port unix:/tmp/onprem.sock")]
    ClearConflict {
        /// The claimed address (a.b.c.d or a.b.c.d/32)
        address: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Method {
    ProxyArp,
    ProviderSecondaryIp,
}

fn parse_addr(s: &str) -> Result<Ipv4Cidr, Failure> {
    let (ip, len) = match s.split_once('/') {
        Some((ip, len)) => (ip, len.parse::<u8>().map_err(|_| Failure::usage(format!("address {s:?}: bad prefix length")))?),
        None => (s, 32),
    };
    let ip: Ipv4Addr = ip.parse().map_err(|_| Failure::usage(format!("address {s:?} is not an IPv4 address")))?;
    if len != 32 {
        return Err(Failure::usage(format!("address {s}: a claim is a single address (/32)")));
    }
    Ipv4Cidr::new(ip, len).map_err(|_| Failure::usage(format!("address {s:?} is not valid")))
}

pub fn name(what: &str, s: &str) -> Result<Name, Failure> {
    Name::new(s).map_err(|e| Failure::usage(format!("{what} {s:?}: {e:?}")))
}

fn running_config(c: &mut Client) -> Result<Box<Config>, Failure> {
    match c.request(Op::GetConfig).map_err(|e| failed(e.to_string()))? {
        Reply::Config(Some(cfg)) => Ok(cfg),
        Reply::Config(None) => Err(failed("the box runs no configuration yet: `routerctl apply FILE` first")),
        Reply::Error(f) => Err(refusal(&f)),
        other => Err(unexpected(&other)),
    }
}

pub fn claims(cmd: ClaimsCommand, conn: &Conn) -> Result<u8, Failure> {
    match cmd {
        ClaimsCommand::List { json } => {
            let mut c = conn.connect()?;
            let st = get_status(&mut c, false)?;
            let _ = c.close();
            if json {
                return print_json(&json!({ "schema": 1, "claims": to_json(&st.claims) }));
            }
            if st.claims.is_empty() {
                println!("no claims");
            }
            for cl in &st.claims {
                println!("{}", claim_line(cl));
            }
            Ok(0)
        }
        ClaimsCommand::Add { address, owner, method, on, tunnel, peer, mss, json } => {
            let address = parse_addr(&address)?;
            let mss_clamp = match mss.as_str() {
                "auto" => MssClamp::Auto,
                v => MssClamp::Value(v.parse().map_err(|_| Failure::usage(format!("--mss {v:?}: give auto or a number")))?),
            };
            let mut c = conn.connect()?;
            let cfg = running_config(&mut c)?;
            let tunnel = match tunnel {
                Some(t) => name("--tunnel", &t)?,
                None => match cfg.wireguard.as_slice() {
                    [t] => t.name.clone(),
                    [] => return Err(failed("the box has no WireGuard interface to deliver the claim over")),
                    _ => return Err(Failure::usage("the box has several WireGuard interfaces: name one with --tunnel")),
                },
            };
            let peer = match peer {
                Some(p) => name("--peer", &p)?,
                None => match cfg.route_peer(address.addr()) {
                    Some((p, _)) => p.name.clone(),
                    None => {
                        return Err(Failure::usage(format!(
                            "no peer's allowed IPs contain {}: add it to the peer's allowed_ips (on both boxes) or name --peer",
                            address.addr()
                        )))
                    }
                },
            };
            let method = match method {
                Method::ProxyArp => CaptureMethod::ProxyArp,
                Method::ProviderSecondaryIp => CaptureMethod::ProviderSecondaryIp,
            };
            let claim = Claim {
                address,
                owner: name("--owner", &owner)?,
                gratuitous_arp: None,
                conflict_hold: None,
                local_port: None,
                mss_clamp,
                capture: Capture { method, port: name("--on", &on)?, configure_os_address: false },
                delivery: Delivery { tunnel, peer },
            };
            let r = c.request(Op::ClaimAdd(claim)).map_err(|e| failed(e.to_string()))?;
            let _ = c.close();
            applied_reply(r, json, &format!("claim {} added", address.addr()))
        }
        ClaimsCommand::Remove { address, json } => {
            let address = parse_addr(&address)?;
            let mut c = conn.connect()?;
            let r = c.request(Op::ClaimRemove(address)).map_err(|e| failed(e.to_string()))?;
            let _ = c.close();
            applied_reply(r, json, &format!("claim {} removed", address.addr()))
        }
        ClaimsCommand::ClearConflict { address, json } => clear_conflict(conn, parse_addr(&address)?, json),
    }
}

/// Ask the box to probe a claim in conflict, then wait for the verdict.
fn clear_conflict(conn: &Conn, address: Ipv4Cidr, json_out: bool) -> Result<u8, Failure> {
    let mut c = conn.connect()?;
    let probing = match c.request(Op::ClaimClearConflict(address)).map_err(|e| failed(e.to_string()))? {
        Reply::Probing(p) => p,
        Reply::Error(f) => return refused(&f, json_out, "captured"),
        other => return Err(unexpected(&other)),
    };
    let addr = probing.address;
    if !json_out {
        println!(
            "{addr}: sending {} ARP probes {} ms apart; the box captures again only if nobody answers",
            probing.probes, probing.interval_ms
        );
    }
    // The verdict comes after the last probe's wait; allow for the line.
    let deadline = std::time::Instant::now() + Duration::from_millis(u64::from(probing.done_in_ms) + 5_000);
    let claim = loop {
        std::thread::sleep(Duration::from_millis(100));
        let st = get_status(&mut c, false)?;
        let Some(cl) = st.claims.iter().find(|cl| cl.address == addr).cloned() else {
            let _ = c.close();
            return Err(failed(format!("{addr}: the claim is gone (another apply removed it)")));
        };
        if cl.state != ClaimState::Probing {
            break cl;
        }
        if std::time::Instant::now() > deadline {
            let _ = c.close();
            return Err(failed(format!("{addr}: still probing after {} ms; check `routerctl claims list`", probing.done_in_ms + 5_000)));
        }
    };
    let _ = c.close();
    let captured = claim.state == ClaimState::Active;
    if json_out {
        print_json(&json!({
            "schema": 1,
            "captured": captured,
            "result": if captured { "captured" } else { "in_use" },
            "claim": to_json(&claim),
        }))?;
        return Ok(if captured { 0 } else { EXIT_FAILED });
    }
    if captured {
        println!("{addr}: nobody answered; capturing again (gratuitous ARPs sent)");
        return Ok(0);
    }
    Err(failed(format!(
        "{addr} is still in use: {} answered the probe on {}; the box keeps out of its way \
         (it probes again by itself once the host has been silent for {} s)",
        claim.conflict_mac.map_or("a host".into(), |m| mac_text(&m)),
        claim.port,
        claim.conflict_hold_ms / 1000
    )))
}

fn applied_reply(r: Reply, json_out: bool, done: &str) -> Result<u8, Failure> {
    match r {
        Reply::Applied(o) => {
            if json_out {
                return print_json(&json!({ "schema": 1, "applied": true, "outcome": to_json(&*o) }));
            }
            println!("{done}");
            for p in &o.problems {
                println!("  warning[{}] {}: {}", p.code, p.path, p.message);
            }
            Ok(0)
        }
        // The configuration with the change has errors: exit 1, as `apply`
        // and `config validate` do; naming a claim that is not there (or is
        // already) stays bad usage.
        Reply::Error(f) if f.kind == FailureKind::Invalid => refused_as(config_refusal(&f), &f, json_out, "applied"),
        Reply::Error(f) => refused(&f, json_out, "applied"),
        other => Err(unexpected(&other)),
    }
}

// ---------------------------------------------------------------- keys

#[derive(Subcommand)]
pub enum KeyCommand {
    /// List the box's key slots: private keys with their public half, preshared keys by name only
    #[command(after_long_help = "A slot holds a tunnel's private key (`private_key = \"device:NAME\"`) or a \
        peer's preshared key (`preshared_key = \"device:NAME\"`). No secret is shown: a private key never \
        leaves the box, a preshared key only through `routerctl key psk show NAME`.\n\n\
        Example:\n  routerctl key show --port /dev/ttyUSB0 --json | jq -r '.keys[] | select(.kind == \"private\") | .public_key'")]
    Show {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Make a new private key on the box (a running tunnel restarts with it)
    Generate {
        /// Key slot (`device:NAME` in the configuration), e.g. wg0
        slot: String,
        /// Replace without asking (peers must learn the new public key)
        #[arg(long)]
        yes: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Import a private key read from stdin (discouraged: keys made on the box never leave it)
    Import {
        /// Key slot, e.g. wg0
        slot: String,
        /// Required: importing sends a secret over the line
        #[arg(long)]
        yes: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Preshared keys (a peer's `preshared_key`): show one for the peer's side, import one, make a new one
    #[command(
        subcommand,
        long_about = "Preshared keys: a second, symmetric secret WireGuard mixes into every handshake \
            (wg's PresharedKey, what `wg genpsk` makes). A peer with `preshared_key = \"device:NAME\"` uses \
            the key in slot NAME; the box makes it at the first apply that names the slot. Both ends of \
            the pair must hold the same key: show it here once, then give it to the other side \
            (`routerctl key psk import` on another routerd box, `PresharedKey =` in a wg-quick [Peer], \
            `wg set IF peer PUBKEY preshared-key FILE`). Until both hold the same key no handshake \
            completes.",
        after_long_help = "Examples:\n  \
            routerctl key psk show cloud-psk --port /dev/ttyUSB0\n  \
            routerctl key psk show cloud-psk --port /dev/ttyUSB0 | routerctl key psk import cloud-psk --yes --port unix:/run/routerd.sock\n  \
            wg genpsk > pair.psk && routerctl key psk import cloud-psk --from-file pair.psk --yes --port /dev/ttyUSB0"
    )]
    Psk(PskCommand),
}

#[derive(Subcommand)]
pub enum PskCommand {
    /// Print the preshared key in a slot (base64, like `wg genpsk`), for the peer's side
    #[command(
        long_about = "Print the preshared key held in slot SLOT on stdout, in base64 exactly as \
            `wg genpsk` prints it. It is the one command that prints a key: give it to the peer's side \
            once, over a channel you trust. A slot holding a private key is refused: private keys never \
            leave the box.",
        after_long_help = "Examples:\n  routerctl key psk show cloud-psk --port /dev/ttyUSB0 > cloud.psk   # then: PresharedKey = … (wg-quick)\n  \
            routerctl key psk show cloud-psk --port /dev/ttyUSB0 --json | jq -r .preshared_key"
    )]
    Show {
        /// Key slot (`preshared_key = "device:SLOT"`), e.g. cloud-psk
        slot: String,
        /// Print JSON {schema, slot, preshared_key}
        #[arg(long)]
        json: bool,
    },
    /// Put a preshared key made elsewhere in a slot (read from a file or stdin, never from the command line)
    #[command(
        long_about = "Read a preshared key in base64 (44 characters, as `wg genpsk` or `routerctl key psk \
            show` print it) from --from-file, or stdin, and put it in slot SLOT on the box. The key is never \
            taken from the command line, where shell history and process lists would keep it. A running \
            tunnel whose peer uses the slot restarts with the new key; a slot holding a private key is \
            refused.",
        after_long_help = "Examples:\n  routerctl key psk import cloud-psk --from-file cloud.psk --yes --port /dev/ttyUSB0\n  \
            routerctl key psk show onprem-psk --port unix:/tmp/a.sock | routerctl key psk import onprem-psk --yes --port unix:/tmp/b.sock"
    )]
    Import {
        /// Key slot, e.g. cloud-psk
        slot: String,
        /// Read the key from FILE (`-`: stdin, the default)
        #[arg(long, value_name = "FILE")]
        from_file: Option<std::path::PathBuf>,
        /// Required: the slot's key is replaced (the peer must hold the same one)
        #[arg(long)]
        yes: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Make a new preshared key on the box (then give it to the peer: `key psk show`)
    #[command(long_about = "Make a new random preshared key in slot SLOT on the box. A running tunnel whose \
        peer uses the slot restarts with it, and handshakes with that peer fail until the peer holds the \
        same key (`routerctl key psk show SLOT`, then import it there).")]
    Generate {
        /// Key slot, e.g. cloud-psk
        slot: String,
        /// Replace without asking (the peer must be given the new key)
        #[arg(long)]
        yes: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

fn keys_out(keys: &[KeyInfo], json_out: bool) -> Result<u8, Failure> {
    if json_out {
        return print_json(&json!({ "schema": 1, "keys": to_json(&keys) }));
    }
    if keys.is_empty() {
        println!("no keys yet: the box makes one when a configuration names `device:SLOT`");
    }
    for k in keys {
        let how =
            format!("({}, {})", if k.generated { "generated on the box" } else { "imported" }, if k.in_use { "in use" } else { "unused" });
        match k.public_key {
            Some(public) => println!("{:<12} private    {}  {how}", k.slot.as_str(), key_b64(&public)),
            None => println!("{:<12} preshared  {:<44}  {how}", k.slot.as_str(), format!("(routerctl key psk show {})", k.slot)),
        }
    }
    Ok(0)
}

pub fn key(cmd: KeyCommand, conn: &Conn) -> Result<u8, Failure> {
    let (op, json_out) = match cmd {
        KeyCommand::Show { json } => (Op::KeyShow, json),
        KeyCommand::Generate { slot, yes, json } => {
            if !yes {
                return Err(Failure::usage("key generate replaces the key: peers must be given the new public key. Add --yes to proceed"));
            }
            (Op::KeyGenerate(name("slot", &slot)?), json)
        }
        KeyCommand::Import { slot, yes, json } => {
            if !yes {
                return Err(Failure::usage("key import sends a private key over the line; add --yes if you mean it"));
            }
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map_err(|e| Failure::usage(format!("cannot read stdin: {e}")))?;
            use base64::Engine;
            let secret: [u8; 32] =
                base64::engine::general_purpose::STANDARD.decode(text.trim()).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| {
                    Failure::usage("stdin is not a base64 WireGuard private key (44 characters, like `wg genkey` prints)")
                })?;
            (Op::KeyImport(name("slot", &slot)?, secret), json)
        }
        KeyCommand::Psk(cmd) => return psk(cmd, conn),
    };
    let mut c = conn.connect()?;
    let r = c.request(op).map_err(|e| failed(e.to_string()))?;
    let _ = c.close();
    match r {
        Reply::Keys(k) => keys_out(&k, json_out),
        Reply::Error(f) => Err(refusal(&f)),
        other => Err(unexpected(&other)),
    }
}

/// A preshared key in base64 from `from` (`-` or none: stdin).
fn read_psk(from: Option<&Path>) -> Result<[u8; 32], Failure> {
    let (what, text) = match from.filter(|p| p.as_os_str() != "-") {
        Some(p) => (p.display().to_string(), std::fs::read_to_string(p).map_err(|e| Failure::usage(format!("{}: {e}", p.display())))?),
        None => {
            let mut text = String::new();
            // A key is 44 characters; stop reading long before a stray file could fill memory.
            std::io::stdin().take(1024).read_to_string(&mut text).map_err(|e| Failure::usage(format!("cannot read stdin: {e}")))?;
            ("stdin".to_string(), text)
        }
    };
    crate::keys::parse_key(&text).map_err(|e| {
        Failure::usage(format!(
            "{what} is not a preshared key: {e}\nhint: wg genpsk, or routerctl key psk show SLOT on the other box, prints one"
        ))
    })
}

fn psk(cmd: PskCommand, conn: &Conn) -> Result<u8, Failure> {
    let (op, json_out) = match cmd {
        PskCommand::Show { slot, json } => (Op::PresharedKeyReveal(name("slot", &slot)?), json),
        PskCommand::Import { slot, from_file, yes, json } => {
            if !yes {
                return Err(Failure::usage(format!(
                    "key psk import replaces the preshared key in slot {slot} (a tunnel using it restarts; its peer must hold the \
                     same key). Add --yes to proceed"
                )));
            }
            let slot = name("slot", &slot)?;
            (Op::PresharedKeyImport(slot, read_psk(from_file.as_deref())?), json)
        }
        PskCommand::Generate { slot, yes, json } => {
            if !yes {
                return Err(Failure::usage(format!(
                    "key psk generate replaces the preshared key in slot {slot}: handshakes with the peer fail until it holds \
                     the new key. Add --yes to proceed"
                )));
            }
            (Op::PresharedKeyGenerate(name("slot", &slot)?), json)
        }
    };
    let mut c = conn.connect()?;
    let r = c.request(op).map_err(|e| failed(e.to_string()))?;
    let _ = c.close();
    match r {
        Reply::PresharedKey { slot, key } => {
            if json_out {
                return print_json(&json!({ "schema": 1, "slot": slot.as_str(), "preshared_key": key_b64(&key) }));
            }
            if std::io::stdout().is_terminal() {
                eprintln!(
                    "preshared key of slot {slot}: a secret, for the peer's side only (wg-quick: PresharedKey = …; another \
                     routerd box: routerctl key psk import {slot})"
                );
            }
            println!("{}", key_b64(&key));
            Ok(0)
        }
        Reply::Keys(k) => keys_out(&k, json_out),
        Reply::Error(f) => Err(refusal(&f)),
        other => Err(unexpected(&other)),
    }
}

// ---------------------------------------------------------------- logs, reboot

pub fn logs(conn: &Conn, seconds: Option<u64>, json_out: bool) -> Result<u8, Failure> {
    let mut c = conn.connect()?;
    let console = String::from_utf8_lossy(&c.console).to_string();
    if !console.trim().is_empty() && !json_out {
        print!("{}", console.replace('\r', ""));
    }
    let end = seconds.map(|s| std::time::Instant::now() + Duration::from_secs(s));
    let mut last_ping = std::time::Instant::now();
    loop {
        let slice = match end {
            Some(e) => e.saturating_duration_since(std::time::Instant::now()).min(Duration::from_secs(5)),
            None => Duration::from_secs(5),
        };
        for l in c.follow(slice).map_err(|e| failed(e.to_string()))? {
            if json_out {
                println!("{}", json!({ "ms": l.ms, "level": l.level, "text": l.text.as_str() }));
            } else {
                let level = match l.level {
                    1 => "ERROR",
                    2 => "WARN",
                    3 => "INFO",
                    4 => "DEBUG",
                    _ => "TRACE",
                };
                println!("[{:5}.{:03}] {level:<5} {}", l.ms / 1000, l.ms % 1000, l.text);
            }
        }
        crate::out::flush();
        // Followed into `head` or `grep -q`: nobody reads any more.
        if crate::out::closed() || end.is_some_and(|e| std::time::Instant::now() >= e) {
            break;
        }
        // Keep the session open (the box closes idle ones); lines are
        // printed as they come, the box is pinged every 5 s.
        if last_ping.elapsed() >= Duration::from_secs(5) {
            c.request(Op::Ping).map_err(|e| failed(e.to_string()))?;
            last_ping = std::time::Instant::now();
        }
    }
    let _ = c.close();
    Ok(0)
}

#[derive(Subcommand)]
pub enum StorageCommand {
    /// Make a disk the box's store: a new GPT with one ROUTERD-STATE partition
    #[command(after_long_help = "The box keeps its configuration, its WireGuard keys and a little state \
        (generation, boot count, a clock floor) in a GPT partition labelled ROUTERD-STATE, saved after \
        every change and safe against power cuts. A box booted from a routerd disk image finds it there; \
        a box booted with -kernel and a blank disk keeps nothing until you name the disk here. The \
        disk must be blank (no partition table, nothing in its first and last MiB) unless --force, \
        which erases what is on it. Disks are named as Linux names them: vda, vdb, … (`routerctl \
        status` lists them).\n\nExample:\n  routerctl storage init --disk vda --yes --port unix:/tmp/onprem.sock")]
    Init {
        /// The disk (vda, vdb, …)
        #[arg(long)]
        disk: String,
        /// Write to the disk without asking
        #[arg(long)]
        yes: bool,
        /// Also when the disk is not blank (erases it)
        #[arg(long)]
        force: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

pub fn storage(cmd: StorageCommand, conn: &Conn) -> Result<u8, Failure> {
    match cmd {
        StorageCommand::Init { disk, yes, force, json } => {
            if !yes {
                return Err(Failure::usage(format!("storage init writes a new partition table to {disk}; add --yes to proceed")));
            }
            let disk = name("--disk", &disk)?;
            let mut c = conn.connect()?;
            let r = c.request(Op::StorageInit { disk: disk.clone(), force }).map_err(|e| failed(e.to_string()))?;
            let st = match r {
                Reply::Done => get_status(&mut c, false)?,
                Reply::Error(f) => {
                    let _ = c.close();
                    return refused(&f, json, "initialised");
                }
                other => return Err(unexpected(&other)),
            };
            let _ = c.close();
            if json {
                return print_json(&json!({ "schema": 1, "initialised": true, "storage": to_json(&st.storage) }));
            }
            println!("{disk}: ROUTERD-STATE partition made; the box saves its configuration and keys there from now on");
            Ok(0)
        }
    }
}

pub fn reboot(conn: &Conn, yes: bool) -> Result<u8, Failure> {
    if !yes {
        return Err(Failure::usage("reboot stops forwarding until the box is back; add --yes to proceed"));
    }
    let mut c = conn.connect()?;
    let kept = get_status(&mut c, false)?.storage.as_ref().is_none_or(|s| !s.disk.is_empty());
    match c.request(Op::Reboot).map_err(|e| failed(e.to_string()))? {
        Reply::Done => {
            c.forget();
            if kept {
                println!("{} is rebooting; it comes back with its configuration and keys", conn.port());
            } else {
                println!(
                    "{} is rebooting WITHOUT a store: configuration and keys are lost (re-apply, update the peers' keys; \
                     `routerctl storage init` keeps them next time)",
                    conn.port()
                );
            }
            Ok(0)
        }
        Reply::Error(f) => Err(refusal(&f)),
        other => Err(unexpected(&other)),
    }
}

#[cfg(test)]
mod clock_tests {
    #[test]
    fn utc_text_matches_date() {
        // `date -u -d @1796109003`, `date -u -d @951868800`
        assert_eq!(super::utc_text(1_796_109_003_999), "2026-12-01 07:10:03 UTC");
        assert_eq!(super::utc_text(951_868_800_000), "2000-03-01 00:00:00 UTC");
        assert_eq!(super::utc_text(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc_text(1_935_817_689_000), "2031-05-06 07:08:09 UTC");
    }
}
