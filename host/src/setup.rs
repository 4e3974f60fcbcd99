//! From a TOML file and the command line to open ports, and from any
//! configuration (the file's, or one `routerctl apply` sends later) to
//! what `routerd_control` binds on this host.
//!
//! At start: parse the TOML and `config_schema::validate_for` it as
//! routerd-host (every problem printed), [`open`] the ports its file names (a TAP device per LAN port,
//! the UDP shim for the WAN port), [`resolve_all`] endpoints given by DNS
//! name. For every apply, [`bind`] makes a *copy* that differs from the
//! configuration only where the host must fill in what `build` expects from
//! a NIC: each port's MAC (so ports bind by MAC, whatever their order), the
//! WAN address when the file has none (a placeholder: the kernel owns the
//! real one; the dataplane only names the box's end of the tunnel with it),
//! and endpoints as addresses (DNS names resolved). The node keeps and
//! shows the configuration as given.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use config_schema::{CaptureMethod, ClaimAction, Config, Endpoint, Host, Ipv4Cidr, Mac, PortAddress, PortRole, Severity};
use routerd_control::NicInfo;

use crate::tap::{self, Kind};
use crate::wan::WanNic;

/// Why setup stopped: the message and the exit code (2: the input is
/// wrong, 1: the system refused).
#[derive(Debug)]
pub struct SetupError {
    pub code: i32,
    pub message: String,
}

fn input(message: String) -> SetupError {
    SetupError { code: 2, message }
}

fn system(message: String) -> SetupError {
    SetupError { code: 1, message }
}

/// The WAN MAC when the configuration names none.
pub const DEFAULT_WAN_MAC: [u8; 6] = [0x02, 0x72, 0x64, 0x00, 0x00, 0x01];
/// The WAN address when the configuration has none (or `dhcp`): any
/// address works, the kernel owns the real one.
pub const PLACEHOLDER_WAN: Ipv4Addr = Ipv4Addr::new(169, 254, 253, 1);
pub const PLACEHOLDER_PREFIX: u8 = 24;

/// Command-line choices that shape the ports.
#[derive(Debug, Clone, Default)]
pub struct PortOptions {
    /// `--port NAME=IFNAME`.
    pub map: HashMap<String, String>,
    /// `--tap-prefix`: TAP name = prefix + port name.
    pub tap_prefix: String,
    /// `--wan-bind`: the socket's address.
    pub wan_bind: Option<IpAddr>,
    /// `--wan-tun`: a TUN device for non-WireGuard IPv4 on the WAN port.
    pub wan_tun: Option<String>,
}

/// A port as the loop drives it. Its index in [`Opened::ports`] is its NIC
/// index for `routerd_control` (the configuration binds ports by MAC).
pub struct PortPlan {
    pub name: String,
    pub role: PortRole,
    pub mac: [u8; 6],
    /// LAN ports: the TAP device.
    pub tap: Option<tap::Device>,
}

/// What was opened at start. A configuration applied later binds to these
/// ports; it cannot add, rename or re-address them (that needs a restart).
pub struct Opened {
    pub ports: Vec<PortPlan>,
    pub wan_port: usize,
    /// The WAN address and gateway the dataplane is given (the file's, or
    /// placeholders: the kernel owns the real ones).
    pub wan_address: Ipv4Cidr,
    pub wan_gateway: Option<Ipv4Addr>,
    /// The WireGuard socket's port.
    pub listen_port: u16,
}

impl Opened {
    /// The NICs as `routerd_control::Node` sees them.
    pub fn nics(&self) -> Vec<NicInfo> {
        self.ports
            .iter()
            .enumerate()
            .map(|(i, p)| if i == self.wan_port { NicInfo::datagram(p.mac) } else { NicInfo::ethernet(p.mac) })
            .collect()
    }
}

/// Peer endpoints given by DNS name and what they resolved to.
pub type DnsCache = HashMap<String, SocketAddr>;

/// A peer whose endpoint is a DNS name.
#[derive(Debug, Clone)]
pub struct DnsPeer {
    /// WireGuard/dataplane peer id (tunnel plan index).
    pub peer: u16,
    pub name: String,
    pub host: String,
    pub port: u16,
    /// What it resolves to (real address), if it ever did.
    pub resolved: Option<SocketAddr>,
}

