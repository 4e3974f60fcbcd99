//! The polled main loop: NICs ⇄ dataplane ⇄ WireGuard.
//!
//! Each turn: read the clock once; take a bounded batch from every NIC into
//! frame buffers with headroom; run each frame through the dataplane (which
//! calls the WireGuard tunnel for sealing and opening); send what it returns
//! on the NIC bound to the port; run the dataplane's timers when due; let
//! the drivers reclaim transmit slots. No interrupts: when a turn finds
//! nothing to do the CPU `pause`s, and the console is polled between turns.

use crate::console;
use crate::nics::Nics;
use hal_x86::clock::Clock;
use hal_x86::entropy::Entropy;
use log::{info, warn};
use routerd_control::{Runtime, WgTunnel};
use routerd_dataplane::{self as dp, Dataplane, FrameBuf, Instant, PortId, Transmit, Verdict};
use routerd_netdev::{NetDevice, TxToken};
use routerd_wireguard::{self as wg, Device, SecretKey};

/// Frames taken from one NIC per turn.
const BATCH: usize = 32;

/// The WireGuard device: fixed capacity, lives in a static (it is ~95 KiB).
pub type WgDevice = Device<{ routerd_control::build::MAX_PEERS }, 64>;

/// Extra frames from the dataplane go straight to the NICs.
struct NicTransmit<'a> {
    nics: &'a mut Nics,
    nic_of_port: &'a [usize],
}

impl Transmit for NicTransmit<'_> {
    fn send(&mut self, port: PortId, frame: &[u8]) -> bool {
        let Some(&nic) = self.nic_of_port.get(port.index()) else { return false };
        let Some(n) = self.nics.get_mut(nic) else { return false };
        match n.transmit() {
            Some(tx) => {
                tx.send(frame.len(), |out| out.copy_from_slice(frame.get(..out.len()).unwrap_or(&[])));
                true
            }
            None => false,
        }
    }
}

/// Frame buffers for one turn: `BATCH` per NIC slot, each with headroom.
pub struct Buffers {
    frames: [[u8; dp::BUF_SIZE]; BATCH],
    lens: [usize; BATCH],
}

impl Buffers {
    pub const fn new() -> Buffers {
        Buffers { frames: [[0; dp::BUF_SIZE]; BATCH], lens: [0; BATCH] }
    }
}

/// Everything the loop owns.
pub struct Router<'a> {
    pub dataplane: Dataplane,
    pub wg: &'a mut WgDevice,
    pub entropy: Entropy,
    pub runtime: Runtime,
    pub clock: Clock,
}

/// The WireGuard device for the runtime's tunnel plan: a key generated on
/// the device (there is no key store yet, so a new key every boot) and the
/// peers. `None` (logged) when a peer is refused.
pub fn wireguard(plan: Option<&routerd_control::TunnelPlan>, entropy: &mut Entropy) -> Option<WgDevice> {
    let key = SecretKey::generate(entropy);
    let Some(plan) = plan else {
        // No tunnel configured: an empty device (every seal fails, counted).
        return Some(Device::new(key, wg::Config::default()));
    };
    let mut wg: WgDevice = Device::new(key, wg::Config { mtu: plan.mtu, ..wg::Config::default() });
    info!("wg: {} public key {} (generated on this boot)", plan.key_slot.as_str(), wg.public_key().to_base64().as_str());
    for (i, p) in plan.peers.iter().enumerate() {
        let mut pc = wg::PeerConfig::new(wg::PublicKey(p.public_key));
        pc.endpoint = p.endpoint;
        pc.persistent_keepalive = p.persistent_keepalive;
        let id = match wg.add_peer(pc) {
            Ok(id) => id,
            Err(e) => {
                warn!("wg: peers[{i}] refused: {e:?}");
                return None;
            }
        };
        for a in &p.allowed {
            if let Err(e) = wg.add_allowed_ip(id, a.addr().into(), a.prefix_len()) {
                warn!("wg: peers[{i}] allowed IP {:?} refused: {e:?}", a.addr());
                return None;
            }
        }
    }
    Some(wg)
}

