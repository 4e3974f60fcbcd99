//! Peer endpoints by DNS name: the resolver and the re-resolve policy.
//!
//! A peer's `endpoint = "wro.example.net:51820"` is looked up with A
//! queries to the servers of `[dns]` (or, without any, the WAN's DHCP
//! lease), one query in flight at a time, each from a fresh random source
//! port and transaction id (RFC 5452), over UDP through the dataplane like
//! any packet the box originates. Only the answer to the query in flight is
//! let in (`Dataplane::set_resolver_port`); it must come from the server
//! asked, carry the transaction id and question, and CNAME chains are
//! followed inside the one answer. smoltcp's DNS socket is not used: it has
//! no TTL in its result and no cache, and we need both; its wire views are
//! (`smoltcp::wire::Dns*`), so the parsing is not ours.
//!
//! [`Policy`] decides when a name is looked up again — the same rules on
//! the image and in routerd-host (which resolves with the system's
//! resolver): a name that never resolved is retried every `retry`; a
//! resolved one when its TTL (clamped) runs out, every `refresh`, and when
//! no handshake with its peer succeeded for `reresolve_after` (the peer may
//! have moved: a dynamic address behind dyndns). A new address is handed to
//! the node ([`Resolver::take_event`]), which moves the peer's endpoint in
//! the running WireGuard device without an apply.
//!
//! Sans-I/O, no panics on any answer (fuzzed through `Resolver::on_answer`).

use core::net::Ipv4Addr;
use heapless::{Deque, Vec};
use routerd_dataplane::Instant;
use smoltcp::wire::{DnsFlags, DnsOpcode, DnsPacket, DnsQueryType, DnsQuestion, DnsRcode, DnsRecord, DnsRecordData, DnsRepr};

/// Names the resolver keeps (one per peer at most).
pub const MAX_NAMES: usize = config_schema::RUNS.peers;
/// Servers it asks, in order.
pub const MAX_SERVERS: usize = 3;
/// Largest query (header + a 255-byte name + type and class).
pub const MAX_QUERY: usize = 12 + 256 + 4;
/// How long one query waits for its answer.
pub const QUERY_TIMEOUT_MS: u64 = 2_000;
/// Tries per server before the next one (a lost datagram is not a dead server).
pub const TRIES_PER_SERVER: u8 = 2;
/// Largest domain name in wire format.
const MAX_WIRE_NAME: usize = 255;
/// Labels followed when comparing names (a pointer chain is shorter).
const MAX_LABELS: usize = 128;
/// Records read from one answer.
const MAX_RECORDS: usize = 32;
/// How often the names are checked for being due (the loop turns far more
/// often; every timer of the policy is seconds long).
const SCAN_MS: u64 = 1_000;

/// When names are looked up again (shared with routerd-host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Re-resolve when no handshake with the name's peer succeeded for this
    /// long (WireGuard rekeys every 120 s, so a live peer always has one).
    pub reresolve_after_ms: u64,
    /// Retry a name that does not resolve (or whose lookup failed) this often.
    pub retry_ms: u64,
    /// Look a resolved name up again at least this often.
    pub refresh_ms: u64,
    /// TTLs below this are treated as this (dyndns names often have 60 s
    /// or less; local servers answer 0).
    pub min_ttl_secs: u32,
}

impl Policy {
    /// The policy both platforms run.
    pub const DEFAULT: Policy = Policy { reresolve_after_ms: 120_000, retry_ms: 30_000, refresh_ms: 600_000, min_ttl_secs: 30 };
}

impl Default for Policy {
    fn default() -> Policy {
        Policy::DEFAULT
    }
}

/// What the policy looks at for one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NameClock {
    /// When it last resolved (`None`: never).
    pub resolved_at: Option<Instant>,
    /// The TTL of that answer, in seconds (`None`: unknown, e.g. the
    /// system resolver's answer).
    pub ttl_secs: Option<u32>,
    /// When it was last looked up, successfully or not.
    pub attempted_at: Option<Instant>,
}

