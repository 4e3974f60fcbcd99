//! The wire form of a configuration: postcard, at most `CONFIG_WIRE_MAX`
//! bytes, identified by `SCHEMA_HASH`.
//!
//! The serial protocol's hello exchanges `SCHEMA_HASH`; a box and a
//! routerctl with different hashes must not exchange configurations, because
//! postcard carries no field names and would misread them. The hash is
//! computed at compile time from `SCHEMA_DESCRIPTION` (a hand-written summary
//! of the wire layout) and the capacity limits. A test pins the encoding of
//! fixed configurations to the hash: changing the layout without editing the
//! description (and so the hash) fails that test.
//!
//! `decode` treats its input as hostile: postcard checks lengths and enum
//! tags, every value type re-checks what the binary form can express but a
//! configuration must not (a /40 prefix, a bad name), and trailing bytes are
//! refused. It never panics.

use core::fmt;

use crate::limits::MAX_BGP_PEERS;
use crate::limits::{
    CONFIG_WIRE_MAX, MAX_ALLOWED_IPS, MAX_CLAIMS, MAX_DNS_SERVERS, MAX_FIREWALL_POLICIES, MAX_FIREWALL_RULES, MAX_HOST_LEN, MAX_NAME_LEN,
    MAX_NAT, MAX_PEERS, MAX_PORTS, MAX_SEGMENTS, MAX_TUNNELS, MAX_VTEPS,
};
use crate::Config;

/// Bumped by hand with every change of the wire layout (documents intent;
/// the hash is what is compared).
pub const SCHEMA_VERSION: u16 = 4;

/// The wire layout, field by field in declaration order. Edit it together
/// with any change to a serialized type (order, type, variant list).
pub const SCHEMA_DESCRIPTION: &str = "routerd-config;\
Config{device:Device,ports:Vec<Port>,wireguard:Vec<Tunnel>,peers:Vec<Peer>,claims:Vec<Claim>,segments:Vec<Segment>,dns:Dns,nat:Vec<Nat>,firewall:Option<Firewall>,bgp:Option<Bgp>};\
Device{name:Name,side:Name};\
Port{name:Name,role:PortRole,mac:Option<Mac>,address:Option<PortAddress>,gateway:Option<Ipv4>,mtu:u16};\
PortRole{Lan,Wan};\
PortAddress{Dhcp,Static(Cidr)};\
Tunnel{name:Name,listen_port:u16,mtu:u16,address:Option<Cidr>,private_key:KeyRef};\
Peer{name:Name,tunnel:Name,public_key:[u8;32],endpoint:Option<Endpoint>,allowed_ips:Vec<Cidr>,persistent_keepalive:Option<u16>,preshared_key:Option<KeyRef>};\
Endpoint{host:Host,port:u16};Host{Dns(str),V4([u8;4]),V6([u8;16])};\
KeyRef{Device(Name)};\
Claim{address:Cidr,owner:Name,gratuitous_arp:Option<u8>,conflict_hold:Option<u16>,local_port:Option<Name>,mss_clamp:MssClamp,capture:Capture,delivery:Delivery};\
Capture{method:CaptureMethod,port:Name,configure_os_address:bool};\
CaptureMethod{ProxyArp,ProviderSecondaryIp};\
Delivery{tunnel:Name,peer:Name};\
Segment{name:Name,vni:u32,port:Name,local_vtep:Ipv4,remote_vteps:Vec<Ipv4>,udp_port:u16,mtu:u16,mss_clamp:MssClamp,control:SegmentControl};SegmentControl{Static,Evpn};\
Bgp{asn:u32,router_id:Option<Ipv4>,peers:Vec<BgpPeer>,hold_time:u16};BgpPeer{address:Ipv4,name:Name};\
MssClamp{Auto,Value(u16)};\
Dns{servers:Vec<Ipv4>};\
Nat{source:Cidr,out:Name};\
Firewall{default:Action,policy:Vec<Policy>,rules:Vec<Rule>};Action{Accept,Drop};\
Policy{from:Zone,to:Zone,action:Action};\
Rule{name:Option<Name>,from:Zone,to:Zone,source:Option<Cidr>,destination:Option<Cidr>,protocol:Protocol,port:Option<PortRange>,action:Action};\
Zone{Any,Box,Wan,Port(Name),Tunnel(Name),Segment(Name)};Protocol{Any,Tcp,Udp,Icmp};PortRange(u16,u16);\
Cidr([u8;4],u8);Mac([u8;6]);Ipv4([u8;4]);Name(str)";

const fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

const fn fold(hash: u64, v: usize) -> u64 {
    fnv1a(hash, &(v as u64).to_le_bytes())
}

/// Identifies the wire layout and capacities; equal on both ends or no
/// configuration is exchanged.
pub const SCHEMA_HASH: u64 = {
    let mut h = fnv1a(0xcbf2_9ce4_8422_2325, SCHEMA_DESCRIPTION.as_bytes());
    h = fold(h, SCHEMA_VERSION as usize);
    let limits = [
        MAX_NAME_LEN,
        MAX_HOST_LEN,
        MAX_PORTS,
        MAX_TUNNELS,
        MAX_PEERS,
        MAX_ALLOWED_IPS,
        MAX_CLAIMS,
        MAX_SEGMENTS,
        MAX_VTEPS,
        MAX_DNS_SERVERS,
        MAX_NAT,
        MAX_FIREWALL_RULES,
        MAX_FIREWALL_POLICIES,
        MAX_BGP_PEERS,
        CONFIG_WIRE_MAX,
    ];
    let mut i = 0;
    while i < limits.len() {
        h = fold(h, limits[i]);
        i += 1;
    }
    h
};

/// Why a wire configuration could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The output buffer is smaller than the encoding (use `CONFIG_WIRE_MAX`).
    BufferTooSmall,
    /// The bytes are not a configuration of this schema.
    Malformed(postcard::Error),
    /// A configuration was followed by this many extra bytes.
    TrailingBytes(usize),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::BufferTooSmall => f.write_str("buffer too small for the encoded configuration"),
            WireError::Malformed(e) => write!(f, "malformed configuration: {e}"),
            WireError::TrailingBytes(n) => {
                write!(f, "{n} unexpected bytes after the configuration")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for WireError {}

/// Encodes `config` into `buf`; a buffer of `CONFIG_WIRE_MAX` bytes always suffices.
pub fn encode<'b>(config: &Config, buf: &'b mut [u8]) -> Result<&'b mut [u8], WireError> {
    postcard::to_slice(config, buf).map_err(|e| match e {
        postcard::Error::SerializeBufferFull => WireError::BufferTooSmall,
        other => WireError::Malformed(other),
    })
}

