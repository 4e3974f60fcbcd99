//! What Linux around routerd-host must (not) do, checked on start and every
//! few seconds.
//!
//! (a) A claim this box captures with `provider-secondary-ip` must never be
//!     held by the OS (`configureOSAddress: false` in the seed): cloud-init
//!     or netplan like to put a NIC's secondary IPs back. If the /32 is a
//!     local address on any interface, it is removed over rtnetlink, counted
//!     and reported.
//! (b) `net.ipv4.ip_forward` — reported only (doctor fails it when the
//!     kernel must forward captured traffic, see (d)).
//! (c) Terminal drop/reject rules and drop policies on the forward path
//!     (`iptables -S FORWARD`, `nft list ruleset`, whichever exists) —
//!     reported only; the firewall is never changed.
//!
//! (d) Delivery routes: the cloud fabric hands a provider-secondary-ip
//!     claim's packets to the VM's NIC; since the OS does not hold the
//!     address, the kernel forwards them by its routing table. A route
//!     `ADDRESS/32 dev <--wan-tun>` in the main table brings them to
//!     routerd-host (and makes replies from the tunnel pass reverse-path
//!     filtering). It is installed when missing (`proto static`), never
//!     replaced when it points elsewhere (reported instead), and checked on
//!     every run.
//!
//! The result is a plain [`LinuxFindings`] that `doctor hybrid` reads
//! (through the status `routerd-host` serves on its control socket).
//! [`check`] blocks (netlink round trips with a 2 s receive timeout, two
//! short subprocesses); the loop runs it on the blocking pool.

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::time::Duration;

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// A captured address found on a Linux interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldAddress {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub interface: String,
    /// `Ok` when routerd-host removed it; the error otherwise.
    pub removal: Result<(), String>,
}

/// How long a removal stays in the findings (so `doctor` run minutes later
/// still says that something keeps putting the address back).
pub const RECENT: Duration = Duration::from_secs(15 * 60);

/// A captured address routerd-host removed from an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub address: Ipv4Addr,
    pub interface: String,
    pub at: std::time::Instant,
}

/// The route a provider-secondary-ip claim needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteFinding {
    pub address: Ipv4Addr,
    pub ok: bool,
    /// `present`, `installed`, or what is wrong.
    pub detail: String,
}

/// Everything one check found, plus the running totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinuxFindings {
    /// Checks run so far.
    pub checks: u64,
    /// `net.ipv4.ip_forward`, if readable.
    pub ip_forward: Option<bool>,
    /// Captured addresses held by the OS at this check.
    pub held: Vec<HeldAddress>,
    /// Captured addresses removed since start.
    pub removals_total: u64,
    /// Removals in the last [`RECENT`], newest last.
    pub recent_removals: Vec<Removal>,
    /// The last removal (or failed removal), for status and doctor.
    pub last_event: Option<String>,
    /// Drop policies on the forward path (`iptables: -P FORWARD DROP`).
    pub forward_drop_policies: Vec<String>,
    /// Terminal DROP/REJECT rules on the forward path, as printed.
    pub forward_terminal_rules: Vec<String>,
    /// Which firewall front ends were consulted.
    pub firewalls_checked: Vec<&'static str>,
    /// One per provider-secondary-ip claim.
    pub routes: Vec<RouteFinding>,
    /// Delivery routes routerd-host installed and still owns (removed
    /// again when their claim goes; the kernel drops them with the TUN).
    pub installed: Vec<Ipv4Addr>,
    /// What could not be checked and why.
    pub errors: Vec<String>,
}

