//! The DHCP server of a site router: what hands a box on `address = "dhcp"`
//! its WAN address, gateway and DNS servers.
//!
//! One server per attachment ([`Attachment::with_dhcp_server`]), at the
//! attachment's gateway address, leasing exactly one address — the
//! attachment's — to the first client that asks, like a home router with
//! one device on its LAN (a reservation). It answers DISCOVER with OFFER and
//! REQUEST (selecting, init-reboot, renewing, rebinding) with ACK or NAK,
//! takes RELEASE and DECLINE, and ignores the rest (RFC 2131 §4.3).
//! Replies go where §4.1 says: to `ciaddr` when the client has one, else
//! broadcast when the client set the broadcast flag, else to the offered
//! address at the client's MAC; a NAK is always broadcast.
//!
//! The packet format is smoltcp's (`DhcpPacket`, `DhcpRepr`): the same code
//! the box's client parses with, so a field the two disagree on shows up in
//! the lab, not in the field. Sans-I/O: a parsed datagram and `now` in, a
//! frame out; nothing here panics on input.
//!
//! [`Attachment::with_dhcp_server`]: crate::Attachment::with_dhcp_server

use crate::frame::{udp_frame, UdpIn, BROADCAST};
use crate::{Cidr, Mac};
use smoltcp::wire::{DhcpMessageType, DhcpOption, DhcpPacket, DhcpRepr, DHCP_CLIENT_PORT, DHCP_SERVER_PORT};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// DHCP option 6 (domain name servers): sent as an extra option so the
/// list is not limited by smoltcp's own field.
const OPT_DNS: u8 = 6;
/// BOOTP's minimum message (RFC 1542 §2.1): some clients drop shorter ones.
const MIN_MESSAGE: usize = 300;
/// DNS servers one reply carries.
const MAX_DNS: usize = 3;

/// What a site router's DHCP server hands out besides the address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhcpServerConfig {
    /// Lease time (option 51); the client renews at half of it.
    pub lease_secs: u32,
    /// DNS servers (option 6), at most 3; usually the router itself.
    pub dns: Vec<Ipv4Addr>,
}

impl DhcpServerConfig {
    pub fn new(lease_secs: u32, dns: Vec<Ipv4Addr>) -> DhcpServerConfig {
        DhcpServerConfig { lease_secs, dns }
    }
}

/// What one DHCP server did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DhcpCounters {
    pub discovers: u64,
    pub offers: u64,
    pub requests: u64,
    pub acks: u64,
    /// ACKs to a client that already held the lease (`ciaddr` set: T1
    /// renewal or T2 rebinding).
    pub renewals: u64,
    pub naks: u64,
    pub releases: u64,
    pub declines: u64,
    /// Messages taken without an answer: another server's selection, a
    /// second client when the one address is leased, INFORM, replies.
    pub ignored: u64,
    /// The client holding the lease now.
    pub leased_to: Option<Mac>,
}

/// Why a datagram to the server was not a DHCP request it could read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Malformed;

#[derive(Clone, Copy, Debug)]
struct Lease {
    client: Mac,
    granted: Instant,
}

/// One attachment's server.
#[derive(Debug)]
pub(crate) struct DhcpServer {
    server_ip: Ipv4Addr,
    server_mac: Mac,
    /// The one address it leases, with the subnet it tells the client.
    address: Cidr,
    router: Ipv4Addr,
    dns: Vec<Ipv4Addr>,
    lease_secs: u32,
    lease: Option<Lease>,
    pub counters: DhcpCounters,
}

impl DhcpServer {
    /// A server at `server_ip`/`server_mac` (the gateway) leasing `address`
    /// with `router` as the default gateway.
    pub(crate) fn new(server_ip: Ipv4Addr, server_mac: Mac, address: Cidr, router: Ipv4Addr, config: &DhcpServerConfig) -> DhcpServer {
        DhcpServer {
            server_ip,
            server_mac,
            address,
            router,
            dns: config.dns.iter().copied().take(MAX_DNS).collect(),
            lease_secs: config.lease_secs,
            lease: None,
            counters: DhcpCounters::default(),
        }
    }

    /// Whether this datagram is for the server: UDP 68 → 67, broadcast or to
    /// the server's address.
    pub(crate) fn wants(&self, udp: &UdpIn) -> bool {
        udp.dst.port() == DHCP_SERVER_PORT
            && udp.src.port() == DHCP_CLIENT_PORT
            && (*udp.dst.ip() == Ipv4Addr::BROADCAST || *udp.dst.ip() == self.server_ip)
    }

