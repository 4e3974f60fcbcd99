//! From configuration to runtime tables.

use config_schema::{CaptureMethod, ClaimAction, Config, Host, KeyRef, MssClamp, PortAddress, PortRole};
use core::fmt;
use core::net::{SocketAddr, SocketAddrV4};
use heapless::Vec;
use routerd_dataplane as dp;
use routerd_netdev::Medium;

/// Most NICs a box binds (one per port it runs).
pub const MAX_NICS: usize = config_schema::RUNS.ports;
/// WireGuard interfaces `build` drives: the first `[[wireguard]]`.
/// `config_schema::validate_for` refuses `wireguard[1]` and any after it.
pub const MAX_TUNNELS: usize = 1;
/// Most peers of the (one) WireGuard interface.
pub const MAX_PEERS: usize = config_schema::RUNS.peers;

/// A NIC the platform found, in contract order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NicInfo {
    pub mac: [u8; 6],
    /// What its frames are: Ethernet, or datagrams on a socket the host's
    /// kernel owns (routerd-host's WAN), which only the WAN port can bind.
    pub medium: Medium,
}

impl NicInfo {
    /// An Ethernet NIC.
    pub const fn ethernet(mac: [u8; 6]) -> NicInfo {
        NicInfo { mac, medium: Medium::Ethernet }
    }

    /// A datagram socket standing for the WAN NIC, named by `mac`.
    pub const fn datagram(mac: [u8; 6]) -> NicInfo {
        NicInfo { mac, medium: Medium::Datagram }
    }

    /// What `dev` says it is.
    pub fn of<D: routerd_netdev::NetDevice + ?Sized>(dev: &D) -> NicInfo {
        NicInfo { mac: dev.mac(), medium: dev.capabilities().medium }
    }
}

/// The contract name of the n-th NIC the platform found: `lan0`, `wan0`,
/// then `lan1`, `lan2`, … (PRODUCT.md, "NIC order").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContractName(pub usize);

impl fmt::Display for ContractName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One naming for `build` and for validation (`port-name-unbound`).
        f.write_str(config_schema::platform::contract_name(self.0).as_str())
    }
}

/// One WireGuard peer as the tunnel needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerPlan {
    pub public_key: [u8; 32],
    pub endpoint: Option<SocketAddr>,
    pub persistent_keepalive: Option<u16>,
    pub allowed: Vec<dp::Prefix, { dp::config::MAX_ALLOWED_PER_PEER }>,
    /// Key-store slot of the preshared key (`device:NAME`), if any. The
    /// node checks the slot holds a preshared key before it builds.
    pub preshared_key: Option<config_schema::Name>,
}

/// The WireGuard interface as the tunnel needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelPlan {
    /// Key-store slot of the private key (`device:NAME`).
    pub key_slot: config_schema::Name,
    pub mtu: u16,
    pub listen_port: u16,
    /// Peer `i` here has dataplane and WireGuard id `i`.
    pub peers: Vec<PeerPlan, MAX_PEERS>,
}

/// A peer whose endpoint is a DNS name: the resolver keeps it resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedEndpoint {
    pub name: config_schema::DnsName,
    pub port: u16,
    /// The tunnel's peer id.
    pub peer: u16,
}

/// Everything the platform needs to run a configuration.
#[derive(Clone, Debug)]
pub struct Runtime {
    pub dataplane: dp::Config,
    /// `nic_of_port[p]`: which NIC (index in the platform's list) carries
    /// dataplane port `p`.
    pub nic_of_port: Vec<usize, MAX_NICS>,
    pub tunnel: Option<TunnelPlan>,
    /// Peers whose endpoint is a DNS name.
    pub named: Vec<NamedEndpoint, MAX_PEERS>,
}

/// How a port asked for its NIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NicWanted {
    /// `mac = "…"`.
    Mac([u8; 6]),
    /// No `mac`: the port's name, matched against the contract names.
    Name(config_schema::Name),
}

