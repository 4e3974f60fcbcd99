//! `routerctl doctor hybrid`: every moved address checked, with a reason.
//!
//! The checks read one status snapshot and the running configuration of a
//! box (both from the box itself) and judge them; they are a pure function
//! so the lab and the tests run exactly what the command runs. Each check
//! has a stable id, a subject (claim address, peer or port name), a result
//! and, whenever the result is not a pass, a reason and what to do.

use config_schema::{Config, PortRole};
use routerd_provision::message::{ClaimRole, ClaimState, HostReport, Status};
use serde::Serialize;
use serde_json::{json, Value};

/// Bumped when the JSON document changes shape.
pub const SCHEMA: u32 = 1;

/// A handshake older than this is a warning (WireGuard rekeys every 120 s).
pub const HANDSHAKE_WARN_S: u64 = 135;
/// A handshake older than this is a failure (the session is gone).
pub const HANDSHAKE_FAIL_S: u64 = 180;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Skip,
    Warn,
    Fail,
}

impl Verdict {
    fn text(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Skip => "skip",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub subject: String,
    pub result: Verdict,
    pub reason: String,
    pub hint: String,
}

fn check(id: &'static str, subject: impl Into<String>, result: Verdict, reason: impl Into<String>, hint: impl Into<String>) -> Check {
    Check { id, subject: subject.into(), result, reason: reason.into(), hint: hint.into() }
}

fn pass(id: &'static str, subject: impl Into<String>, reason: impl Into<String>) -> Check {
    check(id, subject, Verdict::Pass, reason, "")
}

fn mac(m: &[u8; 6]) -> String {
    crate::box_cmd::mac_text(m)
}

/// Drop reasons that mean something is wrong (not just the internet's noise).
const SERIOUS_DROPS: &[&str] = &[
    "tunnel_spoofed_source",
    "tunnel_loop",
    "tunnel_encap_failed",
    "arp_conflict",
    "arp_claim_in_conflict",
    "fragmentation_needed",
    "pending_queue_full",
    "arp_resolution_failed",
    "tx_full",
    "no_route",
];

/// Judges one box.
pub fn hybrid(st: &Status, cfg: Option<&Config>) -> Vec<Check> {
    let mut out = Vec::new();
    let Some(cfg) = cfg.filter(|_| st.configured) else {
        out.push(check(
            "configured",
            "box",
            Verdict::Fail,
            "the box runs no configuration: nothing is captured or delivered",
            "routerctl apply FILE --port P",
        ));
        return out;
    };

    // Whether the box remembers (the image; routerd-host keeps files).
    if let Some(g) = &st.storage {
        if g.disk.is_empty() {
            out.push(check(
                "storage",
                "box",
                Verdict::Warn,
                "no store: configuration and keys will not survive a reboot (a new key means re-keying the other site)",
                "routerctl storage init --disk vda --yes (a disk the box lists in `routerctl status`)",
            ));
        } else if g.save_errors > 0 {
            out.push(check(
                "storage",
                g.disk.as_str(),
                Verdict::Warn,
                format!("{} saves failed (the previous state is kept)", g.save_errors),
                "check the disk; `routerctl logs` names the error",
            ));
        } else {
            out.push(pass("storage", g.disk.as_str(), format!("state kept on {} (generation {}, boot {})", g.disk, g.generation, g.boots)));
        }
    }

    // Ports the claims use: link up.
    for p in &st.ports {
        if p.role.is_none() {
            continue;
        }
        if p.link_up {
            out.push(pass("port.link", p.name.as_str(), format!("link up, {} frames in, {} out", p.rx_frames, p.tx_frames)));
        } else {
            out.push(check("port.link", p.name.as_str(), Verdict::Fail, "link down", "check the cable or the VM's NIC"));
        }
        // Frames lost because the NIC's transmit ring was full: it grew
        // since the last run (the first run has no mark and only reports).
        match p.tx_dropped_since_mark {
            Some(n) if n > 0 => out.push(check(
                "port.tx",
                p.name.as_str(),
                Verdict::Warn,
                format!("{n} frames lost to a full transmit ring since the last run ({} in all)", p.tx_dropped),
                "the link or the peer behind it is slower than the traffic sent to it: check its speed and duplex, or the VM's NIC backend",
            )),
            _ if p.tx_dropped > 0 => out.push(pass(
                "port.tx",
                p.name.as_str(),
                format!("no frames lost to a full transmit ring since the last run ({} before)", p.tx_dropped),
            )),
            _ => {}
        }
    }

    // Capture and delivery, per claim.
    for c in &st.claims {
        let subject = c.address.to_string();
        match (c.role, c.state) {
            (_, ClaimState::Conflict) => out.push(check(
                "claim.capture",
                &subject,
                Verdict::Fail,
                format!(
                    "a live host {} uses {} on {}: proxy-ARP stopped so it is not hijacked (last heard {})",
                    c.conflict_mac.as_ref().map_or("?".into(), mac),
                    subject,
                    c.port,
                    match c.live_host_heard_ms_ago {
                        Some(ms) => format!("{} s ago", ms / 1000),
                        None => "at an unknown time".into(),
                    }
                ),
                format!(
                    "shut down or readdress the host still holding {subject}; the box probes again after {} s of \
                     silence and captures only if nobody answers (`routerctl claims clear-conflict {subject}` probes now)",
                    c.conflict_hold_ms / 1000
                ),
            )),
            (_, ClaimState::Probing) => out.push(check(
                "claim.capture",
                &subject,
                Verdict::Warn,
                format!(
                    "probing {} on {} for a live host before capturing ({} ARP probes sent, {} answered so far)",
                    subject, c.port, c.probes_sent, c.probes_answered
                ),
                "wait a second and run doctor again",
            )),
            (_, ClaimState::Disabled) => {
                out.push(check("claim.capture", &subject, Verdict::Fail, "the claim is disabled", "re-apply the configuration"))
            }
            (ClaimRole::ProxyArp, ClaimState::Active) => out.push(pass(
                "claim.capture",
                &subject,
                format!("proxy-ARP on {}: {} replies, {} gratuitous ARPs sent", c.port, c.arp_replies, c.garps_sent),
            )),
            (ClaimRole::ProviderSecondaryIp, ClaimState::Active) => {
                let own = cfg.is_own_address(c.address);
                if own || c.arp_replies > 0 {
                    out.push(check(
                        "claim.capture",
                        &subject,
                        Verdict::Fail,
                        if own {
                            format!("{subject} is configured as the box's own address")
                        } else {
                            format!("the box answered {} ARP requests for a provider-delivered address", c.arp_replies)
                        },
                        "provider-secondary-ip claims must never be held or answered (configure_os_address = false)",
                    ));
                } else {
                    out.push(pass(
                        "claim.capture",
                        &subject,
                        format!("provider delivers it to {}; the box neither holds nor answers it", c.port),
                    ));
                }
            }
            (ClaimRole::LocalDelivery, ClaimState::Active) => out.push(pass(
                "claim.capture",
                &subject,
                format!("owned here ({}): delivered on {}, {} packets from the tunnel", c.owner, c.port, c.from_tunnel_packets),
            )),
        }

        // Delivery: the /32 goes to the named peer, which accepts it.
        if c.role != ClaimRole::LocalDelivery {
            match st.peers.iter().find(|p| p.name == c.peer) {
                None => out.push(check(
                    "claim.delivery",
                    &subject,
                    Verdict::Fail,
                    format!("delivery peer {} does not exist on tunnel {}", c.peer, c.tunnel),
                    "fix claims[].delivery.peer",
                )),
                Some(p) if !p.allowed_ips.iter().any(|a| a.contains(c.address)) => out.push(check(
                    "claim.delivery",
                    &subject,
                    Verdict::Fail,
                    format!("peer {}'s allowed IPs do not contain {subject}: cryptokey routing drops it", p.name),
                    format!("add \"{subject}/32\" to peers[{}].allowed_ips on this box", p.name),
                )),
                Some(p) => out.push(pass(
                    "claim.delivery",
                    &subject,
                    format!("/32 via {} to peer {}: {} packets out, {} back", c.tunnel, p.name, c.to_tunnel_packets, c.from_tunnel_packets),
                )),
            }
        }

        // MSS clamp, both directions, and the budget it came from.
        let tunnel = cfg.tunnel(&c.tunnel);
        let tunnel_mtu = tunnel.map_or(1420, |t| t.mtu);
        let path_mss = tunnel_mtu.saturating_sub(40);
        let wan = st.tunnel.as_ref().map_or(1500, |t| t.underlay_mtu);
        let budget = format!("tunnel MTU {tunnel_mtu} (WAN {wan} − 80) − 40 = {path_mss}");
        if c.mss > path_mss {
            out.push(check(
                "claim.mss",
                &subject,
                Verdict::Warn,
                format!("clamp {} is above what the path carries ({budget}): large segments will be dropped or fragmented", c.mss),
                format!("set mss_clamp = \"auto\" (or ≤ {path_mss}) for {subject}"),
            ));
        } else {
            out.push(pass(
                "claim.mss",
                &subject,
                format!(
                    "SYN and SYN-ACK clamped to {} both ways{} ({budget}); {} clamped so far",
                    c.mss,
                    if c.mss_auto { " (auto)" } else { "" },
                    c.syns_clamped
                ),
            ));
        }

        // Loop risk: an address delivered here whose traffic a peer's
        // allowed IPs would route back into the tunnel.
        if c.role == ClaimRole::LocalDelivery {
            match st.peers.iter().find(|p| p.allowed_ips.iter().any(|a| a.contains(c.address))) {
                Some(p) => out.push(check(
                    "claim.loop",
                    &subject,
                    Verdict::Fail,
                    format!(
                        "{subject} lives here, but peer {}'s allowed IPs cover it: its packets can come back through the tunnel",
                        p.name
                    ),
                    format!("remove {subject} from peers[{}].allowed_ips on this box (it belongs in the other box's)", p.name),
                )),
                None => out.push(pass("claim.loop", &subject, "no peer's allowed IPs cover it")),
            }
        } else if c.loops > 0 {
            out.push(check(
                "claim.loop",
                &subject,
                Verdict::Warn,
                format!("{} packets for {subject} came back from the tunnel and were dropped by the loop guard", c.loops),
                "check that the other box delivers this address locally (its owner side)",
            ));
        } else {
            out.push(pass("claim.loop", &subject, "no packets looped"));
        }
    }

    // The default route stays where it is.
    match st.peers.iter().find(|p| p.allowed_ips.iter().any(|a| a.prefix_len() == 0)) {
        Some(p) => out.push(check(
            "route.default",
            p.name.as_str(),
            Verdict::Fail,
            format!("peer {} has 0.0.0.0/0 in its allowed IPs: the tunnel would take the default route", p.name),
            "list the claimed /32s (and the tunnel address) instead",
        )),
        None => out.push(pass("route.default", "box", "the default route is not the tunnel (only /32 claims are routed)")),
    }

    // Peers: handshake, endpoint, bytes.
    for p in &st.peers {
        let subject = p.name.as_str();
        let age = p.last_handshake_ms_ago.map(|ms| ms / 1000);
        match age {
            None => out.push(check(
                "peer.handshake",
                subject,
                Verdict::Fail,
                "no handshake yet",
                "check the peer's public key on both boxes, its endpoint, and that UDP reaches the listen port (firewall/NSG)",
            )),
            Some(s) if s > HANDSHAKE_FAIL_S => out.push(check(
                "peer.handshake",
                subject,
                Verdict::Fail,
                format!("last handshake {s} s ago (> {HANDSHAKE_FAIL_S} s): no session"),
                "check the underlay path and the peer's endpoint; set persistent_keepalive = 25 on the side that dials",
            )),
            Some(s) if s > HANDSHAKE_WARN_S => out.push(check(
                "peer.handshake",
                subject,
                Verdict::Warn,
                format!("last handshake {s} s ago (> {HANDSHAKE_WARN_S} s)"),
                "a rekey is overdue: watch for loss on the underlay",
            )),
            Some(s) => out.push(pass("peer.handshake", subject, format!("handshake {s} s ago"))),
        }
        let now = p.endpoint.map(|(a, port)| format!("{a}:{port}"));
        match (&now, p.endpoint_configured.as_str()) {
            (None, "") => out.push(check(
                "peer.endpoint",
                subject,
                Verdict::Skip,
                "no endpoint configured and the peer has not dialled in yet",
                "the peer must dial this box (set its endpoint and persistent_keepalive there)",
            )),
            (None, conf) => out.push(check(
                "peer.endpoint",
                subject,
                Verdict::Fail,
                format!("endpoint {conf} is not resolved"),
                "give an address the box can reach",
            )),
            (Some(n), conf) if conf.is_empty() || conf == n => {
                out.push(pass("peer.endpoint", subject, format!("{n}{}", if conf.is_empty() { " (learned from the peer)" } else { "" })))
            }
            (Some(n), conf) => {
                out.push(pass("peer.endpoint", subject, format!("{n} (configured {conf}; the peer roamed or the name resolved there)")))
            }
        }
        if p.rx_bytes > 0 && p.tx_bytes > 0 {
            out.push(pass("peer.traffic", subject, format!("{} B in, {} B out", p.rx_bytes, p.tx_bytes)));
        } else {
            out.push(check(
                "peer.traffic",
                subject,
                Verdict::Warn,
                format!("bytes are not moving both ways ({} B in, {} B out)", p.rx_bytes, p.tx_bytes),
                "send traffic through a claim (ping) and check again",
            ));
        }
    }

    // WAN exposure: the dataplane answers only WireGuard on WAN ports.
    let wan_ports: Vec<&str> = cfg.ports.iter().filter(|p| p.role == PortRole::Wan).map(|p| p.name.as_str()).collect();
    let listen = st.tunnel.as_ref().map(|t| t.listen_port);
    let proxy_on_wan = st.claims.iter().filter(|c| c.role == ClaimRole::ProxyArp).any(|c| wan_ports.contains(&c.port.as_str()));
    let refused = st.drops.iter().find(|d| d.name.as_str() == "wan_not_wireguard").map_or(0, |d| d.value);
    if proxy_on_wan {
        out.push(check(
            "wan.exposure",
            wan_ports.join(","),
            Verdict::Fail,
            "a proxy-ARP claim answers on a WAN port",
            "capture on a LAN port",
        ));
    } else {
        out.push(pass(
            "wan.exposure",
            wan_ports.join(","),
            match listen {
                Some(l) => format!("only WireGuard (UDP {l}) is answered; {refused} other packets dropped"),
                None => format!("nothing is answered; {refused} packets dropped"),
            },
        ));
    }

    out.push(wireguard_load(st, cfg));

    if let Some(h) = &st.host {
        linux(st, h, &mut out);
    }

    // Drops since the last check.
    let (drops, since) = if st.mark_age_ms.is_some() {
        (&st.drops_since_mark, format!("in the last {} s", st.mark_age_ms.unwrap_or(0) / 1000))
    } else {
        (&st.drops, "since the box started forwarding".to_string())
    };
    let mut top: Vec<_> = drops.iter().collect();
    top.sort_by_key(|d| std::cmp::Reverse(d.value));
    let total: u64 = top.iter().map(|d| d.value).sum();
    let named: Vec<String> = top.iter().take(3).map(|d| format!("{} {}", d.name, d.value)).collect();
    let serious: Vec<&str> = top.iter().filter(|d| SERIOUS_DROPS.contains(&d.name.as_str())).map(|d| d.name.as_str()).collect();
    if total == 0 {
        out.push(pass("drops", "box", format!("no drops {since}")));
    } else if serious.is_empty() {
        out.push(pass("drops", "box", format!("{total} drops {since} (top: {})", named.join(", "))));
    } else {
        out.push(check(
            "drops",
            "box",
            Verdict::Warn,
            format!("{total} drops {since} (top: {}); worth a look: {}", named.join(", "), serious.join(", ")),
            "see firmware/dataplane/PIPELINE.md for what each drop reason means",
        ));
    }
    out
}

/// `1500 ms` or `4 s`.
fn span(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{} s", ms / 1000)
    }
}

