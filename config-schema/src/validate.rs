//! `validate_for()`: every problem of a configuration, as this box sees it
//! and for the platform that runs it.
//!
//! routerctl runs it before sending a configuration (`config validate --for`)
//! and the box runs it again, for its own platform, before applying one; an
//! error on either side means nothing changes. Besides the configuration's
//! own consistency it refuses what the box cannot run (`runs()`: capacities
//! and features of `crate::platform`), so what it accepts, the box applies.
//! `validate()` is the part every platform shares: what it refuses, no box
//! runs. It never stops at the first problem: each finding is a `Problem` with a
//! severity, a stable code, the path of the field (`claims[2].address`), the
//! value, a sentence saying what is wrong and a hint saying what to do.
//!
//! Validation is relative to the box's own `device.side`: a claim is checked
//! as a capture on one box and as a local delivery on the other, so each box
//! of a pair validates its own half of the shared claim list.
//!
//! No allocation: problems are built in fixed buffers (long text is cut, never
//! an error) and handed to a sink; `Report` keeps the first `MAX_REPORTED`.

use core::fmt::{self, Write};
use core::net::Ipv4Addr;

use crate::budget::{self, Carrier};
use crate::config::{CaptureMethod, ClaimAction, Config, PortRole, SegmentControl};
use crate::platform::{self, Platform, RUNS};
use crate::types::{Host, MssClamp, Name, PortAddress};

/// Ports, tunnels and segments accept MTUs in this range (IPv4 minimum to jumbo).
pub const MTU_MIN: u16 = 576;
pub const MTU_MAX: u16 = 9216;
/// A fixed MSS clamp must be in this range (RFC 879 default minimum to jumbo − 40).
pub const MSS_MIN: u16 = 536;
pub const MSS_MAX: u16 = MTU_MAX - 40;
/// Largest gratuitous ARP burst per claim.
pub const GRATUITOUS_ARP_MAX: u8 = 16;
/// Shortest conflict hold (seconds): below it a box would probe a live
/// host's address almost continuously.
pub const CONFLICT_HOLD_MIN: u16 = 2;
/// Largest VXLAN network identifier (24 bits).
pub const VNI_MAX: u32 = (1 << 24) - 1;
/// Problems a `Report` keeps; further ones are only counted.
pub const MAX_REPORTED: usize = 48;

/// Whether a problem stops the configuration from being applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Applied anyway, but probably not what was meant.
    Warning,
    /// Refused: the box would misbehave.
    Error,
}

impl Severity {
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

macro_rules! codes {
    ($($variant:ident => $text:literal, $sev:ident;)*) => {
        /// What kind of problem; `as_str()` is a stable identifier for scripts.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code { $($variant,)* }
        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];
            pub const fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $text,)* }
            }
            pub const fn severity(self) -> Severity {
                match self { $(Code::$variant => Severity::$sev,)* }
            }
        }
    };
}

codes! {
    DuplicateName => "duplicate-name", Error;
    NoPorts => "no-ports", Error;
    NoWanPort => "no-wan-port", Warning;
    MtuRange => "mtu-range", Error;
    DhcpOnLan => "dhcp-on-lan", Error;
    AddressNotHost => "address-not-host", Error;
    GatewayOutsideSubnet => "gateway-outside-subnet", Error;
    GatewayWithoutStatic => "gateway-without-static", Warning;
    GatewayMultiple => "gateway-multiple", Error;
    DuplicateMac => "duplicate-mac", Error;
    SubnetOverlap => "subnet-overlap", Warning;
    ListenPortZero => "listen-port-zero", Error;
    ListenPortDuplicate => "listen-port-duplicate", Error;
    TunnelMtuBudget => "tunnel-mtu-budget", Warning;
    KeyShared => "key-shared", Warning;
    KeySlotKind => "key-slot-kind", Error;
    UnknownTunnel => "unknown-tunnel", Error;
    DuplicatePublicKey => "duplicate-public-key", Error;
    PeerNoAllowedIps => "peer-no-allowed-ips", Warning;
    AllowedIpHostBits => "allowed-ip-host-bits", Warning;
    AllowedIpDuplicate => "allowed-ip-duplicate", Error;
    AllowedIpOverlap => "allowed-ip-overlap", Warning;
    AllowedIpDefaultRoute => "allowed-ip-default-route", Warning;
    KeepaliveZero => "keepalive-zero", Error;
    KeepaliveMissing => "keepalive-missing", Warning;
    ClaimNotHost => "claim-not-host", Error;
    ClaimDuplicate => "claim-duplicate", Error;
    ClaimIsOwnAddress => "claim-is-own-address", Error;
    OsAddressConfigured => "os-address-configured", Error;
    GratuitousArpRange => "gratuitous-arp-range", Error;
    GratuitousArpProvider => "gratuitous-arp-provider", Error;
    ConflictHoldRange => "conflict-hold-range", Error;
    ConflictHoldProvider => "conflict-hold-provider", Error;
    UnknownPort => "unknown-port", Error;
    ProxyArpOnWan => "proxy-arp-on-wan", Error;
    ClaimOutsideSubnet => "claim-outside-subnet", Warning;
    UnknownPeer => "unknown-peer", Error;
    PeerNotOnTunnel => "peer-not-on-tunnel", Error;
    ClaimNotRouted => "claim-not-routed", Error;
    ClaimLoop => "claim-loop", Error;
    NoLocalPort => "no-local-port", Error;
    MssRange => "mss-range", Error;
    MssAbovePath => "mss-above-path", Warning;
    VniRange => "vni-range", Error;
    VniDuplicate => "vni-duplicate", Error;
    SegmentOnWan => "segment-on-wan", Error;
    PortBridgedTwice => "port-bridged-twice", Error;
    UdpPortZero => "udp-port-zero", Error;
    UdpPortConflict => "udp-port-conflict", Error;
    VtepNotLocal => "vtep-not-local", Error;
    VtepIsLocal => "vtep-is-local", Error;
    VtepDuplicate => "vtep-duplicate", Error;
    VtepNone => "vtep-none", Warning;
    VtepUnencrypted => "vtep-unencrypted", Warning;
    SegmentMtuBudget => "segment-mtu-budget", Warning;
    DnsServerInvalid => "dns-server-invalid", Error;
    DnsServerDuplicate => "dns-server-duplicate", Error;
    // [bgp] and segments' control = "evpn" (validate/bgp.rs).
    BgpAsnRange => "bgp-asn-range", Error;
    BgpHoldTime => "bgp-hold-time", Error;
    BgpRouterId => "bgp-router-id", Error;
    BgpPeerInvalid => "bgp-peer-invalid", Error;
    BgpPeerDuplicate => "bgp-peer-duplicate", Error;
    BgpPeerUnreachable => "bgp-peer-unreachable", Error;
    BgpNoPeers => "bgp-no-peers", Warning;
    BgpUnused => "bgp-unused", Warning;
    EvpnWithoutBgp => "evpn-without-bgp", Error;
    EvpnVtepMixed => "evpn-vtep-mixed", Error;
    // What a platform runs (`validate_for`); see `platform`.
    PlatformCapacity => "platform-capacity", Error;
    TunnelRoutes => "tunnel-routes", Error;
    MtuAbovePlatform => "mtu-above-platform", Error;
    TunnelMtuAboveWan => "tunnel-mtu-above-wan", Error;
    WanPortCount => "wan-port-count", Error;
    MacNotUnicast => "mac-not-unicast", Error;
    PortAddressMissing => "port-address-missing", Error;
    ClaimPortBridgeOnly => "claim-port-bridge-only", Error;
    PortNameUnbound => "port-name-unbound", Error;
    EndpointUnsupported => "endpoint-unsupported", Error;
    VtepNotWanOrTunnel => "vtep-not-wan-or-tunnel", Error;
    VtepNeedsTunnelAddress => "vtep-needs-tunnel-address", Error;
    VtepWanUnsupported => "vtep-wan-unsupported", Error;
    DnsServersMissing => "dns-servers-missing", Error;
    DnsServersHost => "dns-servers-host", Warning;
    // [[nat]] and [firewall] (validate/nat_firewall.rs).
    NatOutNotWan => "nat-out-not-wan", Error;
    NatUnsupported => "nat-unsupported", Error;
    NatSourceOverlap => "nat-source-overlap", Warning;
    UnknownZone => "unknown-zone", Error;
    PortWithoutProtocol => "port-without-protocol", Error;
    PortRangeOrder => "port-range", Error;
    FirewallShadowed => "firewall-rule-shadowed", Warning;
    // What a platform runs of [bgp] (validate/bgp.rs).
    BgpUnsupported => "bgp-unsupported", Error;
}

pub type PathText = heapless::String<48>;
pub type ValueText = heapless::String<64>;
pub type MessageText = heapless::String<200>;
pub type HintText = heapless::String<200>;

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub code: Code,
    pub severity: Severity,
    /// Where: `claims[2].address`.
    pub path: PathText,
    /// The offending value as the file writes it (may be empty).
    pub value: ValueText,
    /// What is wrong, naming the value: `10.0.0.9/24 is not a /32`.
    pub message: MessageText,
    /// What to do about it.
    pub hint: HintText,
}

impl fmt::Display for Problem {
    /// `claims[2].address: 10.0.0.9/24 is not a /32`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A `fmt::Write` into a fixed string that keeps what fits and drops the
/// rest, ending with `…` when it had to cut.
pub(crate) struct Truncating<'a, const N: usize>(pub &'a mut heapless::String<N>);

impl<const N: usize> Write for Truncating<'_, N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for ch in s.chars() {
            if self.0.push(ch).is_err() {
                // Make room for the ellipsis so a cut is visible.
                while self.0.len().saturating_add('…'.len_utf8()) > N {
                    if self.0.pop().is_none() {
                        break;
                    }
                }
                let _ = self.0.push('…');
                return Ok(());
            }
        }
        Ok(())
    }
}

fn text<const N: usize>(args: fmt::Arguments<'_>) -> heapless::String<N> {
    let mut s = heapless::String::new();
    let _ = Truncating(&mut s).write_fmt(args);
    s
}

/// The first `MAX_REPORTED` problems, and counts of all of them.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub problems: heapless::Vec<Problem, MAX_REPORTED>,
    pub errors: usize,
    pub warnings: usize,
    /// Problems found but not kept (beyond `MAX_REPORTED`).
    pub omitted: usize,
}

impl Report {
    /// True when nothing stops the configuration from being applied.
    pub fn is_valid(&self) -> bool {
        self.errors == 0
    }

    pub fn has(&self, code: Code) -> bool {
        self.problems.iter().any(|p| p.code == code)
    }
}

/// Validates `config` and collects the problems (errors and warnings): the
/// checks every platform makes, including what *no* platform runs yet (a
/// second WireGuard interface, …). Features only one platform lacks (`dhcp`, DNS-name endpoints
/// on the image) are not refused here: use [`validate_for`] to check a
/// configuration for the box that will run it. A configuration refused by
/// `validate` is refused by every box.
pub fn validate(config: &Config) -> Report {
    collect(config, None)
}

/// Validates `config` for `platform`: everything [`validate`] checks plus
/// what that platform cannot run yet, each refusal naming the field and the
/// platform. The box runs this for itself before applying anything, and
/// `routerctl config validate --for image|host` runs it on files.
pub fn validate_for(config: &Config, platform: Platform) -> Report {
    collect(config, Some(platform))
}

fn collect(config: &Config, platform: Option<Platform>) -> Report {
    let mut report = Report::default();
    check(config, platform, &mut |p: Problem| {
        match p.severity {
            Severity::Error => report.errors = report.errors.saturating_add(1),
            Severity::Warning => report.warnings = report.warnings.saturating_add(1),
        }
        if let Err(_p) = report.problems.push(p) {
            report.omitted = report.omitted.saturating_add(1);
        }
    });
    report
}

/// [`validate`], handing every problem to `sink` as it is found (for
/// callers that stream problems instead of keeping a `Report`).
pub fn validate_each(config: &Config, sink: &mut dyn FnMut(Problem)) {
    check(config, None, sink)
}

/// [`validate_for`], streaming.
pub fn validate_each_for(config: &Config, platform: Platform, sink: &mut dyn FnMut(Problem)) {
    check(config, Some(platform), sink)
}

fn check(config: &Config, platform: Option<Platform>, sink: &mut dyn FnMut(Problem)) {
    let mut ck = Checker { config, platform, sink };
    ck.ports();
    ck.tunnels();
    ck.peers();
    ck.claims();
    ck.segments();
    ck.dns();
    ck.nat_firewall();
    ck.bgp();
    ck.runs();
}