    /// Whether `client` may have the address now: nobody holds it, the
    /// client does, or the holder's lease ran out.
    fn available_to(&self, client: Mac, now: Instant) -> bool {
        match self.lease {
            None => true,
            Some(l) => l.client == client || now.duration_since(l.granted) >= Duration::from_secs(u64::from(self.lease_secs)),
        }
    }

    /// Answers one message; `Ok(None)` when it needs no answer.
    pub(crate) fn handle(&mut self, now: Instant, udp: &UdpIn) -> Result<Option<Vec<u8>>, Malformed> {
        let packet = DhcpPacket::new_checked(udp.payload).map_err(|_| Malformed)?;
        let req = DhcpRepr::parse(&packet).map_err(|_| Malformed)?;
        let client = req.client_hardware_address.0;
        let reply = match req.message_type {
            DhcpMessageType::Discover => {
                self.counters.discovers += 1;
                if !self.available_to(client, now) {
                    self.counters.ignored += 1;
                    return Ok(None);
                }
                self.counters.offers += 1;
                DhcpMessageType::Offer
            }
            DhcpMessageType::Request => {
                self.counters.requests += 1;
                if req.server_identifier.is_some_and(|s| s != self.server_ip) {
                    // The client took another server's offer.
                    self.counters.ignored += 1;
                    return Ok(None);
                }
                let asked = req.requested_ip.or(Some(req.client_ip).filter(|a| !a.is_unspecified()));
                if asked == Some(self.address.addr()) && self.available_to(client, now) {
                    let held = self.lease.is_some_and(|l| l.client == client);
                    if held && !req.client_ip.is_unspecified() {
                        self.counters.renewals += 1;
                    }
                    self.lease = Some(Lease { client, granted: now });
                    self.counters.leased_to = Some(client);
                    self.counters.acks += 1;
                    DhcpMessageType::Ack
                } else {
                    self.counters.naks += 1;
                    DhcpMessageType::Nak
                }
            }
            DhcpMessageType::Release | DhcpMessageType::Decline => {
                if req.message_type == DhcpMessageType::Release {
                    self.counters.releases += 1;
                } else {
                    self.counters.declines += 1;
                }
                if self.lease.is_some_and(|l| l.client == client) {
                    self.lease = None;
                    self.counters.leased_to = None;
                }
                return Ok(None);
            }
            _ => {
                self.counters.ignored += 1;
                return Ok(None);
            }
        };
        Ok(Some(self.reply(&req, reply)))
    }