impl Policy {
    /// Whether to look the name up now. `handshake_ms_ago`: the newest
    /// handshake with a peer that uses the name (`None`: none yet).
    pub fn due(&self, c: &NameClock, handshake_ms_ago: Option<u64>, now: Instant) -> bool {
        let since_attempt = c.attempted_at.map(|t| now.millis_since(t));
        let Some(resolved_at) = c.resolved_at else {
            return since_attempt.is_none_or(|s| s >= self.retry_ms);
        };
        let age = now.millis_since(resolved_at);
        let ttl_ms = c.ttl_secs.map(|t| u64::from(t.max(self.min_ttl_secs)) * 1000);
        if ttl_ms.is_some_and(|t| age >= t) || age >= self.refresh_ms {
            return since_attempt.is_none_or(|s| s >= self.retry_ms.min(ttl_ms.unwrap_or(u64::MAX)));
        }
        let stale = handshake_ms_ago.is_none_or(|h| h >= self.reresolve_after_ms);
        stale && since_attempt.is_none_or(|s| s >= self.reresolve_after_ms)
    }
}

/// Why a lookup failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupError {
    /// No server answered (every server, every try).
    Timeout,
    /// The name does not exist (NXDOMAIN).
    NoSuchName,
    /// The name exists but has no IPv4 address.
    NoAddress,
    /// A server refused or failed (SERVFAIL, REFUSED, …).
    ServerFailure,
    /// No DNS server is known (none configured, no DHCP lease with any).
    NoServers,
    /// The packet could not be sent (no route to the server).
    Unroutable,
}

impl LookupError {
    /// As status and logs say it.
    pub const fn as_str(self) -> &'static str {
        match self {
            LookupError::Timeout => "no answer from any DNS server",
            LookupError::NoSuchName => "no such name (NXDOMAIN)",
            LookupError::NoAddress => "the name has no IPv4 address",
            LookupError::ServerFailure => "the DNS server failed or refused",
            LookupError::NoServers => "no DNS server known ([dns] servers, or a DHCP lease with one)",
            LookupError::Unroutable => "no route to the DNS server",
        }
    }
}

/// One name and what is known of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameState {
    pub name: config_schema::DnsName,
    pub address: Option<Ipv4Addr>,
    pub clock: NameClock,
    /// The last lookup's failure (cleared by a success).
    pub error: Option<LookupError>,
    /// Lookups sent and failed, since the name was first configured.
    pub lookups: u32,
    pub failures: u32,
}

/// What happened to a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsEvent {
    /// It resolved; `previous` is the address before (if it changed).
    Resolved { name: config_schema::DnsName, address: Ipv4Addr, previous: Option<Ipv4Addr>, ttl_secs: u32 },
    /// A lookup failed (the address in use, if any, is kept).
    Failed { name: config_schema::DnsName, error: LookupError, kept: Option<Ipv4Addr> },
}

/// The query in flight.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    name: usize,
    id: u16,
    port: u16,
    server: usize,
    tries: u8,
    sent_at: Instant,
}

/// A query to send: `payload` to `server`:53 from UDP port `port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    pub server: Ipv4Addr,
    pub port: u16,
    pub len: usize,
}

/// The resolver.
#[derive(Debug, Default)]
pub struct Resolver {
    names: Vec<NameState, MAX_NAMES>,
    servers: Vec<Ipv4Addr, MAX_SERVERS>,
    policy: Policy,
    inflight: Option<InFlight>,
    entropy: Deque<u32, 4>,
    events: Deque<DnsEvent, 8>,
    /// No name is looked at for being due before this (`None`: now).
    next_scan: Option<Instant>,
    /// Answers refused (wrong id, server or question; malformed).
    pub refused: u64,
}

impl Resolver {
    pub const fn new(policy: Policy) -> Resolver {
        Resolver {
            names: Vec::new(),
            servers: Vec::new(),
            policy,
            inflight: None,
            entropy: Deque::new(),
            events: Deque::new(),
            next_scan: None,
            refused: 0,
        }
    }

