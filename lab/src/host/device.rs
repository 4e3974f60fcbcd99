//! The simulated host's NIC: smoltcp's `Device` over a [`Link`], with the
//! wire-level observations the lab reports (SYN MSS in both directions) taken
//! on the way in and out, so they show what actually crossed the wire.

use super::{SynDirection, SynRecord};
use crate::frame::{Arp, Syn};
use crate::link::Link;
use crate::Mac;
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant as SmolInstant;
use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::Instant;

/// Frames waiting for the stack; beyond this, new ones are dropped and counted.
pub(super) const RX_QUEUE: usize = 512;
/// SYN records kept; the oldest go first.
pub(super) const SYN_LOG: usize = 1024;

/// Counters of the device side (see `HostCounters` for their meaning).
#[derive(Clone, Debug, Default)]
pub(super) struct DeviceCounters {
    pub rx_queue_full: u64,
    pub syn_log_evicted: u64,
}

/// What transmitting needs, split from the receive queue so smoltcp can hold
/// a receive and a transmit token at once.
pub(super) struct Wire {
    link: Link,
    buf: Vec<u8>,
    epoch: Instant,
    pub counters: DeviceCounters,
    pub syn_log: VecDeque<SynRecord>,
    /// Addresses the host never asks for by ARP: their MAC is fixed.
    pub static_neighbors: Vec<(Ipv4Addr, Mac)>,
    /// Frames made up for the stack (answers for static neighbours), to be
    /// received after the current poll.
    pub injected: Vec<Vec<u8>>,
}

impl Wire {
    pub(super) fn link(&self) -> &Link {
        &self.link
    }

    /// Sends a frame smoltcp made, unless it asks for a static neighbour.
    fn send_from_stack(&mut self, frame: &[u8]) {
        if let Some(ask) = Arp::parse(frame).filter(|a| a.request && a.sender_ip != a.target_ip) {
            if let Some(&(ip, mac)) = self.static_neighbors.iter().find(|(ip, _)| *ip == ask.target_ip) {
                // Like a permanent neighbour entry: answer the stack's own
                // question instead of asking the LAN.
                self.injected.push(Arp::reply_to(&ask, mac, ip).to_frame());
                return;
            }
        }
        self.send(frame);
    }

    /// Sends one frame to the LAN as it is.
    pub(super) fn send(&mut self, frame: &[u8]) {
        self.observe(frame, SynDirection::Sent);
        self.link.send(frame);
    }

    /// Records a SYN or SYN-ACK crossing the wire.
    pub(super) fn observe(&mut self, frame: &[u8], direction: SynDirection) {
        let Some(syn) = Syn::parse(frame) else { return };
        if self.syn_log.len() >= SYN_LOG {
            self.syn_log.pop_front();
            self.counters.syn_log_evicted += 1;
        }
        self.syn_log.push_back(SynRecord {
            at: self.epoch.elapsed(),
            direction,
            src: syn.src,
            dst: syn.dst,
            syn_ack: syn.ack,
            mss: syn.mss,
        });
    }
}

pub(super) struct LinkDevice {
    pub rx: VecDeque<Vec<u8>>,
    pub wire: Wire,
    mtu: usize,
}

impl LinkDevice {
    /// `mtu` is the IP MTU (1500 on Ethernet).
    pub(super) fn new(link: Link, mtu: usize, epoch: Instant, static_neighbors: Vec<(Ipv4Addr, Mac)>) -> LinkDevice {
        LinkDevice {
            rx: VecDeque::new(),
            wire: Wire {
                link,
                buf: Vec::new(),
                epoch,
                counters: DeviceCounters::default(),
                syn_log: VecDeque::new(),
                static_neighbors,
                injected: Vec::new(),
            },
            mtu,
        }
    }

    /// Hands the made-up frames to the stack; true if there were any.
    pub(super) fn take_injected(&mut self) -> bool {
        let any = !self.wire.injected.is_empty();
        for f in self.wire.injected.drain(..) {
            if self.rx.len() < RX_QUEUE {
                self.rx.push_back(f);
            }
        }
        any
    }

    /// Queues a received frame for the stack.
    pub(super) fn push_rx(&mut self, frame: Vec<u8>) {
        self.wire.observe(&frame, SynDirection::Received);
        if self.rx.len() >= RX_QUEUE {
            self.wire.counters.rx_queue_full += 1;
            return;
        }
        self.rx.push_back(frame);
    }
}

pub(super) struct RxToken(Vec<u8>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

pub(super) struct TxToken<'a>(&'a mut Wire);

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // One buffer reused for every frame.
        let mut buf = std::mem::take(&mut self.0.buf);
        buf.clear();
        buf.resize(len, 0);
        let r = f(&mut buf);
        self.0.send_from_stack(&buf);
        self.0.buf = buf;
        r
    }
}

impl phy::Device for LinkDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: SmolInstant) -> Option<(RxToken, TxToken<'_>)> {
        let frame = self.rx.pop_front()?;
        Some((RxToken(frame), TxToken(&mut self.wire)))
    }

    fn transmit(&mut self, _now: SmolInstant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut self.wire))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu.saturating_add(crate::frame::ETHERNET_HEADER);
        caps
    }
}