/// Why a configuration cannot run on this box. Each names the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// `ports[i]`: no NIC matches (by MAC or by contract name); `nics` are
    /// the box's, in contract order, so the refusal can list them.
    NoNic { port: usize, wanted: NicWanted, nics: Vec<[u8; 6], MAX_NICS> },
    /// `ports[i]`: two ports bound to one NIC.
    NicTaken { port: usize },
    /// `ports[i].address`: a WAN port without an address (or `dhcp` on a
    /// LAN port, which validation refuses first).
    PortAddress { port: usize },
    /// `wireguard[i]`: this build drives one WireGuard interface.
    ExtraTunnel { tunnel: usize },
    /// `peers[i].endpoint`: IPv6, and the WAN is an Ethernet NIC (whose
    /// underlay is IPv4 only).
    PeerEndpoint { peer: usize },
    /// `ports[i]`: a LAN port bound to a datagram NIC (a UDP socket can
    /// only be the WAN).
    DatagramLan { port: usize },
    /// `peers[i]` or `claims[i]` names something missing (validate() catches
    /// this first; kept so `build` is total).
    Reference { what: &'static str, index: usize },
    /// `claims[i]`: owned here but no LAN port's subnet contains it.
    NoLocalPort { claim: usize },
    /// `segments[i].local_vtep`: neither the WAN address nor the tunnel address.
    LocalVtep { segment: usize },
    /// `segments[i].local_vtep`: the WAN address of a datagram WAN, whose
    /// socket carries WireGuard only (VXLAN could neither leave nor arrive).
    DatagramVtep { segment: usize },
    /// A table is larger than this build's capacity.
    Capacity { what: &'static str },
    /// The dataplane refused the result (a bug if validate() passed).
    Dataplane(dp::ConfigError),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::NoNic { port, wanted, nics } => {
                match wanted {
                    NicWanted::Mac(mac) => write!(f, "ports[{port}].mac: no NIC with MAC {} on this box", dp::MacText(dp::Mac(*mac)))?,
                    NicWanted::Name(name) => {
                        write!(f, "ports[{port}].name: no NIC is called {name} on this box (no `mac`: bound by contract name)")?
                    }
                }
                // A refusal keeps 200 characters: room for 4 NICs (5 by MAC).
                f.write_str("; its NICs: ")?;
                if nics.is_empty() {
                    f.write_str("none")?;
                }
                for (i, mac) in nics.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{} {}", ContractName(i), dp::MacText(dp::Mac(*mac)))?;
                }
                Ok(())
            }
            BuildError::NicTaken { port } => write!(f, "ports[{port}]: its NIC is already bound to another port"),
            BuildError::PortAddress { port } => {
                write!(f, "ports[{port}].address: the WAN port needs an address (a.b.c.d/len or dhcp)")
            }
            BuildError::ExtraTunnel { tunnel } => {
                write!(f, "wireguard[{tunnel}]: this build drives one WireGuard interface")
            }
            BuildError::PeerEndpoint { peer } => {
                write!(f, "peers[{peer}].endpoint: this box's WAN underlay is IPv4 only; give an IPv4 address or a DNS name")
            }
            BuildError::DatagramLan { port } => {
                write!(f, "ports[{port}].role: its NIC is a UDP socket, which only the WAN port can be")
            }
            BuildError::Reference { what, index } => write!(f, "{what}[{index}]: names something that does not exist"),
            BuildError::NoLocalPort { claim } => {
                write!(f, "claims[{claim}]: owned by this side, but no LAN port's subnet contains it")
            }
            BuildError::LocalVtep { segment } => {
                write!(f, "segments[{segment}].local_vtep: must be the WAN address or the tunnel address")
            }
            BuildError::DatagramVtep { segment } => write!(
                f,
                "segments[{segment}].local_vtep: this box's WAN is a UDP socket that carries WireGuard only; send VXLAN from the tunnel address"
            ),
            BuildError::Capacity { what } => write!(f, "{what}: more entries than this build holds"),
            BuildError::Dataplane(e) => write!(f, "the dataplane refused the configuration: {e:?}"),
        }
    }
}