impl Router<'_> {
    fn now(&self) -> Instant {
        Instant::from_millis(self.clock.now_ms())
    }

    /// Runs forever.
    pub fn run(&mut self, nics: &mut Nics, bufs: &mut Buffers) -> ! {
        let nic_of_port = self.runtime.nic_of_port.clone();
        let mut port_of_nic = [None::<PortId>; crate::nics::MAX_NICS];
        for (p, &n) in nic_of_port.iter().enumerate() {
            if let Some(slot) = port_of_nic.get_mut(n) {
                *slot = Some(PortId(p as u8));
            }
        }
        let mut console_line = console::LineReader::new();
        loop {
            let now = self.now();
            let mut busy = false;
            for nic in 0..nics.len() {
                let Some(port) = port_of_nic.get(nic).copied().flatten() else {
                    // A NIC the configuration does not use: keep its ring moving.
                    if let Some(n) = nics.get_mut(nic) {
                        n.receive(BATCH, &mut |_| {});
                        n.poll();
                    }
                    continue;
                };
                let mut count = 0usize;
                if let Some(n) = nics.get_mut(nic) {
                    let Buffers { frames, lens } = &mut *bufs;
                    n.receive(BATCH, &mut |frame| {
                        if let (Some(buf), Some(len)) = (frames.get_mut(count), lens.get_mut(count)) {
                            if let Some(dst) = buf.get_mut(dp::HEADROOM..dp::HEADROOM + frame.len()) {
                                dst.copy_from_slice(frame);
                                *len = frame.len();
                                count += 1;
                            }
                        }
                    });
                }
                busy |= count > 0;
                for i in 0..count {
                    let (Some(raw), Some(&len)) = (bufs.frames.get_mut(i), bufs.lens.get(i)) else { continue };
                    let Ok(mut fb) = FrameBuf::new(raw, dp::HEADROOM, len) else { continue };
                    let mut tunnel = WgTunnel { device: &mut *self.wg, rng: &mut self.entropy };
                    let mut tx = NicTransmit { nics: &mut *nics, nic_of_port: &nic_of_port };
                    if let Verdict::Transmit(out) = self.dataplane.process(now, port, &mut fb, &mut tunnel, &mut tx) {
                        let frame = fb.frame();
                        let _ = tx.send(out, frame);
                    }
                }
            }
            let due = self
                .dataplane
                .poll_at(&WgTunnel { device: &mut *self.wg, rng: &mut self.entropy })
                .is_none_or(|t| t <= now);
            if due || busy {
                let mut tunnel = WgTunnel { device: &mut *self.wg, rng: &mut self.entropy };
                let mut tx = NicTransmit { nics: &mut *nics, nic_of_port: &nic_of_port };
                self.dataplane.poll(now, &mut tunnel, &mut tx);
            }
            for (_, n) in nics.iter_mut() {
                n.poll();
            }
            if let Some(line) = console_line.poll() {
                self.command(line.trim(), nics);
            }
            if !busy {
                core::hint::spin_loop();
            }
        }
    }

    /// Console commands, for a human at the serial port (until the
    /// provisioning protocol takes over the line).
    fn command(&mut self, line: &str, nics: &mut Nics) {
        match line {
            "" => {}
            "status" => self.print_status(nics),
            "help" => console::print(format_args!("commands: status, help\n")),
            other => console::print(format_args!("unknown command {other:?}; try help\n")),
        }
    }

    fn print_status(&mut self, nics: &mut Nics) {
        let now = self.now();
        console::print(format_args!("status at {} ms\n", now.millis()));
        for (name, n) in nics.iter_mut() {
            let s = n.stats();
            console::print(format_args!(
                "  {name}: rx {} frames, tx {} frames, rx errors {}, tx ring full {}\n",
                s.rx_frames, s.tx_frames, s.rx_errors, s.tx_ring_full
            ));
        }
        for c in self.dataplane.claims() {
            console::print(format_args!("  claim {:?}\n", c));
        }
        let wg_now = wg::Instant::from_millis(now.millis());
        for id in self.wg.peers().collect::<heapless::Vec<_, 16>>() {
            if let Some(p) = self.wg.peer_status(id, wg_now) {
                console::print(format_args!(
                    "  peer {}: endpoint {:?}, session {}, rx {} B, tx {} B\n",
                    id.0, p.endpoint, p.has_session, p.rx_bytes, p.tx_bytes
                ));
            }
        }
        for (reason, n) in self.dataplane.counters().nonzero_drops() {
            console::print(format_args!("  drop {reason:?}: {n}\n"));
        }
        console::print(format_args!("  drops total: {}\n", self.dataplane.counters().total_drops()));
        for (name, n) in self.wg.counters().iter() {
            if n > 0 {
                console::print(format_args!("  wg {name}: {n}\n"));
            }
        }
        console::print(format_args!("end of status\n"));
    }
}
