//! Connection tracking: a fixed-capacity flow table for SNAT and the
//! stateful firewall (`pipeline/nat.rs` drives it).
//!
//! A flow is known by two tuples: the **original** one, as its first packet
//! arrived (before any translation), and the **reply** one, as answers
//! arrive (after translation: destination = the NAT address and port). Both
//! are indexed, so one hash lookup of an arriving packet's tuple finds its
//! flow and says which direction it travels:
//!
//! * storage: `CONNTRACK_ENTRIES` slots, unused ones on a free list;
//! * two indices (original, reply), each `BUCKETS` chain heads; an entry
//!   links into both chains (`next[0]`, `next[1]`) — no tombstones, a
//!   removal unlinks it from both. Chains are short on average (load ≤ 1);
//!   a walk is bounded by the capacity (no panics, no endless loops).
//!
//! ICMP echo is tracked by identifier: a request is the tuple
//! `(src, ident → dst, 0)`, its reply `(src, 0 → dst, ident)`, so the same
//! reversal rule holds for every protocol.
//!
//! Time is passed in. Expiry is lazy (a lookup that finds an expired flow
//! removes it and misses) plus a bounded sweep per timer tick
//! ([`Conntrack::sweep`]). Timeouts follow Linux's defaults
//! (`nf_conntrack_proto_{tcp,udp,icmp}`) except TCP established: Linux keeps
//! it 5 days; here it is 2 h 4 min, the minimum RFC 5382 (NAT behaviour for
//! TCP, REQ-5) allows, so a table of dead flows drains within hours.
//!
//! **When full**, a new flow looks at the next `EVICT_WINDOW` slots from a
//! rotating cursor (bounded work per packet, like Linux's `early_drop`):
//! expired flows there are removed; if none was, the oldest flow there that
//! is not *assured* (TCP not yet established or closing; UDP/ICMP without a
//! reply seen) is evicted. Assured flows are never evicted for a new one:
//! when the window holds only assured flows the new flow is refused and the
//! caller counts `conntrack_full`. A flood of new flows churns among itself
//! and cannot push out an established connection.
//!
//! Memory: the table is the dataplane's one heap allocation, made once when
//! it is built (never per packet), so it never sits on a stack.

use alloc::boxed::Box;
use alloc::vec;
use core::net::Ipv4Addr;

use crate::config::PortId;
use crate::time::Instant;

/// Flows tracked at once: 2048 × 64 bytes plus 8 KiB of chain heads, on the
/// heap; an apply holds two tables for a moment (the image's heap is 4 MiB).
pub const CONNTRACK_ENTRIES: usize = 2048;
/// Chain heads per index (a power of two: the hash is masked).
const BUCKETS: usize = 2048;
const NIL: u16 = u16::MAX;
/// Slots a new flow looks at for a victim when the table is full.
const EVICT_WINDOW: usize = 256;
const _: () = assert!(CONNTRACK_ENTRIES < NIL as usize && BUCKETS.is_power_of_two());

/// An IP protocol conntrack follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// ICMP echo (1), by identifier.
    Icmp,
}

impl Proto {
    /// The IP protocol number.
    pub const fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Icmp => 1,
        }
    }

    /// `tcp`, `udp`, `icmp`.
    pub const fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        }
    }
}

/// One direction of a flow as packets carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// Protocol.
    pub proto: Proto,
    /// Source address.
    pub src: Ipv4Addr,
    /// Source port (ICMP: the identifier of a request, 0 for a reply).
    pub sport: u16,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Destination port (ICMP: 0 for a request, the identifier of a reply).
    pub dport: u16,
}

impl Tuple {
    /// The same flow seen from the other end.
    pub const fn reversed(&self) -> Tuple {
        Tuple { proto: self.proto, src: self.dst, sport: self.dport, dst: self.src, dport: self.sport }
    }

    fn hash(&self) -> usize {
        // Multiplicative mixing of the 13 key bytes; spreads sequential
        // ports and addresses over the buckets.
        let a = u64::from(self.src.to_bits()) << 32 | u64::from(self.dst.to_bits());
        let b = u64::from(self.sport) << 24 | u64::from(self.dport) << 8 | u64::from(self.proto.number());
        let mut h = a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        h ^= h >> 29;
        h = h.wrapping_mul(0x1656_67b1_9e37_79f9);
        h ^= h >> 32;
        (h as usize) & (BUCKETS - 1)
    }
}

