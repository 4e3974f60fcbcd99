//! Counters: one per drop reason, a few per-event ones, and per claim.
//!
//! Every frame the pipeline does not transmit increments exactly one
//! [`DropReason`]. The control plane reads them through
//! `Dataplane::counters` / `Dataplane::claim_status`.

use crate::config::MAX_PORTS;

macro_rules! drop_reasons {
    ($($(#[doc = $doc:literal])* $name:ident = $text:literal,)*) => {
        /// Why a frame was not transmitted.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason {
            $($(#[doc = $doc])* $name,)*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];

            /// Stable snake_case name for status output.
            pub const fn name(self) -> &'static str {
                match self {
                    $(DropReason::$name => $text,)*
                }
            }
        }
    };
}

drop_reasons! {
    /// Frame handed in for a port that is not configured.
    UnknownPort = "unknown_port",
    /// Shorter than an Ethernet header.
    EthernetTruncated = "ethernet_truncated",
    /// Source MAC is one of ours (a reflection of our own frame).
    OwnSourceMac = "own_source_mac",
    /// Unicast to a MAC that is not ours, on a port that is not bridged.
    NotOurMac = "not_our_mac",
    /// L2 multicast (other than broadcast) on a port that is not bridged.
    Multicast = "multicast",
    /// Neither IPv4 nor ARP.
    UnsupportedEthertype = "unsupported_ethertype",
    /// ARP that is not Ethernet/IPv4, or truncated.
    ArpMalformed = "arp_malformed",
    /// ARP with a broadcast/multicast sender MAC.
    ArpBadSender = "arp_bad_sender",
    /// ARP request for an address we do not answer for on this port
    /// (unclaimed, claimed on another port, provider-secondary-ip, local claim).
    ArpNotOurs = "arp_not_ours",
    /// ARP probe (sender 0.0.0.0) for a claimed address: deliberately unanswered.
    ArpProbeForClaim = "arp_probe_for_claim",
    /// ARP request for a claim in conflict: not answered.
    ArpClaimInConflict = "arp_claim_in_conflict",
    /// ARP request for a disabled claim.
    ArpClaimInactive = "arp_claim_inactive",
    /// ARP request for a claim still probing for a live host (not yet capturing).
    ArpClaimProbing = "arp_claim_probing",
    /// Proxy-ARP reply suppressed by the per-claim rate limit.
    ArpReplyRateLimited = "arp_reply_rate_limited",
    /// ARP that revealed a live host on a claimed address (the claim is now in conflict).
    ArpConflict = "arp_conflict",
    /// ARP reply nobody asked for (does not create cache entries).
    ArpUnsolicited = "arp_unsolicited",
    /// IPv4 header truncated, bad version or lengths.
    Ipv4Malformed = "ipv4_malformed",
    /// IPv4 header checksum wrong.
    Ipv4BadChecksum = "ipv4_bad_checksum",
    /// Source address 0.0.0.0, broadcast, multicast or one of ours from outside.
    Ipv4BadSource = "ipv4_bad_source",
    /// Destination broadcast or multicast: not routed.
    Ipv4Broadcast = "ipv4_broadcast",
    /// A fragment addressed to the box: not reassembled.
    LocalFragment = "local_fragment",
    /// Addressed to the box, admitted by nobody (no service for it).
    LocalUnhandled = "local_unhandled",
    /// Addressed to the box, but the services layer's queue was full.
    LocalQueueFull = "local_queue_full",
    /// Addressed to the box on the WAN and not WireGuard (ICMP echo included).
    WanNotWireguard = "wan_not_wireguard",
    /// UDP truncated or with a bad checksum.
    UdpMalformed = "udp_malformed",
    /// No route (no default route configured).
    NoRoute = "no_route",
    /// To send from the WAN, which has no address (DHCP without a lease).
    WanNoAddress = "wan_no_address",
    /// A tunnel datagram for an IPv6 endpoint on an Ethernet WAN, whose
    /// underlay is IPv4 only (validation refuses IPv6 endpoints on the
    /// image; a peer can still roam to one only on a datagram WAN).
    UnderlayIpv6 = "underlay_ipv6",
    /// Addressed to a port without an address (a bridge-only segment port)
    /// and not bridged: there is nothing on the box to give it to.
    PortNoAddress = "port_no_address",
    /// TTL would reach zero (ICMP time exceeded sent, rate permitting).
    TtlExpired = "ttl_expired",
    /// DF packet larger than the next-hop MTU (ICMP frag-needed sent, rate permitting).
    FragmentationNeeded = "fragmentation_needed",
    /// Non-DF packet larger than the next-hop MTU: the box does not fragment.
    TooBigNoDf = "too_big_no_df",
    /// Decrypted packet whose inner source is outside the peer's allowed prefixes.
    TunnelSpoofedSource = "tunnel_spoofed_source",
    /// Packet from the tunnel that would go back into the tunnel (loop guard).
    TunnelLoop = "tunnel_loop",
    /// The tunnel refused a datagram (bad MAC, replay, unknown peer…).
    TunnelRejected = "tunnel_rejected",
    /// The tunnel could not encapsulate (no session, buffer too small…).
    TunnelEncapFailed = "tunnel_encap_failed",
    /// The tunnel returned something not usable (out of bounds, not IPv4).
    TunnelBadOutput = "tunnel_bad_output",
    /// The buffer had no room for the headers to prepend.
    NoHeadroom = "no_headroom",
    /// Waiting for ARP but the pending queue is full.
    PendingQueueFull = "pending_queue_full",
    /// Needed a new neighbour entry but every entry is being resolved.
    ArpCacheFull = "arp_cache_full",
    /// ARP resolution gave up after all retries.
    ArpResolutionFailed = "arp_resolution_failed",
    /// The port's transmit ring was full (counted per port in `Counters::tx_full`).
    TxFull = "tx_full",
    /// A frame waiting for ARP on a port that an apply removed.
    PortRemoved = "port_removed",
    /// VXLAN datagram truncated.
    VxlanMalformed = "vxlan_malformed",
    /// VXLAN header without the I flag.
    VxlanNoIFlag = "vxlan_no_i_flag",
    /// VXLAN for a VNI we do not carry.
    VxlanUnknownVni = "vxlan_unknown_vni",
    /// VXLAN from a source that is not a configured VTEP of the segment.
    VxlanUnknownVtep = "vxlan_unknown_vtep",
    /// VXLAN in the clear from a VTEP the box reaches through the tunnel
    /// (spoofed: that VTEP only speaks inside WireGuard).
    VxlanOutsideTunnel = "vxlan_outside_tunnel",
    /// Encapsulated frame would exceed the underlay MTU (never fragmented).
    VxlanOversize = "vxlan_oversize",
    /// Bridged frame for a MAC known to be on the local segment.
    BridgeLocalDestination = "bridge_local_destination",
    /// A new flow on a tracked path (NAT or firewall) while the connection
    /// table is full of established flows (they are never evicted for it).
    ConntrackFull = "conntrack_full",
    /// On a tracked path, a packet that belongs to no flow and cannot start
    /// one: TCP without SYN, an ICMP error about no known flow, ICMP that is
    /// neither echo nor an error leaving through NAT.
    ConntrackInvalid = "conntrack_invalid",
    /// An IPv4 fragment on a tracked path (not reassembled: ports unknown).
    ConntrackFragment = "conntrack_fragment",
    /// SNAT found no free source port (or ICMP identifier) for a new flow.
    NatPortExhausted = "nat_port_exhausted",
    /// Dropped by a firewall rule (counted per rule too).
    FirewallRule = "firewall_rule",
    /// Dropped by a firewall zone-pair policy or the default (counted per
    /// policy too).
    FirewallPolicy = "firewall_policy",
}

/// Number of drop reasons.
pub const DROP_REASONS: usize = DropReason::ALL.len();

/// Box-wide counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    /// Drops, indexed by `DropReason as usize`.
    pub drops: [u64; DROP_REASONS],
    /// Frames handed in, per port.
    pub rx_frames: [u64; MAX_PORTS],
    /// Frames handed back for transmission (in place or via `Transmit`), per port.
    pub tx_frames: [u64; MAX_PORTS],
    /// IPv4 packets routed.
    pub forwarded: u64,
    /// ARP replies for the box's own addresses.
    pub arp_replies_own: u64,
    /// ARP requests sent (resolution and retries).
    pub arp_requests_sent: u64,
    /// ARP replies/requests that updated the neighbour cache.
    pub arp_learned: u64,
    /// Packets for the box handed to the services layer.
    pub local_delivered: u64,
    /// Packets the box originated (services' answers) sent through the pipeline.
    pub local_sent: u64,
    /// ICMP errors sent.
    pub icmp_errors_sent: u64,
    /// ICMP errors suppressed by the rate limit.
    pub icmp_errors_rate_limited: u64,
    /// SYN/SYN-ACKs whose MSS was lowered.
    pub syns_clamped: u64,
    /// Datagrams handed to the tunnel for decryption.
    pub tunnel_rx: u64,
    /// Packets encrypted by the tunnel.
    pub tunnel_tx: u64,
    /// Tunnel control traffic consumed (handshakes, keepalives).
    pub tunnel_control: u64,
    /// Packets the tunnel kept for later (e.g. until a handshake completes).
    pub tunnel_held: u64,
    /// Frames encapsulated into VXLAN (each flood copy counts).
    pub vxlan_encap: u64,
    /// Frames decapsulated from VXLAN.
    pub vxlan_decap: u64,
    /// Frames flooded to all VTEPs (unknown unicast, broadcast, multicast).
    pub vxlan_floods: u64,
    /// MACs not learned because the FDB was full (traffic is flooded instead).
    pub fdb_full: u64,
    /// Neighbour entries evicted to make room.
    pub arp_evictions: u64,
    /// Frames lost to a full transmit ring, per port (also in `TxFull`).
    pub tx_full: [u64; MAX_PORTS],
    /// Claim state changes not recorded because nobody collected the events.
    pub claim_events_lost: u64,
    /// Flows SNAT translated.
    pub nat_flows: u64,
    /// Of those, flows whose source port (or ICMP identifier) had to change
    /// (a real collision; otherwise it is kept).
    pub nat_ports_rewritten: u64,
}

impl Default for Counters {
    fn default() -> Counters {
        Counters {
            drops: [0; DROP_REASONS],
            rx_frames: [0; MAX_PORTS],
            tx_frames: [0; MAX_PORTS],
            forwarded: 0,
            arp_replies_own: 0,
            arp_requests_sent: 0,
            arp_learned: 0,
            local_delivered: 0,
            local_sent: 0,
            icmp_errors_sent: 0,
            icmp_errors_rate_limited: 0,
            syns_clamped: 0,
            tunnel_rx: 0,
            tunnel_tx: 0,
            tunnel_control: 0,
            tunnel_held: 0,
            vxlan_encap: 0,
            vxlan_decap: 0,
            vxlan_floods: 0,
            fdb_full: 0,
            arp_evictions: 0,
            tx_full: [0; MAX_PORTS],
            claim_events_lost: 0,
            nat_flows: 0,
            nat_ports_rewritten: 0,
        }
    }
}

impl Counters {
    /// Count one drop.
    pub fn drop(&mut self, reason: DropReason) {
        if let Some(c) = self.drops.get_mut(reason as usize) {
            *c = c.saturating_add(1);
        }
    }

    /// Drops for one reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops.get(reason as usize).copied().unwrap_or(0)
    }

    /// All drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().fold(0u64, |a, b| a.saturating_add(*b))
    }

    /// Non-zero drop counters with their names.
    pub fn nonzero_drops(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|r| (*r, self.dropped(*r))).filter(|(_, n)| *n != 0)
    }
}

