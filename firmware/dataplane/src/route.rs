//! Longest-prefix-match routing.
//!
//! Two tables, built once from the configuration:
//!
//! * the **claim index**: every claim's /32 sorted by address, searched by
//!   binary search. Claims win over every other route (they are /32 and, at
//!   equal length, are consulted first);
//! * the **route list**: connected subnets of the ports, each peer's allowed
//!   prefixes (→ that peer through the tunnel) and the WAN default route via
//!   the gateway, sorted longest prefix first; the first match wins.
//!   A linear scan: at most [`MAX_ROUTES`] entries, built at configuration
//!   time, so "full" cannot happen at run time (the capacity covers the
//!   configuration limits; see the compile-time assertion).
//!
//! And one table filled at run time:
//!
//! * **run-time routes** ([`RunRoute`]): what protocols learn — a DHCP
//!   lease's default route, BGP/EVPN prefixes — added and withdrawn by
//!   their [`RouteOrigin`] while the box runs, [`MAX_RUN_ROUTES`] at most
//!   (*full policy:* the new route is refused, the caller is told and the
//!   table is unchanged). They take part in the same longest-prefix match;
//!   at equal length the configuration's route wins. An apply carries them
//!   over (they are state, not configuration).

use core::net::Ipv4Addr;

use heapless::Vec;

use crate::config::{ClaimSide, Config, PeerId, PortId, Prefix, MAX_ALLOWED_PER_PEER, MAX_CLAIMS, MAX_PEERS, MAX_PORTS};

/// Capacity of the route list: connected subnets, allowed prefixes, default.
pub const MAX_ROUTES: usize = MAX_PORTS + MAX_PEERS * MAX_ALLOWED_PER_PEER + 1;
/// Capacity of the run-time route table.
pub const MAX_RUN_ROUTES: usize = 64;

/// Who put a run-time route there (and withdraws it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteOrigin {
    /// A DHCP lease (the default route via the lease's router).
    Dhcp,
    /// BGP (EVPN).
    Bgp,
    /// The control plane on the operator's behalf.
    Operator,
}

/// A route learned at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunRoute {
    /// Destination prefix.
    pub prefix: Prefix,
    /// Next hop.
    pub hop: NextHop,
    /// Who installed it.
    pub origin: RouteOrigin,
}

/// Why a run-time route was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    /// The table holds [`MAX_RUN_ROUTES`] routes already.
    Full,
    /// The next hop's port does not exist.
    UnknownPort,
    /// The next hop's peer does not exist.
    UnknownPeer,
    /// The gateway is not on the port's subnet (it could not be ARP-resolved).
    GatewayNotOnLink,
}

/// Where a packet goes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHop {
    /// Into the tunnel, to this peer.
    Tunnel(PeerId),
    /// Out of a port, to the destination itself (`gateway: None`) or a gateway.
    Port {
        /// Egress port.
        port: PortId,
        /// Next-hop router, if the destination is not on-link.
        gateway: Option<Ipv4Addr>,
    },
}

/// A route-list entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix.
    pub prefix: Prefix,
    /// Next hop.
    pub hop: NextHop,
}

/// Result of a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Next hop.
    pub hop: NextHop,
    /// The claim whose /32 matched, if any.
    pub claim: Option<usize>,
}

/// The routing tables.
#[derive(Debug, Default)]
pub struct RouteTable {
    claims: Vec<(u32, u8), MAX_CLAIMS>,
    routes: Vec<Route, MAX_ROUTES>,
    run: Vec<RunRoute, MAX_RUN_ROUTES>,
}

const _: () = assert!(MAX_CLAIMS <= u8::MAX as usize + 1);