/// Run the checks; `captured` are this box's provider-secondary-ip claims,
/// `tun` the `--wan-tun` device. With `enforce`, held captured addresses
/// are removed and missing delivery routes installed. `prev` carries the
/// running totals.
pub fn check(captured: &[Ipv4Addr], tun: Option<&str>, enforce: bool, prev: &LinuxFindings) -> LinuxFindings {
    let mut f = LinuxFindings {
        checks: prev.checks.saturating_add(1),
        removals_total: prev.removals_total,
        installed: prev.installed.clone(),
        recent_removals: prev.recent_removals.iter().filter(|r| r.at.elapsed() < RECENT).cloned().collect(),
        last_event: prev.last_event.clone(),
        ..LinuxFindings::default()
    };
    f.ip_forward = match std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward") {
        Ok(s) => Some(s.trim() == "1"),
        Err(e) => {
            f.errors.push(format!("ip_forward: {e}"));
            None
        }
    };
    if !captured.is_empty() {
        match captured_addresses(captured) {
            Ok(held) => {
                for (msg, address, prefix_len, index) in held {
                    let interface = ifname(index);
                    let removal = if enforce { delete_address(msg) } else { Err("not enforced".into()) };
                    let event = match &removal {
                        Ok(()) => {
                            f.removals_total = f.removals_total.saturating_add(1);
                            f.recent_removals.push(Removal { address, interface: interface.clone(), at: std::time::Instant::now() });
                            format!(
                                "removed captured address {address}/{prefix_len} from {interface}: the OS must not hold it (configure_os_address = false)"
                            )
                        }
                        Err(e) => format!("captured address {address}/{prefix_len} is held by {interface} and could not be removed: {e}"),
                    };
                    log::warn!("linux: {event}");
                    f.last_event = Some(event);
                    f.held.push(HeldAddress { address, prefix_len, interface, removal });
                }
            }
            Err(e) => f.errors.push(format!("netlink address dump: {e}")),
        }
    }
    if !captured.is_empty() {
        match tun {
            None => {
                for &address in captured {
                    f.routes.push(RouteFinding {
                        address,
                        ok: false,
                        detail: "no --wan-tun: what the fabric delivers cannot reach routerd-host".into(),
                    });
                }
            }
            Some(tun) => match delivery_routes(captured, tun, enforce) {
                Ok(r) => {
                    for x in r.iter().filter(|x| x.detail == "installed") {
                        log::info!("linux: route {}/32 dev {tun} installed (provider-secondary-ip delivery)", x.address);
                        f.installed.push(x.address);
                    }
                    f.routes = r;
                }
                Err(e) => f.errors.push(format!("netlink route check: {e}")),
            },
        }
    }
    // Routes of claims that are gone.
    if let Some(tun_index) = tun.and_then(ifindex) {
        let gone: Vec<Ipv4Addr> = f.installed.iter().copied().filter(|a| !captured.contains(a)).collect();
        for address in gone {
            match route(address, tun_index, false) {
                Ok(()) => log::info!("linux: route {address}/32 removed (its claim is gone)"),
                Err(e) => log::warn!("linux: route {address}/32 (its claim is gone) could not be removed: {e}"),
            }
            f.installed.retain(|a| *a != address);
        }
    }
    firewall(&mut f);
    f
}

/// The interface index of `name`.
fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// Check (and with `enforce` install) `address/32 dev tun` for each address.
fn delivery_routes(captured: &[Ipv4Addr], tun: &str, enforce: bool) -> std::io::Result<Vec<RouteFinding>> {
    let tun_index = ifindex(tun).ok_or_else(|| std::io::Error::other(format!("{tun}: no such interface")))?;
    // The main table's /32 routes: destination → output interface.
    let s = socket()?;
    let mut req = RouteMessage::default();
    req.header.address_family = AddressFamily::Inet;
    send(&s, NLM_F_REQUEST | NLM_F_DUMP, RouteNetlinkMessage::GetRoute(req))?;
    let mut host_routes: Vec<(Ipv4Addr, Option<u32>)> = Vec::new();
    replies(&s, |m| {
        let RouteNetlinkMessage::NewRoute(r) = m else { return };
        let table = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        });
        if r.header.destination_prefix_length != 32 || table.unwrap_or(u32::from(r.header.table)) != u32::from(RouteHeader::RT_TABLE_MAIN) {
            return;
        }
        let dst = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(v4)) => Some(*v4),
            _ => None,
        });
        let oif = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        });
        if let Some(d) = dst {
            host_routes.push((d, oif));
        }
    })?;
    let mut out = Vec::new();
    for &address in captured {
        let finding = match host_routes.iter().find(|(d, _)| *d == address) {
            Some((_, Some(oif))) if *oif == tun_index => RouteFinding { address, ok: true, detail: "present".into() },
            Some((_, oif)) => {
                RouteFinding { address, ok: false, detail: format!("points to {}, not {tun}", oif.map_or("no interface".into(), ifname)) }
            }
            None if enforce => match route(address, tun_index, true) {
                Ok(()) => RouteFinding { address, ok: true, detail: "installed".into() },
                Err(e) => RouteFinding { address, ok: false, detail: format!("missing; adding it failed: {e}") },
            },
            None => RouteFinding { address, ok: false, detail: "missing (--report-only)".into() },
        };
        out.push(finding);
    }
    Ok(out)
}

