//! `routerctl lab --scenario two-site`: seed 003 on one machine, no root.
//!
//! Two boxes run the real image in QEMU with the two shipped examples,
//! `config-schema/examples/two-site-roz.toml` and `two-site-wro.toml`, as
//! they are but for each peer's `public_key` (made on the other box). Each
//! box has three NICs: `lan0` (management, nothing on it), `wan0` and `lan1`
//! (bridge-only: the VM network, in VXLAN segment "crosssite", VNI 100000,
//! between the tunnel addresses 10.1.0.1 and 10.2.0.1 inside WireGuard).
//!
//! The underlay (`routerd-lab`) plays both sites' routers and the internet:
//! - roz: static WAN 192.168.1.35/24 behind its ISP router 192.168.1.1,
//!   which masquerades as 198.51.100.10, forwards UDP 51820 and answers DNS
//!   (roz's `[dns] servers = ["192.168.1.1"]`);
//! - wro: `address = "dhcp"`: its router 192.168.20.1 leases it
//!   192.168.20.100/24 (router and DNS option: itself, 600 s), masquerades as
//!   203.0.113.20 (ports kept), forwards UDP 51820 and answers DNS;
//! - DNS on both routers: `roz.example.net` and `wro.example.net` → the
//!   public addresses, TTL 10 s; anything else NXDOMAIN.
//!
//! A simulated VM on each `lan1` (10.50.0.11 at roz, 10.50.0.12 at wro, one
//! subnet, MTU 1500) pings and sends TCP across the overlay: the far VM sees
//! MSS 1330, 1370-byte packets cross and 1371-byte ones are dropped
//! (`vxlan_oversize`), not fragmented. Then wro's router gets a new public
//! address and its DNS record follows — the seed's dynamic IP — and the lab
//! times how long the overlay takes to carry a ping again, with no apply.
//!
//! Mapping to the seed: roz-edge and wro-edge stand where the author ran
//! WireGuard and FRR on the Proxmox hosts; `lan1` is the bridge the VMs'
//! SDN vnet would be; the underlay is the two ISP routers and the internet.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use routerd_lab::{
    Attachment, DhcpServerConfig, DnsRecord, HostConfig, ListenMode, PortForward, SimHost, SynDirection, Underlay, UnderlayConfig,
};
use routerd_provision::message::{Count, Status};
use serde_json::json;

use super::{
    apply, boot, doctor_box, facing, failed, find_image, keep, key, storage_init, transfer, Clock, LabArgs, NicSockets, Session, Variant,
};
use crate::doctor::{self, Verdict};
use crate::{Failure, EXIT_FAILED};

/// The shipped examples, embedded as they are.
const ROZ_TOML: &str = include_str!("../../../config-schema/examples/two-site-roz.toml");
const WRO_TOML: &str = include_str!("../../../config-schema/examples/two-site-wro.toml");

const ROZ_WAN: &str = "192.168.1.35/24";
const ROZ_ROUTER: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
const ROZ_PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// What wro's router leases it.
const WRO_WAN: &str = "192.168.20.100/24";
const WRO_ROUTER: Ipv4Addr = Ipv4Addr::new(192, 168, 20, 1);
const WRO_PUBLIC: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
/// wro's public address after its ISP hands out a new one.
const WRO_NEW_PUBLIC: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 77);
const LEASE_SECS: u32 = 600;
const ROZ_NAME: &str = "roz.example.net";
const WRO_NAME: &str = "wro.example.net";
const TTL_SECS: u32 = 10;
const WIREGUARD_PORT: u16 = 51820;

const ROZ_VM: Ipv4Addr = Ipv4Addr::new(10, 50, 0, 11);
const WRO_VM: Ipv4Addr = Ipv4Addr::new(10, 50, 0, 12);
/// The overlay's MTU and the MSS the boxes clamp to (1370 − 40).
const OVERLAY_MTU: usize = 1370;
const CLAMPED_MSS: u16 = 1330;

