//! What each platform runs: the image (bare metal) and routerd-host (Linux).
//!
//! `limits` fixes how long each list of a `Config` can be: the capacity of
//! the wire format and of the TOML reader. This module says how much of that
//! the boxes *run* today, and which features each platform cannot run yet.
//! `validate_for(&config, platform)` refuses what `platform` would refuse,
//! naming the field, so that what the docs and `routerctl config validate`
//! accept is what the box applies.
//!
//! The numbers live here once. `routerd-control` (which sees both this crate
//! and the dataplane) asserts at compile time that the dataplane's tables,
//! the control plane's and the WireGuard device's hold at least [`RUNS`], so
//! a smaller table anywhere fails the build instead of refusing at apply
//! time.

use core::fmt;
use core::str::FromStr;

use crate::limits::{
    MAX_ALLOWED_IPS, MAX_CLAIMS, MAX_FIREWALL_POLICIES, MAX_FIREWALL_RULES, MAX_NAT, MAX_PEERS, MAX_PORTS, MAX_SEGMENTS, MAX_TUNNELS,
    MAX_VTEPS,
};

/// Where a configuration runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Platform {
    /// The bare-metal image (`routerd`): binds ports to the NICs it finds,
    /// runs its own DHCP client and resolver, and an IPv4 underlay only.
    #[default]
    Image,
    /// The Linux host build (`routerd-host`): LAN ports are TAP devices, the
    /// WAN port a UDP socket (the kernel owns its address, so `dhcp` and no
    /// address both work), DNS names are resolved and IPv6 endpoints mapped.
    Host,
}

impl Platform {
    pub const ALL: [Platform; 2] = [Platform::Image, Platform::Host];

    /// `image` or `host` (what `routerctl config validate --for` takes).
    pub const fn as_str(self) -> &'static str {
        match self {
            Platform::Image => "image",
            Platform::Host => "host",
        }
    }

    /// How messages name it: "the image", "routerd-host".
    pub const fn subject(self) -> &'static str {
        match self {
            Platform::Image => "the image",
            Platform::Host => "routerd-host",
        }
    }

    /// Whether it runs `[bgp]` and segments with `control = "evpn"`: both
    /// do, on the same node, services and dataplane
    /// (firmware/control/tests/evpn_node.rs), each proved against FRR as
    /// Proxmox configures it, over WireGuard: routerd-host by
    /// host/tests/evpn_frr.rs, the image in QEMU by host/tests/image_evpn.rs.
    /// The answer stays per platform so a new one starts without BGP until
    /// a test like those proves it.
    pub const fn runs_bgp(self) -> bool {
        match self {
            Platform::Image | Platform::Host => true,
        }
    }

    /// The capacities this platform runs.
    pub const fn runs(self) -> &'static Runs {
        // One dataplane, one control plane, one WireGuard device: both
        // platforms run the same tables today.
        &RUNS
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a platform name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlatformError;

impl fmt::Display for PlatformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected a platform: image or host")
    }
}

impl FromStr for Platform {
    type Err = PlatformError;
    fn from_str(s: &str) -> Result<Platform, PlatformError> {
        match s {
            "image" => Ok(Platform::Image),
            "host" | "routerd-host" => Ok(Platform::Host),
            _ => Err(PlatformError),
        }
    }
}

/// The capacities a box runs. Each is at most the matching list capacity
/// of the schema (asserted below); where it is smaller, validation refuses
/// the entries beyond it (`platform-capacity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Runs {
    /// Ports (NICs on the image; TAP devices and the WAN socket on the host).
    pub ports: usize,
    /// WireGuard interfaces.
    pub tunnels: usize,
    /// WireGuard peers.
    pub peers: usize,
    /// Allowed-IP prefixes of one peer.
    pub allowed_ips_per_peer: usize,
    /// Allowed-IP prefixes over all peers: the WireGuard device's
    /// cryptokey-routing table (`tunnel-routes`).
    pub tunnel_routes: usize,
    /// Claims.
    pub claims: usize,
    /// VXLAN segments.
    pub segments: usize,
    /// Remote VTEPs of one segment.
    pub vteps_per_segment: usize,
    /// Largest port MTU: the dataplane's frame buffers hold 1500-byte
    /// packets (`mtu-above-platform`).
    pub port_mtu_max: u16,
    /// SNAT rules.
    pub nat: usize,
    /// Firewall rules.
    pub firewall_rules: usize,
    /// Firewall zone-pair policies.
    pub firewall_policies: usize,
    /// Flows the connection-tracking table holds (not a configuration
    /// list: the capacity `status` and doctor report against).
    pub conntrack: usize,
}