fn port_index(cfg: &Config, name: &config_schema::Name) -> Option<usize> {
    cfg.ports.iter().position(|p| p.name == *name)
}

/// What a DHCP lease gives the WAN port (`address = "dhcp"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WanLease {
    pub address: config_schema::Ipv4Cidr,
    pub gateway: Option<core::net::Ipv4Addr>,
}

/// Builds the runtime for `cfg` on a box with `nics`. `cfg` should have
/// passed `config_schema::validate_for` for this platform: then only what
/// depends on the hardware (a NIC that is not there) is refused here.
pub fn build(cfg: &Config, nics: &[NicInfo]) -> Result<Runtime, BuildError> {
    build_with(cfg, nics, None, &|_| None)
}

/// [`build`] with what the box learned: the WAN's DHCP lease, if it has
/// one, and the addresses of peer endpoints given by name.
pub fn build_with(
    cfg: &Config,
    nics: &[NicInfo],
    lease: Option<WanLease>,
    resolved: &dyn Fn(&config_schema::DnsName) -> Option<core::net::Ipv4Addr>,
) -> Result<Runtime, BuildError> {
    // Ports → NICs.
    let mut nic_of_port: Vec<usize, MAX_NICS> = Vec::new();
    let mut ports: Vec<dp::PortConfig, { dp::config::MAX_PORTS }> = Vec::new();
    let mut wan_address = None;
    let mut wan_medium = Medium::Ethernet;
    for (i, p) in cfg.ports.iter().enumerate() {
        let nic = match p.mac {
            Some(mac) => nics.iter().position(|n| n.mac == mac.0),
            None => (0..nics.len()).find(|&n| {
                use core::fmt::Write;
                let mut name = heapless::String::<12>::new();
                write!(name, "{}", ContractName(n)).is_ok() && name.as_str() == p.name.as_str()
            }),
        }
        .ok_or_else(|| BuildError::NoNic {
            port: i,
            wanted: match p.mac {
                Some(mac) => NicWanted::Mac(mac.0),
                None => NicWanted::Name(p.name.clone()),
            },
            nics: nics.iter().take(MAX_NICS).map(|n| n.mac).collect(),
        })?;
        if nic_of_port.contains(&nic) {
            return Err(BuildError::NicTaken { port: i });
        }
        // A LAN port without an address is a bridge-only segment member;
        // the WAN needs its own address, or its lease for `dhcp` (none yet:
        // no address, and only the DHCP client speaks there).
        let (cidr, gateway, dhcp) = match (p.role, p.address) {
            (_, Some(PortAddress::Static(cidr))) => (Some(cidr), p.gateway, false),
            (PortRole::Lan, None) => (None, None, false),
            (PortRole::Wan, Some(PortAddress::Dhcp)) => match lease {
                Some(l) => (Some(l.address), l.gateway, true),
                None => (None, None, true),
            },
            _ => return Err(BuildError::PortAddress { port: i }),
        };
        let nic_medium = nics.get(nic).map(|n| n.medium).unwrap_or_default();
        let role = match p.role {
            PortRole::Lan if nic_medium == Medium::Datagram => return Err(BuildError::DatagramLan { port: i }),
            PortRole::Lan => dp::PortRole::Lan,
            PortRole::Wan => {
                wan_address = cidr.map(|c| c.addr());
                wan_medium = nic_medium;
                dp::PortRole::Wan
            }
        };
        let mac = nics.get(nic).map(|n| n.mac).unwrap_or_default();
        nic_of_port.push(nic).map_err(|_| BuildError::Capacity { what: "ports" })?;
        ports
            .push(dp::PortConfig {
                role,
                mac: dp::Mac(mac),
                address: cidr.map(|c| c.addr()),
                prefix_len: cidr.map_or(0, |c| c.prefix_len()),
                gateway,
                mtu: p.mtu,
                dhcp,
                medium: nic_medium,
            })
            .map_err(|_| BuildError::Capacity { what: "ports" })?;
    }

    // The WireGuard interface and its peers.
    if cfg.wireguard.len() > MAX_TUNNELS {
        return Err(BuildError::ExtraTunnel { tunnel: MAX_TUNNELS });
    }
    let wg = cfg.wireguard.first();
    // Config peer index → tunnel peer id.
    let mut peer_ids: Vec<Option<u16>, { config_schema::limits::MAX_PEERS }> = Vec::new();
    let mut plan_peers: Vec<PeerPlan, MAX_PEERS> = Vec::new();
    let mut named: Vec<NamedEndpoint, MAX_PEERS> = Vec::new();
    let mut dp_peers: Vec<dp::PeerConfig, { dp::config::MAX_PEERS }> = Vec::new();
    for (i, p) in cfg.peers.iter().enumerate() {
        let on_tunnel = wg.is_some_and(|t| t.name == p.tunnel);
        if !on_tunnel {
            let _ = peer_ids.push(None);
            continue;
        }
        let endpoint = match &p.endpoint {
            None => None,
            Some(e) => match &e.host {
                Host::V4(a) => Some(SocketAddr::V4(SocketAddrV4::new(*a, e.port))),
                // By name: the resolver's address, once it has one (until
                // then the peer can still dial in).
                Host::Dns(name) => {
                    let peer = plan_peers.len() as u16;
                    named
                        .push(NamedEndpoint { name: name.clone(), port: e.port, peer })
                        .map_err(|_| BuildError::Capacity { what: "peers" })?;
                    resolved(name).map(|a| SocketAddr::V4(SocketAddrV4::new(a, e.port)))
                }
                // Only a datagram WAN (the host's kernel) carries IPv6.
                Host::V6(a) if wan_medium == Medium::Datagram => Some(SocketAddr::new(core::net::IpAddr::V6(*a), e.port)),
                Host::V6(_) => return Err(BuildError::PeerEndpoint { peer: i }),
            },
        };
        let id = plan_peers.len() as u16;
        let mut allowed = Vec::new();
        for c in &p.allowed_ips {
            let prefix = dp::Prefix::new(c.network(), c.prefix_len()).ok_or(BuildError::Reference { what: "peers", index: i })?;
            allowed.push(prefix).map_err(|_| BuildError::Capacity { what: "peers[].allowed_ips" })?;
        }
        let preshared_key = p.preshared_key.as_ref().map(|KeyRef::Device(slot)| slot.clone());
        plan_peers
            .push(PeerPlan {
                public_key: p.public_key.0,
                endpoint,
                persistent_keepalive: p.persistent_keepalive,
                allowed: allowed.clone(),
                preshared_key,
            })
            .map_err(|_| BuildError::Capacity { what: "peers" })?;
        dp_peers.push(dp::PeerConfig { id: dp::PeerId(id), allowed }).map_err(|_| BuildError::Capacity { what: "peers" })?;
        let _ = peer_ids.push(Some(id));
    }
    let peer_id = |tunnel: &config_schema::Name, name: &config_schema::Name| {
        cfg.peers
            .iter()
            .enumerate()
            .find(|(_, p)| p.name == *name && p.tunnel == *tunnel)
            .and_then(|(i, _)| peer_ids.get(i).copied().flatten())
    };

    // Claims, seen from this box's side.
    let mut claims: Vec<dp::ClaimConfig, { dp::config::MAX_CLAIMS }> = Vec::new();
    for (i, c) in cfg.claims.iter().enumerate() {
        let side = match cfg.claim_action(c) {
            ClaimAction::Capture { method, port, tunnel, peer } => {
                let port = port_index(cfg, port).ok_or(BuildError::Reference { what: "claims", index: i })?;
                let peer = peer_id(tunnel, peer).ok_or(BuildError::Reference { what: "claims", index: i })?;
                let capture = match method {
                    CaptureMethod::ProxyArp => dp::Capture::ProxyArp,
                    CaptureMethod::ProviderSecondaryIp => dp::Capture::ProviderSecondaryIp,
                };
                dp::ClaimSide::Remote { capture, port: dp::PortId(port as u8), peer: dp::PeerId(peer) }
            }
            ClaimAction::DeliverLocally { port } => {
                let port = port.and_then(|n| port_index(cfg, n)).ok_or(BuildError::NoLocalPort { claim: i })?;
                dp::ClaimSide::Local { port: dp::PortId(port as u8) }
            }
        };
        let mss = match c.mss_clamp {
            MssClamp::Auto => None,
            MssClamp::Value(v) => Some(v),
        };
        let mut claim = dp::ClaimConfig::new(c.address.addr(), side);
        claim.mss = mss;
        claim.garp_count = if claim.is_proxy_arp() { c.gratuitous_arp_count() } else { 0 };
        claim.conflict_hold_ms = u64::from(c.conflict_hold_secs()) * 1000;
        claims.push(claim).map_err(|_| BuildError::Capacity { what: "claims" })?;
    }

    // VXLAN segments.
    let tunnel_address = wg.and_then(|t| t.address).map(|a| a.addr());
    let mut segments: Vec<dp::SegmentConfig, { dp::config::MAX_SEGMENTS }> = Vec::new();
    for (i, s) in cfg.segments.iter().enumerate() {
        if Some(s.local_vtep) != wan_address && Some(s.local_vtep) != tunnel_address {
            return Err(BuildError::LocalVtep { segment: i });
        }
        if wan_medium == Medium::Datagram && Some(s.local_vtep) != tunnel_address {
            return Err(BuildError::DatagramVtep { segment: i });
        }
        let port = port_index(cfg, &s.port).ok_or(BuildError::Reference { what: "segments", index: i })?;
        let mut vteps = Vec::new();
        for v in &s.remote_vteps {
            vteps.push(*v).map_err(|_| BuildError::Capacity { what: "segments[].remote_vteps" })?;
        }
        // `auto`: the dataplane derives the clamp from each VTEP's carrier
        // (carrier MTU − 50 − 40); a segment `mtu` below that budget lowers
        // it to mtu − 40 — the figure doctor's segment.mtu shows.
        let mss = match s.mss_clamp {
            MssClamp::Auto => {
                let b = config_schema::budget::segment_budget(cfg, s);
                (b.mtu < b.max_mtu).then_some(b.auto_mss)
            }
            MssClamp::Value(v) => Some(v),
        };
        segments
            .push(dp::SegmentConfig { vni: s.vni, port: dp::PortId(port as u8), vteps, udp_port: s.udp_port, mss })
            .map_err(|_| BuildError::Capacity { what: "segments" })?;
    }

    // SNAT exits and the firewall.
    let wan_port = ports.iter().position(|p| p.role == dp::PortRole::Wan);
    let mut nat: Vec<dp::NatRule, { dp::config::MAX_NAT_RULES }> = Vec::new();
    for (i, n) in cfg.nat.iter().enumerate() {
        let out = port_index(cfg, &n.out).ok_or(BuildError::Reference { what: "nat", index: i })?;
        let source = dp::Prefix::new(n.source.network(), n.source.prefix_len()).ok_or(BuildError::Reference { what: "nat", index: i })?;
        nat.push(dp::NatRule { source, out: dp::PortId(out as u8) }).map_err(|_| BuildError::Capacity { what: "nat" })?;
    }
    let firewall = match &cfg.firewall {
        None => None,
        Some(fw) => Some(firewall(cfg, fw, wg.map(|t| &t.name), wan_port)?),
    };

    let timing = dp::Timing::default();
    // Without a tunnel its MTU is unused, but the dataplane still checks it
    // against the WAN's: never above it.
    let wan_mtu = ports.iter().find(|p| p.role == dp::PortRole::Wan).map_or(dp::config::MAX_PORT_MTU, |p| p.mtu);
    let dataplane = dp::Config {
        ports,
        tunnel: dp::TunnelConfig {
            address: tunnel_address,
            mtu: wg.map(|t| t.mtu).unwrap_or(config_schema::config::DEFAULT_TUNNEL_MTU.min(wan_mtu)),
            listen_port: wg.map(|t| t.listen_port).unwrap_or(config_schema::config::DEFAULT_LISTEN_PORT),
            peers: dp_peers,
        },
        claims,
        segments,
        timing,
        nat,
        firewall,
    };
    dataplane.validate().map_err(BuildError::Dataplane)?;
    let tunnel = match wg {
        Some(t) => {
            let KeyRef::Device(slot) = &t.private_key;
            Some(TunnelPlan { key_slot: slot.clone(), mtu: t.mtu, listen_port: t.listen_port, peers: plan_peers })
        }
        None => None,
    };
    Ok(Runtime { dataplane, nic_of_port, tunnel, named })
}

