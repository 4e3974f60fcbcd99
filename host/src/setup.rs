//! From a TOML file and the command line to a running configuration.
//!
//! The steps, each of which can refuse with a message that names the path:
//! parse the TOML, `config_schema::validate` it (every problem printed),
//! open the ports (a TAP device per LAN port, the UDP shim for the WAN
//! port), resolve peer endpoints given by DNS name, then hand a *copy* of the
//! configuration to `routerd_control::build`. The copy differs from the
//! file only where the host build must fill in what `build` expects from a
//! NIC: each port's MAC (so ports bind by MAC, whatever their names), the
//! WAN address and gateway when the file has none (placeholders: the kernel
//! does the real routing), and endpoints as IPv4 addresses (DNS names
//! resolved; IPv6 endpoints under their synthetic IPv4, see `v6map`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use config_schema::{CaptureMethod, ClaimAction, Config, Endpoint, Host, Ipv4Cidr, Mac, PortAddress, PortRole, Severity};
use routerd_control::{build, NicInfo, Runtime};

use crate::tap::{self, Kind};
use crate::wan::{Wan, WanIdentity};

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

/// A port as the loop drives it.
pub struct PortPlan {
    pub name: String,
    pub role: PortRole,
    pub mac: [u8; 6],
    /// LAN ports: the TAP device.
    pub tap: Option<tap::Device>,
}

/// A peer whose endpoint is a DNS name.
#[derive(Debug, Clone)]
pub struct DnsPeer {
    /// WireGuard/dataplane peer id (tunnel plan index).
    pub peer: u16,
    pub name: String,
    pub host: String,
    pub port: u16,
    /// What it resolved to at start (real address).
    pub resolved: Option<SocketAddr>,
}

/// Everything the loop needs.
pub struct Prepared {
    /// The configuration as built (see the module comment).
    pub config: Config,
    pub runtime: Runtime,
    /// In configuration order (= dataplane port index).
    pub ports: Vec<PortPlan>,
    pub wan_port: usize,
    pub wan: Wan,
    pub dns_peers: Vec<DnsPeer>,
    /// Claims this box captures with provider-secondary-ip.
    pub captured_secondary: Vec<Ipv4Addr>,
}

/// Parse and validate; print every problem. Errors → exit code 2.
pub fn load(path: &std::path::Path) -> Result<Config, SetupError> {
    let text = std::fs::read_to_string(path).map_err(|e| input(format!("{}: {e}", path.display())))?;
    let cfg = config_schema::human::from_toml(&text).map_err(|e| input(format!("{}: {e}", path.display())))?;
    let report = config_schema::validate(&cfg);
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
        eprintln!("{}: … and {} more problems", path.display(), report.omitted);
    }
    if !report.is_valid() {
        return Err(input(format!("{}: {} error(s); nothing was started", path.display(), report.errors)));
    }
    Ok(cfg)
}

/// Resolve `host:port`, preferring IPv4.
pub fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs().map_err(|e| format!("{host}: {e}"))?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("{host}: no address"))
}