struct Checker<'a, 's> {
    config: &'a Config,
    /// `None`: only what every platform refuses.
    platform: Option<Platform>,
    sink: &'s mut dyn FnMut(Problem),
}

/// `ck.report(Code::X, path_fmt..., value = (...), msg = (...), hint = (...))`
macro_rules! report {
    ($ck:expr, $code:expr, path = ($($p:tt)*), value = ($($v:tt)*), msg = ($($m:tt)*), hint = ($($h:tt)*)) => {
        $ck.report($code, format_args!($($p)*), format_args!($($v)*), format_args!($($m)*), format_args!($($h)*))
    };
}

impl Checker<'_, '_> {
    fn report(
        &mut self,
        code: Code,
        path: fmt::Arguments<'_>,
        value: fmt::Arguments<'_>,
        message: fmt::Arguments<'_>,
        hint: fmt::Arguments<'_>,
    ) {
        (self.sink)(Problem {
            code,
            severity: code.severity(),
            path: text(path),
            value: text(value),
            message: text(message),
            hint: text(hint),
        });
    }

    fn unique_names<'n>(&mut self, section: &str, names: impl Iterator<Item = &'n Name> + Clone) {
        for (i, n) in names.clone().enumerate() {
            if let Some(first) = names.clone().take(i).position(|m| m == n) {
                report!(
                    self,
                    Code::DuplicateName,
                    path = ("{section}[{i}].name"),
                    value = ("{n}"),
                    msg = ("\"{n}\" is already the name of {section}[{first}]"),
                    hint = ("give every entry of {section} its own name")
                );
            }
        }
    }

    fn mtu(&mut self, path: fmt::Arguments<'_>, mtu: u16) {
        if !(MTU_MIN..=MTU_MAX).contains(&mtu) {
            report!(
                self,
                Code::MtuRange,
                path = ("{path}"),
                value = ("{mtu}"),
                msg = ("MTU {mtu} is outside {MTU_MIN}..={MTU_MAX}"),
                hint = ("use the link's real MTU; 1500 for Ethernet")
            );
        }
    }

    fn mss(&mut self, path: fmt::Arguments<'_>, clamp: MssClamp, auto_mss: Option<u16>, what: &str) {
        let MssClamp::Value(v) = clamp else { return };
        if !(MSS_MIN..=MSS_MAX).contains(&v) {
            report!(
                self,
                Code::MssRange,
                path = ("{path}"),
                value = ("{v}"),
                msg = ("MSS clamp {v} is outside {MSS_MIN}..={MSS_MAX}"),
                hint = ("use \"auto\" to derive it from the MTU")
            );
        } else if let Some(auto) = auto_mss {
            if v > auto {
                report!(
                    self,
                    Code::MssAbovePath,
                    path = ("{path}"),
                    value = ("{v}"),
                    msg = ("MSS clamp {v} is above what {what} allows ({auto}); full-size \
                            segments would not fit"),
                    hint = ("use \"auto\" or at most {auto}")
                );
            }
        }
    }

    fn ports(&mut self) {
        let c = self.config;
        if c.ports.is_empty() {
            report!(
                self,
                Code::NoPorts,
                path = ("ports"),
                value = (""),
                msg = ("the box has no ports"),
                hint = ("add [[ports]] entries: lan0 and wan0 at least")
            );
        }
        self.unique_names("ports", c.ports.iter().map(|p| &p.name));
        let mut gateway_at: Option<usize> = None;
        for (i, p) in c.ports.iter().enumerate() {
            self.mtu(format_args!("ports[{i}].mtu"), p.mtu);
            match p.address {
                Some(PortAddress::Dhcp) if p.role == PortRole::Lan => {
                    report!(
                        self,
                        Code::DhcpOnLan,
                        path = ("ports[{i}].address"),
                        value = ("dhcp"),
                        msg = ("port {} is a LAN port; only WAN ports take their address from DHCP", p.name),
                        hint = ("give the LAN port a static address like 192.168.1.2/24")
                    );
                }
                Some(PortAddress::Static(a)) if a.prefix_len() < 31 && (a.addr() == a.network() || a.addr() == a.last()) => {
                    report!(
                        self,
                        Code::AddressNotHost,
                        path = ("ports[{i}].address"),
                        value = ("{a}"),
                        msg = ("{a} is the network or broadcast address of its subnet, not a host address"),
                        hint = (
                            "write the box's own address with the subnet length, like {}/{}",
                            Ipv4Addr::from_bits(a.network().to_bits().wrapping_add(1)),
                            a.prefix_len()
                        )
                    );
                }
                _ => {}
            }
            if let Some(gw) = p.gateway {
                match p.address {
                    Some(PortAddress::Static(a)) if !a.contains(gw) || a.addr() == gw => {
                        report!(
                            self,
                            Code::GatewayOutsideSubnet,
                            path = ("ports[{i}].gateway"),
                            value = ("{gw}"),
                            msg = ("gateway {gw} is not another host in {}'s subnet {a}", p.name),
                            hint = ("the gateway must be a neighbour on the port's subnet")
                        );
                    }
                    Some(PortAddress::Static(_)) => {}
                    _ => {
                        report!(
                            self,
                            Code::GatewayWithoutStatic,
                            path = ("ports[{i}].gateway"),
                            value = ("{gw}"),
                            msg = ("gateway {gw} is ignored: port {} has no static address", p.name),
                            hint = ("with dhcp the gateway comes from the DHCP server; remove it")
                        );
                    }
                }
            }
            let has_default = p.gateway.is_some() || matches!(p.address, Some(PortAddress::Dhcp));
            if has_default {
                if let Some(first) = gateway_at {
                    report!(
                        self,
                        Code::GatewayMultiple,
                        path = ("ports[{i}].gateway"),
                        value = ("{}", p.gateway.map_or(GatewayShow::Dhcp, GatewayShow::Ip)),
                        msg = ("port {} would install a second default route (ports[{first}] has one)", p.name),
                        hint = ("keep one default route: a gateway (or dhcp) on one WAN port only")
                    );
                } else {
                    gateway_at = Some(i);
                }
            }
            if let Some(mac) = p.mac {
                if let Some(first) = c.ports.iter().take(i).position(|q| q.mac == Some(mac)) {
                    report!(
                        self,
                        Code::DuplicateMac,
                        path = ("ports[{i}].mac"),
                        value = ("{mac}"),
                        msg = ("MAC {mac} already names ports[{first}]"),
                        hint = ("each NIC has its own MAC; check `ip link` or the VM's hardware tab")
                    );
                }
            }
            if let Some(PortAddress::Static(a)) = p.address {
                for (j, q) in c.ports.iter().enumerate().take(i) {
                    if let Some(PortAddress::Static(b)) = q.address {
                        if a.overlaps(&b) {
                            report!(
                                self,
                                Code::SubnetOverlap,
                                path = ("ports[{i}].address"),
                                value = ("{a}"),
                                msg = ("subnet {a} overlaps {b} of ports[{j}] ({})", q.name),
                                hint = ("hosts on both ports would be ambiguous; use distinct subnets")
                            );
                        }
                    }
                }
            }
        }
        if !c.wireguard.is_empty() && !c.ports.iter().any(|p| p.role == PortRole::Wan) && !c.ports.is_empty() {
            report!(
                self,
                Code::NoWanPort,
                path = ("ports"),
                value = (""),
                msg = ("there are tunnels but no WAN port for WireGuard to leave through"),
                hint = ("mark the uplink port role = \"wan\"")
            );
        }
    }

    fn tunnels(&mut self) {
        let c = self.config;
        self.unique_names("wireguard", c.wireguard.iter().map(|t| &t.name));
        for (i, t) in c.wireguard.iter().enumerate() {
            if t.listen_port == 0 {
                report!(
                    self,
                    Code::ListenPortZero,
                    path = ("wireguard[{i}].listen_port"),
                    value = ("0"),
                    msg = ("listen port 0 is not a port"),
                    hint = ("use 51820 (the WireGuard default) or another fixed port the peer can reach")
                );
            } else if let Some(first) = c.wireguard.iter().take(i).position(|u| u.listen_port == t.listen_port) {
                report!(
                    self,
                    Code::ListenPortDuplicate,
                    path = ("wireguard[{i}].listen_port"),
                    value = ("{}", t.listen_port),
                    msg = ("UDP port {} is already used by wireguard[{first}]", t.listen_port),
                    hint = ("each tunnel needs its own listen port, e.g. 51821")
                );
            }
            self.mtu(format_args!("wireguard[{i}].mtu"), t.mtu);
            let b = budget::tunnel_budget(c, t);
            if (MTU_MIN..=MTU_MAX).contains(&t.mtu) && !b.fits() {
                report!(
                    self,
                    Code::TunnelMtuBudget,
                    path = ("wireguard[{i}].mtu"),
                    value = ("{}", t.mtu),
                    msg = (
                        "tunnel MTU {} does not fit the underlay: {} − {} (WireGuard) = {}",
                        t.mtu,
                        b.underlay_mtu,
                        budget::WIREGUARD_OVERHEAD,
                        b.max_mtu
                    ),
                    hint = ("set mtu = {} or less; larger packets would fragment on the WAN", b.max_mtu)
                );
            }
            if let Some(a) = t.address {
                if a.prefix_len() < 31 && (a.addr() == a.network() || a.addr() == a.last()) {
                    report!(
                        self,
                        Code::AddressNotHost,
                        path = ("wireguard[{i}].address"),
                        value = ("{a}"),
                        msg = ("{a} is the network or broadcast address of its subnet, not a host address"),
                        hint = ("write the box's own tunnel address, like 10.1.0.1/16")
                    );
                }
            }
            if let Some(first) = c.wireguard.iter().take(i).position(|u| u.private_key == t.private_key) {
                report!(
                    self,
                    Code::KeyShared,
                    path = ("wireguard[{i}].private_key"),
                    value = ("{}", t.private_key),
                    msg = ("wireguard[{first}] uses the same key slot {}", t.private_key),
                    hint = ("give each tunnel its own key, e.g. device:{}", t.name)
                );
            }
        }
    }

    fn peers(&mut self) {
        let c = self.config;
        self.unique_names("peers", c.peers.iter().map(|p| &p.name));
        for (i, p) in c.peers.iter().enumerate() {
            if c.tunnel(&p.tunnel).is_none() {
                report!(
                    self,
                    Code::UnknownTunnel,
                    path = ("peers[{i}].tunnel"),
                    value = ("{}", p.tunnel),
                    msg = ("no [[wireguard]] interface is named \"{}\"", p.tunnel),
                    hint = ("use one of:{}", NameList(c.wireguard.iter().map(|t| &t.name)))
                );
            }
            // A slot holds one key: a tunnel's private key is no preshared key.
            if let Some((t, k)) = p.preshared_key.as_ref().and_then(|k| Some((c.wireguard.iter().position(|t| t.private_key == *k)?, k))) {
                report!(
                    self,
                    Code::KeySlotKind,
                    path = ("peers[{i}].preshared_key"),
                    value = ("{k}"),
                    msg = ("{k} is the private key slot of wireguard[{t}]; a slot holds one key"),
                    hint = ("give the preshared key a slot of its own, e.g. device:{}-psk", p.name)
                );
            }
            if let Some(first) = c.peers.iter().take(i).position(|q| q.public_key == p.public_key) {
                report!(
                    self,
                    Code::DuplicatePublicKey,
                    path = ("peers[{i}].public_key"),
                    value = ("{}", p.public_key),
                    msg = ("peers[{first}] ({}) has the same public key", c.peers.get(first).map_or("?", |q| q.name.as_str())),
                    hint = ("copy each peer's key from `routerctl key show` on that box")
                );
            }
            if p.allowed_ips.is_empty() {
                report!(
                    self,
                    Code::PeerNoAllowedIps,
                    path = ("peers[{i}].allowed_ips"),
                    value = ("[]"),
                    msg = ("peer {} has no allowed IPs: nothing is routed to it or accepted from it", p.name),
                    hint = ("list the peer's tunnel address and the addresses it owns")
                );
            }
            for (k, a) in p.allowed_ips.iter().enumerate() {
                if a.prefix_len() == 0 {
                    report!(
                        self,
                        Code::AllowedIpDefaultRoute,
                        path = ("peers[{i}].allowed_ips[{k}]"),
                        value = ("{a}"),
                        msg = ("{a} sends every destination to peer {}; routerd never moves the default route", p.name),
                        hint = ("list the peer's prefixes and claimed /32s instead")
                    );
                } else if a.has_host_bits() {
                    report!(
                        self,
                        Code::AllowedIpHostBits,
                        path = ("peers[{i}].allowed_ips[{k}]"),
                        value = ("{a}"),
                        msg = ("{a} has host bits set; it means {}/{}", a.network(), a.prefix_len()),
                        hint = ("write {}/{} (or /32 for the single address)", a.network(), a.prefix_len())
                    );
                }
                // Compare with every earlier prefix (same peer or other peers).
                'earlier: for (j, q) in c.peers.iter().enumerate().take(i.saturating_add(1)) {
                    let limit = if j == i { k } else { q.allowed_ips.len() };
                    for (l, b) in q.allowed_ips.iter().enumerate().take(limit) {
                        if a.network() == b.network() && a.prefix_len() == b.prefix_len() {
                            report!(
                                self,
                                Code::AllowedIpDuplicate,
                                path = ("peers[{i}].allowed_ips[{k}]"),
                                value = ("{a}"),
                                msg = ("{a} is already listed as peers[{j}].allowed_ips[{l}] ({})", q.name),
                                hint = ("a prefix can route to one peer only; remove one")
                            );
                            break 'earlier;
                        } else if j != i && a.overlaps(b) && a.prefix_len() != 0 && b.prefix_len() != 0 {
                            report!(
                                self,
                                Code::AllowedIpOverlap,
                                path = ("peers[{i}].allowed_ips[{k}]"),
                                value = ("{a}"),
                                msg = ("{a} overlaps {b} of peer {}; the longer prefix wins for the overlap", q.name),
                                hint = ("make the peers' prefixes disjoint unless the overlap is intended")
                            );
                            break 'earlier;
                        }
                    }
                }
            }
            match p.persistent_keepalive {
                Some(0) => {
                    report!(
                        self,
                        Code::KeepaliveZero,
                        path = ("peers[{i}].persistent_keepalive"),
                        value = ("0"),
                        msg = ("keepalive 0 is ambiguous"),
                        hint = ("omit the field to turn keepalive off, or use 25")
                    );
                }
                None if p.endpoint.is_some() => {
                    report!(
                        self,
                        Code::KeepaliveMissing,
                        path = ("peers[{i}].persistent_keepalive"),
                        value = (""),
                        msg = ("this box dials peer {} but sends no keepalive; NAT and cloud edge state will expire", p.name),
                        hint = ("set persistent_keepalive = 25 on the side that dials")
                    );
                }
                _ => {}
            }
        }
    }

    fn claims(&mut self) {
        let c = self.config;
        for (i, claim) in c.claims.iter().enumerate() {
            let addr = claim.address.addr();
            if claim.address.prefix_len() != 32 {
                report!(
                    self,
                    Code::ClaimNotHost,
                    path = ("claims[{i}].address"),
                    value = ("{}", claim.address),
                    msg = ("{} is not a /32", claim.address),
                    hint = ("a claim moves one address: write {addr}/32")
                );
            }
            if let Some(first) = c.claims.iter().take(i).position(|d| d.address.addr() == addr) {
                report!(
                    self,
                    Code::ClaimDuplicate,
                    path = ("claims[{i}].address"),
                    value = ("{addr}"),
                    msg = ("{addr} is already claimed by claims[{first}]"),
                    hint = ("one claim per address; remove the duplicate")
                );
            }
            if c.is_own_address(addr) {
                report!(
                    self,
                    Code::ClaimIsOwnAddress,
                    path = ("claims[{i}].address"),
                    value = ("{addr}"),
                    msg = ("{addr} is an address of this box itself"),
                    hint = ("claims move hosts' addresses, not the router's")
                );
            }
            if claim.capture.configure_os_address {
                report!(
                    self,
                    Code::OsAddressConfigured,
                    path = ("claims[{i}].capture.configure_os_address"),
                    value = ("true"),
                    msg = ("the capturing box must never hold a claimed address as its own"),
                    hint = ("set configure_os_address = false (or omit it)")
                );
            }
            match (claim.gratuitous_arp, claim.capture.method) {
                (Some(n), _) if n > GRATUITOUS_ARP_MAX => {
                    report!(
                        self,
                        Code::GratuitousArpRange,
                        path = ("claims[{i}].gratuitous_arp"),
                        value = ("{n}"),
                        msg = ("{n} gratuitous ARPs is more than {GRATUITOUS_ARP_MAX}"),
                        hint = ("3 is enough to move a stale ARP entry")
                    );
                }
                (Some(n), CaptureMethod::ProviderSecondaryIp) if n > 0 => {
                    report!(
                        self,
                        Code::GratuitousArpProvider,
                        path = ("claims[{i}].gratuitous_arp"),
                        value = ("{n}"),
                        msg = ("a provider-secondary-ip claim must never be announced by ARP"),
                        hint = ("remove gratuitous_arp or set it to 0")
                    );
                }
                _ => {}
            }
            match (claim.conflict_hold, claim.capture.method) {
                (Some(n), CaptureMethod::ProviderSecondaryIp) => {
                    report!(
                        self,
                        Code::ConflictHoldProvider,
                        path = ("claims[{i}].conflict_hold"),
                        value = ("{n}"),
                        msg = ("a provider-secondary-ip claim never answers ARP, so it has no conflicts to hold"),
                        hint = ("remove conflict_hold")
                    );
                }
                (Some(n), _) if n < CONFLICT_HOLD_MIN => {
                    report!(
                        self,
                        Code::ConflictHoldRange,
                        path = ("claims[{i}].conflict_hold"),
                        value = ("{n}"),
                        msg = ("a conflict hold of {n} s is shorter than {CONFLICT_HOLD_MIN} s"),
                        hint = ("give seconds, 2..=65535 (default 60)")
                    );
                }
                _ => {}
            }
            let budget = budget::claim_tunnel_budget(c, &claim.delivery.tunnel);
            self.mss(format_args!("claims[{i}].mss_clamp"), claim.mss_clamp, budget.map(|b| b.auto_mss), "the tunnel MTU");
            match c.claim_action(claim) {
                ClaimAction::Capture { method, port, tunnel, peer } => self.capture(i, addr, method, port, tunnel, peer),
                ClaimAction::DeliverLocally { port } => self.local_delivery(i, addr, port),
            }
        }
    }

    fn capture(&mut self, i: usize, addr: Ipv4Addr, method: CaptureMethod, port: &Name, tunnel: &Name, peer: &Name) {
        let c = self.config;
        match c.port(port) {
            None => {
                report!(
                    self,
                    Code::UnknownPort,
                    path = ("claims[{i}].capture.port"),
                    value = ("{port}"),
                    msg = ("no port is named \"{port}\" on this box (side {}, which captures this claim)", c.device.side),
                    hint = ("use one of:{}", NameList(c.ports.iter().map(|p| &p.name)))
                );
            }
            Some(p) if p.role == PortRole::Lan && p.address.is_none() => {
                report!(
                    self,
                    Code::ClaimPortBridgeOnly,
                    path = ("claims[{i}].capture.port"),
                    value = ("{port}"),
                    msg = ("{port} has no address: a bridge-only port answers no ARP and captures nothing for {addr}"),
                    hint = ("capture on a LAN port with an address in {addr}'s subnet")
                );
            }
            Some(p) if method == CaptureMethod::ProxyArp => {
                if p.role == PortRole::Wan {
                    report!(
                        self,
                        Code::ProxyArpOnWan,
                        path = ("claims[{i}].capture.port"),
                        value = ("{port}"),
                        msg = ("proxy-arp on WAN port {port} would answer ARP for {addr} towards the provider"),
                        hint = ("capture with proxy-arp on the LAN port that sees the local hosts")
                    );
                } else if let Some(PortAddress::Static(a)) = p.address {
                    if !a.contains(addr) {
                        report!(
                            self,
                            Code::ClaimOutsideSubnet,
                            path = ("claims[{i}].address"),
                            value = ("{addr}"),
                            msg = ("{addr} is outside {port}'s subnet {a}; hosts there will not ARP for it"),
                            hint = ("proxy-arp captures same-subnet addresses; check the port or the address")
                        );
                    }
                }
            }
            Some(_) => {}
        }
        let t = c.tunnel(tunnel);
        if t.is_none() {
            report!(
                self,
                Code::UnknownTunnel,
                path = ("claims[{i}].delivery.tunnel"),
                value = ("{tunnel}"),
                msg = ("no [[wireguard]] interface is named \"{tunnel}\""),
                hint = ("use one of:{}", NameList(c.wireguard.iter().map(|t| &t.name)))
            );
        }
        let Some(pr) = c.peer(peer) else {
            report!(
                self,
                Code::UnknownPeer,
                path = ("claims[{i}].delivery.peer"),
                value = ("{peer}"),
                msg = ("no peer is named \"{peer}\" on this box (side {})", c.device.side),
                hint = ("use one of:{}", NameList(c.peers.iter().map(|p| &p.name)))
            );
            return;
        };
        if t.is_some() && pr.tunnel != *tunnel {
            report!(
                self,
                Code::PeerNotOnTunnel,
                path = ("claims[{i}].delivery.peer"),
                value = ("{peer}"),
                msg = ("peer {peer} is on tunnel {}, not {tunnel}", pr.tunnel),
                hint = ("set delivery.tunnel = \"{}\"", pr.tunnel)
            );
        }
        match c.route_peer(addr) {
            None => {
                report!(
                    self,
                    Code::ClaimNotRouted,
                    path = ("claims[{i}].delivery.peer"),
                    value = ("{peer}"),
                    msg = ("no peer's allowed_ips contain {addr}: WireGuard has nowhere to send it"),
                    hint = ("add \"{addr}/32\" to peer {peer}'s allowed_ips")
                );
            }
            Some((other, prefix)) if other.name != *peer => {
                report!(
                    self,
                    Code::ClaimNotRouted,
                    path = ("claims[{i}].delivery.peer"),
                    value = ("{peer}"),
                    msg = ("cryptokey routing sends {addr} to peer {} ({prefix}), not to {peer}", other.name),
                    hint = ("add \"{addr}/32\" to peer {peer}'s allowed_ips and remove it from {}'s", other.name)
                );
            }
            Some(_) => {}
        }
    }

    fn local_delivery(&mut self, i: usize, addr: Ipv4Addr, port: Option<&Name>) {
        let c = self.config;
        let claim_local = c.claims.get(i).and_then(|cl| cl.local_port.as_ref());
        match port {
            Some(p) if c.port(p).is_none() => {
                report!(
                    self,
                    Code::UnknownPort,
                    path = ("claims[{i}].local_port"),
                    value = ("{p}"),
                    msg = ("no port is named \"{p}\" on this box (side {}, which owns this claim)", c.device.side),
                    hint = ("use one of:{}", NameList(c.ports.iter().map(|p| &p.name)))
                );
            }
            Some(_) => {}
            None => {
                report!(
                    self,
                    Code::NoLocalPort,
                    path = ("claims[{i}].local_port"),
                    value = ("{}", OptName(claim_local)),
                    msg = ("{addr} lives on this side ({}) but no port's subnet contains it", c.device.side),
                    hint = ("set local_port to the port where the host is, or give that port an address in its subnet")
                );
            }
        }
        if let Some((peer, prefix)) = c.route_peer(addr) {
            report!(
                self,
                Code::ClaimLoop,
                path = ("claims[{i}].address"),
                value = ("{addr}"),
                msg = (
                    "{addr} lives on this side ({}) but peer {}'s allowed_ips {prefix} contain it: \
                        packets would go back into the tunnel and loop",
                    c.device.side,
                    peer.name
                ),
                hint = ("remove {addr} from peer {}'s allowed_ips (only the capturing box routes it to the tunnel)", peer.name)
            );
        }
    }

    fn segments(&mut self) {
        let c = self.config;
        self.unique_names("segments", c.segments.iter().map(|s| &s.name));
        for (i, s) in c.segments.iter().enumerate() {
            if s.vni == 0 || s.vni > VNI_MAX {
                report!(
                    self,
                    Code::VniRange,
                    path = ("segments[{i}].vni"),
                    value = ("{}", s.vni),
                    msg = ("VNI {} is outside 1..={VNI_MAX} (24 bits)", s.vni),
                    hint = ("pick a VNI from 1 to 16777215, the same on every VTEP of the segment")
                );
            } else if let Some(first) = c.segments.iter().take(i).position(|t| t.vni == s.vni) {
                report!(
                    self,
                    Code::VniDuplicate,
                    path = ("segments[{i}].vni"),
                    value = ("{}", s.vni),
                    msg = ("VNI {} is already used by segments[{first}]", s.vni),
                    hint = ("each segment needs its own VNI")
                );
            }
            match c.port(&s.port) {
                None => {
                    report!(
                        self,
                        Code::UnknownPort,
                        path = ("segments[{i}].port"),
                        value = ("{}", s.port),
                        msg = ("no port is named \"{}\"", s.port),
                        hint = ("use one of:{}", NameList(c.ports.iter().map(|p| &p.name)))
                    );
                }
                Some(p) if p.role == PortRole::Wan => {
                    report!(
                        self,
                        Code::SegmentOnWan,
                        path = ("segments[{i}].port"),
                        value = ("{}", s.port),
                        msg = ("bridging WAN port {} into the overlay would expose it to the internet", s.port),
                        hint = ("bridge a LAN port")
                    );
                }
                Some(_) => {
                    if let Some(first) = c.segments.iter().take(i).position(|t| t.port == s.port) {
                        report!(
                            self,
                            Code::PortBridgedTwice,
                            path = ("segments[{i}].port"),
                            value = ("{}", s.port),
                            msg = ("port {} is already bridged into segments[{first}]", s.port),
                            hint = ("a port carries one segment; use another LAN port")
                        );
                    }
                }
            }
            if s.udp_port == 0 {
                report!(
                    self,
                    Code::UdpPortZero,
                    path = ("segments[{i}].udp_port"),
                    value = ("0"),
                    msg = ("UDP port 0 is not a port"),
                    hint = ("use 4789, the VXLAN port")
                );
            } else if let Some(t) = c.wireguard.iter().find(|t| t.listen_port == s.udp_port) {
                report!(
                    self,
                    Code::UdpPortConflict,
                    path = ("segments[{i}].udp_port"),
                    value = ("{}", s.udp_port),
                    msg = ("UDP port {} is also the listen port of tunnel {}", s.udp_port, t.name),
                    hint = ("use 4789 for VXLAN")
                );
            }
            if !c.is_own_address(s.local_vtep) {
                report!(
                    self,
                    Code::VtepNotLocal,
                    path = ("segments[{i}].local_vtep"),
                    value = ("{}", s.local_vtep),
                    msg = ("{} is not an address of this box", s.local_vtep),
                    hint = ("use this box's tunnel address (wireguard[].address) so VXLAN runs inside WireGuard")
                );
            }
            if s.remote_vteps.is_empty() && s.control == SegmentControl::Static {
                report!(
                    self,
                    Code::VtepNone,
                    path = ("segments[{i}].remote_vteps"),
                    value = ("[]"),
                    msg = ("segment {} has no remote VTEPs; nothing leaves the bridge", s.name),
                    hint = ("list the other sites' tunnel addresses")
                );
            }
            for (k, v) in s.remote_vteps.iter().enumerate() {
                if *v == s.local_vtep || c.is_own_address(*v) {
                    report!(
                        self,
                        Code::VtepIsLocal,
                        path = ("segments[{i}].remote_vteps[{k}]"),
                        value = ("{v}"),
                        msg = ("{v} is this box's own address"),
                        hint = ("remote VTEPs are the other sites' addresses")
                    );
                } else if let Some(first) = s.remote_vteps.iter().take(k).position(|w| w == v) {
                    report!(
                        self,
                        Code::VtepDuplicate,
                        path = ("segments[{i}].remote_vteps[{k}]"),
                        value = ("{v}"),
                        msg = ("{v} is already remote_vteps[{first}]"),
                        hint = ("list each VTEP once; duplicates would flood twice")
                    );
                } else if c.route_peer(*v).is_none() {
                    report!(
                        self,
                        Code::VtepUnencrypted,
                        path = ("segments[{i}].remote_vteps[{k}]"),
                        value = ("{v}"),
                        msg = ("{v} is not inside any peer's allowed_ips: VXLAN to it would leave unencrypted"),
                        hint = ("use the peer's tunnel address, or add it to that peer's allowed_ips")
                    );
                }
            }
            self.mtu(format_args!("segments[{i}].mtu"), s.mtu);
            let b = budget::segment_budget(c, s);
            if (MTU_MIN..=MTU_MAX).contains(&s.mtu) && !b.fits() {
                let over = match b.carrier {
                    Carrier::Tunnel(t) => Over::Tunnel(t),
                    Carrier::Underlay => Over::Underlay,
                };
                report!(
                    self,
                    Code::SegmentMtuBudget,
                    path = ("segments[{i}].mtu"),
                    value = ("{}", s.mtu),
                    msg = (
                        "overlay MTU {} does not fit: {} ({over}) − {} (VXLAN) = {}",
                        s.mtu,
                        b.carrier_mtu,
                        budget::VXLAN_OVERHEAD,
                        b.max_mtu
                    ),
                    hint = ("set mtu = {} and the same MTU on the VMs in the segment", b.max_mtu)
                );
            }
            self.mss(format_args!("segments[{i}].mss_clamp"), s.mss_clamp, Some(b.auto_mss), "the segment MTU");
        }
    }
}