    /// The OFFER, ACK or NAK to `req`, as a frame.
    fn reply(&self, req: &DhcpRepr, kind: DhcpMessageType) -> Vec<u8> {
        let nak = kind == DhcpMessageType::Nak;
        let dns: Vec<u8> = self.dns.iter().flat_map(|a| a.octets()).collect();
        let extra = [DhcpOption { kind: OPT_DNS, data: &dns }];
        let repr = DhcpRepr {
            message_type: kind,
            transaction_id: req.transaction_id,
            secs: 0,
            client_hardware_address: req.client_hardware_address,
            client_ip: if kind == DhcpMessageType::Ack { req.client_ip } else { Ipv4Addr::UNSPECIFIED },
            your_ip: if nak { Ipv4Addr::UNSPECIFIED } else { self.address.addr() },
            server_ip: Ipv4Addr::UNSPECIFIED,
            router: (!nak).then_some(self.router),
            subnet_mask: (!nak).then_some(self.address.netmask()),
            relay_agent_ip: Ipv4Addr::UNSPECIFIED,
            broadcast: req.broadcast,
            requested_ip: None,
            client_identifier: None,
            server_identifier: Some(self.server_ip),
            parameter_request_list: None,
            dns_servers: None,
            max_size: None,
            lease_duration: (!nak).then_some(self.lease_secs),
            renew_duration: None,
            rebind_duration: None,
            additional_options: if nak || dns.is_empty() { &[] } else { &extra },
        };
        let mut message = vec![0u8; repr.buffer_len().max(MIN_MESSAGE)];
        // buffer_len() counts every option emit() writes, so this cannot fail.
        let _ = repr.emit(&mut DhcpPacket::new_unchecked(&mut message[..]));
        // RFC 2131 §4.1, without relay agents.
        let client_mac = req.client_hardware_address.0;
        let (dst_mac, dst_ip) = if nak {
            (BROADCAST, Ipv4Addr::BROADCAST)
        } else if !req.client_ip.is_unspecified() {
            (client_mac, req.client_ip)
        } else if req.broadcast {
            (BROADCAST, Ipv4Addr::BROADCAST)
        } else {
            (client_mac, self.address.addr())
        };
        udp_frame(
            self.server_mac,
            dst_mac,
            SocketAddrV4::new(self.server_ip, DHCP_SERVER_PORT),
            SocketAddrV4::new(dst_ip, DHCP_CLIENT_PORT),
            &message,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::EthernetAddress;

    fn eth(mac: Mac) -> EthernetAddress {
        EthernetAddress(mac)
    }

    const GW_MAC: Mac = [0x02, 0x75, 0x6c, 0, 0, 2];
    const BOX: Mac = [0x52, 0x54, 0, 0x1a, 2, 1];
    const OTHER: Mac = [0x52, 0x54, 0, 0x1a, 9, 9];

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn server() -> DhcpServer {
        let config = DhcpServerConfig::new(600, vec![ip("192.168.20.1")]);
        DhcpServer::new(ip("192.168.20.1"), GW_MAC, "192.168.20.100/24".parse().unwrap(), ip("192.168.20.1"), &config)
    }

    /// A client message as a frame (from 0.0.0.0 broadcast unless `ciaddr`).
    fn message(kind: DhcpMessageType, mac: Mac, ciaddr: Option<&str>, requested: Option<&str>, server_id: Option<&str>) -> Vec<u8> {
        let repr = DhcpRepr {
            message_type: kind,
            transaction_id: 0x1234_5678,
            secs: 0,
            client_hardware_address: eth(mac),
            client_ip: ciaddr.map(ip).unwrap_or(Ipv4Addr::UNSPECIFIED),
            your_ip: Ipv4Addr::UNSPECIFIED,
            server_ip: Ipv4Addr::UNSPECIFIED,
            router: None,
            subnet_mask: None,
            relay_agent_ip: Ipv4Addr::UNSPECIFIED,
            broadcast: false,
            requested_ip: requested.map(ip),
            client_identifier: Some(eth(mac)),
            server_identifier: server_id.map(ip),
            parameter_request_list: Some(&[1, 3, 6]),
            dns_servers: None,
            max_size: Some(1432),
            lease_duration: None,
            renew_duration: None,
            rebind_duration: None,
            additional_options: &[],
        };
        let mut payload = vec![0u8; repr.buffer_len()];
        repr.emit(&mut DhcpPacket::new_unchecked(&mut payload[..])).unwrap();
        let (src, dst, dst_mac) = match ciaddr {
            Some(c) => (ip(c), ip("192.168.20.1"), GW_MAC),
            None => (Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, BROADCAST),
        };
        udp_frame(mac, dst_mac, SocketAddrV4::new(src, 68), SocketAddrV4::new(dst, 67), &payload)
    }

    /// A reply: (dst MAC, dst IP, message type, yiaddr, DNS servers, lease time).
    type Reply = (Mac, Ipv4Addr, DhcpMessageType, Ipv4Addr, Vec<Ipv4Addr>, Option<u32>);

    /// Sends `frame` to the server; its reply, if any.
    fn ask(s: &mut DhcpServer, now: Instant, frame: &[u8]) -> Option<Reply> {
        let udp = UdpIn::parse(frame).unwrap();
        assert!(s.wants(&udp));
        let reply = s.handle(now, &udp).unwrap()?;
        let back = UdpIn::parse(&reply).expect("a valid UDP frame");
        assert_eq!((back.src, back.dst.port()), (SocketAddrV4::new(ip("192.168.20.1"), 67), 68));
        assert!(back.payload.len() >= MIN_MESSAGE);
        let p = DhcpPacket::new_checked(back.payload).unwrap();
        let r = DhcpRepr::parse(&p).unwrap();
        assert_eq!(r.transaction_id, 0x1234_5678);
        assert_eq!(r.server_identifier, Some(ip("192.168.20.1")));
        let dns = r.dns_servers.map(|d| d.iter().copied().collect()).unwrap_or_default();
        Some((reply[..6].try_into().unwrap(), *back.dst.ip(), r.message_type, r.your_ip, dns, r.lease_duration))
    }

    #[test]
    fn discover_request_renew_release() {
        let mut s = server();
        let t0 = Instant::now();
        let (mac, to, kind, yiaddr, dns, lease) = ask(&mut s, t0, &message(DhcpMessageType::Discover, BOX, None, None, None)).unwrap();
        assert_eq!((mac, to, kind, yiaddr), (BOX, ip("192.168.20.100"), DhcpMessageType::Offer, ip("192.168.20.100")));
        assert_eq!((dns, lease), (vec![ip("192.168.20.1")], Some(600)));
        let req = message(DhcpMessageType::Request, BOX, None, Some("192.168.20.100"), Some("192.168.20.1"));
        let (_, _, kind, yiaddr, _, _) = ask(&mut s, t0, &req).unwrap();
        assert_eq!((kind, yiaddr), (DhcpMessageType::Ack, ip("192.168.20.100")));
        assert_eq!(s.counters.leased_to, Some(BOX));
        // T1: a unicast renewal from the leased address, answered to it.
        let renew = message(DhcpMessageType::Request, BOX, Some("192.168.20.100"), None, None);
        let (mac, to, kind, _, _, _) = ask(&mut s, t0 + Duration::from_secs(300), &renew).unwrap();
        assert_eq!((mac, to, kind), (BOX, ip("192.168.20.100"), DhcpMessageType::Ack));
        assert_eq!(s.counters.renewals, 1);
        // Another client gets nothing while the lease runs.
        assert!(ask(&mut s, t0 + Duration::from_secs(301), &message(DhcpMessageType::Discover, OTHER, None, None, None)).is_none());
        let taken = message(DhcpMessageType::Request, OTHER, None, Some("192.168.20.100"), None);
        assert_eq!(ask(&mut s, t0 + Duration::from_secs(301), &taken).unwrap().2, DhcpMessageType::Nak);
        assert!(ask(&mut s, t0, &message(DhcpMessageType::Release, BOX, Some("192.168.20.100"), None, None)).is_none());
        assert_eq!(s.counters.leased_to, None);
        assert_eq!(ask(&mut s, t0, &message(DhcpMessageType::Discover, OTHER, None, None, None)).unwrap().2, DhcpMessageType::Offer);
        let c = &s.counters;
        assert_eq!((c.discovers, c.offers, c.requests, c.acks, c.naks, c.releases, c.ignored), (3, 2, 3, 2, 1, 1, 1));
    }

    #[test]
    fn wrong_address_is_naked_broadcast_and_another_servers_choice_ignored() {
        let mut s = server();
        let now = Instant::now();
        let wrong = message(DhcpMessageType::Request, BOX, None, Some("192.168.20.7"), None);
        let (mac, to, kind, _, _, _) = ask(&mut s, now, &wrong).unwrap();
        assert_eq!((mac, to, kind), (BROADCAST, Ipv4Addr::BROADCAST, DhcpMessageType::Nak));
        let elsewhere = message(DhcpMessageType::Request, BOX, None, Some("192.168.20.100"), Some("192.168.20.2"));
        assert!(ask(&mut s, now, &elsewhere).is_none());
        assert_eq!(s.counters.leased_to, None);
    }

    #[test]
    fn an_expired_lease_goes_to_the_next_client() {
        let mut s = server();
        let t0 = Instant::now();
        let req = |mac| message(DhcpMessageType::Request, mac, None, Some("192.168.20.100"), None);
        assert_eq!(ask(&mut s, t0, &req(BOX)).unwrap().2, DhcpMessageType::Ack);
        assert_eq!(ask(&mut s, t0 + Duration::from_secs(599), &req(OTHER)).unwrap().2, DhcpMessageType::Nak);
        assert_eq!(ask(&mut s, t0 + Duration::from_secs(600), &req(OTHER)).unwrap().2, DhcpMessageType::Ack);
        assert_eq!(s.counters.leased_to, Some(OTHER));
    }

    #[test]
    fn garbage_is_malformed_never_a_panic() {
        let mut s = server();
        let now = Instant::now();
        let good = message(DhcpMessageType::Discover, BOX, None, None, None);
        let udp = UdpIn::parse(&good).unwrap();
        for cut in 0..udp.payload.len() {
            let short = UdpIn { payload: &udp.payload[..cut], ..udp };
            let _ = s.handle(now, &short);
        }
        let mut junk = udp.payload.to_vec();
        for i in 0..junk.len() {
            junk[i] ^= 0x5a;
            let _ = s.handle(now, &UdpIn { payload: &junk, ..udp });
        }
        assert_eq!(s.handle(now, &UdpIn { payload: &[0xa5; 40], ..udp }), Err(Malformed));
    }
}
