//! The forwarding turn: NICs ⇄ the node's dataplane and WireGuard, once per
//! loop iteration, the same on every platform that drives Ethernet devices.
//!
//! A platform owns its devices and its clock; [`Forwarder::turn`] does the
//! rest: a bounded batch of received frames lent by every NIC (the driver's
//! own buffers, the frame at `HEADROOM`: `NetDevice::lend`), each frame
//! through `Dataplane::process_and_transmit` where the NIC put it (which
//! seals or opens WireGuard in place and counts a full transmit ring as a
//! drop; sending is the one copy, into the transmit slot), the buffer given
//! back to its NIC right after,
//! extra frames straight to the NIC of their port, packets for the box to
//! the services layer (answered after the batch), the dataplane's timers
//! when due or when traffic moved, the DHCP client's lease changes applied,
//! the drivers' reclaim/refill, and what happened (claim transitions,
//! leases) handed to the platform's log. The image runs it over
//! its PCI NICs, the host tests over in-memory devices
//! (`routerd_netdev::testing`). Every received frame (as received) and
//! every sent frame passes the node's `Capture` (`crate::capture`) on the
//! way: one branch per frame while no capture runs.
//!
//! A NIC of `Medium::Datagram` (routerd-host's WAN: a UDP socket, and a
//! TUN for its IP side) goes through the same turn: its loans are UDP
//! payloads with their sender (`NetDevice::rx_source`), or bare IPv4
//! packets, into `Dataplane::process_datagram_and_transmit`; the tunnel's
//! datagrams leave through `NetDevice::send_datagram`.
//!
//! NICs are indexed in contract order (`lan0`, `wan0`, `lan1`, …) — the
//! order the node's NIC list was given in.

use routerd_dataplane::{self as dp, FrameBuf, Instant, PortId, Transmit};
use routerd_netdev::{Medium, NetDevice, RxLoan, TxToken};

use crate::capture::Tap;
use crate::node::{Event, Node};
use crate::services::WithServices;

/// Frames taken from one NIC per turn, unless the platform picks another
/// batch ([`Forwarder::with_batch`]): the image's.
pub const BATCH: usize = 32;

// Drivers leave the headroom the dataplane prepends tunnel headers into
// (`routerd_netdev` repeats the number because it depends on nothing).
const _: () = assert!(routerd_netdev::RX_HEADROOM == dp::HEADROOM);

/// The platform's NICs, by contract index.
pub trait Nics {
    /// The device type.
    type Dev: NetDevice;
    /// How many NIC slots there are (some may be empty).
    fn slots(&self) -> usize;
    /// The NIC at `i`, if there is one.
    fn nic(&mut self, i: usize) -> Option<&mut Self::Dev>;
}

impl<D: NetDevice> Nics for [D] {
    type Dev = D;
    fn slots(&self) -> usize {
        self.len()
    }
    fn nic(&mut self, i: usize) -> Option<&mut D> {
        self.get_mut(i)
    }
}

/// Extra frames from the dataplane go straight to the NIC of their port.
struct NicTransmit<'a, N: Nics + ?Sized> {
    nics: &'a mut N,
    nic_of_port: &'a [usize],
}

impl<N: Nics + ?Sized> Transmit for NicTransmit<'_, N> {
    fn send(&mut self, port: PortId, frame: &[u8]) -> bool {
        let Some(&i) = self.nic_of_port.get(port.index()) else { return false };
        let Some(n) = self.nics.nic(i) else { return false };
        match n.transmit() {
            Some(tx) => {
                tx.send(frame.len(), |out| {
                    if let Some(src) = frame.get(..out.len()) {
                        out.copy_from_slice(src);
                    }
                });
                true
            }
            None => false,
        }
    }

    fn send_datagram(&mut self, port: PortId, to: dp::Endpoint, payload: &[u8]) -> bool {
        let Some(&i) = self.nic_of_port.get(port.index()) else { return false };
        self.nics.nic(i).is_some_and(|n| n.send_datagram(to, payload))
    }
}

/// The loans of one NIC's batch of up to `B` frames, between `lend` and
/// `give_back` (no frame buffers of its own: frames are processed where the
/// NIC received them).
pub struct Forwarder<const B: usize = BATCH> {
    loans: [Option<RxLoan>; B],
}

impl Default for Forwarder {
    fn default() -> Self {
        Forwarder::new()
    }
}

impl Forwarder {
    /// No loans held; batches of [`BATCH`].
    pub const fn new() -> Forwarder {
        Forwarder::with_batch()
    }
}

impl<const B: usize> Forwarder<B> {
    /// No loans held; batches of `B` frames per NIC and turn. routerd-host
    /// takes 64, what one `recvmmsg`/`sendmmsg` pair moves cheaply, where
    /// every turn also costs a trip through its runtime.
    pub const fn with_batch() -> Forwarder<B> {
        Forwarder { loans: [const { None }; B] }
    }