/// Add (or delete) `address/32 dev oif` in the main table.
fn route(address: Ipv4Addr, oif: u32, add: bool) -> Result<(), String> {
    let mut r = RouteMessage::default();
    r.header.address_family = AddressFamily::Inet;
    r.header.destination_prefix_length = 32;
    r.header.table = RouteHeader::RT_TABLE_MAIN;
    r.header.protocol = RouteProtocol::Static;
    r.header.scope = RouteScope::Link;
    r.header.kind = RouteType::Unicast;
    r.attributes.push(RouteAttribute::Destination(RouteAddress::Inet(address)));
    r.attributes.push(RouteAttribute::Oif(oif));
    let s = socket().map_err(|e| e.to_string())?;
    let msg = if add {
        (NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, RouteNetlinkMessage::NewRoute(r))
    } else {
        (NLM_F_REQUEST | NLM_F_ACK, RouteNetlinkMessage::DelRoute(r))
    };
    send(&s, msg.0, msg.1).map_err(|e| e.to_string())?;
    replies(&s, |_| {}).map_err(|e| e.to_string())
}

fn ifname(index: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return format!("ifindex {index}");
    }
    let bytes: Vec<u8> = buf.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn socket() -> std::io::Result<Socket> {
    let mut s = Socket::new(NETLINK_ROUTE)?;
    s.bind_auto()?;
    s.connect(&SocketAddr::new(0, 0))?;
    let tv = libc::timeval { tv_sec: 2, tv_usec: 0 };
    use std::os::fd::AsRawFd;
    // SAFETY: SO_RCVTIMEO takes a timeval that lives across the call.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(s)
}

fn send(s: &Socket, flags: u16, msg: RouteNetlinkMessage) -> std::io::Result<()> {
    let mut hdr = NetlinkHeader::default();
    hdr.flags = flags;
    let mut packet = NetlinkMessage::new(hdr, NetlinkPayload::from(msg));
    packet.finalize();
    let mut buf = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut buf[..]);
    s.send(&buf, 0)?;
    Ok(())
}

/// Read replies until Done / an ACK / an error; bounded by `MAX_READS`
/// datagrams and the socket's receive timeout.
fn replies(s: &Socket, mut each: impl FnMut(RouteNetlinkMessage)) -> std::io::Result<()> {
    const MAX_READS: usize = 4096;
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..MAX_READS {
        let n = s.recv(&mut &mut buf[..], 0)?;
        let mut off = 0usize;
        while off < n {
            let Some(bytes) = buf.get(off..n) else { break };
            let msg =
                <NetlinkMessage<RouteNetlinkMessage>>::deserialize(bytes).map_err(|e| std::io::Error::other(format!("netlink: {e}")))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => {
                    return match e.code {
                        None => Ok(()),
                        Some(_) => Err(e.to_io()),
                    }
                }
                NetlinkPayload::InnerMessage(m) => each(m),
                _ => {}
            }
            if len == 0 {
                break;
            }
            off = off.saturating_add(len);
        }
    }
    Err(std::io::Error::other("netlink: no end of dump"))
}

/// IPv4 addresses of any interface that are captured claims:
/// (message to delete it, address, prefix length, ifindex).
fn captured_addresses(captured: &[Ipv4Addr]) -> std::io::Result<Vec<(AddressMessage, Ipv4Addr, u8, u32)>> {
    let s = socket()?;
    let mut req = AddressMessage::default();
    req.header.family = AddressFamily::Inet;
    send(&s, NLM_F_REQUEST | NLM_F_DUMP, RouteNetlinkMessage::GetAddress(req))?;
    let mut found = Vec::new();
    replies(&s, |m| {
        let RouteNetlinkMessage::NewAddress(a) = m else { return };
        if a.header.family != AddressFamily::Inet {
            return;
        }
        // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer
        // on point-to-point links); fall back to IFA_ADDRESS without it.
        let local = a.attributes.iter().find_map(|x| match x {
            AddressAttribute::Local(IpAddr::V4(v4)) => Some(*v4),
            _ => None,
        });
        let addr = local.or_else(|| {
            a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Address(IpAddr::V4(v4)) => Some(*v4),
                _ => None,
            })
        });
        if let Some(addr) = addr.filter(|x| captured.contains(x)) {
            let (len, idx) = (a.header.prefix_len, a.header.index);
            found.push((a, addr, len, idx));
        }
    })?;
    Ok(found)
}

fn delete_address(msg: AddressMessage) -> Result<(), String> {
    let s = socket().map_err(|e| e.to_string())?;
    send(&s, NLM_F_REQUEST | NLM_F_ACK, RouteNetlinkMessage::DelAddress(msg)).map_err(|e| e.to_string())?;
    replies(&s, |_| {}).map_err(|e| e.to_string())
}

