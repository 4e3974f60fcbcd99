//! The lab's network parts: everything around the two routerd boxes of the
//! seed 000 and seed 003 scenarios that is not a box.
//!
//! - [`Underlay`] is the internet between the boxes' WAN ports: it answers ARP
//!   for each box's gateway, routes IPv4 between them, applies the cloud
//!   VM's 1:1 NAT or a site router's masquerade (ports kept, port forwards),
//!   and adds latency and loss on demand; a public address can be moved
//!   while it runs, to show roaming or a dynamic IP. Its gateways can run a
//!   site router's services: a DHCP server ([`DhcpServerConfig`]) and a DNS
//!   server answering from a zone of [`DnsRecord`]s that can change too.
//! - [`SimHost`] is a host on a box's LAN: a smoltcp stack with a MAC and
//!   one or more addresses that answers ARP and ping, pings (any size, DF
//!   set, for MTU probes), runs TCP echo
//!   and sink servers and transfers to them with an integrity check, records
//!   the MSS of every SYN and SYN-ACK at the wire, and can pose as a
//!   conflicting live host or ask who answers ARP for an address.
//!
//! Both attach to a QEMU NIC whose backend is
//! `routerd_qemu::NetBackend::Dgram { guest, harness }` through a
//! [`SocketPair`]: `SocketPair::facing_qemu(harness, guest)`. Each runs on its
//! own threads from `start` until `stop` (or drop), which joins them; every
//! method may be called from any thread while it runs, and every wait is
//! bounded by a timeout the caller gives.
//!
//! # How the lab runner uses it
//!
//! ```no_run
//! use routerd_lab::{Attachment, HostConfig, ListenMode, SimHost, SocketPair, Transfer, Underlay, UnderlayConfig};
//! use std::time::Duration;
//! # fn main() -> std::io::Result<()> {
//! # let run = std::path::Path::new("/tmp/lab");
//! let ip = |s: &str| s.parse::<std::net::Ipv4Addr>().unwrap();
//! // Socket paths the QEMU machines were given (NetBackend::Dgram).
//! let onprem_wan = SocketPair::facing_qemu(run.join("onprem-wan.h"), run.join("onprem-wan.g"));
//! let cloud_wan = SocketPair::facing_qemu(run.join("cloud-wan.h"), run.join("cloud-wan.g"));
//! let underlay = Underlay::start(UnderlayConfig::new(vec![
//!     Attachment::new("onprem", onprem_wan, "192.168.1.35/24".parse().unwrap(), ip("192.168.1.1")),
//!     Attachment::new("cloud", cloud_wan, "10.0.0.4/24".parse().unwrap(), ip("10.0.0.1"))
//!         .with_public(ip("203.0.113.10")),
//! ]))?;
//!
//! // The host on each LAN, holding the addresses the claims move.
//! let onprem_host = SimHost::start(HostConfig::new(
//!     "onprem-host",
//!     SocketPair::facing_qemu(run.join("onprem-lan.h"), run.join("onprem-lan.g")),
//!     [0x02, 0, 0, 0, 0x10, 0x10],
//!     vec!["10.20.0.10/24".parse().unwrap()],
//! ))?;
//! // The cloud host reaches 10.20.0.10 the way the provider fabric delivers
//! // a secondary IP: straight to the cloud box's NIC, with no ARP for it.
//! let cloud_box_lan_mac = [0x52, 0x54, 0, 0, 0x02, 0x01];
//! let cloud_host = SimHost::start(
//!     HostConfig::new(
//!         "cloud-host",
//!         SocketPair::facing_qemu(run.join("cloud-lan.h"), run.join("cloud-lan.g")),
//!         [0x02, 0, 0, 0, 0x20, 0x11],
//!         vec!["10.20.0.11/24".parse().unwrap(), "10.20.0.50/24".parse().unwrap()],
//!     )
//!     .with_static_neighbor(ip("10.20.0.10"), cloud_box_lan_mac),
//! )?;
//!
//! // (boot and provision the boxes, run doctor …)
//! cloud_host.listen(5001, ListenMode::Sink)?;
//! let ping = onprem_host.ping(ip("10.20.0.50"), 5, Duration::from_secs(2));
//! let there = onprem_host.transfer(ip("10.20.0.50"), 5001, 1 << 20, Duration::from_secs(60));
//! println!("{ping}\n{there}"); // "SYN left with MSS 1460, SYN-ACK came back with 1380" …
//! let arrived = cloud_host.syn_log(); // the SYN as it arrived: its MSS after the clamp
//! // And back, from the claimed address (the source picks the reply path).
//! onprem_host.listen(5002, ListenMode::Sink)?;
//! let back = cloud_host.ping_from(ip("10.20.0.50"), ip("10.20.0.10"), 5, Duration::from_secs(2));
//! let home = cloud_host.transfer_with(&Transfer::new(ip("10.20.0.10"), 5002, 1 << 20).from(ip("10.20.0.50")));
//!
//! underlay.set_latency(Duration::from_millis(30));
//! underlay.set_loss(2.0);
//! underlay.set_public_address(1, Some(ip("203.0.113.20"))); // the cloud box roams
//! println!("{:?}", underlay.all_counters());
//! # let _ = (arrived, there, back, home); Ok(()) }
//! ```
//!
//! Counters: [`Underlay::counters`] per attachment (frames in/out, ARP
//! answered, routed, NAT rewrites, drops by [`DropReason`]) and
//! [`SimHost::counters`]; both are snapshots that can be read at any time.
//! A frame that one end handed over shows up in the other end's `frames_in`.
//!
//! Doctor's conflict check: `onprem_host.announce_conflict(addr)` makes the
//! host answer ARP for a claimed address (and send a gratuitous ARP), as a
//! forgotten VM still holding it would; `arp_probe(addr, timeout)` tells
//! whether (and which MAC) answers ARP for an address on the LAN, to check
//! that a box proxy-ARPs a claim, or that it stopped.

