//! The engine: the dataplane, the WireGuard device and the randomness they
//! draw on, in one struct the loop drives.
//!
//! The loop only ever calls [`Engine::process`] per received frame,
//! [`Engine::poll`] when [`Engine::poll_at`] says so (and after a batch), and
//! the few control methods (peer endpoints for DNS re-resolution, status).
//! This is the seam where the shared controller (`routerd_control::node`)
//! will take over: it owns the same three things and answers provisioning
//! requests besides.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use rand_core::OsRng;
use routerd_control::{Runtime, TunnelPlan, WgTunnel};
use routerd_dataplane::{Dataplane, FrameBuf, Instant, PortId, Transmit, Verdict};
use routerd_wireguard::{self as wg, Device, SecretKey};

/// The WireGuard device: as many peers as a configuration can name, 64
/// allowed-IP prefixes per family (the image's size).
pub type WgDevice = Device<{ routerd_control::build::MAX_PEERS }, 64>;

/// Dataplane + WireGuard + rng.
pub struct Engine {
    dataplane: Box<Dataplane>,
    wg: Box<WgDevice>,
    rng: OsRng,
}

/// A peer as status and DNS re-resolution see it.
#[derive(Debug, Clone, Copy)]
pub struct PeerView {
    pub endpoint: Option<SocketAddr>,
    /// Milliseconds since the last completed handshake.
    pub since_handshake_ms: Option<u64>,
    pub has_session: bool,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

fn wg_now(now: Instant) -> wg::Instant {
    wg::Instant::from_millis(now.millis())
}

impl Engine {
    /// Build the engine for `runtime`. `wall` is the time since the Unix
    /// epoch (WireGuard's initiation timestamps must grow across restarts).
    pub fn new(runtime: Runtime, key: SecretKey, now: Instant, wall: Duration) -> Result<Engine, String> {
        let mut wg: Box<WgDevice> = Box::new(match &runtime.tunnel {
            Some(plan) => Device::new(key, wg::Config { mtu: plan.mtu, ..wg::Config::default() }),
            // No tunnel configured: an empty device (every seal fails, counted).
            None => Device::new(key, wg::Config::default()),
        });
        wg.set_wall_clock(wg_now(now), wall);
        if let Some(plan) = &runtime.tunnel {
            add_peers(&mut wg, plan)?;
        }
        let dataplane = Dataplane::new(runtime.dataplane, now).map_err(|e| format!("the dataplane refused the configuration: {e:?}"))?;
        Ok(Engine { dataplane: Box::new(dataplane), wg, rng: OsRng })
    }

    /// Handle one received frame; see `Dataplane::process`.
    pub fn process(&mut self, now: Instant, port: PortId, buf: &mut FrameBuf<'_>, tx: &mut dyn Transmit) -> Verdict {
        let mut tunnel = WgTunnel { device: &mut *self.wg, rng: &mut self.rng };
        self.dataplane.process(now, port, buf, &mut tunnel, tx)
    }

    /// Run timers; see `Dataplane::poll`.
    pub fn poll(&mut self, now: Instant, tx: &mut dyn Transmit) {
        let mut tunnel = WgTunnel { device: &mut *self.wg, rng: &mut self.rng };
        self.dataplane.poll(now, &mut tunnel, tx);
    }

    /// When [`Engine::poll`] next needs to run.
    pub fn poll_at(&mut self) -> Option<Instant> {
        let tunnel = WgTunnel { device: &mut *self.wg, rng: &mut self.rng };
        self.dataplane.poll_at(&tunnel)
    }

    /// Our WireGuard public key.
    pub fn public_key(&self) -> wg::PublicKey {
        self.wg.public_key()
    }

    /// Point WireGuard peer `peer` (its tunnel plan index) at `endpoint`
    /// (already in the dataplane's IPv4 view).
    pub fn set_endpoint(&mut self, peer: u16, endpoint: SocketAddr) -> Result<(), String> {
        self.wg.set_endpoint(wg::PeerId(peer), Some(endpoint)).map_err(|e| format!("{e:?}"))
    }