    /// One turn at `now`. Claim transitions and DHCP leases go to `log`.
    /// True when any NIC had frames (the platform may then skip its idle
    /// pause).
    ///
    /// Each NIC lends a batch and is then free again: the dataplane may
    /// transmit to any NIC, this one included, while it works on the lent
    /// frames. Every loan is given back to its NIC in the same turn, as soon
    /// as its frame is done.
    pub fn turn<R, N>(&mut self, node: &mut Node<R>, now: Instant, nics: &mut N, log: &mut dyn FnMut(Event)) -> bool
    where
        R: rand_core::RngCore + rand_core::CryptoRng,
        N: Nics + ?Sized,
    {
        let mut busy = false;
        node.capture().tick(now);
        if node.capture().is_on() {
            if let Some(f) = node.forwarding() {
                let c = f.dataplane.config();
                let wan = c.wan().and_then(|w| c.ports.get(w.index()).map(|p| (w, p)));
                let address = wan.and_then(|(_, p)| p.address).unwrap_or(core::net::Ipv4Addr::UNSPECIFIED);
                let bare_ip = wan.filter(|(_, p)| p.medium == Medium::Datagram).map(|(w, _)| w);
                f.capture.set_underlay(dp::Endpoint::from((address, c.tunnel.listen_port)), bare_ip);
            }
        }
        for i in 0..nics.slots() {
            let port = node.port_of_nic(i);
            let Some(n) = nics.nic(i) else { continue };
            let datagram = n.capabilities().medium == Medium::Datagram;
            let Some(port) = port else {
                // A NIC the configuration does not use (or none yet): keep
                // its ring moving, and count what it drops.
                let dropped = n.receive(B, &mut |_| {});
                node.count_unbound(dropped);
                continue;
            };
            // The slots are empty: every loan of the last batch was taken.
            let count = n.lend(&mut self.loans);
            busy |= count > 0;
            let batch = self.loans.iter_mut().take(count);
            match node.forwarding() {
                Some(mut f) => {
                    let mut nic_tx = NicTransmit { nics: &mut *nics, nic_of_port: f.nic_of_port };
                    for slot in batch {
                        let Some(mut loan) = slot.take() else { continue };
                        let from = if datagram { nic_tx.nics.nic(i).and_then(|n| n.rx_source(&loan)) } else { None };
                        // As received, before the dataplane rewrites it in place.
                        match from {
                            Some(from) => f.capture.datagram(port, false, from, loan.frame()),
                            None => f.capture.frame(port, false, loan.frame()),
                        }
                        let (head, len) = (loan.head(), loan.len());
                        if let Ok(mut fb) = FrameBuf::new(loan.buf_mut(), head, len) {
                            let mut tap = Tap { inner: &mut nic_tx, capture: &mut *f.capture };
                            let mut tx = WithServices { inner: &mut tap, services: &mut *f.services };
                            if datagram {
                                f.dataplane.process_datagram_and_transmit(now, port, from, &mut fb, &mut f.tunnel, &mut tx);
                            } else {
                                f.dataplane.process_and_transmit(now, port, &mut fb, &mut f.tunnel, &mut tx);
                            }
                        }
                        give_back(&mut *nic_tx.nics, i, loan);
                    }
                }
                // A port is bound, so a configuration runs; were it not,
                // the frames are dropped (after the capture saw them).
                None => {
                    for slot in batch {
                        let Some(loan) = slot.take() else { continue };
                        node.capture().frame(port, false, loan.frame());
                        give_back(&mut *nics, i, loan);
                    }
                }
            }
            debug_assert!(
                nics.nic(i).is_none_or(|n| n.stats().rx_loans_out == 0),
                "NIC {i} has receive buffers out on loan after its batch: lost to its ring"
            );
        }
        if let Some(mut f) = node.forwarding() {
            let mut nic_tx = NicTransmit { nics: &mut *nics, nic_of_port: f.nic_of_port };
            let mut tx = Tap { inner: &mut nic_tx, capture: &mut *f.capture };
            // What ended on the box is answered before the timers run.
            f.services.poll(now, f.dataplane, &mut f.tunnel, &mut tx);
            let due = f.dataplane.poll_at(&f.tunnel).is_none_or(|t| t <= now);
            if due || busy {
                f.dataplane.poll(now, &mut f.tunnel, &mut tx);
            }
        }
        // A lease the DHCP client just got (or lost) is applied now.
        node.apply_services(now);
        for i in 0..nics.slots() {
            if let Some(n) = nics.nic(i) {
                n.poll();
            }
        }
        while let Some(e) = node.take_event() {
            log(e);
        }
        busy
    }
}

/// Returns a loan to the NIC that lent it. The NIC is still there (the
/// platform's list does not change during a turn); if it were not, the
/// buffer would be lost to it, which its counters show.
fn give_back<N: Nics + ?Sized>(nics: &mut N, i: usize, loan: RxLoan) {
    if let Some(n) = nics.nic(i) {
        n.give_back(loan);
    }
}