/// Underlay attachment indices.
const ROZ: usize = 0;
const WRO: usize = 1;

/// How long the lab waits for each thing, at most (TCG on two cores).
const LEASE_WAIT: Duration = Duration::from_secs(40);
const TUNNEL_WAIT: Duration = Duration::from_secs(60);
const FAILED_LOOKUP_WAIT: Duration = Duration::from_secs(30);
const RECOVERY_WAIT: Duration = Duration::from_secs(90);
const RERESOLVE_WAIT: Duration = Duration::from_secs(75);

/// The example file with its one peer's `public_key` set to `key`; also
/// the (1-based) line changed. Nothing else is touched.
fn with_peer_key(toml: &str, file: &str, key: &str) -> Result<(String, usize), Failure> {
    let lines: Vec<usize> = toml.lines().enumerate().filter(|(_, l)| l.trim_start().starts_with("public_key")).map(|(i, _)| i).collect();
    let [at] = lines[..] else {
        return Err(failed(format!("{file}: expected one public_key line (one peer), found {}", lines.len())));
    };
    let mut out = String::with_capacity(toml.len());
    for (i, line) in toml.split_inclusive('\n').enumerate() {
        if i == at {
            let end = if line.ends_with('\n') { "\n" } else { "" };
            let indent = &line[..line.len() - line.trim_start().len()];
            out.push_str(&format!("{indent}public_key = \"{key}\"{end}"));
        } else {
            out.push_str(line);
        }
    }
    Ok((out, at + 1))
}

fn count(list: &[Count], name: &str) -> u64 {
    list.iter().find(|c| c.name.as_str() == name).map_or(0, |c| c.value)
}

/// Calls `f` every `every` until it answers `Some`, at most `limit`.
fn wait<T>(limit: Duration, every: Duration, mut f: impl FnMut() -> Result<Option<T>, Failure>) -> Result<Option<T>, Failure> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(t) = f()? {
            return Ok(Some(t));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(every);
    }
}

fn endpoint_text(st: &Status) -> String {
    st.peers.first().and_then(|p| p.endpoint).map_or_else(|| "-".into(), |e| e.to_string())
}

/// One line per name the box's resolver keeps, and whether all resolved.
fn resolver_lines(box_name: &str, st: &Status) -> (Vec<String>, bool) {
    let Some(r) = &st.resolver else {
        return (vec![format!("  FAIL  {box_name}: the box reports no resolver (a peer endpoint by DNS name needs one)")], false);
    };
    let servers = r.servers.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(" ");
    let servers = if servers.is_empty() { "none".to_string() } else { servers };
    let mut all = !r.names.is_empty();
    let mut out = Vec::new();
    for n in &r.names {
        let tally = format!("{} lookups, {} failed", n.lookups, n.failures);
        match n.address {
            Some(a) => out.push(format!(
                "  pass  {box_name}: {} → {a} (TTL {} s, resolved {} s ago; {tally}; servers {servers})",
                n.name.as_str(),
                n.ttl_secs.map_or("?".into(), |t| t.to_string()),
                n.resolved_ms_ago.unwrap_or(0) / 1000
            )),
            None => {
                all = false;
                let why = if n.error.is_empty() { "not looked up yet" } else { n.error.as_str() };
                out.push(format!("  FAIL  {box_name}: {} does not resolve: {why} ({tally}; servers {servers})", n.name.as_str()));
            }
        }
    }
    (out, all)
}

/// What the dynamic-IP change showed.
#[derive(Default)]
struct Recovery {
    /// Seconds from the change to the first ping answered across the overlay.
    recovered_after: Option<f64>,
    lost: u32,
    /// roz's endpoint for wro afterwards.
    endpoint: String,
    /// Seconds from the change until roz's resolver had the new address.
    reresolved_after: Option<f64>,
}