    /// One peer, for status and re-resolution.
    pub fn peer(&self, peer: u16, now: Instant) -> Option<PeerView> {
        let s = self.wg.peer_status(wg::PeerId(peer), wg_now(now))?;
        Some(PeerView {
            endpoint: s.endpoint,
            since_handshake_ms: s.last_handshake.map(|t| wg_now(now).saturating_since(t).as_millis() as u64),
            has_session: s.has_session,
            rx_bytes: s.rx_bytes,
            tx_bytes: s.tx_bytes,
        })
    }

    /// The dataplane (counters, claims).
    pub fn dataplane(&self) -> &Dataplane {
        &self.dataplane
    }

    /// Counters and peers as text, one item per line.
    pub fn status(&self, now: Instant, port_names: &[String]) -> String {
        let mut s = String::new();
        let c = self.dataplane.counters();
        for (i, name) in port_names.iter().enumerate() {
            let rx = c.rx_frames.get(i).copied().unwrap_or(0);
            let tx = c.tx_frames.get(i).copied().unwrap_or(0);
            let _ = writeln!(s, "  port {name}: rx {rx} frames, tx {tx} frames");
        }
        let _ = writeln!(
            s,
            "  forwarded {}, tunnel rx {} tx {} control {}, syns clamped {}, arp replies {}, echo replies {}",
            c.forwarded, c.tunnel_rx, c.tunnel_tx, c.tunnel_control, c.syns_clamped, c.arp_replies_own, c.echo_replies
        );
        for cl in self.dataplane.claims() {
            let k = cl.counters;
            let _ = writeln!(
                s,
                "  claim {}: {:?}, to tunnel {} pkts, from tunnel {} pkts, arp replies {}, conflicts {}",
                cl.address, cl.state, k.to_tunnel.packets, k.from_tunnel.packets, k.arp_replies, k.conflicts
            );
        }
        for id in self.wg.peers() {
            if let Some(p) = self.peer(id.0, now) {
                let hs = p.since_handshake_ms.map_or("never".to_string(), |ms| format!("{} s ago", ms / 1000));
                let _ = writeln!(
                    s,
                    "  peer {}: endpoint {:?}, handshake {hs}, session {}, rx {} B, tx {} B",
                    id.0, p.endpoint, p.has_session, p.rx_bytes, p.tx_bytes
                );
            }
        }
        for (reason, n) in c.nonzero_drops() {
            let _ = writeln!(s, "  drop {reason:?}: {n}");
        }
        let _ = writeln!(s, "  drops total: {}", c.total_drops());
        for (name, n) in self.wg.counters().iter() {
            if n > 0 {
                let _ = writeln!(s, "  wg {name}: {n}");
            }
        }
        s
    }
}

fn add_peers(wg: &mut WgDevice, plan: &TunnelPlan) -> Result<(), String> {
    for (i, p) in plan.peers.iter().enumerate() {
        let mut pc = wg::PeerConfig::new(wg::PublicKey(p.public_key));
        pc.endpoint = p.endpoint;
        pc.persistent_keepalive = p.persistent_keepalive;
        let id = wg.add_peer(pc).map_err(|e| format!("wireguard peer {i} refused: {e:?}"))?;
        // The dataplane numbers peers by plan index; WireGuard must agree.
        if usize::from(id.0) != i {
            return Err(format!("wireguard numbered peer {i} as {}", id.0));
        }
        for a in &p.allowed {
            wg.add_allowed_ip(id, a.addr().into(), a.prefix_len())
                .map_err(|e| format!("wireguard peer {i}: allowed IP {}/{} refused: {e:?}", a.addr(), a.prefix_len()))?;
        }
    }
    Ok(())
}