/// Run a firewall front end with a time bound; `None` when not installed.
fn run_bounded(cmd: &str, args: &[&str]) -> Option<Result<String, String>> {
    let mut child = match Command::new(cmd).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(Err(format!("{cmd}: {e}"))),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Some(Err(format!("{cmd}: no answer within 5 s")));
            }
        }
    }
    let out = match child.wait_with_output() {
        Ok(o) => o,
        Err(e) => return Some(Err(format!("{cmd}: {e}"))),
    };
    if !out.status.success() {
        return Some(Err(format!("{cmd} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())));
    }
    Some(Ok(String::from_utf8_lossy(&out.stdout).into_owned()))
}

fn firewall(f: &mut LinuxFindings) {
    match run_bounded("iptables", &["-S", "FORWARD"]) {
        None => {}
        Some(Err(e)) => f.errors.push(e),
        Some(Ok(text)) => {
            f.firewalls_checked.push("iptables");
            let (policies, rules) = parse_iptables(&text);
            f.forward_drop_policies.extend(policies);
            f.forward_terminal_rules.extend(rules);
        }
    }
    match run_bounded("nft", &["list", "ruleset"]) {
        None => {}
        Some(Err(e)) => f.errors.push(e),
        Some(Ok(text)) => {
            f.firewalls_checked.push("nft");
            let (policies, rules) = parse_nft(&text);
            f.forward_drop_policies.extend(policies);
            f.forward_terminal_rules.extend(rules);
        }
    }
}

/// `iptables -S FORWARD` → (drop policies, terminal rules).
pub fn parse_iptables(text: &str) -> (Vec<String>, Vec<String>) {
    let (mut policies, mut rules) = (Vec::new(), Vec::new());
    for line in text.lines().map(str::trim) {
        if line == "-P FORWARD DROP" {
            policies.push(format!("iptables: {line}"));
        } else if line.starts_with("-A FORWARD ") && (line.ends_with("-j DROP") || line.contains("-j REJECT")) {
            rules.push(format!("iptables: {line}"));
        }
    }
    (policies, rules)
}

/// `nft list ruleset` → (drop policies, terminal rules) of chains hooked on
/// forward.
pub fn parse_nft(text: &str) -> (Vec<String>, Vec<String>) {
    let (mut policies, mut rules) = (Vec::new(), Vec::new());
    let mut table = String::new();
    let mut chain: Option<String> = None;
    let mut forward = false;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("table ") {
            table = rest.trim_end_matches('{').trim().to_string();
            chain = None;
        } else if let Some(rest) = line.strip_prefix("chain ") {
            chain = Some(rest.trim_end_matches('{').trim().to_string());
            forward = false;
        } else if line == "}" {
            if chain.take().is_none() {
                table.clear();
            }
            forward = false;
        } else if let Some(c) = &chain {
            if line.starts_with("type ") && line.contains("hook forward") {
                forward = true;
                if line.contains("policy drop") {
                    policies.push(format!("nft: table {table} chain {c}: policy drop"));
                }
            } else if forward {
                let words: Vec<&str> = line.split_whitespace().collect();
                if words.last().is_some_and(|w| *w == "drop" || *w == "reject") || words.contains(&"reject") {
                    rules.push(format!("nft: table {table} chain {c}: {line}"));
                }
            }
        }
    }
    (policies, rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iptables_forward_rules() {
        let text = "-P FORWARD DROP\n-A FORWARD -i eth0 -j ACCEPT\n-A FORWARD -d 10.20.0.10/32 -j DROP\n\
                    -A FORWARD -p tcp -j REJECT --reject-with tcp-reset\n-A INPUT -j DROP\n";
        let (p, r) = parse_iptables(text);
        assert_eq!(p, vec!["iptables: -P FORWARD DROP"]);
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(r[0].contains("10.20.0.10/32 -j DROP"));
        assert!(r[1].contains("REJECT"));
        let (p, r) = parse_iptables("-P FORWARD ACCEPT\n");
        assert!(p.is_empty() && r.is_empty());
    }

    #[test]
    fn nft_forward_chains_only() {
        let text = r#"table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		tcp dport 22 drop
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
		ip daddr 10.20.0.10 drop
		ip saddr 10.0.0.0/8 accept
		meta l4proto tcp reject with tcp reset
	}
}
table ip nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
	}
}
"#;
        let (p, r) = parse_nft(text);
        assert_eq!(p, vec!["nft: table inet filter chain forward: policy drop"]);
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(r[0].ends_with("ip daddr 10.20.0.10 drop"));
        assert!(r[1].contains("reject with tcp reset"));
    }
}