/// WireGuard's defence against handshake floods: was it needed since the
/// last run? Under load the device answers handshakes with cookie replies
/// instead of spending a Diffie-Hellman, and refuses sources that exceed
/// their per-source rate even with a valid cookie. That is WireGuard doing
/// its job, so it is a warning (someone is sending handshakes to the listen
/// port faster than the limit), never a failure. Doctor marks status on
/// each run, so "since the last run" is the time since the previous mark;
/// without an earlier mark it is everything the box has counted.
fn wireguard_load(st: &Status, cfg: &Config) -> Check {
    const ID: &str = "wireguard.load";
    let Some(t) = &st.tunnel else {
        return check(ID, "box", Verdict::Skip, "no WireGuard tunnel configured", "");
    };
    let subject = t.name.as_str();
    let Some(l) = &st.wireguard_load else {
        return check(ID, subject, Verdict::Skip, "the box does not report handshake load (older routerd)", "update the box");
    };
    let marked = st.mark_age_ms.is_some();
    let crossed_since = match (l.last_under_load_ms_ago, st.mark_age_ms) {
        (Some(ago), Some(age)) => ago < age,
        (Some(_), None) => true,
        (None, _) => false,
    };
    let cookies = l.cookie_replies_sent_since_mark.unwrap_or(if marked { 0 } else { l.cookie_replies_sent });
    let refused = l.refused_under_load_since_mark.unwrap_or(if marked { 0 } else { l.refused_under_load });
    let since = if marked { "since the last run" } else { "so far" };
    if !(l.under_load || crossed_since || cookies > 0 || refused > 0) {
        return pass(ID, subject, format!("no handshake load {since} ({} handshakes completed)", l.handshakes));
    }
    let when = match (l.under_load, l.last_under_load_ms_ago) {
        (true, _) => "under handshake load now".to_string(),
        (false, Some(ago)) if crossed_since => format!("under handshake load {} ago", span(ago)),
        // Counted cookie replies without a crossing: load was forced.
        _ => "answering handshakes with cookies".to_string(),
    };
    let wan: Vec<&str> = cfg.ports.iter().filter(|p| p.role == PortRole::Wan).map(|p| p.name.as_str()).collect();
    check(
        ID,
        subject,
        Verdict::Warn,
        format!(
            "{when}: {cookies} cookie replies sent, {refused} handshakes refused by the per-source limit {since}; \
             WireGuard answered with cookies instead of spending DH"
        ),
        format!(
            "look for a flood on UDP {}{}: many handshake initiations from one or many sources",
            t.listen_port,
            if wan.is_empty() { String::new() } else { format!(" ({})", wan.join(",")) }
        ),
    )
}

