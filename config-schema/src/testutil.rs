//! Shared test fixtures: the shipped examples and a maximal configuration.

use core::net::{Ipv4Addr, Ipv6Addr};

use crate::config::*;
use crate::firewall::*;
use crate::limits::*;
use crate::types::*;

pub const HYBRID_ONPREM: &str = include_str!("../examples/hybrid-onprem.toml");
pub const HYBRID_CLOUD: &str = include_str!("../examples/hybrid-cloud.toml");
pub const TWO_SITE_ROZ: &str = include_str!("../examples/two-site-roz.toml");
pub const TWO_SITE_WRO: &str = include_str!("../examples/two-site-wro.toml");

pub const TWO_SITE_ROZ_FIREWALL: &str = include_str!("../examples/two-site-roz-firewall.toml");

pub const EXAMPLES: [(&str, &str); 5] = [
    ("hybrid-onprem", HYBRID_ONPREM),
    ("hybrid-cloud", HYBRID_CLOUD),
    ("two-site-roz", TWO_SITE_ROZ),
    ("two-site-wro", TWO_SITE_WRO),
    ("two-site-roz-firewall", TWO_SITE_ROZ_FIREWALL),
];

/// Parses TOML straight through serde (works without the `toml` feature).
pub fn load(text: &str) -> Config {
    match toml::from_str(text) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

pub fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

pub fn cidr(s: &str) -> Ipv4Cidr {
    s.parse().unwrap()
}

fn long_name(tag: char, i: usize) -> Name {
    let mut s = std::string::String::new();
    s.push(tag);
    s.push_str(&std::format!("{i:03}"));
    while s.len() < MAX_NAME_LEN {
        s.push('x');
    }
    Name::new(&s).unwrap()
}

fn full<T: Clone, const N: usize>(f: impl Fn(usize) -> T) -> heapless::Vec<T, N> {
    (0..N).map(f).collect()
}

/// Every list full, every string at its capacity, every option `Some`, the
/// largest enum variant and the longest varint everywhere: its encoding is
/// the longest possible. Not a valid configuration, only a decodable one.
pub fn maximal_config() -> Config {
    let host = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(MAX_HOST_LEN - 3 * 64)].join(".");
    assert_eq!(host.len(), MAX_HOST_LEN);
    let u16max = u16::MAX;
    Config {
        device: Device { name: long_name('d', 0), side: long_name('s', 0) },
        ports: full(|i| Port {
            name: long_name('p', i),
            role: PortRole::Wan,
            mac: Some(Mac([0xff; 6])),
            address: Some(PortAddress::Static(cidr("255.255.255.255/32"))),
            gateway: Some(Ipv4Addr::BROADCAST),
            mtu: u16max,
        }),
        wireguard: full(|i| Tunnel {
            name: long_name('t', i),
            listen_port: u16max,
            mtu: u16max,
            address: Some(cidr("255.255.255.255/32")),
            private_key: KeyRef::Device(long_name('k', i)),
        }),
        peers: full(|i| Peer {
            name: long_name('n', i),
            tunnel: long_name('t', i),
            public_key: PublicKey([0xff; 32]),
            endpoint: Some(Endpoint { host: Host::Dns(DnsName::new(&host).unwrap()), port: u16max }),
            allowed_ips: full(|_| cidr("255.255.255.255/32")),
            persistent_keepalive: Some(u16max),
            preshared_key: Some(KeyRef::Device(long_name('q', i))),
        }),
        claims: full(|i| Claim {
            address: cidr("255.255.255.255/32"),
            owner: long_name('o', i),
            gratuitous_arp: Some(u8::MAX),
            conflict_hold: Some(u16::MAX),
            local_port: Some(long_name('l', i)),
            mss_clamp: MssClamp::Value(u16max),
            capture: Capture { method: CaptureMethod::ProviderSecondaryIp, port: long_name('c', i), configure_os_address: true },
            delivery: Delivery { tunnel: long_name('t', i), peer: long_name('n', i) },
        }),
        segments: full(|i| Segment {
            name: long_name('g', i),
            vni: u32::MAX,
            port: long_name('p', i),
            local_vtep: Ipv4Addr::BROADCAST,
            remote_vteps: full(|_| Ipv4Addr::BROADCAST),
            udp_port: u16max,
            mtu: u16max,
            mss_clamp: MssClamp::Value(u16max),
            control: SegmentControl::Evpn,
        }),
        dns: Dns { servers: full(|_| Ipv4Addr::BROADCAST) },
        nat: full(|i| Nat { source: cidr("255.255.255.255/32"), out: long_name('w', i) }),
        firewall: Some(Firewall {
            default: Action::Drop,
            policy: full(|i| Policy { from: Zone::Segment(long_name('f', i)), to: Zone::Segment(long_name('g', i)), action: Action::Drop }),
            rules: full(|i| Rule {
                name: Some(long_name('r', i)),
                from: Zone::Segment(long_name('f', i)),
                to: Zone::Segment(long_name('g', i)),
                source: Some(cidr("255.255.255.255/32")),
                destination: Some(cidr("255.255.255.255/32")),
                protocol: Protocol::Icmp,
                port: Some(PortRange { first: u16max, last: u16max }),
                action: Action::Drop,
            }),
        }),
        bgp: Some(Bgp {
            asn: u32::MAX,
            router_id: Some(Ipv4Addr::BROADCAST),
            peers: full(|i| BgpPeer { address: Ipv4Addr::BROADCAST, name: long_name('b', i) }),
            hold_time: u16max,
        }),
    }
}