pub(super) fn run(args: &LabArgs) -> Result<u8, Failure> {
    let clock = Clock(Instant::now());
    let image = find_image(args.image.as_deref())?;
    let broken_dns = args.variant == Variant::DnsNeverResolves;
    clock.say(format!("lab: seed 003 (two sites, one overlay), variant {:?}, image {}", args.variant, image.display()));

    // NICs in PCI order: lan0 (management), wan0, lan1 (the VM network).
    let (roz, roz_nics) = boot(&image, "roz", 1, 3, &clock)?;
    let (wro, wro_nics) = boot(&image, "wro", 2, 3, &clock)?;

    let cidr = |s: &str| s.parse::<routerd_lab::Cidr>().map_err(|e| failed(format!("{s}: {e}")));
    let mut config = UnderlayConfig::new(vec![
        Attachment::new("roz", facing(&roz_nics, 1)?, cidr(ROZ_WAN)?, ROZ_ROUTER)
            .with_masquerade(ROZ_PUBLIC, vec![PortForward::udp(WIREGUARD_PORT)])
            .with_dns_server(),
        Attachment::new("wro", facing(&wro_nics, 1)?, cidr(WRO_WAN)?, WRO_ROUTER)
            .with_masquerade(WRO_PUBLIC, vec![PortForward::udp(WIREGUARD_PORT)])
            .with_dhcp_server(DhcpServerConfig::new(LEASE_SECS, vec![WRO_ROUTER]))
            .with_dns_server(),
    ]);
    if !broken_dns {
        config.dns = vec![DnsRecord::new(ROZ_NAME, ROZ_PUBLIC, TTL_SECS), DnsRecord::new(WRO_NAME, WRO_PUBLIC, TTL_SECS)];
    }
    let underlay = Underlay::start(config).map_err(|e| failed(format!("underlay: {e}")))?;
    if args.latency > 0 {
        underlay.set_latency(Duration::from_millis(args.latency));
    }
    if args.loss > 0.0 {
        underlay.set_loss(args.loss);
    }
    clock.say(format!(
        "underlay up: roz {ROZ_WAN} behind its ISP router {ROZ_ROUTER} (masquerade as {ROZ_PUBLIC}, UDP {WIREGUARD_PORT} forwarded, DNS); \
         wro's router {WRO_ROUTER} leases {WRO_WAN} by DHCP ({LEASE_SECS} s, DNS {WRO_ROUTER}), masquerades as {WRO_PUBLIC} \
         (ports kept, UDP {WIREGUARD_PORT} forwarded, DNS)"
    ));
    if broken_dns {
        clock.say(format!("variant: both routers answer NXDOMAIN for {ROZ_NAME} and {WRO_NAME} (dyndns never updated)"));
    } else {
        clock.say(format!("DNS on both routers: {ROZ_NAME} → {ROZ_PUBLIC}, {WRO_NAME} → {WRO_PUBLIC} (TTL {TTL_SECS} s)"));
    }

    let vm = |name: &str, nics: &NicSockets, mac_low: u8, addr: Ipv4Addr| -> Result<SimHost, Failure> {
        let c = routerd_lab::Cidr::new(addr, 24).ok_or_else(|| failed("bad VM address"))?;
        SimHost::start(HostConfig::new(name, facing(nics, 2)?, [0x02, 0, 0, 0, 0x50, mac_low], vec![c]))
            .map_err(|e| failed(format!("{name}: {e}")))
    };
    let roz_vm = vm("roz-vm", &roz_nics, 0x11, ROZ_VM)?;
    let wro_vm = vm("wro-vm", &wro_nics, 0x12, WRO_VM)?;
    clock.say(format!(
        "VMs on lan1: roz-vm {ROZ_VM}, wro-vm {WRO_VM} (one subnet across the overlay; NIC MTU 1500, so they offer MSS 1460)"
    ));

    // Keys are made on the boxes; each example gets the other's public key.
    let mut roz_c = Session::open(&roz)?;
    let mut wro_c = Session::open(&wro)?;
    storage_init(roz_c.client()?, "roz")?;
    storage_init(wro_c.client()?, "wro")?;
    clock.say("state partitions made on both boxes' disks (routerctl storage init --disk vda)");
    let roz_key = key(roz_c.client()?, "roz")?;
    let wro_key = key(wro_c.client()?, "wro")?;
    clock.say(format!("keys generated on the boxes: roz {roz_key}, wro {wro_key}"));
    let (roz_toml, roz_line) = with_peer_key(ROZ_TOML, "two-site-roz.toml", &wro_key)?;
    let (wro_toml, wro_line) = with_peer_key(WRO_TOML, "two-site-wro.toml", &roz_key)?;
    clock.say(format!(
        "configurations: config-schema/examples/two-site-roz.toml and two-site-wro.toml as shipped, but for the peer's public_key \
         (line {roz_line} and line {wro_line}: the other box's key)"
    ));
    let applied = Instant::now();
    let mut refusals = Vec::new();
    refusals.extend(apply(roz_c.client()?, "roz", &roz_toml, &clock)?);
    refusals.extend(apply(wro_c.client()?, "wro", &wro_toml, &clock)?);

    // wro's WAN address comes from its router.
    let lease = wait(LEASE_WAIT, Duration::from_millis(250), || Ok(wro_c.status()?.dhcp.filter(|d| d.address.is_some())))?;
    match &lease {
        Some(d) => {
            let mut line = String::new();
            let _ = d.write_line(&mut line);
            clock.say(format!("wro: {} ({:.1} s after the apply)", line.trim(), applied.elapsed().as_secs_f64()));
        }
        None => clock.say(format!("wro: no DHCP lease after {} s", LEASE_WAIT.as_secs())),
    }

    // Names, then the tunnel (wro dials roz; roz dials wro's name too).
    let mut tunnel_up = None;
    if broken_dns {
        let failing = |c: &mut Session| -> Result<bool, Failure> {
            let st = c.status()?;
            Ok(st.resolver.as_ref().is_some_and(|r| r.names.iter().all(|n| n.address.is_none() && !n.error.is_empty())))
        };
        let seen =
            wait(FAILED_LOOKUP_WAIT, Duration::from_millis(500), || Ok((failing(&mut roz_c)? && failing(&mut wro_c)?).then_some(())))?;
        clock.say(if seen.is_some() { "both boxes tried their peer's name and failed" } else { "the lookups did not finish in time" });
    } else {
        tunnel_up = wait(TUNNEL_WAIT, Duration::from_millis(250), || {
            let (r, w) = (roz_c.status()?, wro_c.status()?);
            let shook = |st: &Status| st.peers.first().is_some_and(|p| p.last_handshake_ms_ago.is_some());
            let named = |st: &Status| st.resolver.as_ref().is_some_and(|r| r.names.iter().all(|n| n.address.is_some()));
            Ok((shook(&r) && shook(&w) && named(&r) && named(&w)).then(|| (applied.elapsed(), endpoint_text(&r), endpoint_text(&w))))
        })?;
        match &tunnel_up {
            Some((after, to_wro, to_roz)) => clock.say(format!(
                "tunnel up {:.1} s after the applies: names resolved, handshake done; roz sends to wro at {to_wro}, wro to roz at {to_roz}",
                after.as_secs_f64()
            )),
            None => clock.say(format!("no handshake after {} s", TUNNEL_WAIT.as_secs())),
        }
    }

    // Warm up: the first ping floods ARP across the overlay (FDB learning).
    let warm = roz_vm.ping(WRO_VM, 3, Duration::from_secs(if broken_dns { 1 } else { 3 }));
    clock.say(format!("warm-up: {warm}"));

    // The resolver, as the lab reads it from status.
    println!("\n== resolver (status.resolver) ==");
    let mut names_ok = true;
    let mut resolver_json = serde_json::Map::new();
    for (c, name) in [(&mut roz_c, "roz"), (&mut wro_c, "wro")] {
        let st = c.status()?;
        let (lines, ok) = resolver_lines(name, &st);
        for l in lines {
            println!("{l}");
        }
        names_ok &= ok;
        resolver_json.insert(name.into(), serde_json::to_value(&st.resolver).unwrap_or_default());
    }

    // Doctor on both.
    let mut all_pass = refusals.is_empty();
    let mut doctor_json = Vec::new();
    for (c, name) in [(&mut roz_c, "roz"), (&mut wro_c, "wro")] {
        let (checks, text, json) = doctor_box(c.client()?, name)?;
        println!("\n== routerctl doctor hybrid ({name}) ==\n{text}");
        if doctor::worst(&checks) >= Verdict::Warn {
            all_pass = false;
        }
        doctor_json.push(json);
    }

    // Traffic across the overlay.
    println!("== overlay traffic (lan1 ↔ lan1 through VXLAN VNI 100000 inside WireGuard) ==");
    let each = Duration::from_secs(if warm.received == 0 { 1 } else { 5 });
    let p1 = roz_vm.ping(WRO_VM, 5, each);
    let p2 = wro_vm.ping(ROZ_VM, 5, each);
    println!("roz-vm → {WRO_VM}: {p1}");
    println!("wro-vm → {ROZ_VM}: {p2}");
    let _ = wro_vm.listen(5001, ListenMode::Sink);
    let _ = roz_vm.listen(5002, ListenMode::Sink);
    let t1 = transfer(&clock, &roz_vm, "roz-vm", WRO_VM, 5001, args.transfer_bytes(), args.transfer_budget(&p1));
    let t2 = transfer(&clock, &wro_vm, "wro-vm", ROZ_VM, 5002, args.transfer_bytes(), args.transfer_budget(&p2));
    println!("roz-vm → {WRO_VM}:5001: {t1}");
    println!("wro-vm → {ROZ_VM}:5002: {t2}");
    // The far side's view: what arrived after both boxes' clamps.
    let arrived = |h: &SimHost, syn_ack: bool| {
        h.syn_log().into_iter().filter(|r| r.direction == SynDirection::Received && r.syn_ack == syn_ack).collect::<Vec<_>>()
    };
    let mut mss_seen = Vec::new();
    for r in arrived(&wro_vm, false)
        .iter()
        .chain(arrived(&roz_vm, true).iter())
        .chain(arrived(&roz_vm, false).iter())
        .chain(arrived(&wro_vm, true).iter())
    {
        println!("  {r}");
        mss_seen.push(r.mss);
    }
    let mss_ok = mss_seen.len() >= 4 && mss_seen.iter().all(|m| *m == Some(CLAMPED_MSS));
    println!(
        "MSS: {}",
        if mss_ok {
            format!(
                "every SYN and SYN-ACK left a VM with 1460 and arrived at the far VM with {CLAMPED_MSS} ({OVERLAY_MTU} − 40), both ways"
            )
        } else {
            format!("expected {CLAMPED_MSS} on every SYN and SYN-ACK arriving across the overlay, saw {mss_seen:?}")
        }
    );

    // The overlay MTU: 1370 crosses whole, 1371 is dropped, not fragmented.
    let mut mtu = None;
    if p1.received > 0 {
        let before = count(&roz_c.status()?.drops, "vxlan_oversize");
        let fits = roz_vm.ping_sized(WRO_VM, OVERLAY_MTU, 3, Duration::from_secs(3));
        let too_big = roz_vm.ping_sized(WRO_VM, OVERLAY_MTU + 1, 3, Duration::from_secs(1));
        let oversize = count(&roz_c.status()?.drops, "vxlan_oversize").saturating_sub(before);
        println!("MTU: {fits}");
        println!("     {too_big}");
        println!(
            "     roz dropped the {}-byte packets whole: vxlan_oversize +{oversize} (frames above the overlay MTU {OVERLAY_MTU} are \
             counted, never fragmented)",
            OVERLAY_MTU + 1
        );
        mtu = Some((fits, too_big, oversize));
    } else {
        println!("MTU: not probed: no ping crossed the overlay");
    }
    let mtu_ok = mtu
        .as_ref()
        .is_some_and(|(fits, too_big, oversize)| fits.received > 0 && too_big.received == 0 && *oversize >= u64::from(too_big.sent));
    let (rs, ws) = (roz_c.status()?, wro_c.status()?);
    for (name, st) in [("roz", &rs), ("wro", &ws)] {
        for g in &st.segments {
            let behind: Vec<String> = g.vteps.iter().map(|v| format!("{} behind {}", v.fdb_remote, v.address)).collect();
            println!("FDB {name}: segment {} (VNI {}) on {}: {} local MACs, {}", g.name, g.vni, g.port, g.fdb_local, behind.join(", "));
        }
    }

    // wro's dynamic IP changes; nobody applies anything.
    let mut recovery = Recovery::default();
    let healthy = args.variant == Variant::Healthy;
    if healthy {
        recovery = dynamic_ip(&underlay, &roz_vm, &wro_vm, &mut roz_c, &clock)?;
    }

    // The routers: services and NAT.
    println!();
    for (i, name) in [(ROZ, "roz's ISP router"), (WRO, "wro's router")] {
        if let Some(c) = underlay.counters(i) {
            println!("{name}: {c}");
        }
    }

    let lease_ok = lease.is_some();
    // Received at all, not every one: --loss may take some.
    let traffic_ok = p1.received > 0 && p2.received > 0 && t1.ok() && t2.ok() && mss_ok && mtu_ok;
    // Recovered: a ping crossed again and roz sends to the new address.
    // The name's re-resolution is reported, not required: the tunnel
    // recovers through wro's keepalive whether or not roz looked it up.
    let new_endpoint = format!("{WRO_NEW_PUBLIC}:{WIREGUARD_PORT}");
    let recovered = !healthy || (recovery.recovered_after.is_some() && recovery.endpoint == new_endpoint);
    let ok = all_pass && names_ok && lease_ok && tunnel_up.is_some() && traffic_ok && recovered;
    let mut problems = Vec::new();
    if !refusals.is_empty() {
        problems.push("a box refused its configuration".to_string());
    }
    if !all_pass {
        problems.push("doctor found problems".into());
    }
    if !lease_ok {
        problems.push("wro got no DHCP lease".into());
    }
    if !names_ok {
        let mut failing = Vec::new();
        for st in [&rs, &ws] {
            if let Some(r) = &st.resolver {
                for n in r.names.iter().filter(|n| n.address.is_none()) {
                    failing.push(format!("{} on {} ({})", n.name.as_str(), st.device.as_str(), n.error.as_str()));
                }
            }
        }
        problems.push(format!("names do not resolve: {}", failing.join(", ")));
    }
    if !traffic_ok {
        problems.push("the overlay did not carry the traffic intact".into());
    }
    if !recovered {
        problems.push("the tunnel did not recover from the new public address".into());
    }
    let took = clock.secs();
    if ok {
        let name = match (healthy, recovery.reresolved_after) {
            (false, _) => String::new(),
            (true, Some(s)) => format!("; roz re-resolved {WRO_NAME} after {s:.1} s"),
            (true, None) => format!("; WARN: roz had not re-resolved {WRO_NAME} {} s after the change", RERESOLVE_WAIT.as_secs()),
        };
        println!(
            "\nlab: doctor all pass on both boxes; overlay intact both ways (MSS {CLAMPED_MSS}, MTU {OVERLAY_MTU}); wro's new public address \
             recovered in {:.1} s without an apply{name} ({took:.1} s)",
            recovery.recovered_after.unwrap_or(0.0)
        );
    } else {
        println!("\nlab: FAILED: {} ({took:.1} s)", problems.join("; "));
    }
    if args.json {
        crate::out::document(&json!({
            "scenario": "two-site",
            "variant": format!("{:?}", args.variant),
            "refused": refusals,
            "dhcp": ws.dhcp,
            "resolver": resolver_json,
            "doctor": doctor_json,
            "traffic": {
                "ping_roz_to_wro": p1.received, "ping_wro_to_roz": p2.received,
                "tcp_roz_to_wro_intact": t1.ok(), "tcp_wro_to_roz_intact": t2.ok(),
                "mss_arrived": mss_seen,
                "mtu": mtu.as_ref().map(|(fits, too_big, oversize)| json!({
                    "size": OVERLAY_MTU, "sent": fits.sent, "received": fits.received,
                    "oversize_sent": too_big.sent, "oversize_received": too_big.received, "vxlan_oversize": oversize,
                })),
            },
            "dynamic_ip": healthy.then(|| json!({
                "old": WRO_PUBLIC.to_string(), "new": WRO_NEW_PUBLIC.to_string(),
                "recovery_secs": recovery.recovered_after, "pings_lost": recovery.lost,
                "roz_endpoint_for_wro": recovery.endpoint, "reresolved_secs": recovery.reresolved_after,
            })),
            "problems": problems,
            "ok": ok,
        }));
    }
    roz_c.close();
    wro_c.close();
    if args.keep {
        keep(&[&roz, &wro]);
    }
    roz_vm.stop();
    wro_vm.stop();
    underlay.stop();
    drop(roz);
    drop(wro);
    Ok(if ok { 0 } else { EXIT_FAILED })
}