    /// The names to keep resolved. Names already known keep their state.
    pub fn set_names<'a>(&mut self, names: impl Iterator<Item = &'a config_schema::DnsName>) {
        let mut next: Vec<NameState, MAX_NAMES> = Vec::new();
        for n in names {
            if next.iter().any(|s| s.name == *n) {
                continue;
            }
            let state = self.names.iter().find(|s| s.name == *n).cloned().unwrap_or(NameState {
                name: n.clone(),
                address: None,
                clock: NameClock::default(),
                error: None,
                lookups: 0,
                failures: 0,
            });
            let _ = next.push(state);
        }
        if let Some(q) = self.inflight {
            let still = self.names.get(q.name).and_then(|old| next.iter().position(|s| s.name == old.name));
            self.inflight = still.map(|name| InFlight { name, ..q });
        }
        self.names = next;
        self.next_scan = None;
    }

    /// The servers to ask, in order. A change abandons the query in flight.
    pub fn set_servers(&mut self, servers: &[Ipv4Addr]) {
        let new: Vec<Ipv4Addr, MAX_SERVERS> = servers.iter().copied().take(MAX_SERVERS).collect();
        if new != self.servers {
            self.servers = new;
            self.inflight = None;
            // Names that failed for want of a server are tried at once.
            for n in self.names.iter_mut().filter(|n| n.address.is_none()) {
                n.clock.attempted_at = None;
            }
            self.next_scan = None;
        }
    }

    /// The servers in use.
    pub fn servers(&self) -> &[Ipv4Addr] {
        &self.servers
    }

    /// Every name and its state.
    pub fn names(&self) -> &[NameState] {
        &self.names
    }

    /// The address `name` resolves to now.
    pub fn address(&self, name: &config_schema::DnsName) -> Option<Ipv4Addr> {
        self.names.iter().find(|s| s.name == *name).and_then(|s| s.address)
    }

    /// Random bits wanted for the next query (from the box's CSPRNG).
    pub fn wants_entropy(&self) -> bool {
        !self.names.is_empty() && !self.entropy.is_full()
    }

    /// Random bits for transaction ids and source ports.
    pub fn add_entropy(&mut self, bits: u32) {
        let _ = self.entropy.push_back(bits);
    }

    /// The UDP port answers are expected on (the query in flight's).
    pub fn open_port(&self) -> Option<u16> {
        self.inflight.map(|q| q.port)
    }

    /// When [`Resolver::poll`] has work (a timeout, or a name due).
    pub fn busy(&self) -> bool {
        self.inflight.is_some()
    }

    /// What happened, oldest first.
    pub fn take_event(&mut self) -> Option<DnsEvent> {
        self.events.pop_front()
    }

    /// Timeouts, then the next query if one is due: written to `out`.
    /// `handshake_ms_ago(name)`: the newest handshake of the peers using it.
    pub fn poll(
        &mut self,
        now: Instant,
        handshake_ms_ago: &dyn Fn(&config_schema::DnsName) -> Option<u64>,
        out: &mut [u8],
    ) -> Option<Query> {
        if let Some(q) = self.inflight {
            if now.millis_since(q.sent_at) < QUERY_TIMEOUT_MS {
                return None;
            }
            // Timed out: the next try, the next server, or give up.
            let (server, tries) = if q.tries < TRIES_PER_SERVER { (q.server, q.tries + 1) } else { (q.server + 1, 1) };
            if server >= self.servers.len() {
                self.inflight = None;
                self.next_scan = None;
                self.fail(q.name, LookupError::Timeout);
                return None;
            }
            return self.send(q.name, server, tries, now, out);
        }
        // The policy's timers are seconds long: look at the names (and the
        // handshakes behind them) once a second, not on every loop turn.
        if self.next_scan.is_some_and(|t| now < t) {
            return None;
        }
        self.next_scan = Some(Instant::from_millis(now.millis().saturating_add(SCAN_MS)));
        if self.servers.is_empty() {
            // Say so once per retry period per name, then wait.
            let policy = self.policy;
            let due = self.names.iter().position(|s| policy.due(&s.clock, handshake_ms_ago(&s.name), now))?;
            if let Some(s) = self.names.get_mut(due) {
                s.clock.attempted_at = Some(now);
            }
            self.fail(due, LookupError::NoServers);
            return None;
        }
        let policy = self.policy;
        let due = self.names.iter().position(|s| policy.due(&s.clock, handshake_ms_ago(&s.name), now))?;
        self.send(due, 0, 1, now, out)
    }

    /// The query could not leave (no route): the lookup fails now.
    pub fn unsent(&mut self) {
        if let Some(q) = self.inflight.take() {
            self.next_scan = None;
            self.fail(q.name, LookupError::Unroutable);
        }
    }

    fn send(&mut self, name: usize, server: usize, tries: u8, now: Instant, out: &mut [u8]) -> Option<Query> {
        let to = *self.servers.get(server)?;
        let Some(bits) = self.entropy.pop_front() else {
            // No fresh randomness yet: try again next turn.
            self.inflight = None;
            self.next_scan = None;
            return None;
        };
        let id = (bits >> 16) as u16;
        // 49152..=65535 (RFC 6335's dynamic range).
        let port = 49152 | (bits as u16 & 0x3fff);
        let state = self.names.get_mut(name)?;
        state.clock.attempted_at = Some(now);
        if tries == 1 && server == 0 {
            state.lookups = state.lookups.saturating_add(1);
        }
        let Some(len) = write_query(state.name.as_str(), id, out) else {
            self.inflight = None;
            self.fail(name, LookupError::NoSuchName);
            return None;
        };
        self.inflight = Some(InFlight { name, id, port, server, tries, sent_at: now });
        Some(Query { server: to, port, len })
    }

    fn fail(&mut self, name: usize, error: LookupError) {
        let Some(s) = self.names.get_mut(name) else { return };
        s.error = Some(error);
        s.failures = s.failures.saturating_add(1);
        let e = DnsEvent::Failed { name: s.name.clone(), error, kept: s.address };
        if self.events.push_back(e.clone()).is_err() {
            self.events.pop_front();
            let _ = self.events.push_back(e);
        }
    }

    /// A UDP datagram from `from`:`sport` to the box's port `dport`.
    /// Anything but the answer to the query in flight is refused (counted).
    pub fn on_answer(&mut self, now: Instant, from: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) {
        let Some(q) = self.inflight else {
            self.refused += 1;
            return;
        };
        if sport != 53 || dport != q.port || self.servers.get(q.server) != Some(&from) {
            self.refused += 1;
            return;
        }
        let Some(state) = self.names.get(q.name) else {
            self.inflight = None;
            return;
        };
        let outcome = read_answer(payload, q.id, state.name.as_str(), state.address);
        match outcome {
            Err(Refused) => self.refused += 1,
            Ok(result) => {
                // The next name due goes out on the next turn.
                self.inflight = None;
                self.next_scan = None;
                match result {
                    Ok((address, ttl)) => {
                        let Some(s) = self.names.get_mut(q.name) else { return };
                        let previous = s.address.filter(|p| *p != address);
                        s.address = Some(address);
                        s.clock.resolved_at = Some(now);
                        s.clock.ttl_secs = Some(ttl);
                        s.error = None;
                        let e = DnsEvent::Resolved { name: s.name.clone(), address, previous, ttl_secs: ttl };
                        if self.events.push_back(e.clone()).is_err() {
                            self.events.pop_front();
                            let _ = self.events.push_back(e);
                        }
                    }
                    Err(error) => self.fail(q.name, error),
                }
            }
        }
    }
}

