//! `routerctl doctor hybrid`: every moved address checked, with a reason.
//!
//! The checks read one status snapshot and the running configuration of a
//! box (both from the box itself) and judge them; they are a pure function
//! so the lab and the tests run exactly what the command runs. Each check
//! has a stable id, a subject (claim address, peer or port name), a result
//! and, whenever the result is not a pass, a reason and what to do.

use config_schema::budget::{self, Carrier};
use config_schema::{Config, MssClamp, PortAddress, PortRole};
use routerd_provision::message::{BgpState, BgpStatus, ClaimRole, ClaimState, HostReport, Status};
use serde::Serialize;
use serde_json::{json, Value};

/// Bumped when the JSON document changes shape. 2: each check also carries
/// the Go routerd's names for its fields (`area`, `status`, `detail`,
/// `remedy`), so scripts written for it read ours unchanged.
pub const SCHEMA: u32 = 2;

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

#[derive(Clone, Debug)]
pub struct Check {
    pub id: &'static str,
    pub subject: String,
    pub result: Verdict,
    pub reason: String,
    pub hint: String,
}

impl Check {
    /// What the check is about: the part of its id before the first dot
    /// (`claim`, `peer`, `storage`, …).
    pub fn area(&self) -> &'static str {
        self.id.split('.').next().unwrap_or(self.id)
    }
}