/// A host build (`routerd-host`): what the Linux around it does to the
/// provider-secondary-ip claims, whose packets the kernel must forward to
/// it without ever holding the address.
fn linux(st: &Status, h: &HostReport, out: &mut Vec<Check>) {
    if h.checks == 0 {
        out.push(check(
            "linux.checks",
            "host",
            Verdict::Skip,
            "routerd-host has not finished its first Linux check yet",
            "run doctor again in a few seconds",
        ));
        return;
    }
    let captured: Vec<String> =
        st.claims.iter().filter(|c| c.role == ClaimRole::ProviderSecondaryIp).map(|c| c.address.to_string()).collect();
    let tun = if h.wan_tun.is_empty() { None } else { Some(h.wan_tun.as_str()) };
    for c in st.claims.iter().filter(|c| c.role == ClaimRole::ProviderSecondaryIp) {
        let subject = c.address.to_string();
        match h.held.iter().find(|x| x.address == c.address) {
            Some(x) if x.removed => out.push(check(
                "linux.address",
                &subject,
                Verdict::Warn,
                format!(
                    "Linux held {subject} on {} {} s ago; routerd-host removed it ({} removals since start)",
                    x.interface, x.seconds_ago, h.removals
                ),
                format!("stop cloud-init/netplan from adding {subject} back (it is a secondary IP the OS must not configure)"),
            )),
            Some(x) => out.push(check(
                "linux.address",
                &subject,
                Verdict::Fail,
                format!("Linux holds {subject} on {} and routerd-host did not remove it", x.interface),
                format!("ip addr del {subject}/32 dev {} (and keep it out of netplan/cloud-init)", x.interface),
            )),
            None => out.push(pass("linux.address", &subject, format!("no Linux interface holds it ({} removals since start)", h.removals))),
        }
        match (h.routes.iter().find(|r| r.address == c.address), tun) {
            (Some(r), Some(t)) if r.ok => out.push(pass("linux.route", &subject, format!("{subject}/32 dev {t} ({})", r.detail))),
            (Some(r), Some(t)) => out.push(check(
                "linux.route",
                &subject,
                Verdict::Fail,
                format!("{subject}/32: {}", r.detail),
                format!("ip route replace {subject}/32 dev {t}"),
            )),
            (_, None) => out.push(check(
                "linux.route",
                &subject,
                Verdict::Fail,
                "routerd-host runs without --wan-tun: the packets the cloud fabric delivers for it never reach the box",
                "start routerd-host with --wan-tun rd-wan (it then routes each captured /32 into it)",
            )),
            (None, Some(t)) => out.push(check(
                "linux.route",
                &subject,
                Verdict::Skip,
                format!("not checked yet (route {subject}/32 dev {t})"),
                "run doctor again in a few seconds",
            )),
        }
    }
    let needed = !captured.is_empty();
    match (h.ip_forward, needed) {
        (Some(false), true) => out.push(check(
            "linux.forward",
            "host",
            Verdict::Fail,
            format!("net.ipv4.ip_forward = 0: the kernel drops what the fabric delivers for {}", captured.join(", ")),
            "sysctl -w net.ipv4.ip_forward=1, and persist it in /etc/sysctl.d/",
        )),
        (Some(true), _) => out.push(pass("linux.forward", "host", "net.ipv4.ip_forward = 1")),
        (Some(false), false) => {
            out.push(pass("linux.forward", "host", "net.ipv4.ip_forward = 0 (not needed: no provider-secondary-ip claims)"))
        }
        (None, _) => out.push(check("linux.forward", "host", Verdict::Skip, "ip_forward could not be read", "")),
    }
    if h.firewalls.is_empty() {
        out.push(check("linux.firewall", "host", Verdict::Skip, "neither iptables nor nft is installed: nothing to check", ""));
    } else if h.forward_drops.is_empty() {
        out.push(pass("linux.firewall", "host", format!("no drop policy or drop/reject rule on the forward path ({})", h.firewalls)));
    } else {
        let more = if h.forward_drops_omitted > 0 { format!(" and {} more", h.forward_drops_omitted) } else { String::new() };
        let list: Vec<&str> = h.forward_drops.iter().map(|d| d.as_str()).collect();
        out.push(check(
            "linux.firewall",
            "host",
            if needed { Verdict::Warn } else { Verdict::Pass },
            format!("the forward path drops or rejects: {}{more}", list.join("; ")),
            match tun {
                Some(t) => format!("make sure forwarding between the NIC and {t} is accepted for {}", captured.join(", ")),
                None => "only matters for provider-secondary-ip claims".into(),
            },
        ));
    }
    for e in &h.errors {
        out.push(check("linux.checks", "host", Verdict::Warn, format!("could not check: {e}"), "run routerd-host as root (CAP_NET_ADMIN)"));
    }
}