/// A small configuration using the other enum variants (IPv6 and IPv4
/// endpoints, dhcp, auto clamp, `None` options, a `[dns]` server) for the
/// layout pin.
pub fn sample_config() -> Config {
    let mut c = load(TWO_SITE_WRO);
    let mut p = c.peers[0].clone();
    p.name = name("v6");
    p.public_key = PublicKey([1; 32]);
    p.endpoint = Some(Endpoint { host: Host::V6(Ipv6Addr::LOCALHOST), port: 1 });
    p.preshared_key = Some(KeyRef::Device(name("psk")));
    c.peers.push(p).unwrap();
    let mut p = c.peers[0].clone();
    p.name = name("v4");
    p.public_key = PublicKey([2; 32]);
    p.endpoint = Some(Endpoint { host: Host::V4(Ipv4Addr::new(203, 0, 113, 1)), port: 51820 });
    c.peers.push(p).unwrap();
    c.claims = load(HYBRID_ONPREM).claims;
    c.dns.servers.push(Ipv4Addr::new(9, 9, 9, 9)).unwrap();
    c.segments[0].control = SegmentControl::Evpn;
    let mut peers = heapless::Vec::new();
    peers.push(BgpPeer { address: Ipv4Addr::new(10, 0, 0, 2), name: name("pve1") }).unwrap();
    c.bgp = Some(Bgp { asn: 65000, router_id: None, peers, hold_time: 9 });
    c
}

/// A small deterministic generator (xorshift) for property-style tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self) -> bool {
        self.next() & 1 == 1
    }
    fn name(&mut self) -> Name {
        const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-_.";
        let len = 1 + self.below(MAX_NAME_LEN as u64) as usize;
        let mut s = std::string::String::new();
        s.push((b'a' + self.below(26) as u8) as char);
        for _ in 1..len {
            s.push(CHARS[self.below(CHARS.len() as u64) as usize] as char);
        }
        Name::new(&s).unwrap()
    }
    fn cidr(&mut self) -> Ipv4Cidr {
        Ipv4Cidr::new(Ipv4Addr::from_bits(self.next() as u32), self.below(33) as u8).unwrap()
    }
    fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> Option<T> {
        if self.chance() {
            Some(f(self))
        } else {
            None
        }
    }
    fn u16(&mut self) -> u16 {
        self.next() as u16
    }
    fn mss(&mut self) -> MssClamp {
        if self.chance() {
            MssClamp::Auto
        } else {
            MssClamp::Value(self.u16())
        }
    }
    fn zone(&mut self) -> Zone {
        match self.below(6) {
            0 => Zone::Any,
            1 => Zone::Box,
            2 => Zone::Wan,
            3 => Zone::Port(self.name()),
            4 => Zone::Tunnel(self.name()),
            _ => Zone::Segment(self.name()),
        }
    }
    fn list<T, const N: usize>(&mut self, mut f: impl FnMut(&mut Self) -> T) -> heapless::Vec<T, N> {
        let n = self.below(N as u64 + 1) as usize;
        (0..n).map(|_| f(self)).collect()
    }
}