/// Parse and validate for routerd-host (what the node checks on every
/// apply); print every problem. Errors → exit code 2.
pub fn load(path: &std::path::Path) -> Result<Config, SetupError> {
    let text = std::fs::read_to_string(path).map_err(|e| input(format!("{}: {e}", path.display())))?;
    let cfg = config_schema::human::from_toml(&text).map_err(|e| input(format!("{}: {e}", path.display())))?;
    let report = config_schema::validate_for(&cfg, config_schema::Platform::Host);
    for p in &report.problems {
        let sev = match p.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        eprintln!("{}: {sev}: {p}", path.display());
        if !p.hint.is_empty() {
            eprintln!("  hint: {}", p.hint);
        }
    }
    if report.omitted > 0 {
        eprintln!("{}: … and {} more problem{}", path.display(), report.omitted, if report.omitted == 1 { "" } else { "s" });
    }
    if !report.is_valid() {
        let errors = if report.errors == 1 { "1 error".to_string() } else { format!("{} errors", report.errors) };
        return Err(input(format!("{}: {errors}; nothing was started", path.display())));
    }
    Ok(cfg)
}

/// Resolve `host:port`, preferring IPv4.
pub fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs().map_err(|e| format!("{host}: {e}"))?.collect();
    addrs.iter().find(|a| a.is_ipv4()).or_else(|| addrs.first()).copied().ok_or_else(|| format!("{host}: no address"))
}

/// Open the ports the file names: a TAP device per LAN port, the UDP shim
/// (and `--wan-tun`) for the WAN port.
pub fn open(file: &Config, opts: &PortOptions) -> Result<(Opened, WanNic), SetupError> {
    let mut ports: Vec<PortPlan> = Vec::new();
    let mut wan_port = None;
    let mut wan_address = None;
    let mut wan_gateway = None;
    for (i, p) in file.ports.iter().enumerate() {
        let name = p.name.as_str().to_string();
        let (mac, dev) = match p.role {
            PortRole::Lan => {
                let ifname = opts.map.get(&name).cloned().unwrap_or_else(|| format!("{}{name}", opts.tap_prefix));
                let dev = tap::Device::open(&ifname, Kind::Tap).map_err(|e| system(format!("ports[{i}] ({name}): TAP {ifname}: {e}")))?;
                let _ = dev.set_up();
                let mac = match p.mac {
                    Some(m) => m.0,
                    None => tap::box_mac_for(dev.kernel_mac().map_err(|e| system(format!("ports[{i}]: MAC of {ifname}: {e}")))?),
                };
                (mac, Some(dev))
            }
            PortRole::Wan => {
                wan_port = Some(i);
                let address = match p.address {
                    Some(PortAddress::Static(c)) => Some(c),
                    _ => Ipv4Cidr::new(PLACEHOLDER_WAN, PLACEHOLDER_PREFIX).ok(),
                };
                wan_gateway = p.gateway.or_else(|| placeholder_gateway(address.map(PortAddress::Static)));
                wan_address = address;
                (p.mac.map_or(DEFAULT_WAN_MAC, |m| m.0), None)
            }
        };
        if ports.iter().any(|n| n.mac == mac) {
            return Err(input(format!("ports[{i}] ({name}): MAC {mac:02x?} is used by another port")));
        }
        ports.push(PortPlan { name, role: p.role, mac, tap: dev });
    }
    let (Some(wan_port), Some(wan_address)) = (wan_port, wan_address) else {
        return Err(input("ports: no port has role = \"wan\"".into()));
    };
    let listen_port = file.wireguard.first().map_or(config_schema::config::DEFAULT_LISTEN_PORT, |t| t.listen_port);
    let mac = ports.get(wan_port).map_or(DEFAULT_WAN_MAC, |p| p.mac);
    let tun = match &opts.wan_tun {
        Some(n) => {
            let d = tap::Device::open(n, Kind::Tun).map_err(|e| system(format!("--wan-tun {n}: {e}")))?;
            let _ = d.set_up();
            Some(d)
        }
        None => None,
    };
    let wan = WanNic::new(opts.wan_bind, listen_port, mac, tun).map_err(|e| system(format!("WAN socket (UDP port {listen_port}): {e}")))?;
    Ok((Opened { ports, wan_port, wan_address, wan_gateway, listen_port }, wan))
}