/// The worst result.
pub fn worst(checks: &[Check]) -> Verdict {
    checks.iter().map(|c| c.result).max().unwrap_or(Verdict::Pass)
}

pub fn json_doc(port: &str, st: &Status, checks: &[Check]) -> Value {
    let count = |v: Verdict| checks.iter().filter(|c| c.result == v).count();
    json!({
        "schema": SCHEMA,
        "port": port,
        "device": st.device.as_str(),
        "side": st.side.as_str(),
        "result": worst(checks),
        "summary": { "pass": count(Verdict::Pass), "warn": count(Verdict::Warn), "fail": count(Verdict::Fail), "skip": count(Verdict::Skip) },
        "checks": checks,
    })
}

pub fn text(st: &Status, checks: &[Check]) -> String {
    let mut o = format!("doctor hybrid: {} (side {})\n", st.device, st.side);
    let w = checks.iter().map(|c| c.subject.len()).max().unwrap_or(4).min(24);
    for c in checks {
        o += &format!("  {:<4}  {:<15} {:<w$}  {}\n", c.result.text(), c.id, c.subject, c.reason);
        if c.result != Verdict::Pass && !c.hint.is_empty() {
            o += &format!("        {:<15} {:<w$}  → {}\n", "", "", c.hint);
        }
    }
    let count = |v: Verdict| checks.iter().filter(|c| c.result == v).count();
    o += &format!(
        "{} pass, {} warn, {} fail, {} skip\n",
        count(Verdict::Pass),
        count(Verdict::Warn),
        count(Verdict::Fail),
        count(Verdict::Skip)
    );
    o
}