/// Which way a packet travels along its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// From the host that opened the flow.
    Original,
    /// Back towards it.
    Reply,
}

/// A flow's state (TCP simplified from Linux's `nf_conntrack_proto_tcp`,
/// without window tracking).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// TCP: SYN seen from the originator.
    SynSent,
    /// TCP: SYN-ACK seen from the responder.
    SynRecv,
    /// TCP: the handshake completed.
    Established,
    /// TCP: the originator sent FIN.
    FinWait,
    /// TCP: the responder sent FIN.
    CloseWait,
    /// TCP: both sent FIN, waiting for the last ACK.
    LastAck,
    /// TCP: closed in order; kept briefly for stray segments.
    TimeWait,
    /// TCP: reset.
    Close,
    /// UDP / ICMP: nothing back yet.
    Unreplied,
    /// UDP / ICMP: answered.
    Replied,
}

impl State {
    /// `syn_sent`, `established`, `unreplied`, … (status and listings).
    pub const fn name(self) -> &'static str {
        match self {
            State::SynSent => "syn_sent",
            State::SynRecv => "syn_recv",
            State::Established => "established",
            State::FinWait => "fin_wait",
            State::CloseWait => "close_wait",
            State::LastAck => "last_ack",
            State::TimeWait => "time_wait",
            State::Close => "close",
            State::Unreplied => "unreplied",
            State::Replied => "replied",
        }
    }
}

/// TCP flags that move the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpFlags {
    /// SYN.
    pub syn: bool,
    /// ACK.
    pub ack: bool,
    /// FIN.
    pub fin: bool,
    /// RST.
    pub rst: bool,
}

/// Timeouts in milliseconds (defaults: Linux's, but see the module notes on
/// TCP established).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP SYN sent, no answer (Linux 120 s).
    pub tcp_syn_sent_ms: u64,
    /// TCP SYN-ACK seen (60 s).
    pub tcp_syn_recv_ms: u64,
    /// TCP established (Linux 432 000 s; here RFC 5382's minimum, 7 440 s).
    pub tcp_established_ms: u64,
    /// TCP FIN_WAIT / CLOSE_WAIT (Linux 120 s / 60 s; 120 s here).
    pub tcp_closing_ms: u64,
    /// TCP LAST_ACK (30 s).
    pub tcp_last_ack_ms: u64,
    /// TCP TIME_WAIT (120 s).
    pub tcp_time_wait_ms: u64,
    /// TCP reset (10 s).
    pub tcp_close_ms: u64,
    /// UDP without a reply (30 s).
    pub udp_ms: u64,
    /// UDP answered (120 s, Linux's `udp_timeout_stream`).
    pub udp_replied_ms: u64,
    /// ICMP echo (30 s).
    pub icmp_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            tcp_syn_sent_ms: 120_000,
            tcp_syn_recv_ms: 60_000,
            tcp_established_ms: 7_440_000,
            tcp_closing_ms: 120_000,
            tcp_last_ack_ms: 30_000,
            tcp_time_wait_ms: 120_000,
            tcp_close_ms: 10_000,
            udp_ms: 30_000,
            udp_replied_ms: 120_000,
            icmp_ms: 30_000,
        }
    }
}

impl Timeouts {
    fn of(&self, s: State, proto: Proto) -> u64 {
        match s {
            State::SynSent => self.tcp_syn_sent_ms,
            State::SynRecv => self.tcp_syn_recv_ms,
            State::Established => self.tcp_established_ms,
            State::FinWait | State::CloseWait => self.tcp_closing_ms,
            State::LastAck => self.tcp_last_ack_ms,
            State::TimeWait => self.tcp_time_wait_ms,
            State::Close => self.tcp_close_ms,
            State::Unreplied | State::Replied if proto == Proto::Icmp => self.icmp_ms,
            State::Unreplied => self.udp_ms,
            State::Replied => self.udp_replied_ms,
        }
    }
}