/// A check in the JSON document: our names, then the Go routerd's for the
/// same values (`area`, `status` = result, `detail` = reason, `remedy` =
/// hint).
impl Serialize for Check {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut c = s.serialize_struct("Check", 9)?;
        c.serialize_field("id", self.id)?;
        c.serialize_field("subject", &self.subject)?;
        c.serialize_field("result", &self.result)?;
        c.serialize_field("reason", &self.reason)?;
        c.serialize_field("hint", &self.hint)?;
        c.serialize_field("area", self.area())?;
        c.serialize_field("status", &self.result)?;
        c.serialize_field("detail", &self.reason)?;
        c.serialize_field("remedy", &self.hint)?;
        c.end()
    }
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
        if g.disk.is_empty() && st.host.is_some() {
            out.push(check(
                "storage",
                "box",
                Verdict::Warn,
                "no store: configuration and keys will not survive a restart (a new key means re-keying the other site)",
                "start routerd-host with --state-dir DIR (it keeps the box's store in DIR/state)",
            ));
        } else if g.disk.is_empty() {
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

    // The firmware slots: a trial not decided yet, or one that failed.
    if let Some(fw) = &st.firmware {
        out.push(firmware(fw));
    }

    // A commit-confirm on trial: the box goes back by itself unless confirmed.
    if let Some(p) = &st.pending_confirm {
        out.push(check(
            "config.confirm",
            format!("generation {}", p.generation),
            Verdict::Warn,
            format!(
                "pending confirmation: generation {} reverts to {} in {} s unless confirmed",
                p.generation,
                p.reverts_to,
                p.left_ms.div_ceil(1000)
            ),
            "routerctl confirm keeps it (or let it revert: routerctl config history shows both)",
        ));
    }

    // The WAN's DHCP lease and the peers' names (the image's services).
    wan_services(st, &mut out);

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
        // The loop gives every receive buffer back within its turn: one
        // still out, or one given back to the wrong NIC, is a firmware bug
        // that shrinks the ring until the port goes deaf.
        if p.rx_loans_out + p.rx_foreign_loans > 0 {
            out.push(check(
                "port.rx-buffers",
                p.name.as_str(),
                Verdict::Fail,
                format!("{} receive buffers not given back, {} given back to the wrong NIC", p.rx_loans_out, p.rx_foreign_loans),
                "a firmware bug: save `routerctl status --json` and the console log, report them, and reboot the box",
            ));
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
        None => out.push(pass("route.default", "box", format!("the default route is not the tunnel ({})", routed_into_tunnel(st)))),
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
        let now = p.endpoint.map(|e| e.to_string());
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
                "a name: the dns.name check says why it does not resolve; an address: give one the box can reach",
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

    segments(st, cfg, &mut out);
    if let Some(b) = &st.bgp {
        bgp(st, b, &mut out);
    }
    conntrack(st, cfg, &mut out);

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

/// `firmware.slots`: the running slot confirmed (pass), on an unconfirmed
/// trial or back from one that failed (warn).
fn firmware(fw: &routerd_provision::message::FirmwareStatus) -> Check {
    use crate::upgrade_cmd::{other_slot, slot_identity};
    let name = |slot: &str| slot_identity(fw, slot).map_or_else(|| "no routerd firmware".to_string(), |i| i.to_string());
    let running = fw.running.as_str();
    let other = other_slot(running).unwrap_or("?");
    let subject = format!("slot {running}");
    if let Some(n) = fw.trial_tries_left {
        return check(
            "firmware.slots",
            subject,
            Verdict::Warn,
            format!(
                "slot {running} runs {} on trial, not confirmed yet ({} left before the box goes back to slot {other}, {})",
                name(running),
                crate::plural(usize::from(n), "boot"),
                name(other)
            ),
            "a healthy firmware confirms itself within a minute of booting; if it does not, the box returns to the other slot by itself",
        );
    }
    if let Some(failed) = fw.failed.as_deref() {
        return check(
            "firmware.slots",
            subject,
            Verdict::Warn,
            format!(
                "slot {running} runs {}; the upgrade to {} (slot {failed}) did not confirm and the box went back",
                name(running),
                name(failed)
            ),
            format!(
                "the upgrade to {} did not confirm; check its console log; `routerctl upgrade` again or keep the running firmware",
                name(failed)
            ),
        );
    }
    pass(
        "firmware.slots",
        subject,
        match slot_identity(fw, other) {
            Some(i) => format!("slot {running} runs {} (confirmed); slot {other} keeps {i} as the fallback", name(running)),
            None => format!("slot {running} runs {} (confirmed); slot {other} holds no routerd firmware", name(running)),
        },
    )
}

/// What the peers' allowed IPs route into the tunnel, for `route.default`:
/// `… 10.20.0.50/32 to cloud` or `… 10.2.0.0/16 to wro; 10.3.0.0/16 to waw`.
/// `wan.dhcp`: the lease; `dns.name`: each peer endpoint given by name.
fn wan_services(st: &Status, out: &mut Vec<Check>) {
    if let Some(d) = &st.dhcp {
        let port = d.port.as_str();
        match d.address {
            Some(a) => {
                let left = match (d.lease_secs, d.leased_ms_ago) {
                    (Some(secs), Some(ago)) => format!(", {} s of {secs} s left", u64::from(secs).saturating_sub(ago / 1000)),
                    _ => String::new(),
                };
                let gw = d.gateway.map_or("no gateway".to_string(), |g| format!("gateway {g}"));
                let server = d.server.map_or(String::new(), |s| format!(" from {s}"));
                out.push(pass("wan.dhcp", port, format!("leased {a}{server}, {gw}{left}")));
            }
            None => {
                let secs = d.unbound_ms.unwrap_or(0) / 1000;
                let (verdict, reason) = if d.received == 0 {
                    (
                        Verdict::Fail,
                        format!("no lease for {secs} s: {} requests sent, no DHCP server answered; {port} has no address", d.sent),
                    )
                } else {
                    (Verdict::Fail, format!("no lease for {secs} s: {} requests sent, {} answers, none granted one", d.sent, d.received))
                };
                let verdict = if secs < 30 && d.lost == 0 { Verdict::Warn } else { verdict };
                out.push(check(
                    "wan.dhcp",
                    port,
                    verdict,
                    reason,
                    "check that a DHCP server serves the WAN link (cable, VLAN, the ISP router's DHCP); or give a static address",
                ));
            }
        }
    }
    let Some(r) = &st.resolver else { return };
    let servers = if r.servers.is_empty() {
        "no DNS server".to_string()
    } else {
        r.servers.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
    };
    for n in &r.names {
        let name = n.name.as_str();
        match (n.address, n.error.is_empty()) {
            (Some(a), true) => {
                let ago = n.resolved_ms_ago.unwrap_or(0) / 1000;
                let ttl = n.ttl_secs.map_or(String::new(), |t| format!(", ttl {t} s"));
                out.push(pass("dns.name", name, format!("resolves to {a} (asked {servers}, {ago} s ago{ttl})")));
            }
            (Some(a), false) => out.push(check(
                "dns.name",
                name,
                Verdict::Warn,
                format!("keeping {a}: the last lookup failed: {} ({} of {} lookups failed)", n.error.as_str(), n.failures, n.lookups),
                format!("check that {servers} answers for {name}"),
            )),
            (None, _) => out.push(check(
                "dns.name",
                name,
                Verdict::Fail,
                format!(
                    "does not resolve: {} (asked {servers}; {} lookups, {} failed); its peer has no endpoint",
                    if n.error.is_empty() { "no lookup finished yet" } else { n.error.as_str() },
                    n.lookups,
                    n.failures
                ),
                "check the name and the DNS record (dyndns), and that the [dns] servers (or the DHCP lease's) answer",
            )),
        }
    }
}

fn routed_into_tunnel(st: &Status) -> String {
    const SHOWN: usize = 8;
    let total: usize = st.peers.iter().map(|p| p.allowed_ips.len()).sum();
    if total == 0 {
        return "no peer has allowed IPs: nothing is routed into it".into();
    }
    let mut left = SHOWN;
    let mut per_peer = Vec::new();
    for p in st.peers.iter().filter(|p| !p.allowed_ips.is_empty()) {
        if left == 0 {
            break;
        }
        let shown: Vec<String> = p.allowed_ips.iter().take(left).map(|a| a.to_string()).collect();
        left -= shown.len();
        per_peer.push(format!("{} to {}", shown.join(", "), p.name));
    }
    let more = if total > SHOWN { format!(" and {} more", total - SHOWN) } else { String::new() };
    format!("only the peers' allowed IPs are routed into it: {}{more}", per_peer.join("; "))
}

/// The VXLAN overlay (seed 003), per `[[segments]]` entry of the running
/// configuration: what carries each remote VTEP (WireGuard or the WAN in the
/// clear), the MTU budget and the clamp that follows from it, what the FDB
/// learned, and the VXLAN drops. The budget is `config_schema::budget`'s,
/// the same arithmetic validation and the box use. A box without segments
/// gets none of these checks.
/// SNAT and the firewall: the flow table's fill, flows refused, and a
/// firewall that drops what the configuration plainly wants (translated
/// sources whose way out no rule or policy opens).
fn conntrack(st: &Status, cfg: &Config, out: &mut Vec<Check>) {
    use config_schema::firewall::Action;
    use config_schema::Zone;
    if cfg.nat.is_empty() && cfg.firewall.is_none() {
        return;
    }
    let counter = |n: &str| st.counters.iter().find(|c| c.name.as_str() == n).map(|c| c.value);
    let drop = |n: &str| st.drops.iter().find(|c| c.name.as_str() == n).map_or(0, |c| c.value);
    if let (Some(flows), Some(cap)) = (counter("conntrack_flows"), counter("conntrack_capacity")) {
        let full = drop("conntrack_full");
        let (verdict, reason, hint) = if full > 0 {
            (
                Verdict::Warn,
                format!("{flows} of {cap} flows; {full} new flows refused (the table was full of established flows)"),
                "fewer long-lived flows, or shorter timeouts on the hosts' side (keepalives hold flows open)",
            )
        } else if flows * 10 >= cap * 9 {
            (
                Verdict::Warn,
                format!("{flows} of {cap} flows: near full (new flows evict the oldest unanswered ones)"),
                "look for a host opening many flows (routerctl status: conntrack)",
            )
        } else {
            (Verdict::Pass, format!("{flows} of {cap} flows"), "")
        };
        out.push(check("conntrack.table", "box", verdict, reason, hint));
    }
    let Some(fw) = &cfg.firewall else { return };
    for (i, n) in cfg.nat.iter().enumerate() {
        let out_zone = |z: &Zone| matches!(z, Zone::Any | Zone::Wan) || *z == Zone::Port(n.out.clone());
        let opened = fw.rules.iter().any(|r| r.action == Action::Accept && out_zone(&r.to))
            || fw.policy.iter().any(|p| p.action == Action::Accept && out_zone(&p.to))
            || fw.default == Action::Accept;
        if !opened {
            out.push(check(
                "firewall.nat",
                format!("nat[{i}] {}", n.source),
                Verdict::Warn,
                format!(
                    "{} is translated out of {} but no firewall rule or policy accepts anything to wan: the default drops it",
                    n.source, n.out
                ),
                "add [[firewall.policy]] from = \"<the hosts' zone>\", to = \"wan\", action = \"accept\"",
            ));
        }
    }
    for name in ["conntrack_invalid", "nat_port_exhausted"] {
        let n = drop(name);
        if n > 0 {
            out.push(check(
                "conntrack.drops",
                name,
                Verdict::Warn,
                format!("{n} packets dropped: {name}"),
                "conntrack_invalid: TCP without a SYN (flows older than an apply that changed the rules, or a new WAN lease); nat_port_exhausted: too many flows to one destination",
            ));
        }
    }
}

fn segments(st: &Status, cfg: &Config, out: &mut Vec<Check>) {
    if cfg.segments.is_empty() {
        return;
    }
    let tunnel = cfg.wireguard.first();
    let tunnel_address = tunnel.and_then(|t| t.address).map(|a| a.addr());
    let wan = cfg.ports.iter().find(|p| p.role == PortRole::Wan);
    let wan_address = wan.and_then(|p| match p.address {
        Some(PortAddress::Static(c)) => Some(c.addr()),
        _ => None,
    });
    let wan_name = wan.map_or("the WAN", |p| p.name.as_str());
    for s in &cfg.segments {
        let name = s.name.as_str();
        let local = s.local_vtep;
        let local_is_tunnel = Some(local) == tunnel_address;

        // The bridge and the local VTEP.
        let bridge = format!("VNI {} bridges {} (UDP {})", s.vni, s.port, s.udp_port);
        if local_is_tunnel {
            out.push(pass(
                "segment.bridge",
                name,
                format!(
                    "{bridge}; local VTEP {local} is the address of tunnel {}: the overlay rides inside WireGuard",
                    tunnel.map_or("?", |t| t.name.as_str())
                ),
            ));
        } else if Some(local) == wan_address {
            out.push(check(
                "segment.bridge",
                name,
                Verdict::Warn,
                format!("{bridge}; local VTEP {local} is the address of {wan_name}: VXLAN leaves in the clear"),
                match tunnel_address {
                    Some(t) => {
                        format!("set local_vtep = \"{t}\" (the tunnel address) and list the other sites' tunnel addresses in remote_vteps")
                    }
                    None => {
                        "give the tunnel an address (wireguard.address), use it as local_vtep and list the other sites' tunnel addresses"
                            .into()
                    }
                },
            ));
        } else {
            out.push(check(
                "segment.bridge",
                name,
                Verdict::Fail,
                format!("{bridge}; local VTEP {local} is neither the tunnel address nor the WAN address"),
                "set local_vtep to this box's tunnel address (wireguard.address)",
            ));
        }

        // Each remote VTEP: through which peer, or in the clear.
        for &vtep in &s.remote_vteps {
            out.push(remote_vtep(st, cfg, s, vtep, tunnel_address, wan_address));
        }

        // The MTU budget: WAN − 80 (WireGuard) = tunnel − 50 (VXLAN) = overlay.
        let b = budget::segment_budget(cfg, s);
        let carrier = match b.carrier {
            Carrier::Tunnel(t) => cfg.tunnel(t).map(|t| budget::tunnel_budget(cfg, t)),
            Carrier::Underlay => None,
        };
        let chain = match carrier {
            Some(t) if t.mtu < t.max_mtu => format!(
                "WAN {} − {} (WireGuard) = {}, tunnel mtu {} − {} (VXLAN) = overlay {}",
                t.underlay_mtu,
                budget::WIREGUARD_OVERHEAD,
                t.max_mtu,
                t.effective_mtu,
                budget::VXLAN_OVERHEAD,
                b.max_mtu
            ),
            Some(t) => format!(
                "WAN {} − {} (WireGuard) = tunnel {} − {} (VXLAN) = overlay {}",
                t.underlay_mtu,
                budget::WIREGUARD_OVERHEAD,
                t.effective_mtu,
                budget::VXLAN_OVERHEAD,
                b.max_mtu
            ),
            None => format!("WAN {} − {} (VXLAN, no WireGuard) = overlay {}", b.carrier_mtu, budget::VXLAN_OVERHEAD, b.max_mtu),
        };
        let mss = budget::clamp_mss(s.mss_clamp, b.auto_mss);
        let clamp = match s.mss_clamp {
            MssClamp::Auto => format!("MSS clamp {mss} (auto: {} − {})", b.effective_mtu, budget::TCP_IPV4_HEADERS),
            MssClamp::Value(_) => format!("MSS clamp {mss} (fixed)"),
        };
        if !b.fits() {
            out.push(check(
                "segment.mtu",
                name,
                Verdict::Fail,
                format!(
                    "segment mtu {} is above the budget ({chain}): frames over {} on {} are dropped (vxlan_oversize), never fragmented; {clamp}",
                    s.mtu, b.max_mtu, s.port
                ),
                format!("set mtu = {} in segment {name}, and the same MTU on the hosts bridged on {} at both sites", b.max_mtu, s.port),
            ));
        } else if mss > b.auto_mss {
            out.push(check(
                "segment.mtu",
                name,
                Verdict::Warn,
                format!(
                    "MSS clamp {mss} is above what the overlay carries ({chain}; {} − {} = {}): full-size TCP segments will be dropped",
                    b.effective_mtu,
                    budget::TCP_IPV4_HEADERS,
                    b.auto_mss
                ),
                format!("set mss_clamp = \"auto\" (or ≤ {}) in segment {name}", b.auto_mss),
            ));
        } else {
            let below = if s.mtu < b.max_mtu { format!(" (below the budget {})", b.max_mtu) } else { String::new() };
            out.push(pass("segment.mtu", name, format!("segment mtu {}{below} fits: {chain}; {clamp}", s.mtu)));
        }

        // What the FDB learned, per side.
        out.push(segment_fdb(st, s));
    }
    out.push(segment_drops(st, cfg));
}

/// The BGP EVPN service, when the box runs one: `bgp.sessions` per peer
/// (Established, or its state and why it last went down), then per EVPN
/// VNI `bgp.vteps` (somewhere to flood BUM traffic: a learned or a
/// configured VTEP) and `bgp.remote-macs` (a MAC learned from a peer).
fn bgp(st: &Status, b: &BgpStatus, out: &mut Vec<Check>) {
    if b.peers.is_empty() {
        out.push(check(
            "bgp.sessions",
            "bgp",
            Verdict::Warn,
            format!("[bgp] (AS {}) has no peers: no VTEP or MAC is learned", b.asn),
            "list the other sites' BGP speakers in bgp.peers (their tunnel addresses)",
        ));
    }
    for p in &b.peers {
        let subject = format!("{} {}", p.name, p.address);
        if p.state == BgpState::Established {
            let up = match p.uptime_ms {
                Some(ms) if ms >= 1000 => crate::show::duration(ms / 1000),
                Some(_) => "under a second".to_string(),
                None => "?".to_string(),
            };
            out.push(pass(
                "bgp.sessions",
                subject,
                format!("Established for {up}, {} routes received (AS {})", p.prefixes_received, b.asn),
            ));
            continue;
        }
        let why = match (p.established, p.last_down.is_empty()) {
            (0, true) => "never established".to_string(),
            (0, false) => format!("never established; last attempt ended: {}", p.last_down),
            (n, _) => format!("was up {n} times, down {} times; last down: {}", p.downs, p.last_down),
        };
        out.push(check(
            "bgp.sessions",
            subject,
            Verdict::Fail,
            format!("session {} ({why})", p.state),
            format!(
                "the peer must run BGP in AS {} with this box ({}) as an iBGP neighbour with l2vpn evpn, reachable \
                 through the tunnel on TCP 179; `routerctl bgp summary` shows the sessions",
                b.asn, b.router_id
            ),
        ));
    }
    for v in &b.vnis {
        let subject = v.segment.as_ref().map_or_else(|| format!("vni {}", v.vni), |s| s.to_string());
        let configured: Vec<String> = st
            .segments
            .iter()
            .find(|g| g.vni == v.vni)
            .map(|g| g.vteps.iter().map(|t| format!("{} (configured)", t.address)).collect())
            .unwrap_or_default();
        let mut vteps: Vec<String> = v.flood_list.iter().map(|a| format!("{a} (learned)")).collect();
        let more = usize::from(v.flood_list_total).saturating_sub(vteps.len());
        if more > 0 {
            vteps.push(format!("{more} more learned"));
        }
        vteps.extend(configured);
        if vteps.is_empty() {
            out.push(check(
                "bgp.vteps",
                subject.clone(),
                Verdict::Fail,
                format!(
                    "VNI {}: no VTEP to flood to: no peer advertised a type-3 route for it and the segment has no \
                     remote_vteps, so broadcast (ARP) stays on this site",
                    v.vni
                ),
                format!(
                    "the other sites must carry VNI {} with EVPN (FRR: advertise-all-vni, the VNI on a VXLAN device) \
                     over an Established session (bgp.sessions)",
                    v.vni
                ),
            ));
        } else {
            out.push(pass("bgp.vteps", subject.clone(), format!("VNI {} floods to {}", v.vni, vteps.join(", "))));
        }
        if v.remote_macs == 0 {
            out.push(check(
                "bgp.remote-macs",
                subject,
                Verdict::Warn,
                format!(
                    "VNI {}: no remote MAC learned ({} local MACs advertised): no host behind the other VTEPs has \
                     been seen, or they do not advertise type-2 routes",
                    v.vni, v.local_macs
                ),
                "send traffic from a host on the far segment (ping across), then `routerctl bgp routes --vni N`",
            ));
        } else {
            out.push(pass(
                "bgp.remote-macs",
                subject,
                format!("VNI {}: {} remote MACs learned, {} local MACs advertised", v.vni, v.remote_macs, v.local_macs),
            ));
        }
    }
}

/// One remote VTEP of a segment: inside a peer's allowed IPs (which peer,
/// and is its session alive?) or over the WAN in the clear. The box sends
/// VXLAN from the tunnel address into the tunnel and from the WAN address
/// onto the WAN, whatever `local_vtep` says; the far side accepts only the
/// VTEPs it lists, so a mismatch is named.
fn remote_vtep(
    st: &Status,
    cfg: &Config,
    s: &config_schema::Segment,
    vtep: std::net::Ipv4Addr,
    tunnel_address: Option<std::net::Ipv4Addr>,
    wan_address: Option<std::net::Ipv4Addr>,
) -> Check {
    const ID: &str = "segment.vtep";
    let subject = format!("{}/{vtep}", s.name);
    let local = s.local_vtep;
    let Some((peer, prefix)) = cfg.route_peer(vtep) else {
        let source = match wan_address {
            Some(w) if w != local => format!("; frames to it leave from the WAN address {w}, not local_vtep {local}"),
            _ => String::new(),
        };
        return check(
            ID,
            subject,
            Verdict::Warn,
            format!("over the WAN in the clear: no peer's allowed IPs contain {vtep}, so VXLAN to it is unencrypted{source}"),
            format!("use that site's tunnel address as its VTEP, or add {vtep}/32 to the allowed_ips of the peer at that site"),
        );
    };
    let via = format!("through {} to peer {} (inside {prefix})", peer.tunnel, peer.name);
    let source = match tunnel_address {
        Some(t) if t != local => Some(format!("frames to it leave from the tunnel address {t}, not local_vtep {local}")),
        _ => None,
    };
    let age = st.peers.iter().find(|p| p.name == peer.name).and_then(|p| p.last_handshake_ms_ago).map(|ms| ms / 1000);
    let (verdict, session) = match age {
        None => (Verdict::Fail, "but no handshake yet: the overlay to it is down".to_string()),
        Some(a) if a > HANDSHAKE_FAIL_S => {
            (Verdict::Fail, format!("but the last handshake was {a} s ago: no session, the overlay to it is down"))
        }
        Some(a) if a > HANDSHAKE_WARN_S => (Verdict::Warn, format!("last handshake {a} s ago (> {HANDSHAKE_WARN_S} s)")),
        Some(a) => (Verdict::Pass, format!("handshake {a} s ago: encrypted")),
    };
    match (verdict, source) {
        (Verdict::Pass, None) => pass(ID, subject, format!("{via}, {session}")),
        (Verdict::Pass, Some(src)) => check(
            ID,
            subject,
            Verdict::Warn,
            format!("{via}, {session}; {src}"),
            format!("set local_vtep = \"{}\" so the far side's remote_vteps can name this box", tunnel_address.map_or(local, |t| t)),
        ),
        (v, src) => check(
            ID,
            subject,
            v,
            format!("{via}, {session}{}", src.map_or(String::new(), |s| format!("; {s}"))),
            format!("see peer.handshake for {}", peer.name),
        ),
    }
}

/// The MACs a segment's FDB holds: on the bridged port, behind each VTEP.
fn segment_fdb(st: &Status, s: &config_schema::Segment) -> Check {
    const ID: &str = "segment.fdb";
    let name = s.name.as_str();
    let Some(g) = st.segments.iter().find(|g| g.name == s.name) else {
        return check(ID, name, Verdict::Skip, "the box does not report this segment's FDB (older routerd)", "update the box");
    };
    let behind: Vec<String> = g.vteps.iter().map(|v| format!("{} behind {}", v.fdb_remote, v.address)).collect();
    let learned = format!("{} MACs on {}, {} behind remote VTEPs ({})", g.fdb_local, g.port, g.fdb_remote, behind.join(", "));
    let full = st.counters.iter().find(|c| c.name.as_str() == "fdb_full").map_or(0, |c| c.value);
    if full > 0 {
        return check(
            ID,
            name,
            Verdict::Warn,
            format!(
                "{learned}; {full} MACs not learned so far because the FDB (all segments) was full: their frames are flooded to every VTEP"
            ),
            format!("more MACs than the FDB holds, or a MAC flood on {}: check the hosts bridged there", g.port),
        );
    }
    if g.fdb_local > 0 && g.fdb_remote == 0 {
        return check(
            ID,
            name,
            Verdict::Warn,
            format!("{learned}: hosts here are heard, nothing came back from the far side"),
            format!(
                "check segment.vtep and the far box: VNI {}, UDP {}, and this box's VTEP {} in its remote_vteps",
                g.vni, g.udp_port, s.local_vtep
            ),
        );
    }
    if g.fdb_local == 0 && g.fdb_remote == 0 {
        return pass(ID, name, format!("no MACs learned on {} or behind its VTEPs: no frame crossed the segment recently", g.port));
    }
    pass(ID, name, learned)
}

/// VXLAN drops since the last run (or since the box started forwarding).
/// The dataplane counts them per box, not per segment, so there is one
/// check for all segments.
fn segment_drops(st: &Status, cfg: &Config) -> Check {
    const ID: &str = "segment.drops";
    let subject = cfg.segments.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(",");
    let (drops, since) = if st.mark_age_ms.is_some() {
        (&st.drops_since_mark, format!("in the last {} s", st.mark_age_ms.unwrap_or(0) / 1000))
    } else {
        (&st.drops, "since the box started forwarding".to_string())
    };
    let counter = |n: &str| st.counters.iter().find(|c| c.name.as_str() == n).map_or(0, |c| c.value);
    let mut vxlan: Vec<_> = drops.iter().filter(|d| d.name.starts_with("vxlan_") && d.value > 0).collect();
    vxlan.sort_by_key(|d| std::cmp::Reverse(d.value));
    let wide = if cfg.segments.len() > 1 { " (all segments: the box counts VXLAN per box)" } else { "" };
    if vxlan.is_empty() {
        return pass(
            ID,
            subject,
            format!(
                "no VXLAN drops {since}{wide}; {} frames encapsulated, {} decapsulated, {} flooded so far",
                counter("vxlan_encap"),
                counter("vxlan_decap"),
                counter("vxlan_floods")
            ),
        );
    }
    let named: Vec<String> = vxlan.iter().map(|d| format!("{} {}", d.name, d.value)).collect();
    let mut hints = Vec::new();
    for d in &vxlan {
        hints.push(match d.name.as_str() {
            "vxlan_oversize" => {
                let mtus: Vec<String> =
                    cfg.segments.iter().map(|s| format!("{} on {}", budget::segment_budget(cfg, s).effective_mtu, s.port)).collect();
                format!(
                    "frames larger than the overlay carries are dropped, never fragmented: set the hosts' MTU to {} (at both sites)",
                    mtus.join(", ")
                )
            }
            "vxlan_unknown_vtep" => "VXLAN arrived from an address not in remote_vteps: list the far box's local_vtep there".into(),
            "vxlan_unknown_vni" => "VXLAN arrived for a VNI this box does not carry: use the same VNI at every VTEP".into(),
            "vxlan_outside_tunnel" => {
                "VXLAN in the clear from a VTEP that speaks only through the tunnel: spoofed from the WAN, or the far box sends it around WireGuard".into()
            }
            _ => format!("{}: see firmware/dataplane/PIPELINE.md", d.name),
        });
    }
    check(ID, subject, Verdict::Warn, format!("{} {since}{wide}", named.join(", ")), hints.join("; "))
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

/// The JSON document when the box could not be asked: the same shape as
/// [`json_doc`] (no checks), `result` fail and the error, like the config
/// commands' `{…, error: {kind, message}}`.
pub fn error_doc(port: &str, kind: &str, message: &str) -> Value {
    json!({
        "schema": SCHEMA,
        "port": port,
        "device": null,
        "side": null,
        "result": Verdict::Fail,
        "error": { "kind": kind, "message": message },
        "summary": { "pass": 0, "warn": 0, "fail": 0, "skip": 0 },
        "checks": [],
    })
}

/// `routerctl doctor hybrid`.
pub fn run(conn: &crate::box_cmd::Conn, json_out: bool) -> Result<u8, crate::Failure> {
    let fetched = match conn.connect() {
        Ok(mut c) => {
            let r = fetch(&mut c).map_err(|f| ("box", f));
            let _ = c.close();
            r
        }
        Err(f) => Err((if f.code == crate::EXIT_USAGE { "usage" } else { "unreachable" }, f)),
    };
    let (st, cfg) = match fetched {
        Ok(got) => got,
        Err((kind, f)) if json_out => {
            println!("{}", serde_json::to_string_pretty(&error_doc(conn.port(), kind, f.message.trim_end())).unwrap_or_default());
            return Ok(f.code);
        }
        Err((_, f)) => return Err(f),
    };
    let checks = hybrid(&st, cfg.as_deref());
    if json_out {
        println!("{}", serde_json::to_string_pretty(&json_doc(conn.port(), &st, &checks)).unwrap_or_default());
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
        let count = cfg.ports.len().max(2);
        let nics: Vec<NicInfo> = (0..count as u8).map(|i| NicInfo::ethernet([2, 0, 0, 0, 0, i])).collect();
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
        let snaps = vec![NicSnapshot { link_up: true, ..NicSnapshot::default() }; count];
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
        assert_eq!(doc["schema"], 2);
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

        // Receive buffers lost or mixed up: a failure, named; none: no check at all.
        assert!(!hybrid(&st, Some(&cfg)).iter().any(|c| c.id == "port.rx-buffers"));
        st.ports[0].rx_foreign_loans = 1;
        let b = find(&hybrid(&st, Some(&cfg)), "port.rx-buffers", st.ports[0].name.as_str()).clone();
        assert_eq!(b.result, Verdict::Fail);
        assert!(b.reason.contains("1 given back to the wrong NIC"), "{}", b.reason);
        st.ports[0].rx_foreign_loans = 0;

        // The owner box routes its own address back into the tunnel.
        st.peers[0].allowed_ips.push("10.20.0.10/32".parse().unwrap()).unwrap();
        let l = find(&hybrid(&st, Some(&cfg)), "claim.loop", "10.20.0.10").clone();
        assert_eq!(l.result, Verdict::Fail);
        assert!(l.hint.contains("allowed_ips"));

        // A clamp above the path.
        st.claims[0].mss = 1460;
        assert_eq!(find(&hybrid(&st, Some(&cfg)), "claim.mss", "10.20.0.50").result, Verdict::Warn);
    }

    /// `firmware.slots`: absent without slots, a pass when the running
    /// slot is confirmed, a warning on a trial and after a failed one.
    #[test]
    fn the_firmware_slots_are_judged() {
        use routerd_provision::message::{text, FirmwareIdentity, FirmwareStatus, SlotStatus};
        let cfg = config_schema::human::from_toml(CFG).unwrap();
        let mut st = status(&cfg);
        assert!(hybrid(&st, Some(&cfg)).iter().all(|c| c.area() != "firmware"), "no slots: no check");
        let id = |build: &str| Some(FirmwareIdentity { version: text("0.1.0"), build: text(build), flags: 0 });
        let mut fw = FirmwareStatus { running: text("A"), ..FirmwareStatus::default() };
        fw.slots.push(SlotStatus { slot: text("A"), identity: id("abc"), state: text("running") }).unwrap();
        fw.slots.push(SlotStatus { slot: text("B"), identity: id("def"), state: text("standby") }).unwrap();
        st.firmware = Some(fw.clone());
        let c = find(&hybrid(&st, Some(&cfg)), "firmware.slots", "slot A").clone();
        assert_eq!(c.result, Verdict::Pass);
        assert_eq!(c.reason, "slot A runs routerd 0.1.0 (build abc) (confirmed); slot B keeps routerd 0.1.0 (build def) as the fallback");

        let mut trial = fw.clone();
        trial.running = text("B");
        trial.trial_tries_left = Some(1);
        st.firmware = Some(trial);
        let c = find(&hybrid(&st, Some(&cfg)), "firmware.slots", "slot B").clone();
        assert_eq!(c.result, Verdict::Warn);
        assert!(c.reason.contains("on trial, not confirmed yet (1 boot left before the box goes back to slot A"), "{c:?}");

        let mut failed = fw;
        failed.failed = Some(text("B"));
        st.firmware = Some(failed);
        let checks = hybrid(&st, Some(&cfg));
        let c = find(&checks, "firmware.slots", "slot A");
        assert_eq!(c.result, Verdict::Warn);
        assert_eq!(
            c.hint,
            "the upgrade to routerd 0.1.0 (build def) did not confirm; check its console log; `routerctl upgrade` again or keep \
             the running firmware"
        );
        assert!(text_of(&st, &checks).contains("firmware.slots"), "{}", text_of(&st, &checks));
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

    #[test]
    fn the_dhcp_lease_and_the_peers_names_are_judged() {
        use routerd_provision::message::{text, DhcpStatus, NameStatus, ResolverStatus};
        let cfg = config_schema::human::from_toml(CFG).unwrap();
        let mut st = status(&cfg);
        // No DHCP server answers: after 30 s that is a failure.
        st.dhcp = Some(DhcpStatus { port: text("wan0"), unbound_ms: Some(45_000), sent: 5, ..DhcpStatus::default() });
        let c = find(&hybrid(&st, Some(&cfg)), "wan.dhcp", "wan0").clone();
        assert_eq!(c.result, Verdict::Fail);
        assert!(c.reason.contains("no lease for 45 s: 5 requests sent, no DHCP server answered"), "{}", c.reason);
        st.dhcp.as_mut().unwrap().unbound_ms = Some(4_000);
        assert_eq!(find(&hybrid(&st, Some(&cfg)), "wan.dhcp", "wan0").result, Verdict::Warn, "still asking");
        st.dhcp = Some(DhcpStatus {
            port: text("wan0"),
            address: Some("192.0.2.140/24".parse().unwrap()),
            gateway: Some("192.0.2.1".parse().unwrap()),
            server: Some("192.0.2.1".parse().unwrap()),
            lease_secs: Some(120),
            leased_ms_ago: Some(20_000),
            ..DhcpStatus::default()
        });
        let c = find(&hybrid(&st, Some(&cfg)), "wan.dhcp", "wan0").clone();
        assert_eq!(
            (c.result, c.reason.as_str()),
            (Verdict::Pass, "leased 192.0.2.140/24 from 192.0.2.1, gateway 192.0.2.1, 100 s of 120 s left")
        );
        // A name that never resolves fails, naming why; a kept one warns.
        let names = [NameStatus {
            name: text("roz.example.net"),
            error: text("no such name (NXDOMAIN)"),
            lookups: 3,
            failures: 3,
            ..NameStatus::default()
        }]
        .into_iter()
        .collect();
        st.resolver = Some(ResolverStatus { servers: [std::net::Ipv4Addr::new(192, 0, 2, 1)].into_iter().collect(), names, refused: 0 });
        let c = find(&hybrid(&st, Some(&cfg)), "dns.name", "roz.example.net").clone();
        assert_eq!(c.result, Verdict::Fail);
        assert!(c.reason.contains("does not resolve: no such name (NXDOMAIN) (asked 192.0.2.1; 3 lookups, 3 failed)"), "{}", c.reason);
        let n = &mut st.resolver.as_mut().unwrap().names[0];
        n.address = Some("198.51.100.35".parse().unwrap());
        assert_eq!(find(&hybrid(&st, Some(&cfg)), "dns.name", "roz.example.net").result, Verdict::Warn);
        let n = &mut st.resolver.as_mut().unwrap().names[0];
        n.error = Default::default();
        n.resolved_ms_ago = Some(5_000);
        n.ttl_secs = Some(60);
        let c = find(&hybrid(&st, Some(&cfg)), "dns.name", "roz.example.net").clone();
        assert_eq!((c.result, c.reason.as_str()), (Verdict::Pass, "resolves to 198.51.100.35 (asked 192.0.2.1, 5 s ago, ttl 60 s)"));
    }

    /// Seed 003's roz box as shipped, wro's endpoint given as the address
    /// its name resolves to (no resolver runs in these tests).
    #[test]
    fn nat_and_firewall_are_judged() {
        let text = include_str!("../../config-schema/examples/two-site-roz-firewall.toml");
        let cfg: Config = config_schema::human::from_toml(&text.replace("wro.example.net:51820", "198.51.100.20:51820")).unwrap();
        let mut st = status(&cfg);
        let checks = hybrid(&st, Some(&cfg));
        let t = find(&checks, "conntrack.table", "box");
        assert_eq!(t.result, Verdict::Pass, "{t:?}");
        assert!(t.reason.contains("of 2048 flows"), "{}", t.reason);
        assert!(!checks.iter().any(|c| c.id == "firewall.nat"), "the example opens the VMs' way out");
        // Nearly full, and the VMs' way out closed: both named.
        for c in st.counters.iter_mut().filter(|c| c.name.as_str() == "conntrack_flows") {
            c.value = 2000;
        }
        let mut closed = cfg.clone();
        closed.firewall.as_mut().unwrap().policy.retain(|p| p.to != config_schema::Zone::Wan);
        let checks = hybrid(&st, Some(&closed));
        assert_eq!(find(&checks, "conntrack.table", "box").result, Verdict::Warn);
        let n = find(&checks, "firewall.nat", "nat[0] 10.1.1.0/24");
        assert_eq!(n.result, Verdict::Warn);
        assert!(n.reason.contains("no firewall rule or policy accepts"), "{}", n.reason);
    }

    fn two_site() -> Config {
        let text = include_str!("../../config-schema/examples/two-site-roz.toml");
        config_schema::human::from_toml(&text.replace("wro.example.net:51820", "198.51.100.20:51820")).unwrap()
    }

    /// The roz box with a live session to wro and VMs heard on both sides.
    fn healthy_overlay(cfg: &Config) -> Box<Status> {
        let mut st = status(cfg);
        st.peers[0].last_handshake_ms_ago = Some(12_000);
        st.peers[0].rx_bytes = 4000;
        st.peers[0].tx_bytes = 5000;
        let g = &mut st.segments[0];
        g.fdb_local = 2;
        g.fdb_remote = 3;
        g.vteps[0].fdb_remote = 3;
        st
    }

    /// BGP EVPN: a session per peer, then per VNI its VTEPs and remote MACs;
    /// none of it on a box without BGP.
    #[test]
    fn bgp_checks_name_the_peer_and_the_vni() {
        let cfg = two_site();
        let mut st = healthy_overlay(&cfg);
        assert!(!hybrid(&st, Some(&cfg)).iter().any(|c| c.id.starts_with("bgp.")), "no [bgp], no bgp checks");
        let mut b = crate::bgp_cmd::tests::fixture();
        b.vnis[0].vni = 100_000;
        b.vnis[0].segment = Some(config_schema::Name::new("crosssite").unwrap());
        st.bgp = Some(b);
        let checks = hybrid(&st, Some(&cfg));
        println!("{}", text(&st, &checks));
        let up = find(&checks, "bgp.sessions", "pve1 10.1.0.2");
        assert_eq!(up.result, Verdict::Pass);
        assert_eq!(up.reason, "Established for 1 minute, 5 seconds, 2 routes received (AS 65000)");
        let down = find(&checks, "bgp.sessions", "pve2 10.1.0.3");
        assert_eq!(down.result, Verdict::Fail);
        assert_eq!(down.reason, "session Active (was up 1 times, down 3 times; last down: sent NOTIFICATION 4/0 (hold timer expired))");
        assert!(down.hint.contains("AS 65000") && down.hint.contains("10.1.0.1"), "{down:?}");
        let v = find(&checks, "bgp.vteps", "crosssite");
        assert_eq!((v.result, v.reason.as_str()), (Verdict::Pass, "VNI 100000 floods to 10.1.0.2 (learned), 10.2.0.1 (configured)"));
        assert_eq!(find(&checks, "bgp.remote-macs", "crosssite").result, Verdict::Pass);
        assert!(crate::box_cmd::status_text(&st).contains("bgp (AS 65000, router id 10.1.0.1): 1 of 2 sessions established"));

        // Nothing learned and nothing configured: nowhere to flood; no MAC: a warning.
        let b = st.bgp.as_mut().unwrap();
        b.vnis[0].flood_list.clear();
        b.vnis[0].flood_list_total = 0;
        b.vnis[0].remote_macs = 0;
        st.segments[0].vteps.clear();
        let checks = hybrid(&st, Some(&cfg));
        let v = find(&checks, "bgp.vteps", "crosssite");
        assert_eq!(v.result, Verdict::Fail);
        assert!(v.reason.starts_with("VNI 100000: no VTEP to flood to"), "{v:?}");
        let m = find(&checks, "bgp.remote-macs", "crosssite");
        assert_eq!(m.result, Verdict::Warn);
        assert!(m.reason.starts_with("VNI 100000: no remote MAC learned (0 local MACs advertised)"), "{m:?}");
    }

    #[test]
    fn a_healthy_overlay_passes_every_segment_check() {
        let cfg = two_site();
        let st = healthy_overlay(&cfg);
        let checks = hybrid(&st, Some(&cfg));
        println!("{}", text(&st, &checks));
        assert_eq!(worst(&checks), Verdict::Pass, "{}", text(&st, &checks));

        let b = find(&checks, "segment.bridge", "crosssite");
        assert!(b.reason.contains("VNI 100000 bridges lan1 (UDP 4789)") && b.reason.contains("tunnel wg0"), "{b:?}");
        let v = find(&checks, "segment.vtep", "crosssite/10.2.0.1");
        assert!(v.reason.contains("to peer wro (inside 10.2.0.0/16)") && v.reason.contains("12 s ago"), "{v:?}");
        let m = find(&checks, "segment.mtu", "crosssite");
        assert!(
            m.reason.contains("WAN 1500 − 80 (WireGuard) = tunnel 1420 − 50 (VXLAN) = overlay 1370")
                && m.reason.contains("MSS clamp 1330 (auto: 1370 − 40)"),
            "{m:?}"
        );
        let f = find(&checks, "segment.fdb", "crosssite");
        assert!(f.reason.starts_with("2 MACs on lan1, 3 behind remote VTEPs (3 behind 10.2.0.1)"), "{f:?}");
        assert_eq!(find(&checks, "segment.drops", "crosssite").result, Verdict::Pass);

        // The default route stays; what is routed into the tunnel is named.
        let r = find(&checks, "route.default", "box");
        assert!(r.reason.contains("10.2.0.0/16 to wro"), "{r:?}");

        // JSON carries the new checks like any other.
        let doc = json_doc("unix:/x", &st, &checks);
        assert!(doc["checks"].as_array().unwrap().iter().any(|c| c["id"] == "segment.mtu" && c["subject"] == "crosssite"));

        // `routerctl status` on the same box: a line per segment, and the JSON carries it.
        let shown = crate::box_cmd::status_text(&st);
        assert!(shown.contains("  crosssite    vni 100000   on lan1   udp 4789   fdb 2 local, 3 remote (10.2.0.1 3)"), "{shown}");
        assert!(shown.contains("segments (VXLAN, all segments: 0 encapsulated, 0 decapsulated, 0 flooded; drops: none)"), "{shown}");
        let json = crate::box_cmd::to_json(&*st);
        assert_eq!(json["segments"][0]["vni"], 100_000);
        assert_eq!(json["segments"][0]["vteps"][0]["address"], "10.2.0.1");
        assert_eq!(json["segments"][0]["vteps"][0]["fdb_remote"], 3);
    }

    #[test]
    fn a_box_without_segments_has_no_segment_checks() {
        let cfg = config_schema::human::from_toml(CFG).unwrap();
        let checks = hybrid(&status(&cfg), Some(&cfg));
        assert!(!checks.iter().any(|c| c.id.starts_with("segment.")), "{checks:#?}");
        let r = find(&checks, "route.default", "box");
        assert_eq!(
            r.reason,
            "the default route is not the tunnel (only the peers' allowed IPs are routed into it: 10.20.0.50/32 to cloud)"
        );
    }

    #[test]
    fn a_segment_mtu_above_the_budget_fails_with_the_numbers() {
        let mut cfg = two_site();
        cfg.segments[0].mtu = 1400;
        let st = healthy_overlay(&cfg);
        let m = find(&hybrid(&st, Some(&cfg)), "segment.mtu", "crosssite").clone();
        assert_eq!(m.result, Verdict::Fail);
        assert!(m.reason.starts_with("segment mtu 1400 is above the budget (WAN 1500 − 80 (WireGuard) = tunnel 1420"), "{m:?}");
        assert!(m.reason.contains("frames over 1370 on lan1 are dropped"), "{m:?}");
        assert!(m.hint.contains("mtu = 1370"), "{m:?}");

        // A smaller WAN shrinks the whole chain.
        let mut cfg = two_site();
        for p in cfg.ports.iter_mut() {
            p.mtu = 1400;
        }
        let m = find(&hybrid(&st, Some(&cfg)), "segment.mtu", "crosssite").clone();
        assert_eq!(m.result, Verdict::Fail);
        assert!(m.reason.contains("(WAN 1400 − 80 (WireGuard) = tunnel 1320 − 50 (VXLAN) = overlay 1270)"), "{m:?}");

        // A fixed clamp above the overlay's MSS is a warning.
        let mut cfg = two_site();
        cfg.segments[0].mss_clamp = MssClamp::Value(1360);
        let m = find(&hybrid(&st, Some(&cfg)), "segment.mtu", "crosssite").clone();
        assert_eq!(m.result, Verdict::Warn);
        assert!(m.reason.contains("MSS clamp 1360") && m.reason.contains("1370 − 40 = 1330"), "{m:?}");
    }

    #[test]
    fn a_vtep_outside_the_allowed_ips_is_unencrypted_and_a_dead_peer_fails() {
        let mut cfg = two_site();
        cfg.segments[0].remote_vteps[0] = "203.0.113.7".parse().unwrap();
        let st = healthy_overlay(&cfg);
        let checks = hybrid(&st, Some(&cfg));
        let v = find(&checks, "segment.vtep", "crosssite/203.0.113.7");
        assert_eq!(v.result, Verdict::Warn);
        assert!(v.reason.contains("in the clear") && v.reason.contains("unencrypted"), "{v:?}");
        assert!(v.reason.contains("leave from the WAN address 192.168.1.35, not local_vtep 10.1.0.1"), "{v:?}");
        assert!(v.hint.contains("203.0.113.7/32"), "{v:?}");

        // The local VTEP on the WAN address: the whole segment is in the clear.
        cfg.segments[0].local_vtep = "192.168.1.35".parse().unwrap();
        let b = find(&hybrid(&st, Some(&cfg)), "segment.bridge", "crosssite").clone();
        assert_eq!(b.result, Verdict::Warn);
        assert!(b.reason.contains("address of wan0: VXLAN leaves in the clear") && b.hint.contains("10.1.0.1"), "{b:?}");

        // Through the tunnel, but the peer's session is stale or never came up.
        let cfg = two_site();
        let mut st = healthy_overlay(&cfg);
        st.peers[0].last_handshake_ms_ago = Some(150_000);
        assert_eq!(find(&hybrid(&st, Some(&cfg)), "segment.vtep", "crosssite/10.2.0.1").result, Verdict::Warn);
        st.peers[0].last_handshake_ms_ago = None;
        let v = find(&hybrid(&st, Some(&cfg)), "segment.vtep", "crosssite/10.2.0.1").clone();
        assert_eq!(v.result, Verdict::Fail);
        assert!(v.reason.contains("no handshake yet") && v.hint.contains("peer.handshake"), "{v:?}");
    }

    #[test]
    fn fdb_and_oversize_drops_since_the_mark_warn() {
        use routerd_provision::message::{text, Count};
        let cfg = two_site();
        let mut st = healthy_overlay(&cfg);

        // Hosts heard here, nothing from the far side.
        st.segments[0].fdb_remote = 0;
        st.segments[0].vteps[0].fdb_remote = 0;
        let f = find(&hybrid(&st, Some(&cfg)), "segment.fdb", "crosssite").clone();
        assert_eq!(f.result, Verdict::Warn);
        assert!(f.reason.contains("nothing came back") && f.hint.contains("VNI 100000"), "{f:?}");
        // A quiet segment is fine.
        st.segments[0].fdb_local = 0;
        assert_eq!(find(&hybrid(&st, Some(&cfg)), "segment.fdb", "crosssite").result, Verdict::Pass);
        // An FDB that ran full.
        st.counters.iter_mut().find(|c| c.name.as_str() == "fdb_full").expect("the box reports fdb_full").value = 12;
        let f = find(&hybrid(&st, Some(&cfg)), "segment.fdb", "crosssite").clone();
        assert!(f.result == Verdict::Warn && f.reason.contains("12 MACs not learned"), "{f:?}");

        // Oversize frames since the last run: named, with the MTU to set.
        let mut st = healthy_overlay(&cfg);
        st.mark_age_ms = Some(30_000);
        st.drops.push(Count { name: text("vxlan_oversize"), value: 40 }).unwrap();
        st.drops_since_mark.push(Count { name: text("vxlan_oversize"), value: 7 }).unwrap();
        st.drops_since_mark.push(Count { name: text("vxlan_unknown_vtep"), value: 2 }).unwrap();
        let checks = hybrid(&st, Some(&cfg));
        let d = find(&checks, "segment.drops", "crosssite");
        assert_eq!(d.result, Verdict::Warn);
        assert_eq!(d.reason, "vxlan_oversize 7, vxlan_unknown_vtep 2 in the last 30 s");
        assert!(d.hint.contains("1370 on lan1") && d.hint.contains("not in remote_vteps"), "{d:?}");

        // Oversize drops before the last run only: a pass.
        st.drops_since_mark.clear();
        assert_eq!(find(&hybrid(&st, Some(&cfg)), "segment.drops", "crosssite").result, Verdict::Pass);
    }
}