/// An answer that is not the one awaited (or not an answer at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refused;

/// `name` in DNS wire format (labels, then 0) into `out`: its length.
fn encode_name(name: &str, out: &mut [u8]) -> Option<usize> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut at = 0usize;
    for label in name.split('.') {
        let len = label.len();
        if len == 0 || len > 63 {
            return None;
        }
        *out.get_mut(at)? = len as u8;
        out.get_mut(at + 1..at + 1 + len)?.copy_from_slice(label.as_bytes());
        at += 1 + len;
    }
    *out.get_mut(at)? = 0;
    at += 1;
    (at <= MAX_WIRE_NAME).then_some(at)
}

/// An A query for `name` with transaction `id`, recursion desired.
pub fn write_query(name: &str, id: u16, out: &mut [u8]) -> Option<usize> {
    let mut wire = [0u8; MAX_WIRE_NAME + 1];
    let n = encode_name(name, &mut wire)?;
    let repr = DnsRepr {
        transaction_id: id,
        opcode: DnsOpcode::Query,
        flags: DnsFlags::RECURSION_DESIRED,
        question: DnsQuestion { name: wire.get(..n)?, type_: DnsQueryType::A },
    };
    let len = repr.buffer_len();
    let buf = out.get_mut(..len)?;
    // smoltcp's emit leaves the RCODE bits as it finds them.
    buf.fill(0);
    repr.emit(&mut DnsPacket::new_unchecked(buf));
    Some(len)
}