/// Where a packet comes from or goes to, for the firewall (a flow keeps
/// its zones so an apply that changes the rules can re-check it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Zone {
    /// A port (the WAN is a port too; a segment is its LAN port).
    Port(PortId),
    /// The WireGuard tunnel.
    Tunnel,
    /// The box itself.
    Box,
}

/// A tracked flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// As its first packet arrived (before translation).
    pub orig: Tuple,
    /// SNAT: the port it leaves by and the (address, port/identifier) it
    /// was given there. `None`: not translated.
    pub nat: Option<(PortId, Ipv4Addr, u16)>,
    /// Zone it came from.
    pub from: Zone,
    /// Zone it goes to.
    pub to: Zone,
    /// Its state.
    pub state: State,
    /// When it was created.
    pub created: Instant,
    /// When it expires unless a packet refreshes it.
    pub expires: Instant,
    /// Packets seen (original, reply).
    pub packets: [u32; 2],
}

impl Flow {
    /// The tuple replies arrive with (after translation).
    pub fn reply(&self) -> Tuple {
        let r = self.orig.reversed();
        match (self.nat, self.orig.proto) {
            (Some((_, addr, port)), Proto::Icmp) => Tuple { dst: addr, sport: 0, dport: port, ..r },
            (Some((_, addr, port)), _) => Tuple { dst: addr, dport: port, ..r },
            (None, _) => r,
        }
    }

    /// Seen both ways (TCP: established or closing in order; UDP/ICMP:
    /// answered). An assured flow is never evicted to make room.
    pub fn assured(&self) -> bool {
        matches!(self.state, State::Established | State::Replied | State::FinWait | State::CloseWait)
    }
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    flow: Flow,
    used: bool,
    /// Chain links in the original (0) and reply (1) index; `next[0]` links
    /// the free list while unused.
    next: [u16; 2],
}

const EMPTY_TUPLE: Tuple = Tuple { proto: Proto::Udp, src: Ipv4Addr::UNSPECIFIED, sport: 0, dst: Ipv4Addr::UNSPECIFIED, dport: 0 };
const EMPTY: Slot = Slot {
    flow: Flow {
        orig: EMPTY_TUPLE,
        nat: None,
        from: Zone::Box,
        to: Zone::Box,
        state: State::Unreplied,
        created: Instant::ZERO,
        expires: Instant::ZERO,
        packets: [0; 2],
    },
    used: false,
    next: [NIL; 2],
};

/// Why a flow could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// Every slot holds an assured flow.
    Full,
    /// One of its tuples already belongs to a flow.
    Exists,
}

/// Counters of the table (the packet drops are `DropReason`s).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtCounters {
    /// Flows created.
    pub created: u64,
    /// Flows that timed out.
    pub expired: u64,
    /// Unassured flows evicted to make room for a new one.
    pub evicted: u64,
    /// New flows refused because the table was full of assured flows.
    pub refused_full: u64,
    /// Flows not carried over an apply (their NAT or firewall decision changed).
    pub dropped_on_apply: u64,
}

/// The flow table.
pub struct Conntrack {
    /// `CONNTRACK_ENTRIES` slots.
    slots: Box<[Slot]>,
    /// Chain heads: the original index, then the reply index.
    heads: Box<[u16]>,
    free: u16,
    len: usize,
    cursor: usize,
    /// Timeouts in force.
    pub timeouts: Timeouts,
    /// Counters.
    pub counters: CtCounters,
}

impl Default for Conntrack {
    fn default() -> Conntrack {
        Conntrack::new(Timeouts::default())
    }
}

impl Conntrack {
    /// An empty table (its one allocation).
    pub fn new(timeouts: Timeouts) -> Conntrack {
        let mut slots = vec![EMPTY; CONNTRACK_ENTRIES].into_boxed_slice();
        for (i, s) in slots.iter_mut().enumerate() {
            s.next[0] = if i + 1 < CONNTRACK_ENTRIES { (i + 1) as u16 } else { NIL };
        }
        let heads = vec![NIL; 2 * BUCKETS].into_boxed_slice();
        Conntrack { slots, heads, free: 0, len: 0, cursor: 0, timeouts, counters: CtCounters::default() }
    }