/// Who runs the configuration, for messages: "the image", "routerd-host",
/// or "routerd" (checks every platform makes).
#[derive(Clone, Copy)]
struct Who(Option<Platform>);

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.map_or("routerd", Platform::subject))
    }
}

/// `one` or `at most N`.
struct AtMost(usize);

impl fmt::Display for AtMost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 1 {
            f.write_str("one")
        } else {
            write!(f, "at most {}", self.0)
        }
    }
}

impl Checker<'_, '_> {
    /// `[dns] servers`: resolvers the box sends queries to, so each must be
    /// another host's unicast address, listed once.
    fn dns(&mut self) {
        let c = self.config;
        for (i, &s) in c.dns.servers.iter().enumerate() {
            if let Some(what) = not_unicast(s) {
                report!(
                    self,
                    Code::DnsServerInvalid,
                    path = ("dns.servers[{i}]"),
                    value = ("{s}"),
                    msg = ("{s} is {what}, not a unicast IPv4 address a DNS server answers on"),
                    hint = ("write the server's own address, like the site router's (192.168.1.1) or 9.9.9.9")
                );
            } else if let Some(first) = c.dns.servers.iter().take(i).position(|t| *t == s) {
                report!(
                    self,
                    Code::DnsServerDuplicate,
                    path = ("dns.servers[{i}]"),
                    value = ("{s}"),
                    msg = ("{s} is already dns.servers[{first}]"),
                    hint = ("list each server once; the box tries them in order")
                );
            }
        }
    }
}