/// What the checks read: a status (marking the drop counters, so the next
/// run reports drops since this one) and the running configuration.
pub fn fetch(c: &mut crate::client::Client) -> Result<(Box<Status>, Option<Box<Config>>), crate::Failure> {
    let st = crate::box_cmd::get_status(c, true)?;
    let cfg = match c.request(routerd_provision::message::Op::GetConfig) {
        Ok(routerd_provision::message::Reply::Config(cfg)) => cfg,
        Ok(_) => None,
        Err(e) => return Err(crate::Failure { code: crate::EXIT_FAILED, message: e.to_string() }),
    };
    Ok((st, cfg))
}

/// `routerctl doctor hybrid`.
pub fn run(conn: &crate::box_cmd::Conn, json_out: bool) -> Result<u8, crate::Failure> {
    let mut c = conn.connect()?;
    let (st, cfg) = fetch(&mut c)?;
    let _ = c.close();
    let checks = hybrid(&st, cfg.as_deref());
    if json_out {
        println!("{}", serde_json::to_string_pretty(&json_doc(&conn.port, &st, &checks)).unwrap_or_default());
    } else {
        print!("{}", text(&st, &checks));
    }
    Ok(if worst(&checks) == Verdict::Fail { crate::EXIT_FAILED } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;
    use routerd_control::{NicInfo, NicSnapshot, Node};
    use routerd_dataplane::Instant;
    use routerd_provision::message::{Op, Reply};

    const CFG: &str = r#"
[device]
name = "edge"
side = "onprem"
[[ports]]
name = "lan0"
role = "lan"
address = "10.20.0.2/24"
[[ports]]
name = "wan0"
role = "wan"
address = "192.168.1.35/24"
gateway = "192.168.1.1"
[[wireguard]]
name = "wg0"
private_key = "device:wg0"
[[peers]]
name = "cloud"
tunnel = "wg0"
public_key = "ca67+D0dVOzK/Bjvjlowc7W4uQ/zJ1jT9fh1LNCS51w="
endpoint = "203.0.113.10:51820"
persistent_keepalive = 25
allowed_ips = ["10.20.0.50/32"]
[[claims]]
address = "10.20.0.50/32"
owner = "cloud"
capture = { method = "proxy-arp", port = "lan0" }
delivery = { tunnel = "wg0", peer = "cloud" }
[[claims]]
address = "10.20.0.10/32"
owner = "onprem"
capture = { method = "provider-secondary-ip", port = "lan0" }
delivery = { tunnel = "wg0", peer = "onprem" }
"#;

    fn status(cfg: &Config) -> Box<Status> {
        let nics: Vec<NicInfo> = (0..2u8).map(|i| NicInfo { mac: [2, 0, 0, 0, 0, i] }).collect();
        let mut n: Node<OsRng> = Node::new(&nics, Some(OsRng), "0.1.0", "t");
        match n.handle(Instant::from_millis(1), Op::Apply(Box::new(cfg.clone())), &[]) {
            Reply::Applied(_) => {}
            other => panic!("{other:?}"),
        }
        // Let proxy-ARP claims finish probing (nobody answers here).
        struct Sink;
        impl routerd_dataplane::Transmit for Sink {
            fn send(&mut self, _: routerd_dataplane::PortId, _: &[u8]) -> bool {
                true
            }
        }
        if let Some(mut f) = n.forwarding() {
            for ms in (1..=1001).step_by(200) {
                f.dataplane.poll(Instant::from_millis(ms), &mut f.tunnel, &mut Sink);
            }
        }
        let snaps = [NicSnapshot { link_up: true, ..NicSnapshot::default() }; 2];
        match n.handle(Instant::from_millis(1002), Op::Status { mark: false }, &snaps) {
            Reply::Status(s) => s,
            other => panic!("{other:?}"),
        }
    }

    fn find<'a>(checks: &'a [Check], id: &str, subject: &str) -> &'a Check {
        checks.iter().find(|c| c.id == id && c.subject == subject).unwrap_or_else(|| panic!("no {id} for {subject} in {checks:#?}"))
    }

    #[test]
    fn a_fresh_box_passes_capture_and_fails_only_the_missing_handshake() {
        let cfg = config_schema::human::from_toml(CFG).unwrap();
        let st = status(&cfg);
        let checks = hybrid(&st, Some(&cfg));
        assert_eq!(find(&checks, "claim.capture", "10.20.0.50").result, Verdict::Pass);
        assert_eq!(find(&checks, "claim.delivery", "10.20.0.50").result, Verdict::Pass);
        let mss = find(&checks, "claim.mss", "10.20.0.50");
        assert!(mss.reason.contains("1380") && mss.reason.contains("1420"), "{}", mss.reason);
        assert_eq!(find(&checks, "claim.loop", "10.20.0.10").result, Verdict::Pass);
        assert_eq!(find(&checks, "route.default", "box").result, Verdict::Pass);
        let hs = find(&checks, "peer.handshake", "cloud");
        assert_eq!(hs.result, Verdict::Fail);
        assert!(hs.hint.contains("public key"));
        assert_eq!(worst(&checks), Verdict::Fail);
        let doc = json_doc("unix:/x", &st, &checks);
        assert_eq!(doc["schema"], 1);
        assert_eq!(doc["result"], "fail");
        assert!(doc["checks"].as_array().unwrap().iter().all(|c| c["id"].is_string() && c["result"].is_string()));
    }

    #[test]
    fn handshake_age_thresholds_and_conflicts_and_loops_are_named() {
        let cfg = config_schema::human::from_toml(CFG).unwrap();
        let mut st = status(&cfg);
        st.peers[0].last_handshake_ms_ago = Some(30_000);
        st.peers[0].rx_bytes = 10;
        st.peers[0].tx_bytes = 10;
        let checks = hybrid(&st, Some(&cfg));
        assert_eq!(find(&checks, "peer.handshake", "cloud").result, Verdict::Pass);
        assert_eq!(worst(&checks), Verdict::Pass, "{}", text(&st, &checks));
        st.peers[0].last_handshake_ms_ago = Some(150_000);
        assert_eq!(find(&hybrid(&st, Some(&cfg)), "peer.handshake", "cloud").result, Verdict::Warn);
        st.peers[0].last_handshake_ms_ago = Some(181_000);
        assert_eq!(find(&hybrid(&st, Some(&cfg)), "peer.handshake", "cloud").result, Verdict::Fail);

        // A live host took the address.
        st.claims[0].state = ClaimState::Conflict;
        st.claims[0].conflict_mac = Some([2, 0x99, 0, 0, 0, 0x50]);
        let c = find(&hybrid(&st, Some(&cfg)), "claim.capture", "10.20.0.50").clone();
        assert_eq!(c.result, Verdict::Fail);
        assert!(c.reason.contains("02:99:00:00:00:50"), "{}", c.reason);
        assert!(c.hint.contains("clear-conflict 10.20.0.50"), "{}", c.hint);
        // Probing before the first capture is a warning, not a failure.
        st.claims[0].state = ClaimState::Probing;
        assert_eq!(find(&hybrid(&st, Some(&cfg)), "claim.capture", "10.20.0.50").result, Verdict::Warn);
        st.claims[0].state = ClaimState::Active;

        // Frames lost to a full transmit ring: warned when it grew since the last run.
        st.ports[0].tx_dropped = 7;
        st.ports[0].tx_dropped_since_mark = Some(2);
        let t = find(&hybrid(&st, Some(&cfg)), "port.tx", st.ports[0].name.as_str()).clone();
        assert_eq!(t.result, Verdict::Warn);
        assert!(t.reason.contains("2 frames lost") && t.reason.contains("7 in all"), "{}", t.reason);
        st.ports[0].tx_dropped_since_mark = Some(0);
        assert_eq!(find(&hybrid(&st, Some(&cfg)), "port.tx", st.ports[0].name.as_str()).result, Verdict::Pass);

        // The owner box routes its own address back into the tunnel.
        st.peers[0].allowed_ips.push("10.20.0.10/32".parse().unwrap()).unwrap();
        let l = find(&hybrid(&st, Some(&cfg)), "claim.loop", "10.20.0.10").clone();
        assert_eq!(l.result, Verdict::Fail);
        assert!(l.hint.contains("allowed_ips"));

        // A clamp above the path.
        st.claims[0].mss = 1460;
        assert_eq!(find(&hybrid(&st, Some(&cfg)), "claim.mss", "10.20.0.50").result, Verdict::Warn);
    }

    #[test]
    fn an_unconfigured_box_fails_once() {
        let st = Status::default();
        let checks = hybrid(&st, None);
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].result, Verdict::Fail);
    }

    /// The cloud side of seed 000 as routerd-host runs it: 10.20.0.10
    /// (on-prem's) is a secondary IP the fabric delivers to wan0.
    const CLOUD: &str = r#"