impl RouteTable {
    /// Build from a validated configuration.
    pub fn build(cfg: &Config) -> RouteTable {
        let mut t = RouteTable::default();
        for (i, c) in cfg.claims.iter().enumerate() {
            // Capacity equals MAX_CLAIMS, the config's own limit.
            let _ = t.claims.push((c.address.to_bits(), i as u8));
        }
        t.claims.sort_unstable_by_key(|(a, _)| *a);
        for (i, p) in cfg.ports.iter().enumerate() {
            if let Some(subnet) = p.subnet() {
                let _ = t.routes.push(Route { prefix: subnet, hop: NextHop::Port { port: PortId(i as u8), gateway: None } });
            }
        }
        for peer in &cfg.tunnel.peers {
            for a in &peer.allowed {
                let _ = t.routes.push(Route { prefix: *a, hop: NextHop::Tunnel(peer.id) });
            }
        }
        if let Some(wan) = cfg.wan() {
            if let Some(gw) = cfg.ports.get(wan.index()).and_then(|p| p.gateway) {
                let _ = t.routes.push(Route {
                    prefix: Prefix::new(Ipv4Addr::UNSPECIFIED, 0).unwrap_or(Prefix::host(Ipv4Addr::UNSPECIFIED)),
                    hop: NextHop::Port { port: wan, gateway: Some(gw) },
                });
            }
        }
        // Insertion sort (core has no stable sort; runs once per config):
        // longest first, and at equal length connected subnets stay ahead of
        // peer prefixes, which stay ahead of the default route.
        for i in 1..t.routes.len() {
            let mut j = i;
            while j > 0 && t.routes[j - 1].prefix.prefix_len() < t.routes[j].prefix.prefix_len() {
                t.routes.swap(j - 1, j);
                j -= 1;
            }
        }
        t
    }

    /// The claim index for `addr`.
    pub fn claim(&self, addr: Ipv4Addr) -> Option<usize> {
        let key = addr.to_bits();
        self.claims.binary_search_by_key(&key, |(a, _)| *a).ok().and_then(|i| self.claims.get(i)).map(|(_, c)| usize::from(*c))
    }

    /// Longest-prefix match over the configuration's and the run-time
    /// routes (claims excluded); at equal length the configuration wins.
    pub fn lookup_routes(&self, dst: Ipv4Addr) -> Option<NextHop> {
        let fixed = self.routes.iter().find(|r| r.prefix.contains(dst));
        let learned = self
            .run
            .iter()
            .filter(|r| r.prefix.contains(dst))
            .max_by_key(|r| r.prefix.prefix_len())
            .filter(|r| fixed.is_none_or(|f| r.prefix.prefix_len() > f.prefix.prefix_len()));
        match learned {
            Some(r) => Some(r.hop),
            None => fixed.map(|r| r.hop),
        }
    }

    /// Add (or replace: same prefix and origin) a run-time route after
    /// checking its next hop against `cfg`.
    pub fn add_run_route(&mut self, cfg: &Config, route: RunRoute) -> Result<(), RouteError> {
        match route.hop {
            NextHop::Tunnel(peer) => {
                if cfg.peer(peer).is_none() {
                    return Err(RouteError::UnknownPeer);
                }
            }
            NextHop::Port { port, gateway } => {
                let pc = cfg.ports.get(port.index()).ok_or(RouteError::UnknownPort)?;
                if gateway.is_some_and(|g| !pc.on_link(g)) {
                    return Err(RouteError::GatewayNotOnLink);
                }
            }
        }
        if let Some(r) = self.run.iter_mut().find(|r| r.prefix == route.prefix && r.origin == route.origin) {
            *r = route;
            return Ok(());
        }
        self.run.push(route).map_err(|_| RouteError::Full)
    }

    /// Withdraw the route for `prefix` from `origin`; true if there was one.
    pub fn remove_run_route(&mut self, prefix: Prefix, origin: RouteOrigin) -> bool {
        let before = self.run.len();
        self.run.retain(|r| !(r.prefix == prefix && r.origin == origin));
        self.run.len() != before
    }

    /// Withdraw every route from `origin` (a lease ended, a BGP session
    /// went down); how many.
    pub fn clear_run_routes(&mut self, origin: RouteOrigin) -> usize {
        let before = self.run.len();
        self.run.retain(|r| r.origin != origin);
        before - self.run.len()
    }

    /// The run-time routes.
    pub fn run_routes(&self) -> &[RunRoute] {
        &self.run
    }

    /// Full lookup: an enabled claim first (`claim_enabled` tells), then
    /// the route list.
    pub fn lookup(&self, cfg: &Config, dst: Ipv4Addr, claim_enabled: impl Fn(usize) -> bool) -> Option<Decision> {
        if let Some(i) = self.claim(dst).filter(|i| claim_enabled(*i)) {
            if let Some(c) = cfg.claims.get(i) {
                let hop = match c.side {
                    ClaimSide::Remote { peer, .. } => NextHop::Tunnel(peer),
                    ClaimSide::Local { port } => NextHop::Port { port, gateway: None },
                };
                return Some(Decision { hop, claim: Some(i) });
            }
        }
        self.lookup_routes(dst).map(|hop| Decision { hop, claim: None })
    }

    /// The route list (status output).
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}