/// Decodes exactly one configuration from `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Config, WireError> {
    let (config, rest) = postcard::take_from_bytes::<Config>(bytes).map_err(WireError::Malformed)?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes(rest.len()));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::WireMax;
    use crate::testutil::*;
    use std::vec::Vec;

    fn encoded(c: &Config) -> Vec<u8> {
        let mut buf = std::vec![0xa5u8; CONFIG_WIRE_MAX + 16];
        let n = encode(c, &mut buf).unwrap().len();
        assert_eq!(buf[n], 0xa5, "encode wrote past its length");
        buf.truncate(n);
        buf
    }

    #[test]
    fn maximal_config_hits_the_computed_bound_exactly() {
        let max = maximal_config();
        let bytes = encoded(&max);
        assert_eq!(bytes.len(), Config::WIRE_MAX, "WireMax sums drifted from the real layout");
        std::println!("maximal config: {} bytes (limit {CONFIG_WIRE_MAX})", bytes.len());
        assert!(bytes.len() <= CONFIG_WIRE_MAX);
        assert_eq!(decode(&bytes).unwrap(), max);
    }

    #[test]
    fn examples_round_trip() {
        for (name, text) in EXAMPLES {
            let c = load(text);
            let bytes = encoded(&c);
            assert_eq!(decode(&bytes).unwrap(), c, "{name}");
        }
    }

    #[test]
    fn random_configs_round_trip_and_validate() {
        for seed in 0..300u64 {
            let c = random_config(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let bytes = encoded(&c);
            assert!(bytes.len() <= Config::WIRE_MAX, "seed {seed}");
            assert_eq!(decode(&bytes).unwrap(), c, "seed {seed}");
            // validate() must terminate without panicking on any shape.
            let r = crate::validate(&c);
            assert_eq!(r.errors + r.warnings, r.problems.len() + r.omitted);
            for p in crate::Platform::ALL {
                let r = crate::validate_for(&c, p);
                assert_eq!(r.errors + r.warnings, r.problems.len() + r.omitted);
            }
        }
    }

    #[test]
    fn small_buffer_is_an_error() {
        let c = load(HYBRID_ONPREM);
        let mut buf = [0u8; 16];
        assert_eq!(encode(&c, &mut buf).unwrap_err(), WireError::BufferTooSmall);
    }

    #[test]
    fn trailing_and_truncated_bytes_are_refused() {
        let c = load(HYBRID_ONPREM);
        let mut bytes = encoded(&c);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "prefix of {cut} bytes decoded");
        }
        bytes.push(0);
        assert_eq!(decode(&bytes).unwrap_err(), WireError::TrailingBytes(1));
    }

    #[test]
    fn hostile_bytes_never_panic() {
        // Every single-byte corruption of a real encoding, and simple noise:
        // decode may succeed or fail, but must return.
        let c = load(TWO_SITE_ROZ);
        let bytes = encoded(&c);
        for i in 0..bytes.len() {
            for v in [0x00, 0x7f, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] = v;
                let _ = decode(&b);
            }
        }
        let mut x: u32 = 0x1234_5678;
        for len in 0..512 {
            let noise: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = decode(&noise);
        }
    }

    #[test]
    fn invalid_values_on_the_wire_are_refused() {
        let mut c = load(HYBRID_ONPREM);
        c.device.name = crate::Name::new("ab").unwrap();
        let mut bytes = encoded(&c);
        // device.name is first: [len=2, 'a', 'b']; make it "a " (bad char).
        assert_eq!(&bytes[..3], &[2, b'a', b'b']);
        bytes[2] = b' ';
        assert!(matches!(decode(&bytes), Err(WireError::Malformed(_))));
    }

    /// Pins the wire layout to the schema hash. If this fails you changed
    /// the layout: update SCHEMA_DESCRIPTION (and SCHEMA_VERSION), which
    /// changes SCHEMA_HASH, then add the new pair here. Never edit a pair
    /// in place for an unchanged hash.
    #[test]
    fn wire_layout_is_pinned_to_schema_hash() {
        const PINNED: &[(u64, u64)] = &[
            (0xe3ca_834a_5093_5166, 0xcf79_dbbf_fadf_6eb8),
            (0x48e6_12b8_8fab_7719, 0x89b9_6d16_9cbf_5a56),
            (0xcfa2_a0ac_dfab_e8c6, 0x10fd_2f09_7f5d_deda),
            (0x248e_9393_1c7c_5ae1, 0x409c_c4f8_75f1_1a4c),
            (0x41f3_a1d1_7609_5abf, 0xd48b_d73f_6a72_5ea8),
        ];
        let h = fnv1a(0xcbf2_9ce4_8422_2325, &encoded(&maximal_config()));
        let h = fnv1a(h, &encoded(&sample_config()));
        match PINNED.iter().find(|(schema, _)| *schema == SCHEMA_HASH) {
            Some((_, layout)) => assert_eq!(*layout, h, "wire layout changed without a schema change: edit SCHEMA_DESCRIPTION"),
            None => panic!("SCHEMA_HASH {SCHEMA_HASH:#018x} is not pinned: add ({SCHEMA_HASH:#018x}, {h:#018x})"),
        }
    }

    #[test]
    fn schema_hash_covers_limits() {
        let base = fnv1a(0xcbf2_9ce4_8422_2325, SCHEMA_DESCRIPTION.as_bytes());
        assert_ne!(base, SCHEMA_HASH);
        assert_ne!(fold(base, 1), fold(base, 2));
    }
}