    /// Flows in the table (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Capacity.
    pub const fn capacity(&self) -> usize {
        CONNTRACK_ENTRIES
    }

    /// Flow `i`, if that slot is in use.
    pub fn get(&self, i: usize) -> Option<&Flow> {
        self.slots.get(i).filter(|s| s.used).map(|s| &s.flow)
    }

    /// Every flow in the table, with its slot.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Flow)> + '_ {
        self.slots.iter().enumerate().filter(|(_, s)| s.used).map(|(i, s)| (i, &s.flow))
    }

    /// The flow a packet with tuple `t` belongs to, and its direction. An
    /// expired flow is removed and not found.
    pub fn lookup(&mut self, t: &Tuple, now: Instant) -> Option<(usize, Dir)> {
        let (i, dir) = self.find(t)?;
        if self.slots.get(i).is_some_and(|s| s.flow.expires <= now) {
            self.remove(i);
            self.counters.expired = self.counters.expired.saturating_add(1);
            return None;
        }
        Some((i, dir))
    }

    /// Is `t` free to be a new flow's reply tuple (no live flow uses it in
    /// either direction)? Expired holders are removed.
    pub fn is_free(&mut self, t: &Tuple, now: Instant) -> bool {
        self.lookup(t, now).is_none()
    }

    fn find(&self, t: &Tuple) -> Option<(usize, Dir)> {
        let h = t.hash();
        for (k, dir) in [(0usize, Dir::Original), (1, Dir::Reply)] {
            let mut at = self.heads.get(k * BUCKETS + h).copied().unwrap_or(NIL);
            let mut steps = 0;
            while at != NIL && steps <= CONNTRACK_ENTRIES {
                let Some(s) = self.slots.get(usize::from(at)) else { break };
                let key = if k == 0 { s.flow.orig } else { s.flow.reply() };
                if s.used && key == *t {
                    return Some((usize::from(at), dir));
                }
                at = s.next.get(k).copied().unwrap_or(NIL);
                steps += 1;
            }
        }
        None
    }

    /// Add a flow (`created` and `expires` are set from `now` and its
    /// state). When the table is full, expired flows go first, then the
    /// oldest unassured one; assured flows are never evicted.
    pub fn insert(&mut self, mut flow: Flow, now: Instant) -> Result<usize, InsertError> {
        if self.find(&flow.orig).is_some() || self.find(&flow.reply()).is_some() {
            return Err(InsertError::Exists);
        }
        if self.free == NIL {
            self.make_room(now)?;
        }
        flow.expires = now.plus_millis(self.timeouts.of(flow.state, flow.orig.proto));
        flow.created = now;
        self.put(flow).ok_or(InsertError::Full).inspect(|_| {
            self.counters.created = self.counters.created.saturating_add(1);
        })
    }

    /// Put a flow carried over from the previous table as it is (state,
    /// timestamps, counters). False when it could not be kept.
    pub fn carry(&mut self, flow: Flow) -> bool {
        if self.find(&flow.orig).is_some() || self.find(&flow.reply()).is_some() {
            return false;
        }
        self.put(flow).is_some()
    }

    fn put(&mut self, flow: Flow) -> Option<usize> {
        let i = usize::from(self.free);
        let slot = self.slots.get_mut(i)?;
        self.free = slot.next[0];
        *slot = Slot { flow, used: true, next: [NIL; 2] };
        self.link(i);
        self.len += 1;
        Some(i)
    }

    fn make_room(&mut self, now: Instant) -> Result<(), InsertError> {
        let mut oldest: Option<(usize, Instant)> = None;
        let mut expired = false;
        for _ in 0..EVICT_WINDOW {
            self.cursor = (self.cursor + 1) % CONNTRACK_ENTRIES;
            let i = self.cursor;
            let Some(s) = self.slots.get(i) else { break };
            if !s.used {
                continue;
            }
            if s.flow.expires <= now {
                self.remove(i);
                self.counters.expired = self.counters.expired.saturating_add(1);
                expired = true;
                continue;
            }
            if !s.flow.assured() && oldest.is_none_or(|(_, t)| s.flow.created < t) {
                oldest = Some((i, s.flow.created));
            }
        }
        if expired {
            return Ok(());
        }
        match oldest {
            Some((i, _)) => {
                self.remove(i);
                self.counters.evicted = self.counters.evicted.saturating_add(1);
                Ok(())
            }
            None => {
                self.counters.refused_full = self.counters.refused_full.saturating_add(1);
                Err(InsertError::Full)
            }
        }
    }

    fn link(&mut self, i: usize) {
        let Some(s) = self.slots.get(i) else { return };
        let keys = [s.flow.orig.hash(), s.flow.reply().hash()];
        for (k, h) in keys.into_iter().enumerate() {
            let Some(head) = self.heads.get_mut(k * BUCKETS + h) else { continue };
            let old = *head;
            *head = i as u16;
            if let Some(n) = self.slots.get_mut(i).and_then(|s| s.next.get_mut(k)) {
                *n = old;
            }
        }
    }

    fn unlink(&mut self, i: usize) {
        let Some(s) = self.slots.get(i) else { return };
        let keys = [s.flow.orig.hash(), s.flow.reply().hash()];
        let next = s.next;
        for (k, h) in keys.into_iter().enumerate() {
            let succ = next.get(k).copied().unwrap_or(NIL);
            let Some(head) = self.heads.get_mut(k * BUCKETS + h) else { continue };
            if usize::from(*head) == i {
                *head = succ;
                continue;
            }
            let mut at = *head;
            let mut steps = 0;
            while at != NIL && steps <= CONNTRACK_ENTRIES {
                let Some(n) = self.slots.get_mut(usize::from(at)).and_then(|s| s.next.get_mut(k)) else { break };
                if usize::from(*n) == i {
                    *n = succ;
                    break;
                }
                at = *n;
                steps += 1;
            }
        }
    }

    /// Remove flow `i` (no-op for an unused slot).
    pub fn remove(&mut self, i: usize) {
        if !self.slots.get(i).is_some_and(|s| s.used) {
            return;
        }
        self.unlink(i);
        let free = self.free;
        if let Some(s) = self.slots.get_mut(i) {
            *s = EMPTY;
            s.next[0] = free;
            self.free = i as u16;
            self.len = self.len.saturating_sub(1);
        }
    }

    /// A packet of flow `i` went `dir`: advance its state and refresh its
    /// timeout. `tcp` carries the segment's flags (TCP only). Returns the
    /// new state.
    pub fn update(&mut self, i: usize, dir: Dir, tcp: Option<TcpFlags>, now: Instant) -> Option<State> {
        let t = self.timeouts;
        let s = self.slots.get_mut(i).filter(|s| s.used)?;
        let f = &mut s.flow;
        let k = if dir == Dir::Original { 0 } else { 1 };
        if let Some(p) = f.packets.get_mut(k) {
            *p = p.saturating_add(1);
        }
        f.state = match (f.orig.proto, tcp) {
            (Proto::Tcp, Some(fl)) => tcp_next(f.state, dir, fl),
            (Proto::Tcp, None) => f.state,
            (_, _) if dir == Dir::Reply => State::Replied,
            (_, _) => f.state,
        };
        f.expires = now.plus_millis(t.of(f.state, f.orig.proto));
        Some(f.state)
    }

    /// Remove expired flows among the next `budget` slots, continuing where
    /// the last sweep stopped (bounded work per timer tick). Returns how
    /// many went.
    pub fn sweep(&mut self, now: Instant, budget: usize) -> usize {
        let mut removed = 0;
        for _ in 0..budget {
            self.cursor = (self.cursor + 1) % CONNTRACK_ENTRIES;
            let i = self.cursor;
            if self.slots.get(i).is_some_and(|s| s.used && s.flow.expires <= now) {
                self.remove(i);
                self.counters.expired = self.counters.expired.saturating_add(1);
                removed += 1;
            }
        }
        removed
    }

    /// Flows per protocol: (tcp, udp, icmp).
    pub fn per_proto(&self) -> [usize; 3] {
        let mut n = [0usize; 3];
        for (_, f) in self.iter() {
            let k = match f.orig.proto {
                Proto::Tcp => 0,
                Proto::Udp => 1,
                Proto::Icmp => 2,
            };
            if let Some(c) = n.get_mut(k) {
                *c += 1;
            }
        }
        n
    }
}