/// True when the two names (wire bytes inside `p`, pointers allowed) are
/// the same, ignoring ASCII case.
fn same_name(p: &DnsPacket<&[u8]>, a: &[u8], b: &[u8]) -> bool {
    let (mut x, mut y) = (p.parse_name(a), p.parse_name(b));
    for _ in 0..MAX_LABELS {
        match (x.next(), y.next()) {
            (None, None) => return true,
            (Some(Ok(l)), Some(Ok(m))) if l.eq_ignore_ascii_case(m) => {}
            _ => return false,
        }
    }
    false
}

/// True when the wire name `a` in `p` spells `name`.
fn is_name(p: &DnsPacket<&[u8]>, a: &[u8], name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut labels = name.split('.');
    let mut x = p.parse_name(a);
    for _ in 0..MAX_LABELS {
        match (x.next(), labels.next()) {
            (None, None) => return true,
            (Some(Ok(l)), Some(m)) if l.eq_ignore_ascii_case(m.as_bytes()) => {}
            _ => return false,
        }
    }
    false
}

/// Reads the answer to query `id` for `name`. `Err(Refused)`: not that
/// answer (ignored, the query stays in flight); `Ok(Err(e))`: the lookup
/// failed; `Ok(Ok((address, ttl)))`: it resolved (the address in use is
/// kept when the answer still lists it, so round-robin records do not
/// make the endpoint flap).
fn read_answer(payload: &[u8], id: u16, name: &str, current: Option<Ipv4Addr>) -> Result<Result<(Ipv4Addr, u32), LookupError>, Refused> {
    let p = DnsPacket::new_checked(payload).map_err(|_| Refused)?;
    if p.transaction_id() != id || !p.flags().contains(DnsFlags::RESPONSE) || p.opcode() != DnsOpcode::Query || p.question_count() != 1 {
        return Err(Refused);
    }
    let (mut rest, question) = DnsQuestion::parse(p.payload()).map_err(|_| Refused)?;
    if question.type_ != DnsQueryType::A || !is_name(&p, question.name, name) {
        return Err(Refused);
    }
    match p.rcode() {
        DnsRcode::NoError => {}
        DnsRcode::NXDomain => return Ok(Err(LookupError::NoSuchName)),
        _ => return Ok(Err(LookupError::ServerFailure)),
    }
    if p.flags().contains(DnsFlags::TRUNCATED) && p.answer_record_count() == 0 {
        return Ok(Err(LookupError::ServerFailure));
    }
    // Follow the CNAME chain from the question's name.
    let mut target: &[u8] = question.name;
    let mut best: Option<(Ipv4Addr, u32)> = None;
    let mut chain_ttl = u32::MAX;
    for _ in 0..usize::from(p.answer_record_count()).min(MAX_RECORDS) {
        let Ok((next, record)) = DnsRecord::parse(rest) else { break };
        rest = next;
        let DnsRecord { name: rname, ttl, data } = record;
        if !same_name(&p, rname, target) {
            continue;
        }
        match data {
            DnsRecordData::Cname(to) => {
                target = to;
                chain_ttl = chain_ttl.min(ttl);
            }
            DnsRecordData::A(a) => {
                let a: Ipv4Addr = a;
                let usable = !(a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback());
                if !usable {
                    continue;
                }
                let ttl = ttl.min(chain_ttl);
                match best {
                    Some((b, _)) if Some(b) == current => {}
                    _ if Some(a) == current || best.is_none() => best = Some((a, ttl)),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    Ok(best.ok_or(LookupError::NoAddress))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec as StdVec;

    fn name(s: &str) -> config_schema::DnsName {
        s.parse().unwrap()
    }

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    /// A server's answer to `query` with `answers` (type, name bytes or
    /// pointer to the question, data, ttl).
    fn answer(query: &[u8], rcode: u8, records: &[(u16, &[u8], &[u8], u32)]) -> StdVec<u8> {
        let mut a = query.to_vec();
        a[2] |= 0x80; // response
        a[3] = (a[3] & 0xf0) | rcode;
        a[6..8].copy_from_slice(&(records.len() as u16).to_be_bytes());
        for (ty, rname, data, ttl) in records {
            a.extend_from_slice(rname);
            a.extend_from_slice(&ty.to_be_bytes());
            a.extend_from_slice(&1u16.to_be_bytes());
            a.extend_from_slice(&ttl.to_be_bytes());
            a.extend_from_slice(&(data.len() as u16).to_be_bytes());
            a.extend_from_slice(data);
        }
        a
    }

    const QNAME: &[u8] = &[0xc0, 12];

    fn resolver(names: &[&str]) -> Resolver {
        let mut r = Resolver::new(Policy::default());
        let names: StdVec<config_schema::DnsName> = names.iter().map(|n| name(n)).collect();
        r.set_names(names.iter());
        r.set_servers(&[Ipv4Addr::new(192, 0, 2, 53), Ipv4Addr::new(192, 0, 2, 54)]);
        for i in 0..4 {
            r.add_entropy(0x1234_5678 ^ i);
        }
        r
    }

    fn never(_: &config_schema::DnsName) -> Option<u64> {
        None
    }

    #[test]
    fn a_query_is_a_well_formed_a_question() {
        let mut out = [0xa5u8; MAX_QUERY];
        let n = write_query("Wro.Example.net.", 0xbeef, &mut out).unwrap();
        assert_eq!(&out[..12], &[0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&out[12..n], b"\x03Wro\x07Example\x03net\x00\x00\x01\x00\x01");
        assert_eq!(write_query("a..b", 1, &mut out), None);
        assert_eq!(write_query("x.example.net", 1, &mut out[..10]), None, "no room");
    }

    #[test]
    fn resolves_follows_cnames_and_keeps_the_ttl() {
        let mut r = resolver(&["wro.example.net"]);
        let mut out = [0u8; MAX_QUERY];
        let q = r.poll(t(0), &never, &mut out).unwrap();
        assert_eq!((q.server, r.open_port()), (Ipv4Addr::new(192, 0, 2, 53), Some(q.port)));
        assert!(q.port >= 49152);
        let query = out[..q.len].to_vec();
        // wro.example.net CNAME home.dyn.example (TTL 300) A 203.0.113.20 (TTL 60)
        let cname = b"\x04home\x03dyn\x07example\x00";
        let a = answer(&query, 0, &[(5, QNAME, cname, 300), (1, &cname[..], &[203, 0, 113, 20], 60)]);
        // From the wrong server or port: ignored, still waiting.
        r.on_answer(t(5), Ipv4Addr::new(192, 0, 2, 99), 53, q.port, &a);
        r.on_answer(t(5), Ipv4Addr::new(192, 0, 2, 53), 5353, q.port, &a);
        r.on_answer(t(5), Ipv4Addr::new(192, 0, 2, 53), 53, q.port ^ 1, &a);
        assert_eq!(r.refused, 3);
        assert!(r.busy());
        r.on_answer(t(10), Ipv4Addr::new(192, 0, 2, 53), 53, q.port, &a);
        assert!(!r.busy());
        assert_eq!(r.address(&name("wro.example.net")), Some(Ipv4Addr::new(203, 0, 113, 20)));
        assert_eq!(
            r.take_event(),
            Some(DnsEvent::Resolved {
                name: name("wro.example.net"),
                address: Ipv4Addr::new(203, 0, 113, 20),
                previous: None,
                ttl_secs: 60
            })
        );
        assert_eq!(r.names()[0].clock.ttl_secs, Some(60));
        // Not due before the TTL runs out (a fresh handshake keeps it quiet).
        let fresh = |_: &config_schema::DnsName| Some(1_000u64);
        assert!(r.poll(t(59_000), &fresh, &mut out).is_none());
        assert!(r.poll(t(60_010), &fresh, &mut out).is_some(), "the TTL ran out");
    }

    #[test]
    fn timeouts_walk_the_servers_then_fail_and_keep_the_address() {
        let mut r = resolver(&["roz.example.net"]);
        let mut out = [0u8; MAX_QUERY];
        let mut asked = StdVec::new();
        let mut now = 0;
        let q = r.poll(t(now), &never, &mut out).unwrap();
        asked.push(q.server);
        loop {
            now += QUERY_TIMEOUT_MS;
            r.add_entropy(now as u32);
            match r.poll(t(now), &never, &mut out) {
                Some(q) => asked.push(q.server),
                None => break,
            }
        }
        let (a, b) = (Ipv4Addr::new(192, 0, 2, 53), Ipv4Addr::new(192, 0, 2, 54));
        assert_eq!(asked, [a, a, b, b]);
        assert_eq!(r.take_event(), Some(DnsEvent::Failed { name: name("roz.example.net"), error: LookupError::Timeout, kept: None }));
        assert_eq!(r.names()[0].error, Some(LookupError::Timeout));
        // Retried after `retry`, not before.
        assert!(r.poll(t(now + 1_000), &never, &mut out).is_none());
        assert!(r.poll(t(now + Policy::default().retry_ms), &never, &mut out).is_some());
    }

    #[test]
    fn nxdomain_no_address_and_servfail_are_failures() {
        for (rcode, records, want) in [
            (3u8, &[][..], LookupError::NoSuchName),
            (0, &[][..], LookupError::NoAddress),
            (2, &[][..], LookupError::ServerFailure),
            (0, &[(28u16, QNAME, &[0u8; 16][..], 60u32)][..], LookupError::NoAddress),
            (0, &[(1u16, QNAME, &[127u8, 0, 0, 1][..], 60u32)][..], LookupError::NoAddress),
        ] {
            let mut r = resolver(&["wro.example.net"]);
            let mut out = [0u8; MAX_QUERY];
            let q = r.poll(t(0), &never, &mut out).unwrap();
            let a = answer(&out[..q.len], rcode, records);
            r.on_answer(t(1), Ipv4Addr::new(192, 0, 2, 53), 53, q.port, &a);
            assert_eq!(r.names()[0].error, Some(want), "rcode {rcode}");
            assert!(!r.busy());
        }
    }

    #[test]
    fn the_answer_must_match_id_and_question() {
        let mut r = resolver(&["wro.example.net"]);
        let mut out = [0u8; MAX_QUERY];
        let q = r.poll(t(0), &never, &mut out).unwrap();
        let good = answer(&out[..q.len], 0, &[(1, QNAME, &[203, 0, 113, 20], 60)]);
        let from = Ipv4Addr::new(192, 0, 2, 53);
        let mut wrong_id = good.clone();
        wrong_id[1] ^= 1;
        let mut wrong_name = good.clone();
        wrong_name[13] = b'x';
        let mut query_not_answer = good.clone();
        query_not_answer[2] &= 0x7f;
        for bad in [wrong_id, wrong_name, query_not_answer] {
            r.on_answer(t(1), from, 53, q.port, &bad);
        }
        assert_eq!((r.refused, r.busy()), (3, true));
        // Every truncation and a thousand bit flips: never a panic.
        for n in 0..good.len() {
            r.on_answer(t(1), from, 53, q.port, &good[..n]);
        }
        let mut seed = 0x9e37_79b9u32;
        for _ in 0..1000 {
            let mut f = good.clone();
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let i = seed as usize % f.len();
            f[i] ^= (seed >> 8) as u8 | 1;
            r.on_answer(t(1), from, 53, q.port, &f);
            if !r.busy() {
                break;
            }
        }
    }

    #[test]
    fn a_listed_address_in_use_is_kept_among_round_robin_answers() {
        let mut r = resolver(&["wro.example.net"]);
        let mut out = [0u8; MAX_QUERY];
        let from = Ipv4Addr::new(192, 0, 2, 53);
        let q = r.poll(t(0), &never, &mut out).unwrap();
        r.on_answer(t(1), from, 53, q.port, &answer(&out[..q.len], 0, &[(1, QNAME, &[203, 0, 113, 21], 60)]));
        let q = r.poll(t(61_000), &never, &mut out).unwrap();
        let two = answer(&out[..q.len], 0, &[(1, QNAME, &[203, 0, 113, 20], 60), (1, QNAME, &[203, 0, 113, 21], 60)]);
        r.on_answer(t(61_001), from, 53, q.port, &two);
        assert_eq!(r.address(&name("wro.example.net")), Some(Ipv4Addr::new(203, 0, 113, 21)));
    }

    #[test]
    fn the_policy() {
        let p = Policy::default();
        let never_resolved = NameClock::default();
        assert!(p.due(&never_resolved, None, t(0)));
        let tried = NameClock { attempted_at: Some(t(0)), ..NameClock::default() };
        assert!(!p.due(&tried, None, t(29_999)));
        assert!(p.due(&tried, None, t(30_000)));
        let resolved = NameClock { resolved_at: Some(t(0)), ttl_secs: Some(3600), attempted_at: Some(t(0)) };
        assert!(!p.due(&resolved, Some(5_000), t(119_000)), "fresh handshake, TTL left");
        assert!(p.due(&resolved, None, t(120_000)), "no handshake for reresolve_after");
        assert!(p.due(&resolved, Some(130_000), t(130_000)), "stale handshake");
        assert!(!p.due(&resolved, Some(1_000), t(599_000)));
        assert!(p.due(&resolved, Some(1_000), t(600_000)), "refresh");
        let short = NameClock { ttl_secs: Some(0), ..resolved };
        assert!(!p.due(&short, Some(1), t(29_999)), "TTL 0 counts as the minimum");
        assert!(p.due(&short, Some(1), t(30_000)));
        // The system resolver gives no TTL: refresh and handshakes decide.
        let host = NameClock { ttl_secs: None, ..resolved };
        assert!(!p.due(&host, Some(1), t(300_000)));
    }

    #[test]
    fn no_servers_is_a_failure_said_once_per_retry() {
        let mut r = Resolver::new(Policy::default());
        let names = [name("wro.example.net")];
        r.set_names(names.iter());
        r.add_entropy(1);
        let mut out = [0u8; MAX_QUERY];
        assert!(r.poll(t(0), &never, &mut out).is_none());
        assert_eq!(r.names()[0].error, Some(LookupError::NoServers));
        assert!(r.take_event().is_some());
        assert!(r.poll(t(1_000), &never, &mut out).is_none());
        assert!(r.take_event().is_none(), "not again before the retry period");
    }
}