/// A random configuration: any shape the types allow, valid or not.
pub fn random_config(seed: u64) -> Config {
    let mut r = Rng(seed | 1);
    let r = &mut r;
    Config {
        device: Device { name: r.name(), side: r.name() },
        ports: r.list(|r| Port {
            name: r.name(),
            role: if r.chance() { PortRole::Lan } else { PortRole::Wan },
            mac: r.opt(|r| Mac(r.next().to_le_bytes()[..6].try_into().unwrap())),
            address: r.opt(|r| if r.chance() { PortAddress::Dhcp } else { PortAddress::Static(r.cidr()) }),
            gateway: r.opt(|r| Ipv4Addr::from_bits(r.next() as u32)),
            mtu: r.u16(),
        }),
        wireguard: r.list(|r| Tunnel {
            name: r.name(),
            listen_port: r.u16(),
            mtu: r.u16(),
            address: r.opt(|r| r.cidr()),
            private_key: KeyRef::Device(r.name()),
        }),
        peers: r.list(|r| Peer {
            name: r.name(),
            tunnel: r.name(),
            public_key: PublicKey([r.next() as u8; 32]),
            endpoint: r.opt(|r| Endpoint {
                host: match r.below(3) {
                    0 => Host::V4(Ipv4Addr::from_bits(r.next() as u32)),
                    1 => Host::V6(Ipv6Addr::from_bits(((r.next() as u128) << 64) | r.next() as u128)),
                    _ => Host::Dns(DnsName::new(&std::format!("{}.example.net", r.name().as_str().replace(['_', '.', '-'], "x"))).unwrap()),
                },
                port: r.u16().max(1),
            }),
            allowed_ips: r.list(|r| r.cidr()),
            persistent_keepalive: r.opt(|r| r.u16()),
            preshared_key: r.opt(|r| KeyRef::Device(r.name())),
        }),
        claims: r.list(|r| Claim {
            address: r.cidr(),
            owner: r.name(),
            gratuitous_arp: r.opt(|r| r.next() as u8),
            conflict_hold: r.opt(|r| r.next() as u16),
            local_port: r.opt(|r| r.name()),
            mss_clamp: r.mss(),
            capture: Capture {
                method: if r.chance() { CaptureMethod::ProxyArp } else { CaptureMethod::ProviderSecondaryIp },
                port: r.name(),
                configure_os_address: r.chance(),
            },
            delivery: Delivery { tunnel: r.name(), peer: r.name() },
        }),
        segments: r.list(|r| Segment {
            name: r.name(),
            vni: r.next() as u32,
            port: r.name(),
            local_vtep: Ipv4Addr::from_bits(r.next() as u32),
            remote_vteps: r.list(|r| Ipv4Addr::from_bits(r.next() as u32)),
            udp_port: r.u16(),
            mtu: r.u16(),
            mss_clamp: r.mss(),
            control: if r.chance() { SegmentControl::Static } else { SegmentControl::Evpn },
        }),
        dns: Dns { servers: r.list(|r| Ipv4Addr::from_bits(r.next() as u32)) },
        nat: r.list(|r| Nat { source: r.cidr(), out: r.name() }),
        firewall: r.opt(|r| Firewall {
            default: if r.chance() { Action::Accept } else { Action::Drop },
            policy: r.list(|r| Policy { from: r.zone(), to: r.zone(), action: Action::Accept }),
            rules: r.list(|r| Rule {
                name: r.opt(|r| r.name()),
                from: r.zone(),
                to: r.zone(),
                source: r.opt(|r| r.cidr()),
                destination: r.opt(|r| r.cidr()),
                protocol: [Protocol::Any, Protocol::Tcp, Protocol::Udp, Protocol::Icmp][r.below(4) as usize],
                port: r.opt(|r| PortRange { first: r.u16(), last: r.u16() }),
                action: if r.chance() { Action::Accept } else { Action::Drop },
            }),
        }),
        bgp: r.opt(|r| Bgp {
            asn: r.next() as u32,
            router_id: r.opt(|r| Ipv4Addr::from_bits(r.next() as u32)),
            peers: r.list(|r| BgpPeer { address: Ipv4Addr::from_bits(r.next() as u32), name: r.name() }),
            hold_time: r.u16(),
        }),
    }
}
