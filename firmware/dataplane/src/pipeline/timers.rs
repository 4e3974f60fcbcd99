//! Timers: claim probes, verdicts and gratuitous ARPs; ARP retries and give-ups.

use super::*;

impl Core {
    /// Claim timers: probes and their verdicts, re-probes after a
    /// conflict's hold, gratuitous ARPs.
    pub(super) fn poll_claims<X: Transmit + ?Sized>(&mut self, now: Instant, tx: &mut X, scratch: &mut [u8; BUF_SIZE]) {
        let t = self.cfg.timing;
        let Core { cfg, claims, counters, events, .. } = self;
        for (c, rt) in cfg.claims.iter().zip(claims.iter_mut()) {
            let (mut send, event) = rt.poll(c, &t, now);
            if let Some(kind) = event {
                record(events, counters, ClaimEvent { address: c.address, at: now, kind });
                if matches!(kind, ClaimEventKind::Captured { .. }) {
                    // Announce at once: the first gratuitous ARP is due now.
                    send = rt.poll(c, &t, now).0;
                }
            }
            let ClaimSide::Remote { capture: Capture::ProxyArp, port, .. } = c.side else { continue };
            let Some(pc) = cfg.ports.get(port.index()) else { continue };
            let Some(f) = scratch.get_mut(..MIN_FRAME) else { continue };
            f.fill(0);
            match send {
                // RFC 5227 probe: sender address 0.0.0.0, so no host's
                // cache learns anything from it.
                claims::Send::Probe => {
                    write_arp(f, Mac::BROADCAST, ArpOperation::Request, pc.mac, Ipv4Addr::UNSPECIFIED, Mac([0; 6]), c.address)
                }
                // Gratuitous ARP: a request with sender = target = the claim.
                claims::Send::Garp => write_arp(f, Mac::BROADCAST, ArpOperation::Request, pc.mac, c.address, Mac([0; 6]), c.address),
                claims::Send::Nothing => continue,
            }
            send_extra(counters, tx, port, f);
        }
    }

    pub(super) fn poll_neighbors<X: Transmit + ?Sized>(&mut self, now: Instant, tx: &mut X, scratch: &mut [u8; BUF_SIZE]) {
        let retry_ms = self.cfg.timing.arp_retry_ms;
        let Core { cfg, neighbors, pending, counters, .. } = self;
        let mut failed: Vec<(PortId, Ipv4Addr), { crate::neighbor::NEIGHBORS }> = Vec::new();
        neighbors.poll(
            now,
            retry_ms,
            |port, ip| {
                let Some(pc) = cfg.ports.get(port.index()) else { return };
                let Some(f) = scratch.get_mut(..MIN_FRAME) else { return };
                f.fill(0);
                write_arp(f, Mac::BROADCAST, ArpOperation::Request, pc.mac, pc.address.unwrap_or(Ipv4Addr::UNSPECIFIED), Mac([0; 6]), ip);
                counters.arp_requests_sent += 1;
                send_extra(counters, tx, port, f);
            },
            |port, ip| {
                let _ = failed.push((port, ip));
            },
        );
        for (port, ip) in failed {
            pending.release(port, ip, |_| counters.drop(DropReason::ArpResolutionFailed));
        }
    }
}