/// What routerd runs today, on both platforms (routerd-host runs no
/// `[[nat]]`: its WAN is a UDP socket, not an Ethernet port the dataplane
/// translates on — `validate_for` refuses it there, `nat-unsupported`).
pub const RUNS: Runs = Runs {
    ports: MAX_PORTS,
    // `routerd-control` drives the first [[wireguard]] only.
    tunnels: 1,
    peers: MAX_PEERS,
    allowed_ips_per_peer: MAX_ALLOWED_IPS,
    // The node's WireGuard device is `Device<MAX_PEERS, 64>`.
    tunnel_routes: 64,
    claims: MAX_CLAIMS,
    segments: MAX_SEGMENTS,
    vteps_per_segment: MAX_VTEPS,
    port_mtu_max: 1500,
    nat: MAX_NAT,
    firewall_rules: MAX_FIREWALL_RULES,
    firewall_policies: MAX_FIREWALL_POLICIES,
    conntrack: 2048,
};

const _: () = {
    let r = &RUNS;
    assert!(r.ports <= MAX_PORTS && r.ports > 0);
    assert!(r.tunnels <= MAX_TUNNELS && r.tunnels > 0);
    assert!(r.peers <= MAX_PEERS);
    assert!(r.allowed_ips_per_peer <= MAX_ALLOWED_IPS);
    assert!(r.tunnel_routes <= r.peers * r.allowed_ips_per_peer);
    assert!(r.tunnel_routes >= r.allowed_ips_per_peer, "one peer's full list must fit");
    assert!(r.claims <= MAX_CLAIMS);
    assert!(r.segments <= MAX_SEGMENTS);
    assert!(r.vteps_per_segment <= MAX_VTEPS);
    assert!(r.port_mtu_max >= crate::validate::MTU_MIN && r.port_mtu_max <= crate::validate::MTU_MAX);
    assert!(r.nat <= MAX_NAT && r.firewall_rules <= MAX_FIREWALL_RULES && r.firewall_policies <= MAX_FIREWALL_POLICIES);
};

/// The image's contract name of its `n`-th NIC: `lan0`, `wan0`, then
/// `lan1`, `lan2`, … A port without `mac` binds to the NIC of its name.
pub fn contract_name(n: usize) -> heapless::String<12> {
    use core::fmt::Write;
    let mut s = heapless::String::new();
    let _ = match n {
        0 => s.write_str("lan0"),
        1 => s.write_str("wan0"),
        n => write!(s, "lan{}", n - 1),
    };
    s
}

/// The NIC index whose contract name is `name`, among the first `nics`.
pub fn contract_index(name: &str, nics: usize) -> Option<usize> {
    (0..nics).find(|&n| contract_name(n).as_str() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_contract_names_round_trip() {
        for p in Platform::ALL {
            assert_eq!(p.as_str().parse::<Platform>(), Ok(p));
        }
        assert_eq!("routerd-host".parse::<Platform>(), Ok(Platform::Host));
        assert!("mars".parse::<Platform>().is_err());
        assert_eq!(Platform::default(), Platform::Image);
        assert_eq!(contract_name(0).as_str(), "lan0");
        assert_eq!(contract_name(1).as_str(), "wan0");
        assert_eq!(contract_name(7).as_str(), "lan6");
        assert_eq!(contract_index("lan6", RUNS.ports), Some(7));
        assert_eq!(contract_index("lan7", RUNS.ports), None);
        assert_eq!(contract_index("lan00", RUNS.ports), None);
        assert_eq!(contract_index("eth0", RUNS.ports), None);
    }
}