/// Why `a` cannot be a DNS server's address, or `None` for a unicast one.
fn not_unicast(a: Ipv4Addr) -> Option<&'static str> {
    if a.is_unspecified() {
        Some("the unspecified address")
    } else if a.is_broadcast() {
        Some("the broadcast address")
    } else if a.is_multicast() {
        Some("a multicast address")
    } else if a.is_loopback() {
        Some("a loopback address (the box runs no resolver of its own)")
    } else {
        None
    }
}

/// `a, b, c`.
struct AddrList<'a>(&'a [Ipv4Addr]);

impl fmt::Display for AddrList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            fmt::Display::fmt(a, f)?;
        }
        Ok(())
    }
}

impl Checker<'_, '_> {
    /// What the box runs: capacities below the schema's list sizes, and
    /// features a platform (or every platform) cannot run yet. Each check
    /// mirrors a refusal of `routerd-control`'s `build`, the dataplane's
    /// `Config::validate` or the WireGuard device.
    fn runs(&mut self) {
        let c = self.config;
        let who = Who(self.platform);
        let runs = self.platform.map_or(&RUNS, Platform::runs);
        let image = self.platform == Some(Platform::Image);

        // Capacities (the lists themselves are bounded by `limits`).
        self.capacity(
            format_args!("ports[{}]", runs.ports),
            c.ports.get(runs.ports).map(|p| &p.name),
            c.ports.len(),
            runs.ports,
            ("port", "ports"),
            format_args!("remove the ports beyond ports[{}]", runs.ports - 1),
        );
        let first_tunnel = c.wireguard.first().map_or("wg0", |t| t.name.as_str());
        self.capacity(
            format_args!("wireguard[{}]", runs.tunnels),
            c.wireguard.get(runs.tunnels).map(|t| &t.name),
            c.wireguard.len(),
            runs.tunnels,
            ("WireGuard interface", "WireGuard interfaces"),
            format_args!("put every peer and claim on {first_tunnel}: more interfaces are not supported yet"),
        );
        self.capacity(
            format_args!("peers[{}]", runs.peers),
            c.peers.get(runs.peers).map(|p| &p.name),
            c.peers.len(),
            runs.peers,
            ("peer", "peers"),
            format_args!("remove the peers beyond peers[{}]", runs.peers - 1),
        );
        for (i, p) in c.peers.iter().enumerate() {
            self.capacity(
                format_args!("peers[{i}].allowed_ips[{}]", runs.allowed_ips_per_peer),
                None,
                p.allowed_ips.len(),
                runs.allowed_ips_per_peer,
                ("allowed IP per peer", "allowed IPs per peer"),
                format_args!("cover neighbouring addresses with one prefix"),
            );
        }
        self.capacity(
            format_args!("claims[{}]", runs.claims),
            None,
            c.claims.len(),
            runs.claims,
            ("claim", "claims"),
            format_args!("remove the claims beyond claims[{}]", runs.claims - 1),
        );
        self.capacity(
            format_args!("segments[{}]", runs.segments),
            c.segments.get(runs.segments).map(|s| &s.name),
            c.segments.len(),
            runs.segments,
            ("segment", "segments"),
            format_args!("remove the segments beyond segments[{}]", runs.segments - 1),
        );
        for (i, s) in c.segments.iter().enumerate() {
            self.capacity(
                format_args!("segments[{i}].remote_vteps[{}]", runs.vteps_per_segment),
                None,
                s.remote_vteps.len(),
                runs.vteps_per_segment,
                ("remote VTEP per segment", "remote VTEPs per segment"),
                format_args!("remove VTEPs beyond remote_vteps[{}]", runs.vteps_per_segment - 1),
            );
        }
        // The WireGuard device's cryptokey-routing table holds every peer's
        // allowed IPs together.
        let routes: usize = c.peers.iter().map(|p| p.allowed_ips.len()).sum();
        if routes > runs.tunnel_routes {
            let at = c
                .peers
                .iter()
                .enumerate()
                .flat_map(|(i, p)| p.allowed_ips.iter().enumerate().map(move |(k, a)| (i, k, *a)))
                .nth(runs.tunnel_routes);
            if let Some((i, k, a)) = at {
                report!(
                    self,
                    Code::TunnelRoutes,
                    path = ("peers[{i}].allowed_ips[{k}]"),
                    value = ("{a}"),
                    msg = (
                        "{who} routes {} allowed IPs over all peers together (its WireGuard table); the peers list {routes}, \
                            and this is number {}",
                        AtMost(runs.tunnel_routes),
                        runs.tunnel_routes + 1
                    ),
                    hint = ("cover neighbouring addresses with one prefix, or drop prefixes a peer does not need")
                );
            }
        }

        // Ports.
        let wans: heapless::Vec<usize, { crate::limits::MAX_PORTS }> =
            c.ports.iter().enumerate().filter(|(_, p)| p.role == PortRole::Wan).map(|(i, _)| i).collect();
        if wans.is_empty() && !c.ports.is_empty() {
            report!(
                self,
                Code::WanPortCount,
                path = ("ports"),
                value = (""),
                msg = ("{who} runs exactly one WAN port (the underlay, its default route and WireGuard); this configuration has none"),
                hint = ("mark the uplink port role = \"wan\"")
            );
        }
        if let Some(&first) = wans.first() {
            for &i in wans.iter().skip(1) {
                let (name, first_name) = (c.ports.get(i).map(|p| &p.name), c.ports.get(first).map(|p| &p.name));
                report!(
                    self,
                    Code::WanPortCount,
                    path = ("ports[{i}].role"),
                    value = ("wan"),
                    msg = ("{who} runs exactly one WAN port; ports[{first}] ({}) is already the WAN", OptName(first_name)),
                    hint = ("make {} a LAN port, or leave it out", OptName(name))
                );
            }
        }
        let wan_mtu = wans.first().and_then(|&i| c.ports.get(i)).map_or(crate::config::DEFAULT_PORT_MTU, |p| p.mtu);
        let wan_address = wans.iter().find_map(|&i| match c.ports.get(i).and_then(|p| p.address) {
            Some(PortAddress::Static(a)) => Some(a.addr()),
            _ => None,
        });
        let last_contract = platform::contract_name(runs.ports.saturating_sub(1));
        for (i, p) in c.ports.iter().enumerate() {
            if p.mtu > runs.port_mtu_max && p.mtu <= MTU_MAX {
                report!(
                    self,
                    Code::MtuAbovePlatform,
                    path = ("ports[{i}].mtu"),
                    value = ("{}", p.mtu),
                    msg = (
                        "{who} forwards packets of at most {} bytes on a port (its frame buffers); MTU {} would not run",
                        runs.port_mtu_max,
                        p.mtu
                    ),
                    hint = ("set mtu = {} or less: jumbo frames are not supported yet", runs.port_mtu_max)
                );
            }
            if let Some(mac) = p.mac.filter(|m| m.0[0] & 1 == 1) {
                report!(
                    self,
                    Code::MacNotUnicast,
                    path = ("ports[{i}].mac"),
                    value = ("{mac}"),
                    msg = ("{mac} is a multicast or broadcast address; {who} binds a port to a NIC's own (unicast) MAC"),
                    hint = ("copy the NIC's MAC from `ip link` or the VM's hardware tab")
                );
            }
            match (p.role, p.address) {
                // A LAN port without an address is a bridge-only member of
                // a segment; anywhere else it would do nothing at all.
                (PortRole::Lan, None) if !c.segments.iter().any(|s| s.port == p.name) => {
                    report!(
                        self,
                        Code::PortAddressMissing,
                        path = ("ports[{i}].address"),
                        value = (""),
                        msg = (
                            "{who} runs a LAN port without an address only as the bridge-only port of a [[segments]] \
                                entry (it answers no ARP and routes nothing); {} has none and is no segment's port",
                            p.name
                        ),
                        hint = (
                            "give {} its own address in the subnet it serves, like 192.168.10.4/24, or name it in a \
                                 segment's port",
                            p.name
                        )
                    );
                }
                (PortRole::Wan, None) if image => {
                    report!(
                        self,
                        Code::PortAddressMissing,
                        path = ("ports[{i}].address"),
                        value = (""),
                        msg = ("the image needs the WAN port's own address; {} has none", p.name),
                        hint = ("write address = \"dhcp\", or address = \"a.b.c.d/len\" and the gateway (routerd-host runs \
                                 a WAN port without one: the kernel owns it)")
                    );
                }
                _ => {}
            }
            if image && p.mac.is_none() && platform::contract_index(p.name.as_str(), runs.ports).is_none() {
                report!(
                    self,
                    Code::PortNameUnbound,
                    path = ("ports[{i}].name"),
                    value = ("{}", p.name),
                    msg = (
                        "the image binds a port without mac to the NIC of its name (lan0, wan0, lan1 … {last_contract}); \
                            \"{}\" is none of them",
                        p.name
                    ),
                    hint = ("set mac = \"…\" to the NIC's MAC, or name the port after its NIC (lan0 first, wan0 second)")
                );
            }
        }

        // The tunnel.
        if let Some(t) = c.wireguard.first() {
            if (MTU_MIN..=MTU_MAX).contains(&t.mtu) && t.mtu > wan_mtu {
                report!(
                    self,
                    Code::TunnelMtuAboveWan,
                    path = ("wireguard[0].mtu"),
                    value = ("{}", t.mtu),
                    msg = ("{who} runs a tunnel MTU up to the WAN port's MTU; {} is above {wan_mtu}", t.mtu),
                    hint = (
                        "set mtu = {} (WAN MTU − {}) or less",
                        wan_mtu.saturating_sub(budget::WIREGUARD_OVERHEAD),
                        budget::WIREGUARD_OVERHEAD
                    )
                );
            }
        }

        // Peers.
        for (i, p) in c.peers.iter().enumerate() {
            let Some(e) = p.endpoint.as_ref().filter(|_| image) else {
                continue;
            };
            match &e.host {
                // By name: resolved by the image (see the [dns] check below).
                Host::Dns(_) => {}
                Host::V6(_) => {
                    report!(
                        self,
                        Code::EndpointUnsupported,
                        path = ("peers[{i}].endpoint"),
                        value = ("{e}"),
                        msg = ("the image's underlay is IPv4 only; it cannot dial {e}"),
                        hint = ("write the peer's IPv4 address, or leave endpoint out and let the peer dial in \
                                 (routerd-host maps IPv6 endpoints)")
                    );
                }
                Host::V4(_) => {}
            }
        }

        // DNS: the image resolves peer endpoints given by name with the
        // [dns] servers, or with the WAN lease's when there are none;
        // routerd-host asks the host's resolver and ignores [dns].
        let dhcp_wan = c.ports.iter().any(|p| p.role == PortRole::Wan && p.address == Some(PortAddress::Dhcp));
        if image && c.dns.servers.is_empty() && !dhcp_wan {
            for (i, p) in c.peers.iter().enumerate() {
                let Some((e, Host::Dns(name))) = p.endpoint.as_ref().map(|e| (e, &e.host)) else {
                    continue;
                };
                report!(
                    self,
                    Code::DnsServersMissing,
                    path = ("peers[{i}].endpoint"),
                    value = ("{e}"),
                    msg = ("the image resolves {name} with the [dns] servers or the WAN port's DHCP lease; this configuration has neither"),
                    hint = ("add [dns] servers = [\"a.b.c.d\"] (the site router, say), or take the WAN address from DHCP \
                             (address = \"dhcp\")")
                );
            }
        }
        if self.platform == Some(Platform::Host) && !c.dns.servers.is_empty() {
            report!(
                self,
                Code::DnsServersHost,
                path = ("dns.servers"),
                value = ("{}", AddrList(&c.dns.servers)),
                msg = ("{who} does not use [dns] servers: it resolves peer endpoints with the host's resolver (/etc/resolv.conf)"),
                hint = ("set the servers in the host's /etc/resolv.conf (or systemd-resolved); the image uses [dns]")
            );
        }

        // Segments: VXLAN leaves from the WAN address or the tunnel address.
        let tunnel = c.wireguard.first();
        let tunnel_address = tunnel.and_then(|t| t.address).map(|a| a.addr());
        for (i, s) in c.segments.iter().enumerate() {
            let v = s.local_vtep;
            if c.is_own_address(v) && Some(v) != wan_address && Some(v) != tunnel_address {
                report!(
                    self,
                    Code::VtepNotWanOrTunnel,
                    path = ("segments[{i}].local_vtep"),
                    value = ("{v}"),
                    msg = ("{who} sends VXLAN from the WAN address or the tunnel address; {v} is neither"),
                    hint = ("use the tunnel address (wireguard[0].address) so VXLAN runs inside WireGuard")
                );
            } else if self.platform == Some(Platform::Host) && Some(v) == wan_address && Some(v) != tunnel_address {
                report!(
                    self,
                    Code::VtepWanUnsupported,
                    path = ("segments[{i}].local_vtep"),
                    value = ("{v}"),
                    msg = ("{who}'s WAN is a UDP socket of the host that carries WireGuard only: VXLAN from {v} could neither leave nor arrive"),
                    hint = ("use the tunnel address (wireguard[0].address) so VXLAN runs inside WireGuard")
                );
            }
            let Some(t) = tunnel.filter(|t| t.address.is_none()) else {
                continue;
            };
            let through_tunnel =
                |v: &Ipv4Addr| c.peers.iter().filter(|p| p.tunnel == t.name).any(|p| p.allowed_ips.iter().any(|a| a.contains(*v)));
            if let Some((k, v)) = s.remote_vteps.iter().enumerate().find(|(_, v)| through_tunnel(v)) {
                report!(
                    self,
                    Code::VtepNeedsTunnelAddress,
                    path = ("segments[{i}].remote_vteps[{k}]"),
                    value = ("{v}"),
                    msg = (
                        "{who} sends VXLAN for {v} through tunnel {} (a peer's allowed_ips contain it), but the \
                            tunnel has no address to send it from",
                        t.name
                    ),
                    hint = ("set wireguard[0].address (like 10.1.0.1/16) and use it as local_vtep")
                );
            }
        }
    }