/// Packets and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flow {
    /// Packets.
    pub packets: u64,
    /// Bytes (IPv4 total length).
    pub bytes: u64,
}

impl Flow {
    pub(crate) fn add(&mut self, bytes: usize) {
        self.packets = self.packets.saturating_add(1);
        self.bytes = self.bytes.saturating_add(bytes as u64);
    }
}

/// Per-claim counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClaimCounters {
    /// Proxy-ARP replies sent.
    pub arp_replies: u64,
    /// Proxy-ARP replies suppressed by the rate limit.
    pub arp_replies_rate_limited: u64,
    /// Gratuitous ARPs sent.
    pub garps_sent: u64,
    /// ARP probes seen for the address (not answered).
    pub probes_seen: u64,
    /// Frames that showed the address live on a LAN.
    pub conflicts: u64,
    /// Packets to or from the address going into the tunnel.
    pub to_tunnel: Flow,
    /// Packets to or from the address coming out of the tunnel.
    pub from_tunnel: Flow,
    /// SYN/SYN-ACKs on this claim's path whose MSS was lowered.
    pub syns_clamped: u64,
    /// Packets for the address dropped by the loop guard.
    pub loops: u64,
    /// ARP probes (sender 0.0.0.0) the box sent for the address.
    pub probes_sent: u64,
    /// Probes answered by a live host (the address was in use).
    pub probes_answered: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_unique_and_counting() {
        for (i, a) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*a as usize, i);
            for b in &DropReason::ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
            }
        }
        let mut c = Counters::default();
        c.drop(DropReason::TunnelLoop);
        c.drop(DropReason::TunnelLoop);
        assert_eq!(c.dropped(DropReason::TunnelLoop), 2);
        assert_eq!(c.total_drops(), 2);
        assert_eq!(c.nonzero_drops().count(), 1);
    }
}