mod dhcp;
mod dns;
mod frame;
pub mod host;
mod link;
mod nat;
mod rng;
pub mod underlay;

pub use dhcp::{DhcpCounters, DhcpServerConfig};
pub use dns::DnsRecord;
pub use nat::{PortForward, Transport};

pub use host::{
    HostConfig, HostCounters, ListenMode, PingReport, ServerRecord, SimHost, SynDirection, SynRecord, Transfer, TransferReport,
};
pub use link::SocketPair;
pub use underlay::{Attachment, AttachmentCounters, DropReason, Underlay, UnderlayConfig};

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An Ethernet address.
pub type Mac = [u8; 6];

/// A MAC the way QEMU and the box's console print it (`52:54:00:12:34:56`).
pub fn format_mac(mac: Mac) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// An IPv4 address with its prefix length, as in `10.20.0.11/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Cidr {
    /// `None` when `prefix` is above 32.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Cidr> {
        (prefix <= 32).then_some(Cidr { addr, prefix })
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in this address's subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::from(self.netmask());
        u32::from(self.addr) & mask == u32::from(ip) & mask
    }

    /// The subnet mask (`255.255.255.0` for a /24).
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Why a [`Cidr`] did not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CidrError(String);

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{:?} is not an IPv4 address with a prefix length (like 10.20.0.11/24)", self.0)
    }
}

impl std::error::Error for CidrError {}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let err = || CidrError(s.to_string());
        let (addr, prefix) = s.split_once('/').ok_or_else(err)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| err())?;
        let prefix: u8 = prefix.parse().map_err(|_| err())?;
        Cidr::new(addr, prefix).ok_or_else(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_prints_and_contains() {
        let c: Cidr = "10.20.0.11/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.20.0.11/24");
        assert!(c.contains(Ipv4Addr::new(10, 20, 0, 50)));
        assert!(!c.contains(Ipv4Addr::new(10, 20, 1, 50)));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(8, 8, 8, 8)));
        let one: Cidr = "10.0.0.4/32".parse().unwrap();
        assert!(one.contains(Ipv4Addr::new(10, 0, 0, 4)) && !one.contains(Ipv4Addr::new(10, 0, 0, 5)));
        assert_eq!(c.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!((all.netmask(), one.netmask()), (Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST));
        for bad in ["10.0.0.1", "10.0.0.1/33", "10.0.0/24", "x/1", "10.0.0.1/-1", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn mac_prints_like_qemu() {
        assert_eq!(format_mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]), "52:54:00:12:34:56");
    }
}