    /// `platform-capacity` when a list is longer than the box runs.
    fn capacity(
        &mut self,
        path: fmt::Arguments<'_>,
        value: Option<&Name>,
        len: usize,
        limit: usize,
        what: (&str, &str),
        hint: fmt::Arguments<'_>,
    ) {
        if len > limit {
            let who = Who(self.platform);
            let what = if limit == 1 { what.0 } else { what.1 };
            report!(
                self,
                Code::PlatformCapacity,
                path = ("{path}"),
                value = ("{}", OptName(value)),
                msg = ("{who} runs {} {what}; this configuration has {len}", AtMost(limit)),
                hint = ("{hint}")
            );
        }
    }
}

/// ` a, b, c` or ` (none)` for hints.
struct NameList<'a, I: Iterator<Item = &'a Name> + Clone>(I);

impl<'a, I: Iterator<Item = &'a Name> + Clone> fmt::Display for NameList<'a, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut any = false;
        for (i, n) in self.0.clone().enumerate() {
            f.write_str(if i == 0 { " " } else { ", " })?;
            f.write_str(n.as_str())?;
            any = true;
        }
        if !any {
            f.write_str(" (none defined)")?;
        }
        Ok(())
    }
}

struct OptName<'a>(Option<&'a Name>);

impl fmt::Display for OptName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(n) => f.write_str(n.as_str()),
            None => Ok(()),
        }
    }
}

enum GatewayShow {
    Dhcp,
    Ip(Ipv4Addr),
}

impl fmt::Display for GatewayShow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatewayShow::Dhcp => f.write_str("dhcp"),
            GatewayShow::Ip(a) => fmt::Display::fmt(a, f),
        }
    }
}

enum Over<'a> {
    Tunnel(&'a Name),
    Underlay,
}

impl fmt::Display for Over<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Over::Tunnel(t) => write!(f, "tunnel {t}"),
            Over::Underlay => f.write_str("underlay"),
        }
    }
}