/// The DNS names among `cfg`'s endpoints, resolved now (blocking; at
/// start). A name that does not resolve is logged and left out: the
/// re-resolver keeps trying.
pub fn resolve_all(cfg: &Config) -> DnsCache {
    let mut cache = DnsCache::new();
    for (i, p) in cfg.peers.iter().enumerate() {
        let Some(Endpoint { host: Host::Dns(name), port }) = &p.endpoint else { continue };
        match resolve(name.as_str(), *port) {
            Ok(a) => {
                log::info!("peers[{i}] ({}): {} resolves to {a}", p.name.as_str(), name.as_str());
                cache.insert(name.as_str().to_string(), a);
            }
            Err(err) => {
                log::warn!("peers[{i}] ({}): cannot resolve {err}; waiting for the peer to dial in, retrying later", p.name.as_str())
            }
        }
    }
    cache
}

/// The configuration `routerd_control::build` binds on this host: `cfg`
/// with each port's MAC set to the opened port of the same name, the WAN
/// address and gateway the shim stands for, and every endpoint as an IPv4
/// address (DNS names from `dns`, left empty when unresolved). Refuses
/// (naming the path) what the opened ports cannot carry without a restart,
/// and an IPv6 endpoint when the socket is IPv4 only (`dual_stack` false).
pub fn bind(cfg: &Config, opened: &Opened, dual_stack: bool, dns: &DnsCache) -> Result<Box<Config>, String> {
    let restart = "restart routerd-host with the new --config to change it";
    let mut out = Box::new(cfg.clone());
    for (i, p) in out.ports.iter_mut().enumerate() {
        let Some(o) = opened.ports.iter().find(|o| o.name == p.name.as_str()) else {
            let names: Vec<&str> = opened.ports.iter().map(|o| o.name.as_str()).collect();
            return Err(format!("ports[{i}] ({}): routerd-host opened {} at start; {restart}", p.name, names.join(", ")));
        };
        if o.role != p.role {
            return Err(format!("ports[{i}].role ({}): routerd-host opened it as {:?}; {restart}", p.name, o.role));
        }
        if let Some(m) = p.mac.filter(|m| m.0 != o.mac) {
            return Err(format!("ports[{i}].mac: {m} is not the MAC routerd-host gave {} ({}); {restart}", p.name, Mac(o.mac)));
        }
        p.mac = Some(Mac(o.mac));
        if p.role == PortRole::Wan {
            match p.address {
                Some(PortAddress::Static(c)) if c != opened.wan_address => {
                    return Err(format!("ports[{i}].address: {c} differs from the WAN address in use ({}); {restart}", opened.wan_address));
                }
                _ => p.address = Some(PortAddress::Static(opened.wan_address)),
            }
            p.gateway = p.gateway.or(opened.wan_gateway);
        }
    }
    if let Some(t) = out.wireguard.first() {
        if t.listen_port != opened.listen_port {
            return Err(format!(
                "wireguard[0].listen_port: {} differs from the socket's port {}; {restart}",
                t.listen_port, opened.listen_port
            ));
        }
    }
    for (i, p) in out.peers.iter_mut().enumerate() {
        let Some(e) = p.endpoint.clone() else { continue };
        let real = match &e.host {
            Host::V4(a) => Some(SocketAddr::new(IpAddr::V4(*a), e.port)),
            Host::V6(a) => Some(SocketAddr::new(IpAddr::V6(*a), e.port)),
            Host::Dns(name) => dns.get(name.as_str()).copied(),
        };
        p.endpoint = match real {
            None => None,
            Some(a) => Some(endpoint(a, dual_stack).ok_or_else(|| {
                format!("peers[{i}].endpoint: {a} is IPv6 but the WAN socket is IPv4 only (bind it to :: with --wan-bind)")
            })?),
        };
    }
    Ok(out)
}

