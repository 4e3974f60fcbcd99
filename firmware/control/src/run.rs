//! The forwarding turn: NICs ⇄ the node's dataplane and WireGuard, once per
//! loop iteration, the same on every platform that drives Ethernet devices.
//!
//! A platform owns its devices and its clock; [`Forwarder::turn`] does the
//! rest: a bounded batch from every NIC into frame buffers with headroom,
//! each frame through `Dataplane::process_and_transmit` (which seals or
//! opens WireGuard in place and counts a full transmit ring as a drop),
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
//! NICs are indexed in contract order (`lan0`, `wan0`, `lan1`, …) — the
//! order the node's NIC list was given in.

use routerd_dataplane::{self as dp, FrameBuf, Instant, PortId, Transmit};
use routerd_netdev::{NetDevice, TxToken};

use crate::capture::Tap;
use crate::node::{Event, Node};
use crate::services::WithServices;

/// Frames taken from one NIC per turn.
pub const BATCH: usize = 32;

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
}

/// The loop's frame buffers (`BATCH` × `BUF_SIZE`, ~64 KiB: keep it in a
/// `static` or a `Box`).
pub struct Forwarder {
    frames: [[u8; dp::BUF_SIZE]; BATCH],
    lens: [usize; BATCH],
}

impl Default for Forwarder {
    fn default() -> Self {
        Forwarder::new()
    }
}

impl Forwarder {
    /// Empty buffers.
    pub const fn new() -> Forwarder {
        Forwarder { frames: [[0; dp::BUF_SIZE]; BATCH], lens: [0; BATCH] }
    }

    /// One turn at `now`. Claim transitions and DHCP leases go to `log`.
    /// True when any NIC had frames (the platform may then skip its idle
    /// pause).
    pub fn turn<R, N>(&mut self, node: &mut Node<R>, now: Instant, nics: &mut N, log: &mut dyn FnMut(Event)) -> bool
    where
        R: rand_core::RngCore + rand_core::CryptoRng,
        N: Nics + ?Sized,
    {
        let mut busy = false;
        node.capture().tick(now);
        for i in 0..nics.slots() {
            let port = node.port_of_nic(i);
            let Some(n) = nics.nic(i) else { continue };
            let Some(port) = port else {
                // A NIC the configuration does not use (or none yet): keep
                // its ring moving.
                n.receive(BATCH, &mut |_| {});
                continue;
            };
            let mut count = 0usize;
            let Forwarder { frames, lens } = self;
            let capture = node.capture();
            n.receive(BATCH, &mut |frame| {
                // Copied as received, before the dataplane rewrites it in place.
                capture.frame(port, false, frame);
                if let (Some(buf), Some(len)) = (frames.get_mut(count), lens.get_mut(count)) {
                    if let Some(dst) = buf.get_mut(dp::HEADROOM..dp::HEADROOM + frame.len()) {
                        dst.copy_from_slice(frame);
                        *len = frame.len();
                        count += 1;
                    }
                }
            });
            busy |= count > 0;
            // A port is bound, so a configuration runs.
            let Some(mut f) = node.forwarding() else { continue };
            let mut nic_tx = NicTransmit { nics: &mut *nics, nic_of_port: f.nic_of_port };
            let mut tap = Tap { inner: &mut nic_tx, capture: &mut *f.capture };
            let mut tx = WithServices { inner: &mut tap, services: &mut *f.services };
            for (raw, &len) in self.frames.iter_mut().zip(self.lens.iter()).take(count) {
                let Ok(mut fb) = FrameBuf::new(raw, dp::HEADROOM, len) else { continue };
                f.dataplane.process_and_transmit(now, port, &mut fb, &mut f.tunnel, &mut tx);
            }
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