// After `report!`: the module uses it.
mod bgp;
mod nat_firewall;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::*;
    use crate::testutil::*;
    use crate::types::*;

    const O: &str = HYBRID_ONPREM;
    const R: &str = TWO_SITE_ROZ;
    const W: &str = TWO_SITE_WRO;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn add_tunnel(c: &mut Config, name: &str, listen_port: u16, key: &str) {
        let mut t = c.wireguard[0].clone();
        t.name = crate::testutil::name(name);
        t.listen_port = listen_port;
        t.address = None;
        t.private_key = key.parse().unwrap();
        c.wireguard.push(t).unwrap();
    }

    fn add_peer(c: &mut Config, name: &str, key: u8, allowed: &[&str]) {
        let mut p = c.peers[0].clone();
        p.name = crate::testutil::name(name);
        p.public_key = PublicKey([key; 32]);
        p.allowed_ips = allowed.iter().map(|a| cidr(a)).collect();
        c.peers.push(p).unwrap();
    }

    fn add_segment(c: &mut Config, vni: u32, port: &str) {
        let mut s = c.segments[0].clone();
        s.name = name("second");
        s.vni = vni;
        s.port = name(port);
        c.segments.push(s).unwrap();
    }

    /// `segments[0]` of TWO_SITE_ROZ under EVPN, peering with 10.2.0.2 (inside wro's allowed_ips).
    fn evpn(c: &mut Config) {
        c.segments[0].control = SegmentControl::Evpn;
        let mut peers = heapless::Vec::new();
        peers.push(BgpPeer { address: ip("10.2.0.2"), name: name("pve1") }).unwrap();
        c.bgp = Some(Bgp { asn: 65000, router_id: None, peers, hold_time: 9 });
    }

    fn bgp(c: &mut Config) -> &mut Bgp {
        evpn(c);
        c.bgp.as_mut().unwrap()
    }

    /// One rule: `fail` must produce `code` at `path`; `pass` (a near miss) must not.
    struct Case {
        code: Code,
        base: &'static str,
        path: &'static str,
        fail: fn(&mut Config),
        pass: fn(&mut Config),
    }

    const fn case(code: Code, base: &'static str, path: &'static str, fail: fn(&mut Config), pass: fn(&mut Config)) -> Case {
        Case { code, base, path, fail, pass }
    }

    fn none(_: &mut Config) {}

    fn add_nat(c: &mut Config, source: &str, out: &str) {
        c.nat.push(crate::firewall::Nat { source: cidr(source), out: name(out) }).unwrap();
    }

    /// A firewall rule from `from` to `to` (zones as written in the file).
    fn add_rule(c: &mut Config, from: &str, to: &str, protocol: crate::firewall::Protocol, port: Option<&str>) {
        let fw = c.firewall.get_or_insert_with(Default::default);
        let rule = crate::firewall::Rule {
            name: None,
            from: from.parse().unwrap(),
            to: to.parse().unwrap(),
            source: None,
            destination: None,
            protocol,
            port: port.map(|p| p.parse().unwrap()),
            action: crate::firewall::Action::Accept,
        };
        fw.rules.push(rule).unwrap();
    }

    use crate::firewall::Protocol as P;

    #[rustfmt::skip]
    const CASES: &[Case] = &[
        case(Code::BgpAsnRange, R, "bgp.asn", |c| bgp(c).asn = 0, |c| bgp(c).asn = 1),
        case(Code::BgpAsnRange, R, "bgp.asn", |c| bgp(c).asn = u32::MAX, |c| bgp(c).asn = u32::MAX - 1),
        case(Code::BgpHoldTime, R, "bgp.hold_time", |c| bgp(c).hold_time = 2, |c| bgp(c).hold_time = 3),
        case(Code::BgpHoldTime, R, "bgp.hold_time", |c| bgp(c).hold_time = 1, |c| bgp(c).hold_time = 0),
        case(Code::BgpRouterId, R, "bgp.router_id", |c| bgp(c).router_id = Some(ip("0.0.0.0")),
            |c| bgp(c).router_id = Some(ip("10.1.0.1"))),
        case(Code::BgpRouterId, R, "bgp.router_id", |c| { bgp(c); c.segments.clear(); c.wireguard[0].address = None; },
            |c| { bgp(c).router_id = Some(ip("10.1.0.1")); c.segments.clear(); c.wireguard[0].address = None; }),
        case(Code::BgpPeerInvalid, R, "bgp.peers[0].address", |c| bgp(c).peers[0].address = ip("10.1.0.1"),
            |c| bgp(c).peers[0].address = ip("10.2.0.1")),
        case(Code::BgpPeerInvalid, R, "bgp.peers[0].address", |c| bgp(c).peers[0].address = ip("224.0.0.5"), none),
        case(Code::BgpPeerDuplicate, R, "bgp.peers[1].address",
            |c| { let p = bgp(c).peers[0].clone(); bgp(c).peers.push(p).unwrap(); },
            |c| { let mut p = bgp(c).peers[0].clone(); p.address = ip("10.2.0.3"); bgp(c).peers.push(p).unwrap(); }),
        case(Code::BgpPeerUnreachable, R, "bgp.peers[0].address", |c| bgp(c).peers[0].address = ip("192.168.1.20"),
            |c| bgp(c).peers[0].address = ip("192.168.2.20")),
        case(Code::BgpPeerUnreachable, R, "bgp.peers[0].address", |c| bgp(c).peers[0].address = ip("8.8.8.8"), none),
        case(Code::BgpNoPeers, R, "bgp.peers", |c| bgp(c).peers.clear(), none),
        case(Code::BgpUnused, R, "bgp", |c| { evpn(c); c.segments[0].control = SegmentControl::Static; }, evpn),
        case(Code::EvpnWithoutBgp, R, "segments[0].control", |c| c.segments[0].control = SegmentControl::Evpn, evpn),
        case(Code::EvpnVtepMixed, R, "segments[1].local_vtep",
            |c| { evpn(c); add_segment(c, 2, "lan0"); c.segments[1].local_vtep = ip("192.168.2.4"); },
            |c| { evpn(c); add_segment(c, 2, "lan0"); }),
        case(Code::VtepNone, R, "segments[0].remote_vteps", |c| c.segments[0].remote_vteps.clear(),
            |c| { evpn(c); c.segments[0].remote_vteps.clear(); }),
        case(Code::NatOutNotWan, O, "nat[0].out", |c| add_nat(c, "10.0.0.0/24", "lan0"), |c| add_nat(c, "10.0.0.0/24", "wan0")),
        case(Code::UnknownPort, O, "nat[0].out", |c| add_nat(c, "10.0.0.0/24", "wan9"), |c| add_nat(c, "10.0.0.0/24", "wan0")),
        case(Code::NatSourceOverlap, O, "nat[1].source", |c| { add_nat(c, "10.0.0.0/16", "wan0"); add_nat(c, "10.0.1.0/24", "wan0"); },
            |c| { add_nat(c, "10.0.0.0/24", "wan0"); add_nat(c, "10.0.1.0/24", "wan0"); }),
        case(Code::UnknownZone, R, "firewall.rules[0].from", |c| add_rule(c, "tunnel:wg9", "box", P::Udp, Some("4789")),
            |c| add_rule(c, "tunnel:wg0", "box", P::Udp, Some("4789"))),
        case(Code::UnknownZone, R, "firewall.rules[0].to", |c| add_rule(c, "segment:crosssite", "lan7", P::Any, None),
            |c| add_rule(c, "segment:crosssite", "wan", P::Any, None)),
        case(Code::PortWithoutProtocol, R, "firewall.rules[0].port", |c| add_rule(c, "wan", "box", P::Icmp, Some("1")),
            |c| add_rule(c, "wan", "box", P::Tcp, Some("1"))),
        case(Code::PortRangeOrder, R, "firewall.rules[0].port", |c| add_rule(c, "wan", "box", P::Udp, Some("2000-1000")),
            |c| add_rule(c, "wan", "box", P::Udp, Some("1000-2000"))),
        case(Code::FirewallShadowed, R, "firewall.rules[1]",
            |c| { add_rule(c, "lan0", "wan", P::Any, None); add_rule(c, "lan0", "wan", P::Tcp, Some("22")); },
            |c| { add_rule(c, "lan0", "wan", P::Tcp, Some("22")); add_rule(c, "lan0", "wan", P::Any, None); }),
        case(Code::DuplicateName, O, "ports[1].name", |c| c.ports[1].name = name("lan0"), |c| c.ports[1].name = name("wan1")),
        case(Code::DuplicateName, R, "peers[1].name", |c| add_peer(c, "wro", 9, &["10.3.0.0/16"]), |c| add_peer(c, "wro2", 9, &["10.3.0.0/16"])),
        case(Code::NoPorts, O, "ports", |c| c.ports.clear(), |c| c.ports.truncate(1)),
        case(Code::NoWanPort, O, "ports", |c| c.ports[1].role = PortRole::Lan, none),
        case(Code::MtuRange, O, "ports[0].mtu", |c| c.ports[0].mtu = 575, |c| c.ports[0].mtu = 576),
        case(Code::MtuRange, O, "ports[0].mtu", |c| c.ports[0].mtu = 9217, |c| c.ports[0].mtu = 9216),
        case(Code::MtuRange, R, "segments[0].mtu", |c| c.segments[0].mtu = 100, none),
        case(Code::DhcpOnLan, O, "ports[0].address", |c| c.ports[0].address = Some(PortAddress::Dhcp),
            |c| { c.ports[1].address = Some(PortAddress::Dhcp); c.ports[1].gateway = None; }),
        case(Code::AddressNotHost, O, "ports[0].address", |c| c.ports[0].address = Some("10.20.0.0/24".parse().unwrap()),
            |c| c.ports[0].address = Some("10.20.0.1/24".parse().unwrap())),
        case(Code::AddressNotHost, O, "ports[0].address", |c| c.ports[0].address = Some("10.20.0.255/24".parse().unwrap()),
            |c| c.ports[0].address = Some("10.20.0.254/24".parse().unwrap())),
        case(Code::AddressNotHost, R, "wireguard[0].address", |c| c.wireguard[0].address = Some(cidr("10.1.0.0/16")), none),
        case(Code::GatewayOutsideSubnet, O, "ports[1].gateway", |c| c.ports[1].gateway = Some(ip("10.0.0.1")),
            |c| c.ports[1].gateway = Some(ip("192.168.1.254"))),
        case(Code::GatewayOutsideSubnet, O, "ports[1].gateway", |c| c.ports[1].gateway = Some(ip("192.168.1.35")), none),
        case(Code::GatewayWithoutStatic, W, "ports[1].gateway", |c| c.ports[1].gateway = Some(ip("192.168.1.1")), none),
        case(Code::GatewayMultiple, O, "ports[1].gateway", |c| c.ports[0].gateway = Some(ip("10.20.0.1")),
            |c| { c.ports[0].gateway = Some(ip("10.20.0.1")); c.ports[1].gateway = None; }),
        case(Code::DuplicateMac, O, "ports[1].mac",
            |c| { c.ports[0].mac = Some("52:54:00:00:00:01".parse().unwrap()); c.ports[1].mac = c.ports[0].mac; },
            |c| { c.ports[0].mac = Some("52:54:00:00:00:01".parse().unwrap()); c.ports[1].mac = Some("52:54:00:00:00:02".parse().unwrap()); }),
        case(Code::SubnetOverlap, O, "ports[1].address",
            |c| { c.ports[1].address = Some("10.20.9.9/16".parse().unwrap()); c.ports[1].gateway = None; },
            |c| { c.ports[1].address = Some("10.21.9.9/16".parse().unwrap()); c.ports[1].gateway = None; }),
        case(Code::ListenPortZero, O, "wireguard[0].listen_port", |c| c.wireguard[0].listen_port = 0, |c| c.wireguard[0].listen_port = 1),
        case(Code::ListenPortDuplicate, R, "wireguard[1].listen_port", |c| add_tunnel(c, "wg1", 51820, "device:wg1"),
            |c| add_tunnel(c, "wg1", 51821, "device:wg1")),
        case(Code::TunnelMtuBudget, O, "wireguard[0].mtu", |c| c.wireguard[0].mtu = 1421, |c| c.wireguard[0].mtu = 1420),
        case(Code::TunnelMtuBudget, O, "wireguard[0].mtu", |c| c.ports[1].mtu = 1400, |c| { c.ports[1].mtu = 1400; c.wireguard[0].mtu = 1320; }),
        case(Code::KeyShared, R, "wireguard[1].private_key", |c| add_tunnel(c, "wg1", 51821, "device:wg0"),
            |c| add_tunnel(c, "wg1", 51821, "device:wg1")),
        case(Code::KeySlotKind, O, "peers[0].preshared_key", |c| c.peers[0].preshared_key = Some("device:wg-hybrid".parse().unwrap()),
            |c| c.peers[0].preshared_key = Some("device:cloud-psk".parse().unwrap())),
        case(Code::UnknownTunnel, O, "peers[0].tunnel", |c| c.peers[0].tunnel = name("wg9"), none),
        case(Code::UnknownTunnel, O, "claims[0].delivery.tunnel", |c| c.claims[0].delivery.tunnel = name("wg9"), none),
        case(Code::DuplicatePublicKey, R, "peers[1].public_key",
            |c| { add_peer(c, "wro2", 0, &["10.3.0.0/16"]); c.peers[1].public_key = c.peers[0].public_key; },
            |c| add_peer(c, "wro2", 9, &["10.3.0.0/16"])),
        case(Code::PeerNoAllowedIps, R, "peers[0].allowed_ips", |c| c.peers[0].allowed_ips.clear(), none),
        case(Code::AllowedIpHostBits, R, "peers[0].allowed_ips[0]", |c| c.peers[0].allowed_ips[0] = cidr("10.2.0.1/16"),
            |c| c.peers[0].allowed_ips[0] = cidr("10.2.0.1/32")),
        case(Code::AllowedIpDuplicate, R, "peers[0].allowed_ips[1]", |c| c.peers[0].allowed_ips.push(cidr("10.2.0.0/16")).unwrap(),
            |c| c.peers[0].allowed_ips.push(cidr("10.3.0.0/16")).unwrap()),
        case(Code::AllowedIpDuplicate, R, "peers[1].allowed_ips[0]", |c| add_peer(c, "wro2", 9, &["10.2.0.0/16"]),
            |c| add_peer(c, "wro2", 9, &["10.3.0.0/16"])),
        case(Code::AllowedIpOverlap, R, "peers[1].allowed_ips[0]", |c| add_peer(c, "wide", 9, &["10.0.0.0/8"]),
            |c| add_peer(c, "wide", 9, &["10.3.0.0/16"])),
        case(Code::AllowedIpDefaultRoute, R, "peers[0].allowed_ips[1]", |c| c.peers[0].allowed_ips.push(cidr("0.0.0.0/0")).unwrap(),
            |c| c.peers[0].allowed_ips.push(cidr("10.3.0.0/16")).unwrap()),
        case(Code::KeepaliveZero, R, "peers[0].persistent_keepalive", |c| c.peers[0].persistent_keepalive = Some(0),
            |c| c.peers[0].persistent_keepalive = Some(1)),
        case(Code::KeepaliveMissing, O, "peers[0].persistent_keepalive", |c| c.peers[0].persistent_keepalive = None,
            |c| { c.peers[0].persistent_keepalive = None; c.peers[0].endpoint = None; }),
        case(Code::ClaimNotHost, O, "claims[0].address", |c| c.claims[0].address = cidr("10.20.0.50/24"),
            |c| c.claims[0].address = cidr("10.20.0.50")),
        case(Code::ClaimDuplicate, O, "claims[1].address", |c| c.claims[1].address = c.claims[0].address, none),
        case(Code::ClaimIsOwnAddress, O, "claims[0].address", |c| c.claims[0].address = cidr("10.20.0.2/32"), none),
        case(Code::ClaimIsOwnAddress, O, "claims[0].address", |c| c.claims[0].address = cidr("10.99.0.1/32"), none),
        case(Code::OsAddressConfigured, O, "claims[2].capture.configure_os_address",
            |c| c.claims[2].capture.configure_os_address = true, |c| c.claims[2].capture.configure_os_address = false),
        case(Code::GratuitousArpRange, O, "claims[0].gratuitous_arp", |c| c.claims[0].gratuitous_arp = Some(17),
            |c| c.claims[0].gratuitous_arp = Some(16)),
        case(Code::GratuitousArpProvider, O, "claims[2].gratuitous_arp", |c| c.claims[2].gratuitous_arp = Some(1),
            |c| c.claims[2].gratuitous_arp = Some(0)),
        case(Code::ConflictHoldRange, O, "claims[0].conflict_hold", |c| c.claims[0].conflict_hold = Some(1),
            |c| c.claims[0].conflict_hold = Some(2)),
        case(Code::ConflictHoldProvider, O, "claims[2].conflict_hold", |c| c.claims[2].conflict_hold = Some(60),
            |c| c.claims[2].conflict_hold = None),
        case(Code::UnknownPort, O, "claims[0].capture.port", |c| c.claims[0].capture.port = name("lan9"), none),
        case(Code::UnknownPort, O, "claims[2].local_port", |c| c.claims[2].local_port = Some(name("lan9")),
            |c| c.claims[2].local_port = Some(name("lan0"))),
        case(Code::UnknownPort, R, "segments[0].port", |c| c.segments[0].port = name("lan9"), none),
        case(Code::ClaimPortBridgeOnly, O, "claims[0].capture.port", |c| c.ports[0].address = None, none),
        case(Code::ProxyArpOnWan, O, "claims[0].capture.port", |c| c.claims[0].capture.port = name("wan0"), none),
        case(Code::ClaimOutsideSubnet, O, "claims[0].address",
            |c| { c.claims[0].address = cidr("10.30.0.50"); c.peers[0].allowed_ips.push(cidr("10.30.0.50/32")).unwrap(); },
            |c| { c.claims[0].address = cidr("10.20.0.60"); c.peers[0].allowed_ips.push(cidr("10.20.0.60/32")).unwrap(); }),
        case(Code::UnknownPeer, O, "claims[0].delivery.peer", |c| c.claims[0].delivery.peer = name("azure"), none),
        case(Code::PeerNotOnTunnel, O, "claims[0].delivery.peer",
            |c| { add_tunnel(c, "wg1", 51821, "device:wg1"); c.claims[0].delivery.tunnel = name("wg1"); },
            |c| add_tunnel(c, "wg1", 51821, "device:wg1")),
        case(Code::ClaimNotRouted, O, "claims[0].delivery.peer", |c| c.peers[0].allowed_ips.retain(|a| a.addr() != ip("10.20.0.50")), none),
        case(Code::ClaimNotRouted, O, "claims[0].delivery.peer",
            |c| { c.peers[0].allowed_ips.retain(|a| a.addr() != ip("10.20.0.50")); add_peer(c, "other", 9, &["10.20.0.50/32"]); },
            |c| add_peer(c, "other", 9, &["10.20.0.0/24"])),
        case(Code::ClaimLoop, O, "claims[2].address", |c| c.peers[0].allowed_ips.push(cidr("10.20.0.0/24")).unwrap(),
            |c| c.peers[0].allowed_ips.push(cidr("10.20.0.60/32")).unwrap()),
        case(Code::NoLocalPort, O, "claims[2].local_port", |c| c.claims[2].address = cidr("10.30.0.10"),
            |c| { c.claims[2].address = cidr("10.30.0.10"); c.claims[2].local_port = Some(name("lan0")); }),
        case(Code::MssRange, O, "claims[1].mss_clamp", |c| c.claims[1].mss_clamp = MssClamp::Value(535),
            |c| c.claims[1].mss_clamp = MssClamp::Value(536)),
        case(Code::MssRange, R, "segments[0].mss_clamp", |c| c.segments[0].mss_clamp = MssClamp::Value(9177), none),
        case(Code::MssAbovePath, O, "claims[1].mss_clamp", |c| c.claims[1].mss_clamp = MssClamp::Value(1381),
            |c| c.claims[1].mss_clamp = MssClamp::Value(1380)),
        case(Code::MssAbovePath, R, "segments[0].mss_clamp", |c| c.segments[0].mss_clamp = MssClamp::Value(1331),
            |c| c.segments[0].mss_clamp = MssClamp::Value(1330)),
        case(Code::VniRange, R, "segments[0].vni", |c| c.segments[0].vni = 0, |c| c.segments[0].vni = 1),
        case(Code::VniRange, R, "segments[0].vni", |c| c.segments[0].vni = 1 << 24, |c| c.segments[0].vni = (1 << 24) - 1),
        case(Code::VniDuplicate, R, "segments[1].vni", |c| add_segment(c, 100000, "lan0"), |c| add_segment(c, 2, "lan0")),
        case(Code::SegmentOnWan, R, "segments[0].port", |c| c.segments[0].port = name("wan0"), none),
        case(Code::PortBridgedTwice, R, "segments[1].port", |c| add_segment(c, 2, "lan1"), |c| add_segment(c, 2, "lan0")),
        case(Code::UdpPortZero, R, "segments[0].udp_port", |c| c.segments[0].udp_port = 0, none),
        case(Code::UdpPortConflict, R, "segments[0].udp_port", |c| c.segments[0].udp_port = 51820, |c| c.segments[0].udp_port = 4790),
        case(Code::VtepNotLocal, R, "segments[0].local_vtep", |c| c.segments[0].local_vtep = ip("10.1.0.9"),
            |c| c.segments[0].local_vtep = ip("192.168.2.4")),
        case(Code::VtepIsLocal, R, "segments[0].remote_vteps[1]", |c| c.segments[0].remote_vteps.push(ip("10.1.0.1")).unwrap(),
            |c| c.segments[0].remote_vteps.push(ip("10.2.0.2")).unwrap()),
        case(Code::VtepDuplicate, R, "segments[0].remote_vteps[1]", |c| c.segments[0].remote_vteps.push(ip("10.2.0.1")).unwrap(),
            |c| c.segments[0].remote_vteps.push(ip("10.2.0.2")).unwrap()),
        case(Code::VtepNone, R, "segments[0].remote_vteps", |c| c.segments[0].remote_vteps.clear(), none),
        case(Code::VtepUnencrypted, R, "segments[0].remote_vteps[0]", |c| c.segments[0].remote_vteps[0] = ip("192.168.50.1"),
            |c| c.segments[0].remote_vteps[0] = ip("10.2.0.9")),
        case(Code::SegmentMtuBudget, R, "segments[0].mtu", |c| c.segments[0].mtu = 1371, |c| c.segments[0].mtu = 1370),
        case(Code::SegmentMtuBudget, R, "segments[0].mtu", |c| c.wireguard[0].mtu = 1400,
            |c| { c.wireguard[0].mtu = 1400; c.segments[0].mtu = 1350; }),
        case(Code::DnsServerInvalid, O, "dns.servers[0]", |c| c.dns.servers.push(ip("0.0.0.0")).unwrap(),
            |c| c.dns.servers.push(ip("192.168.1.1")).unwrap()),
        case(Code::DnsServerInvalid, O, "dns.servers[1]", |c| c.dns.servers.extend([ip("9.9.9.9"), ip("255.255.255.255")]),
            |c| c.dns.servers.extend([ip("9.9.9.9"), ip("255.255.255.254")])),
        case(Code::DnsServerInvalid, O, "dns.servers[0]", |c| c.dns.servers.push(ip("224.0.0.251")).unwrap(),
            |c| c.dns.servers.push(ip("223.255.255.255")).unwrap()),
        case(Code::DnsServerInvalid, O, "dns.servers[0]", |c| c.dns.servers.push(ip("127.0.0.53")).unwrap(),
            |c| c.dns.servers.push(ip("128.0.0.53")).unwrap()),
        case(Code::DnsServerDuplicate, O, "dns.servers[2]", |c| c.dns.servers.extend([ip("9.9.9.9"), ip("1.1.1.1"), ip("9.9.9.9")]),
            |c| c.dns.servers.extend([ip("9.9.9.9"), ip("1.1.1.1"), ip("149.112.112.112")])),
    ];

    fn show(r: &Report) -> std::string::String {
        use std::fmt::Write as _;
        let mut s = std::string::String::new();
        for p in &r.problems {
            let _ = writeln!(s, "  {} [{}] {}", p.severity.as_str(), p.code.as_str(), p);
        }
        s
    }

    /// What each platform says of the shipped examples (code, path): every
    /// one runs on both; routerd-host warns that it ignores roz's `[dns]`.
    fn example_refusals(name: &str, platform: Option<Platform>) -> &'static [(Code, &'static str)] {
        use Code::*;
        match (name, platform) {
            ("hybrid-onprem" | "hybrid-cloud", _) => &[],
            ("two-site-roz", Some(Platform::Host)) => &[(DnsServersHost, "dns.servers")],
            ("two-site-roz" | "two-site-wro", _) => &[],
            ("two-site-roz-firewall", Some(Platform::Host)) => &[(DnsServersHost, "dns.servers"), (NatUnsupported, "nat[0]")],
            ("two-site-roz-firewall", _) => &[],
            _ => panic!("unknown example {name}"),
        }
    }

    fn report_for(c: &Config, platform: Option<Platform>) -> Report {
        match platform {
            None => validate(c),
            Some(p) => validate_for(c, p),
        }
    }

    #[test]
    fn examples_are_clean_or_refused_precisely() {
        for (name, text) in EXAMPLES {
            for platform in [None, Some(Platform::Image), Some(Platform::Host)] {
                let r = report_for(&load(text), platform);
                let mut got: std::vec::Vec<(Code, &str)> = r.problems.iter().map(|p| (p.code, p.path.as_str())).collect();
                let mut want = example_refusals(name, platform).to_vec();
                got.sort_by_key(|(c, p)| (c.as_str(), *p));
                want.sort_by_key(|(c, p)| (c.as_str(), *p));
                assert_eq!(got, want, "{name} on {platform:?}:\n{}", show(&r));
                let warnings = want.iter().filter(|(c, _)| c.severity() == Severity::Warning).count();
                assert_eq!(r.warnings, warnings, "{name}");
            }
        }
    }

    /// A rule about what a box runs: `fail` must produce `code` at `path`
    /// exactly on the platforms marked, `pass` never.
    struct RunCase {
        code: Code,
        base: &'static str,
        path: &'static str,
        image: bool,
        host: bool,
        fail: fn(&mut Config),
        pass: fn(&mut Config),
    }

    const BOTH: (bool, bool) = (true, true);
    const IMAGE: (bool, bool) = (true, false);
    const HOST: (bool, bool) = (false, true);

    const fn run_case(
        code: Code,
        base: &'static str,
        path: &'static str,
        on: (bool, bool),
        fail: fn(&mut Config),
        pass: fn(&mut Config),
    ) -> RunCase {
        RunCase { code, base, path, image: on.0, host: on.1, fail, pass }
    }

    /// Peer `name` with `n` /32s in 10.`net`.0.0/16.
    fn add_peer_n(c: &mut Config, name: &str, key: u8, net: u8, n: usize) {
        add_peer(c, name, key, &[]);
        let p = c.peers.last_mut().unwrap();
        for k in 0..n {
            p.allowed_ips.push(cidr(&std::format!("10.{net}.0.{}/32", k + 1))).unwrap();
        }
    }

    fn mac(s: &str) -> Option<Mac> {
        Some(s.parse().unwrap())
    }

    fn endpoint(s: &str) -> Option<Endpoint> {
        Some(s.parse().unwrap())
    }

    #[rustfmt::skip]
    const RUN_CASES: &[RunCase] = &[
        // Both platforms run [bgp] (the image: host/tests/image_evpn.rs):
        // reported on neither; the code stays for a platform without it.
        run_case(Code::BgpUnsupported, R, "bgp", (false, false), evpn, none),
        run_case(Code::PlatformCapacity, O, "wireguard[1]", BOTH, |c| add_tunnel(c, "wg1", 51821, "device:wg1"), none),
        // 3 + 4 × 16 = 67 allowed IPs; the 65th is peers[4].allowed_ips[13].
        run_case(Code::TunnelRoutes, O, "peers[4].allowed_ips[13]", BOTH,
            |c| for k in 1..=4 { add_peer_n(c, &std::format!("p{k}"), k, 100 + k, 16) },
            |c| { for k in 1..=3 { add_peer_n(c, &std::format!("p{k}"), k, 100 + k, 16) } add_peer_n(c, "p4", 4, 104, 13); }),
        run_case(Code::MtuAbovePlatform, O, "ports[0].mtu", BOTH, |c| c.ports[0].mtu = 1501, |c| c.ports[0].mtu = 1500),
        run_case(Code::MtuAbovePlatform, O, "ports[1].mtu", BOTH, |c| c.ports[1].mtu = 9000, |c| c.ports[1].mtu = 576),
        run_case(Code::TunnelMtuAboveWan, O, "wireguard[0].mtu", BOTH, |c| c.wireguard[0].mtu = 1501,
            |c| c.wireguard[0].mtu = 1500),
        run_case(Code::TunnelMtuAboveWan, O, "wireguard[0].mtu", BOTH, |c| c.ports[1].mtu = 1400,
            |c| { c.ports[1].mtu = 1400; c.wireguard[0].mtu = 1320; }),
        run_case(Code::WanPortCount, O, "ports", BOTH, |c| c.ports[1].role = PortRole::Lan, none),
        run_case(Code::WanPortCount, O, "ports[1].role", BOTH, |c| c.ports[0].role = PortRole::Wan, none),
        run_case(Code::MacNotUnicast, O, "ports[0].mac", BOTH, |c| c.ports[0].mac = mac("01:00:5e:00:00:01"),
            |c| c.ports[0].mac = mac("02:00:5e:00:00:01")),
        run_case(Code::MacNotUnicast, O, "ports[1].mac", BOTH, |c| c.ports[1].mac = mac("ff:ff:ff:ff:ff:ff"), none),
        run_case(Code::PortAddressMissing, O, "ports[0].address", BOTH, |c| c.ports[0].address = None, none),
        run_case(Code::PortAddressMissing, O, "ports[1].address", IMAGE,
            |c| { c.ports[1].address = None; c.ports[1].gateway = None; }, none),
        run_case(Code::PortNameUnbound, O, "ports[1].name", IMAGE, |c| c.ports[1].name = name("uplink"),
            |c| { c.ports[1].name = name("uplink"); c.ports[1].mac = mac("52:54:00:00:00:02"); }),
        run_case(Code::PortNameUnbound, O, "ports[1].name", IMAGE, |c| c.ports[1].name = name("lan7"),
            |c| c.ports[1].name = name("lan6")),
        run_case(Code::EndpointUnsupported, O, "peers[0].endpoint", IMAGE,
            |c| c.peers[0].endpoint = endpoint("[2001:db8::1]:51820"), |c| c.peers[0].endpoint = endpoint("198.51.100.1:51820")),
        run_case(Code::VtepNotWanOrTunnel, R, "segments[0].local_vtep", BOTH, |c| c.segments[0].local_vtep = ip("192.168.2.4"),
            |c| c.segments[0].local_vtep = ip("192.168.1.35")),
        run_case(Code::VtepWanUnsupported, R, "segments[0].local_vtep", HOST, |c| c.segments[0].local_vtep = ip("192.168.1.35"),
            |c| c.segments[0].local_vtep = ip("10.1.0.1")),
        run_case(Code::VtepNeedsTunnelAddress, R, "segments[0].remote_vteps[0]", BOTH,
            |c| { c.wireguard[0].address = None; c.segments[0].local_vtep = ip("192.168.1.35"); },
            |c| { c.wireguard[0].address = None; c.segments[0].local_vtep = ip("192.168.1.35");
                  c.segments[0].remote_vteps[0] = ip("203.0.113.9"); }),
        run_case(Code::DnsServersMissing, R, "peers[0].endpoint", IMAGE, |c| c.dns.servers.clear(),
            |c| { c.dns.servers.clear(); c.ports[1].address = Some(PortAddress::Dhcp); c.ports[1].gateway = None; }),
        run_case(Code::DnsServersMissing, O, "peers[0].endpoint", IMAGE, |c| c.peers[0].endpoint = endpoint("cloud.example.net:51820"),
            |c| { c.peers[0].endpoint = endpoint("cloud.example.net:51820"); c.dns.servers.push(ip("10.20.0.1")).unwrap(); }),
        run_case(Code::DnsServersMissing, O, "peers[0].endpoint", IMAGE, |c| c.peers[0].endpoint = endpoint("cloud.example.net:51820"),
            |c| { c.peers[0].endpoint = endpoint("[2001:db8::1]:51820"); }),
        run_case(Code::DnsServersHost, O, "dns.servers", HOST, |c| c.dns.servers.push(ip("9.9.9.9")).unwrap(), none),
        run_case(Code::NatUnsupported, O, "nat[0]", HOST, |c| add_nat(c, "10.0.0.0/24", "wan0"), none),
    ];

    #[test]
    fn every_platform_rule_fails_where_it_should_and_passes() {
        for (n, c) in RUN_CASES.iter().enumerate() {
            let base = load(c.base);
            let mut bad = base.clone();
            (c.fail)(&mut bad);
            let mut good = base.clone();
            (c.pass)(&mut good);
            for platform in [None, Some(Platform::Image), Some(Platform::Host)] {
                let expected = match platform {
                    None => c.image && c.host,
                    Some(Platform::Image) => c.image,
                    Some(Platform::Host) => c.host,
                };
                let r = report_for(&bad, platform);
                let hit = r.problems.iter().find(|p| p.code == c.code);
                if !expected {
                    assert!(hit.is_none(), "case {n} {:?} reported on {platform:?}\n{}", c.code, show(&r));
                    continue;
                }
                let hit = hit.unwrap_or_else(|| panic!("case {n} {:?}: not reported on {platform:?}\n{}", c.code, show(&r)));
                assert_eq!(hit.path.as_str(), c.path, "case {n} {:?}\n{}", c.code, show(&r));
                assert_eq!(hit.severity, c.code.severity(), "case {n}");
                assert_eq!(r.is_valid(), r.errors == 0, "case {n}");
                if c.code.severity() == Severity::Error {
                    assert!(!r.is_valid(), "case {n}");
                }
                assert!(!hit.message.is_empty() && !hit.hint.is_empty(), "case {n}");
                let subject = platform.map_or("routerd", Platform::subject);
                assert!(hit.message.contains(subject), "case {n} {:?}: the message does not name {subject}: {}", c.code, hit.message);
                let r = report_for(&good, platform);
                assert!(!r.has(c.code), "case {n} {:?}: reported on the passing variant\n{}", c.code, show(&r));
            }
        }
    }

    #[test]
    fn the_one_tunnel_message_names_the_platform() {
        let mut c = load(O);
        add_tunnel(&mut c, "wg1", 51821, "device:wg1");
        let r = validate_for(&c, Platform::Image);
        let p = r.problems.iter().find(|p| p.code == Code::PlatformCapacity).unwrap();
        assert_eq!(std::format!("{p}"), "wireguard[1]: the image runs one WireGuard interface; this configuration has 2");
        assert_eq!(p.value.as_str(), "wg1");
    }

    #[test]
    fn every_rule_fails_and_passes() {
        for (n, c) in CASES.iter().enumerate() {
            let base = load(c.base);
            let mut bad = base.clone();
            (c.fail)(&mut bad);
            let r = validate(&bad);
            let hit = r.problems.iter().find(|p| p.code == c.code);
            let hit = hit.unwrap_or_else(|| panic!("case {n} {:?}: not reported\n{}", c.code, show(&r)));
            assert_eq!(hit.path.as_str(), c.path, "case {n} {:?}\n{}", c.code, show(&r));
            assert_eq!(hit.severity, c.code.severity());
            assert!(!hit.message.is_empty() && !hit.hint.is_empty(), "case {n}");
            assert_eq!(r.is_valid(), r.errors == 0);
            if c.code.severity() == Severity::Error {
                assert!(!r.is_valid(), "case {n}");
            }
            let mut good = base.clone();
            (c.pass)(&mut good);
            let r = validate(&good);
            assert!(!r.has(c.code), "case {n} {:?}: reported on the passing variant\n{}", c.code, show(&r));
        }
    }

    #[test]
    fn every_code_has_a_case() {
        for code in Code::ALL {
            assert!(
                CASES.iter().any(|c| c.code == *code) || RUN_CASES.iter().any(|c| c.code == *code),
                "no test case for {}",
                code.as_str()
            );
        }
        // Codes are stable identifiers: unique and kebab-case.
        for (i, a) in Code::ALL.iter().enumerate() {
            assert!(a.as_str().bytes().all(|b| b.is_ascii_lowercase() || b == b'-'));
            assert!(Code::ALL[..i].iter().all(|b| b.as_str() != a.as_str()));
        }
    }

    #[test]
    fn every_code_is_documented() {
        let doc = include_str!("../CONFIG.md");
        for code in Code::ALL {
            assert!(doc.contains(&std::format!("`{}`", code.as_str())), "CONFIG.md lacks {}", code.as_str());
        }
    }

    #[test]
    fn message_names_path_and_value() {
        let mut c = load(O);
        c.claims[2].address = cidr("10.0.0.9/24");
        let r = validate(&c);
        let p = r.problems.iter().find(|p| p.code == Code::ClaimNotHost).unwrap();
        assert_eq!(std::format!("{p}"), "claims[2].address: 10.0.0.9/24 is not a /32");
        assert_eq!(p.value.as_str(), "10.0.0.9/24");
        assert_eq!(p.hint.as_str(), "a claim moves one address: write 10.0.0.9/32");
    }

    #[test]
    fn seed_000_loop_is_named() {
        // The cloud box routes the whole shared subnet to on-prem: the
        // addresses it owns itself would be sent back into the tunnel.
        let mut c = load(HYBRID_CLOUD);
        c.peers[0].allowed_ips.push(cidr("10.20.0.0/24")).unwrap();
        let r = validate(&c);
        let loops: std::vec::Vec<_> = r.problems.iter().filter(|p| p.code == Code::ClaimLoop).collect();
        assert_eq!(loops.len(), 2, "{}", show(&r));
        assert!(loops[0].message.contains("peer onprem"), "{}", loops[0].message);
    }

    #[test]
    fn all_problems_are_collected() {
        let mut c = load(R);
        c.segments[0].vni = 0;
        c.segments[0].udp_port = 0;
        c.peers[0].persistent_keepalive = Some(0);
        c.ports[0].mtu = 1;
        let r = validate(&c);
        for code in [Code::VniRange, Code::UdpPortZero, Code::KeepaliveZero, Code::MtuRange] {
            assert!(r.has(code), "{code:?} missing\n{}", show(&r));
        }
        assert_eq!(r.errors, 4);
    }

    #[test]
    fn streaming_sees_what_the_report_keeps() {
        let mut c = load(O);
        c.claims[0].address = cidr("10.20.0.2/24");
        let mut streamed = std::vec::Vec::new();
        validate_each(&c, &mut |p| streamed.push(p));
        let r = validate(&c);
        assert_eq!(streamed.as_slice(), r.problems.as_slice());
    }

    #[test]
    fn overflow_is_counted_and_nothing_panics() {
        let max = maximal_config();
        let r = validate(&max);
        assert_eq!(r.problems.len(), MAX_REPORTED);
        assert!(r.omitted > 0);
        assert_eq!(r.errors + r.warnings, r.problems.len() + r.omitted);
        for p in &r.problems {
            assert!(!p.path.is_empty());
        }
    }

    #[test]
    fn long_text_is_cut_visibly() {
        let mut s = heapless::String::<8>::new();
        let _ = Truncating(&mut s).write_str("abcdefghijkl");
        assert_eq!(s.as_str(), "abcde…");
        let mut s = heapless::String::<8>::new();
        let _ = Truncating(&mut s).write_str("abc");
        assert_eq!(s.as_str(), "abc");
    }
}