[device]
name = "cloud-vm"
side = "cloud"
[[ports]]
name = "lan0"
role = "lan"
address = "10.30.0.2/24"
[[ports]]
name = "wan0"
role = "wan"
address = "10.20.0.4/24"
gateway = "10.20.0.1"
[[wireguard]]
name = "wg0"
private_key = "device:wg0"
[[peers]]
name = "onprem"
tunnel = "wg0"
public_key = "ca67+D0dVOzK/Bjvjlowc7W4uQ/zJ1jT9fh1LNCS51w="
allowed_ips = ["10.20.0.10/32"]
[[claims]]
address = "10.20.0.10/32"
owner = "onprem"
capture = { method = "provider-secondary-ip", port = "wan0", configure_os_address = false }
delivery = { tunnel = "wg0", peer = "onprem" }
"#;

    #[test]
    fn a_host_builds_linux_findings_are_judged() {
        use routerd_provision::message::{text, DeliveryRoute, HeldAddress};
        let cfg = config_schema::human::from_toml(CLOUD).unwrap();
        let mut st = status(&cfg);
        let ids = |c: &[Check]| c.iter().filter(|c| c.id.starts_with("linux.")).count();
        assert_eq!(ids(&hybrid(&st, Some(&cfg))), 0, "the image reports no Linux");

        // Healthy: not held, route present, forwarding on, no drop rules.
        let addr = "10.20.0.10".parse().unwrap();
        let mut h =
            HostReport { checks: 3, ip_forward: Some(true), wan_tun: text("rd-wan"), firewalls: text("nft"), ..HostReport::default() };
        h.routes.push(DeliveryRoute { address: addr, ok: true, detail: text("installed") }).unwrap();
        st.host = Some(h.clone());
        let checks = hybrid(&st, Some(&cfg));
        for (id, subject) in
            [("linux.address", "10.20.0.10"), ("linux.route", "10.20.0.10"), ("linux.forward", "host"), ("linux.firewall", "host")]
        {
            assert_eq!(find(&checks, id, subject).result, Verdict::Pass, "{}", text_of(&st, &checks));
        }

        // cloud-init put the address back and it was removed; forwarding off;
        // a drop policy on the forward path.
        h.held.push(HeldAddress { address: addr, interface: text("eth0"), removed: true, seconds_ago: 42 }).unwrap();
        h.ip_forward = Some(false);
        h.forward_drops.push(text("nft: table inet filter chain forward: policy drop")).unwrap();
        st.host = Some(h.clone());
        let checks = hybrid(&st, Some(&cfg));
        let a = find(&checks, "linux.address", "10.20.0.10");
        assert_eq!(a.result, Verdict::Warn);
        assert!(a.reason.contains("eth0 42 s ago") && a.hint.contains("cloud-init"), "{a:?}");
        let f = find(&checks, "linux.forward", "host");
        assert_eq!(f.result, Verdict::Fail);
        assert!(f.hint.contains("ip_forward=1"), "{f:?}");
        assert_eq!(find(&checks, "linux.firewall", "host").result, Verdict::Warn);

        // Without --wan-tun nothing the fabric delivers arrives.
        h.wan_tun = text("");
        h.routes.clear();
        st.host = Some(h);
        let r = find(&hybrid(&st, Some(&cfg)), "linux.route", "10.20.0.10").clone();
        assert_eq!(r.result, Verdict::Fail);
        assert!(r.hint.contains("--wan-tun"), "{r:?}");
    }

    fn text_of(st: &Status, checks: &[Check]) -> String {
        text(st, checks)
    }

    #[test]
    fn handshake_load_since_the_last_run_is_a_warning() {
        use routerd_provision::message::WireguardLoad;
        let cfg = config_schema::human::from_toml(CFG).unwrap();
        let mut st = status(&cfg);
        let quiet = WireguardLoad { handshakes: 40, ..WireguardLoad::default() };

        // Never loaded, no earlier run.
        st.wireguard_load = Some(quiet);
        st.mark_age_ms = None;
        let c = find(&hybrid(&st, Some(&cfg)), "wireguard.load", "wg0").clone();
        assert_eq!(c.result, Verdict::Pass, "{c:?}");
        assert!(c.reason.contains("no handshake load"), "{c:?}");

        // A flood before the last run: past, so a pass.
        st.mark_age_ms = Some(60_000);
        st.wireguard_load = Some(WireguardLoad {
            last_under_load_ms_ago: Some(300_000),
            cookie_replies_sent: 9866,
            cookie_replies_sent_since_mark: Some(0),
            refused_under_load_since_mark: Some(0),
            ..quiet
        });
        let c = find(&hybrid(&st, Some(&cfg)), "wireguard.load", "wg0").clone();
        assert_eq!(c.result, Verdict::Pass, "{c:?}");
        assert!(c.reason.contains("since the last run"), "{c:?}");

        // A flood 4 s ago, after the last run: a warning with the figures.
        st.wireguard_load = Some(WireguardLoad {
            last_under_load_ms_ago: Some(4_200),
            cookie_replies_sent: 9866,
            refused_under_load: 128,
            cookie_replies_sent_since_mark: Some(9866),
            refused_under_load_since_mark: Some(128),
            ..quiet
        });
        let checks = hybrid(&st, Some(&cfg));
        let c = find(&checks, "wireguard.load", "wg0");
        assert_eq!(c.result, Verdict::Warn);
        assert!(c.reason.starts_with("under handshake load 4 s ago: 9866 cookie replies sent, 128 handshakes refused"), "{c:?}");
        assert!(c.reason.contains("since the last run"), "{c:?}");
        assert!(c.hint.contains("UDP 51820") && c.hint.contains("wan0"), "{c:?}");
        assert!(text_of(&st, &checks).contains("wireguard.load"));

        // Cookie replies since the mark without a crossing (forced load) warn too;
        // under load right now says so.
        st.wireguard_load = Some(WireguardLoad { cookie_replies_sent_since_mark: Some(3), ..quiet });
        assert_eq!(find(&hybrid(&st, Some(&cfg)), "wireguard.load", "wg0").result, Verdict::Warn);
        st.wireguard_load = Some(WireguardLoad { under_load: true, last_under_load_ms_ago: Some(10), ..quiet });
        let c = find(&hybrid(&st, Some(&cfg)), "wireguard.load", "wg0").clone();
        assert!(c.result == Verdict::Warn && c.reason.starts_with("under handshake load now"), "{c:?}");

        // No figures from the box: skipped, never a failure.
        st.wireguard_load = None;
        assert_eq!(find(&hybrid(&st, Some(&cfg)), "wireguard.load", "wg0").result, Verdict::Skip);
        st.tunnel = None;
        assert_eq!(find(&hybrid(&st, Some(&cfg)), "wireguard.load", "box").result, Verdict::Skip);
    }
}