/// Open the ports and build the runtime.
pub fn prepare(file: &Config, opts: &PortOptions) -> Result<Prepared, SetupError> {
    let mut cfg = file.clone();
    let mut ports = Vec::new();
    let mut nics = Vec::new();
    let mut wan_port = None;
    for (i, p) in cfg.ports.iter_mut().enumerate() {
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
                if !matches!(p.address, Some(PortAddress::Static(_))) {
                    p.address = Ipv4Cidr::new(PLACEHOLDER_WAN, PLACEHOLDER_PREFIX).ok().map(PortAddress::Static);
                }
                if p.gateway.is_none() {
                    p.gateway = placeholder_gateway(p.address);
                }
                (p.mac.map_or(DEFAULT_WAN_MAC, |m| m.0), None)
            }
        };
        if nics.iter().any(|n: &NicInfo| n.mac == mac) {
            return Err(input(format!("ports[{i}] ({name}): MAC {mac:02x?} is used by another port")));
        }
        p.mac = Some(Mac(mac));
        nics.push(NicInfo { mac });
        ports.push(PortPlan { name, role: p.role, mac, tap: dev });
    }
    let wan_port = wan_port.ok_or_else(|| input("ports: no port has role = \"wan\"".into()))?;
    let address = match cfg.ports.get(wan_port).and_then(|p| p.address) {
        Some(PortAddress::Static(c)) => c.addr(),
        _ => PLACEHOLDER_WAN,
    };
    let listen_port = cfg.wireguard.first().map_or(config_schema::config::DEFAULT_LISTEN_PORT, |t| t.listen_port);
    let mac = ports.get(wan_port).map_or(DEFAULT_WAN_MAC, |p| p.mac);
    let tun = match &opts.wan_tun {
        Some(n) => {
            let d = tap::Device::open(n, Kind::Tun).map_err(|e| system(format!("--wan-tun {n}: {e}")))?;
            let _ = d.set_up();
            Some(d)
        }
        None => None,
    };
    let mut wan = Wan::new(opts.wan_bind, WanIdentity { mac, address, listen_port }, tun)
        .map_err(|e| system(format!("WAN socket (UDP port {listen_port}): {e}")))?;

    // Endpoints: what build accepts is an IPv4 address.
    let tunnel = cfg.wireguard.first().map(|t| t.name.clone());
    let mut dns_peers = Vec::new();
    let mut plan_index = 0u16;
    for (i, p) in cfg.peers.iter_mut().enumerate() {
        if Some(&p.tunnel) != tunnel.as_ref() {
            continue;
        }
        let id = plan_index;
        plan_index = plan_index.saturating_add(1);
        let Some(e) = p.endpoint.clone() else { continue };
        let real = match &e.host {
            Host::V4(a) => Some(SocketAddr::new(IpAddr::V4(*a), e.port)),
            Host::V6(a) => Some(SocketAddr::new(IpAddr::V6(*a), e.port)),
            Host::Dns(name) => {
                let r = resolve(name.as_str(), e.port);
                match &r {
                    Ok(a) => log::info!("peers[{i}] ({}): {} resolves to {a}", p.name.as_str(), name.as_str()),
                    Err(err) => log::warn!(
                        "peers[{i}] ({}): cannot resolve {err}; waiting for the peer to dial in, retrying later",
                        p.name.as_str()
                    ),
                }
                let resolved = r.ok();
                dns_peers.push(DnsPeer { peer: id, name: p.name.as_str().into(), host: name.as_str().into(), port: e.port, resolved });
                resolved
            }
        };
        p.endpoint = match real {
            None => None,
            Some(a) => match wan.dataplane_endpoint(a) {
                Some(v4) => Some(Endpoint { host: Host::V4(*v4.ip()), port: v4.port() }),
                None => {
                    return Err(input(format!(
                        "peers[{i}].endpoint: {a} is IPv6 but the WAN socket is IPv4 only (bind it to :: with --wan-bind)"
                    )))
                }
            },
        };
    }

    let runtime = build(&cfg, &nics).map_err(|e| input(format!("{e}")))?;
    let captured_secondary = cfg
        .claims
        .iter()
        .filter(|c| matches!(cfg.claim_action(c), ClaimAction::Capture { method: CaptureMethod::ProviderSecondaryIp, .. }))
        .map(|c| c.address.addr())
        .collect();
    Ok(Prepared { config: cfg, runtime, ports, wan_port, wan, dns_peers, captured_secondary })
}

/// A gateway for a WAN port that has none: another address of its subnet
/// (the shim answers ARP for any address; the kernel routes for real).
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

    #[test]
    fn resolve_prefers_ipv4_and_reports_failure() {
        assert_eq!(resolve("127.0.0.1", 5), Ok("127.0.0.1:5".parse().unwrap()));
        assert_eq!(resolve("::1", 5), Ok("[::1]:5".parse().unwrap()));
        assert!(resolve("no-such-host.invalid", 5).is_err());
    }
}