/// The simplified TCP state machine (no window tracking).
fn tcp_next(s: State, dir: Dir, f: TcpFlags) -> State {
    use State::*;
    if f.rst {
        return Close;
    }
    match (s, dir) {
        // A new SYN on a closed flow (port reuse) starts it again.
        (TimeWait | Close, Dir::Original) if f.syn && !f.ack => SynSent,
        (SynSent, Dir::Reply) if f.syn && f.ack => SynRecv,
        (SynRecv, Dir::Original) if f.ack && !f.syn => {
            if f.fin {
                FinWait
            } else {
                Established
            }
        }
        (Established, Dir::Original) if f.fin => FinWait,
        (Established, Dir::Reply) if f.fin => CloseWait,
        (FinWait, Dir::Reply) if f.fin => LastAck,
        (CloseWait, Dir::Original) if f.fin => LastAck,
        (LastAck, _) if f.ack && !f.fin => TimeWait,
        (s, _) => s,
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    fn t(n: u8, sport: u16) -> Tuple {
        Tuple { proto: Proto::Udp, src: Ipv4Addr::new(10, 0, 0, n), sport, dst: Ipv4Addr::new(192, 0, 2, 1), dport: 53 }
    }

    fn flow(orig: Tuple, nat: Option<(PortId, Ipv4Addr, u16)>) -> Flow {
        Flow {
            orig,
            nat,
            from: Zone::Port(PortId(0)),
            to: Zone::Port(PortId(1)),
            state: State::Unreplied,
            created: Instant::ZERO,
            expires: Instant::ZERO,
            packets: [0; 2],
        }
    }

    fn ms(v: u64) -> Instant {
        Instant::from_millis(v)
    }

    #[test]
    fn both_directions_are_found_and_nat_shapes_the_reply() {
        let mut ct = Conntrack::default();
        let o = t(5, 40000);
        let wan = Ipv4Addr::new(203, 0, 113, 2);
        let i = ct.insert(flow(o, Some((PortId(1), wan, 40000))), ms(0)).unwrap();
        assert_eq!(ct.lookup(&o, ms(1)), Some((i, Dir::Original)));
        let r = Tuple { proto: Proto::Udp, src: o.dst, sport: 53, dst: wan, dport: 40000 };
        assert_eq!(ct.lookup(&r, ms(1)), Some((i, Dir::Reply)));
        // The untranslated reversal is not this flow.
        assert_eq!(ct.lookup(&o.reversed(), ms(1)), None);
        assert!(!ct.is_free(&r, ms(1)));
        assert_eq!(ct.insert(flow(o, None), ms(1)), Err(InsertError::Exists));
    }

    #[test]
    fn icmp_echo_reply_tuple_uses_the_identifier() {
        let o = Tuple { proto: Proto::Icmp, src: Ipv4Addr::new(10, 0, 0, 5), sport: 7, dst: Ipv4Addr::new(192, 0, 2, 1), dport: 0 };
        let f = flow(o, Some((PortId(1), Ipv4Addr::new(203, 0, 113, 2), 9)));
        let r = f.reply();
        assert_eq!((r.src, r.sport, r.dst, r.dport), (o.dst, 0, Ipv4Addr::new(203, 0, 113, 2), 9));
    }

    #[test]
    fn udp_timeouts_and_lazy_expiry() {
        let mut ct = Conntrack::default();
        let o = t(5, 1);
        let i = ct.insert(flow(o, None), ms(0)).unwrap();
        assert!(ct.lookup(&o, ms(29_999)).is_some());
        assert_eq!(ct.update(i, Dir::Reply, None, ms(29_999)), Some(State::Replied));
        assert!(ct.lookup(&o, ms(29_999 + 119_999)).is_some());
        assert!(ct.lookup(&o, ms(29_999 + 120_000)).is_none());
        assert_eq!(ct.len(), 0);
        assert_eq!(ct.counters.expired, 1);
    }

    #[test]
    fn tcp_states_follow_the_handshake_and_close() {
        let mut ct = Conntrack::default();
        let o = Tuple { proto: Proto::Tcp, ..t(5, 40000) };
        let mut f = flow(o, None);
        f.state = State::SynSent;
        let i = ct.insert(f, ms(0)).unwrap();
        let fl = |syn, ack, fin, rst| Some(TcpFlags { syn, ack, fin, rst });
        assert_eq!(ct.update(i, Dir::Reply, fl(true, true, false, false), ms(1)), Some(State::SynRecv));
        assert_eq!(ct.update(i, Dir::Original, fl(false, true, false, false), ms(2)), Some(State::Established));
        assert!(ct.get(i).unwrap().assured());
        assert_eq!(ct.get(i).unwrap().expires, ms(2 + 7_440_000));
        assert_eq!(ct.update(i, Dir::Original, fl(false, true, true, false), ms(3)), Some(State::FinWait));
        assert_eq!(ct.update(i, Dir::Reply, fl(false, true, true, false), ms(4)), Some(State::LastAck));
        assert_eq!(ct.update(i, Dir::Original, fl(false, true, false, false), ms(5)), Some(State::TimeWait));
        assert_eq!(ct.update(i, Dir::Original, fl(true, false, false, false), ms(6)), Some(State::SynSent));
        assert_eq!(ct.update(i, Dir::Reply, fl(false, false, false, true), ms(7)), Some(State::Close));
        assert_eq!(ct.get(i).unwrap().expires, ms(7 + 10_000));
    }

    #[test]
    fn full_table_evicts_oldest_unassured_never_assured() {
        let mut ct = Conntrack::default();
        // One assured flow first, then fill the rest with unreplied ones.
        let keep = ct.insert(flow(t(1, 1), None), ms(0)).unwrap();
        ct.update(keep, Dir::Reply, None, ms(0));
        for n in 1..CONNTRACK_ENTRIES {
            ct.insert(flow(t(2, n as u16), None), ms(n as u64)).unwrap();
        }
        assert_eq!(ct.len(), CONNTRACK_ENTRIES);
        // New ones evict unreplied flows (the oldest in the window), never
        // the assured one, whatever the window.
        for n in 0..2 * CONNTRACK_ENTRIES {
            ct.insert(flow(t(3, n as u16), None), ms(5000 + n as u64)).unwrap();
        }
        assert_eq!(ct.counters.evicted, 2 * CONNTRACK_ENTRIES as u64);
        assert_eq!(ct.len(), CONNTRACK_ENTRIES);
        assert!(ct.lookup(&t(2, 1), ms(9000)).is_none());
        assert!(ct.lookup(&t(1, 1), ms(9000)).is_some());
        // Every slot assured: refused.
        let mut ct = Conntrack::default();
        for n in 0..CONNTRACK_ENTRIES {
            let i = ct.insert(flow(t(2, n as u16), None), ms(0)).unwrap();
            ct.update(i, Dir::Reply, None, ms(0));
        }
        assert_eq!(ct.insert(flow(t(3, 1), None), ms(1)), Err(InsertError::Full));
        assert_eq!(ct.counters.refused_full, 1);
        // Expired ones make room first.
        assert!(ct.insert(flow(t(3, 1), None), ms(120_000)).is_ok());
    }

    #[test]
    fn remove_unlinks_from_shared_chains_and_sweep_is_bounded() {
        let mut ct = Conntrack::default();
        let mut ids = std::vec::Vec::new();
        for n in 0..500u16 {
            ids.push(ct.insert(flow(t((n % 7) as u8, n), None), ms(0)).unwrap());
        }
        for (k, i) in ids.iter().enumerate() {
            if k % 2 == 0 {
                ct.remove(*i);
            }
        }
        for n in 0..500u16 {
            assert_eq!(ct.lookup(&t((n % 7) as u8, n), ms(1)).is_some(), n % 2 == 1, "{n}");
        }
        assert_eq!(ct.len(), 250);
        let first = ct.sweep(ms(1_000_000), 100);
        assert!(first <= 100);
        let mut total = first;
        for _ in 0..CONNTRACK_ENTRIES / 100 + 1 {
            total += ct.sweep(ms(1_000_000), 100);
        }
        assert_eq!(total, 250);
        assert_eq!(ct.len(), 0);
    }
}