/// Moves wro's public address and its DNS record, then pings across the
/// overlay from roz's side once a second until one is answered: the time
/// the tunnel takes to recover by itself (wro's keepalive reaching roz from
/// the new address, or roz re-resolving the name, whichever comes first).
fn dynamic_ip(underlay: &Underlay, roz_vm: &SimHost, wro_vm: &SimHost, roz_c: &mut Session, clock: &Clock) -> Result<Recovery, Failure> {
    let mut r = Recovery::default();
    println!();
    underlay.set_public_address(WRO, Some(WRO_NEW_PUBLIC));
    underlay.set_dns_record(WRO_NAME, Some(WRO_NEW_PUBLIC), TTL_SECS);
    let changed = Instant::now();
    clock.say(format!(
        "dynamic IP: wro's router now has public address {WRO_NEW_PUBLIC} (was {WRO_PUBLIC}), {WRO_NAME} → {WRO_NEW_PUBLIC} \
         (TTL {TTL_SECS} s); no apply on either box"
    ));
    let deadline = changed + RECOVERY_WAIT;
    while Instant::now() < deadline {
        let p = roz_vm.ping(WRO_VM, 1, Duration::from_secs(1));
        if p.received > 0 {
            r.recovered_after = Some(changed.elapsed().as_secs_f64());
            break;
        }
        r.lost += 1;
    }
    let st = roz_c.status()?;
    r.endpoint = endpoint_text(&st);
    let named =
        |st: &Status| st.resolver.as_ref().and_then(|res| res.names.iter().find(|n| n.name.as_str() == WRO_NAME)).and_then(|n| n.address);
    match r.recovered_after {
        Some(secs) => {
            let how = if named(&st) == Some(WRO_NEW_PUBLIC) {
                format!("roz re-resolved {WRO_NAME}")
            } else {
                "roamed: wro's keepalive reached roz from the new address".to_string()
            };
            clock.say(format!(
                "recovered {secs:.1} s after the change: roz-vm → {WRO_VM} answered ({} pings lost before); roz sends to wro at {} ({how})",
                r.lost, r.endpoint
            ));
        }
        None => clock.say(format!("NOT recovered {} s after the change; roz sends to wro at {}", RECOVERY_WAIT.as_secs(), r.endpoint)),
    }
    // The name catches up too: roz looks it up again when the TTL runs out.
    let reresolved = wait(RERESOLVE_WAIT.saturating_sub(changed.elapsed()), Duration::from_millis(500), || {
        let st = roz_c.status()?;
        Ok((named(&st) == Some(WRO_NEW_PUBLIC)).then(|| (changed.elapsed().as_secs_f64(), st)))
    })?;
    r.reresolved_after = reresolved.as_ref().map(|(s, _)| *s);
    // What the resolver counted meanwhile (a lookup lost on the way shows
    // as a failure here).
    let tally = |st: &Status| {
        let n = st.resolver.as_ref().and_then(|res| res.names.iter().find(|n| n.name.as_str() == WRO_NAME));
        n.map_or_else(
            || "not in status.resolver".to_string(),
            |n| {
                let error = if n.error.is_empty() { String::new() } else { format!(", last error: {}", n.error.as_str()) };
                format!("{} lookups, {} failed{error}", n.lookups, n.failures)
            },
        )
    };
    match &reresolved {
        Some((s, st)) => clock.say(format!(
            "roz's resolver has {WRO_NAME} → {WRO_NEW_PUBLIC} {s:.1} s after the change (TTL {TTL_SECS} s counts as 30; {})",
            tally(st)
        )),
        None => {
            let st = roz_c.status()?;
            clock.say(format!(
                "WARN: roz's resolver still has {} for {WRO_NAME} {} s after the change ({})",
                named(&st).map_or("no address".into(), |a| a.to_string()),
                changed.elapsed().as_secs(),
                tally(&st)
            ));
        }
    }
    let back = wro_vm.ping(ROZ_VM, 3, Duration::from_secs(3));
    println!("after the change: wro-vm → {ROZ_VM}: {back}");
    if back.received == 0 {
        r.recovered_after = None;
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_peer_key_changes() {
        const KEY: &str = "YI+gj3OuGWXxQMkfMw4/8btCU7alKC8L6ag3nszQHwU=";
        for (file, toml) in [("roz", ROZ_TOML), ("wro", WRO_TOML)] {
            let (out, line) = with_peer_key(toml, file, KEY).unwrap();
            let changed: Vec<(usize, &str, &str)> =
                toml.lines().zip(out.lines()).enumerate().filter(|(_, (a, b))| a != b).map(|(i, (a, b))| (i + 1, a, b)).collect();
            assert_eq!(changed.len(), 1, "{file}: {changed:?}");
            assert_eq!(changed[0].0, line);
            assert_eq!(changed[0].2, format!("public_key = \"{KEY}\""));
            assert_eq!(toml.lines().count(), out.lines().count());
            assert_eq!(toml.ends_with('\n'), out.ends_with('\n'));
            config_schema::human::from_toml(&out).unwrap_or_else(|e| panic!("{file}: {}", e.report));
        }
        assert!(with_peer_key("[device]\n", "x", KEY).is_err());
    }

    #[test]
    fn the_examples_are_what_the_lab_assumes() {
        // The lab's underlay is built around these lines of the examples.
        for needle in [
            r#"address = "192.168.1.35/24""#,
            r#"gateway = "192.168.1.1""#,
            r#"servers = ["192.168.1.1"]"#,
            "wro.example.net:51820",
            "vni = 100000",
        ] {
            assert!(ROZ_TOML.contains(needle), "two-site-roz.toml: {needle}");
        }
        for needle in [r#"address = "dhcp""#, "roz.example.net:51820", "persistent_keepalive = 25", "mtu = 1370"] {
            assert!(WRO_TOML.contains(needle), "two-site-wro.toml: {needle}");
        }
    }
}