/// `a` as a configuration endpoint (`::ffff:a.b.c.d` as IPv4); `None` for
/// IPv6 on an IPv4-only socket.
pub fn endpoint(a: SocketAddr, dual_stack: bool) -> Option<Endpoint> {
    let host = match a {
        SocketAddr::V4(v4) => Host::V4(*v4.ip()),
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => Host::V4(v4),
            None if dual_stack => Host::V6(*v6.ip()),
            None => return None,
        },
    };
    Some(Endpoint { host, port: a.port() })
}

/// The peers of `cfg`'s tunnel whose endpoint is a DNS name, numbered like
/// the tunnel plan (what `routerd_control::build` does).
pub fn dns_peers(cfg: &Config, dns: &DnsCache) -> Vec<DnsPeer> {
    let tunnel = cfg.wireguard.first().map(|t| &t.name);
    cfg.peers
        .iter()
        .filter(|p| Some(&p.tunnel) == tunnel)
        .enumerate()
        .filter_map(|(id, p)| match &p.endpoint {
            Some(Endpoint { host: Host::Dns(name), port }) => Some(DnsPeer {
                peer: id as u16,
                name: p.name.as_str().into(),
                host: name.as_str().into(),
                port: *port,
                resolved: dns.get(name.as_str()).copied(),
            }),
            _ => None,
        })
        .collect()
}

/// The claims this box captures with provider-secondary-ip.
pub fn captured_secondary(cfg: &Config) -> Vec<Ipv4Addr> {
    cfg.claims
        .iter()
        .filter(|c| matches!(cfg.claim_action(c), ClaimAction::Capture { method: CaptureMethod::ProviderSecondaryIp, .. }))
        .map(|c| c.address.addr())
        .collect()
}

/// A gateway for a WAN port that has none: another address of its subnet,
/// so the dataplane has a default route out of the WAN. Nothing is sent to
/// it: on the datagram WAN a routed packet leaves bare for `--wan-tun` and
/// the kernel picks the real next hop.
fn placeholder_gateway(address: Option<PortAddress>) -> Option<Ipv4Addr> {
    let Some(PortAddress::Static(c)) = address else { return None };
    if c.prefix_len() >= 31 {
        return None;
    }
    let net = c.network().to_bits();
    let first = Ipv4Addr::from_bits(net.wrapping_add(1));
    Some(if first == c.addr() { Ipv4Addr::from_bits(net.wrapping_add(2)) } else { first })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_gateway_is_in_the_subnet_and_not_ours() {
        let c = |a: [u8; 4], l| Some(PortAddress::Static(Ipv4Cidr::new(Ipv4Addr::from(a), l).unwrap()));
        assert_eq!(placeholder_gateway(c([10, 0, 0, 5], 24)), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(placeholder_gateway(c([10, 0, 0, 1], 24)), Some(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(placeholder_gateway(c([10, 0, 0, 1], 31)), None);
        assert_eq!(placeholder_gateway(None), None);
    }

    /// Said "1 error(s)".
    #[test]
    fn an_invalid_file_counts_its_errors_in_words() {
        let path = std::env::temp_dir().join(format!("routerd-host-setup-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "[device]\nname = \"b\"\nside = \"cloud\"\n[[ports]]\nname = \"wan0\"\nrole = \"wan\"\naddress = \"dhcp\"\n\
             [[wireguard]]\nname = \"wg0\"\nprivate_key = \"device:wg0\"\nlisten_port = 0\n",
        )
        .unwrap();
        let e = load(&path).unwrap_err();
        let _ = std::fs::remove_file(&path);
        assert_eq!(e.code, 2);
        assert!(e.message.ends_with(": 1 error; nothing was started"), "{}", e.message);
    }

    #[test]
    fn resolve_prefers_ipv4_and_reports_failure() {
        assert_eq!(resolve("127.0.0.1", 5), Ok("127.0.0.1:5".parse().unwrap()));
        assert_eq!(resolve("::1", 5), Ok("[::1]:5".parse().unwrap()));
        assert!(resolve("no-such-host.invalid", 5).is_err());
    }
}