/// `[firewall]` as the dataplane runs it: zones become ports (a segment is
/// its LAN port, `wan` the WAN port), the tunnel or the box.
fn firewall(
    cfg: &Config,
    fw: &config_schema::Firewall,
    tunnel: Option<&config_schema::Name>,
    wan: Option<usize>,
) -> Result<dp::Firewall, BuildError> {
    use config_schema::firewall::{Action, Protocol};
    use config_schema::Zone;
    let zone = |z: &Zone, what: &'static str, index: usize| -> Result<Option<dp::Zone>, BuildError> {
        let port = |i: Option<usize>| i.map(|i| Some(dp::Zone::Port(dp::PortId(i as u8)))).ok_or(BuildError::Reference { what, index });
        match z {
            Zone::Any => Ok(None),
            Zone::Box => Ok(Some(dp::Zone::Box)),
            Zone::Wan => port(wan),
            Zone::Port(n) => port(port_index(cfg, n)),
            Zone::Segment(n) => port(cfg.segments.iter().find(|s| s.name == *n).and_then(|s| port_index(cfg, &s.port))),
            Zone::Tunnel(n) if Some(n) == tunnel => Ok(Some(dp::Zone::Tunnel)),
            Zone::Tunnel(_) => Err(BuildError::Reference { what, index }),
        }
    };
    let action = |a: Action| match a {
        Action::Accept => dp::Action::Accept,
        Action::Drop => dp::Action::Drop,
    };
    let any = dp::Prefix::new(core::net::Ipv4Addr::UNSPECIFIED, 0).ok_or(BuildError::Capacity { what: "firewall" })?;
    let prefix = |c: Option<config_schema::Ipv4Cidr>| c.and_then(|c| dp::Prefix::new(c.network(), c.prefix_len())).unwrap_or(any);
    let mut out = dp::Firewall { rules: Vec::new(), policies: Vec::new(), default: action(fw.default) };
    for (i, r) in fw.rules.iter().enumerate() {
        let rule = dp::Rule {
            from: zone(&r.from, "firewall.rules", i)?,
            to: zone(&r.to, "firewall.rules", i)?,
            source: prefix(r.source),
            destination: prefix(r.destination),
            proto: match r.protocol {
                Protocol::Any => dp::ProtoMatch::Any,
                Protocol::Tcp => dp::ProtoMatch::Tcp,
                Protocol::Udp => dp::ProtoMatch::Udp,
                Protocol::Icmp => dp::ProtoMatch::Icmp,
            },
            ports: r.port.map(|p| (p.first, p.last)),
            action: action(r.action),
        };
        out.rules.push(rule).map_err(|_| BuildError::Capacity { what: "firewall.rules" })?;
    }
    for (i, p) in fw.policy.iter().enumerate() {
        let policy =
            dp::Policy { from: zone(&p.from, "firewall.policy", i)?, to: zone(&p.to, "firewall.policy", i)?, action: action(p.action) };
        out.policies.push(policy).map_err(|_| BuildError::Capacity { what: "firewall.policy" })?;
    }
    Ok(out)
}
