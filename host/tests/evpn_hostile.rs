//! Hostile input (issue 19): a BGP peer that sends malformed UPDATEs to
//! routerd-host gets the RFC 7606 treatment, the box keeps forwarding, and
//! the session recovers. The peer is this test's own BGP speaker (raw BGP
//! over a `std` TCP stream, messages built with `routerd-bgp`'s codec or
//! byte by byte), in network namespaces this test creates (and always
//! removes: Drop guards).
//!
//! ```text
//!  netns vmB               netns box (routerd-host)               netns peer                         netns vmP
//!  TAP 10.50.0.2  ◀─fd─▶  lan1 (TAP, segment vni 100)            br100 ── vxlan100 (id 100,          veth 10.50.0.1
//!  (bridge-only port)      BGP 10.1.0.1  wan0 (UDP :51820)        │        local 10.1.0.2)   ◀──▶
//!                          --control DIR/ctl.sock                 the test's BGP speaker (a thread)
//!                          veth 10.79.X.1 ─────────────────────── veth 10.79.X.2
//!                                                                 wireguard-go 10.1.0.2/32 (:51821)
//! ```
//!
//! The speaker dials the box's port 179 over WireGuard (the box admits TCP
//! 179 only from its configured peer), opens with the L2VPN/EVPN and
//! 4-octet AS capabilities, keeps the session alive with KEEPALIVEs, and
//! announces a type 3 (ingress replication to 10.1.0.2, RT 65000:100,
//! VXLAN encapsulation) and a type 2 for vmP's MAC. No FRR: the peer's
//! Linux VXLAN port learns the box's MACs from traffic, and a static
//! all-zeros FDB entry sends its BUM traffic to the box.
//!
//! Cases, each checked over the box's control socket (`routerctl bgp
//! summary --json`, `routerctl bgp routes --json`), its log (the RFC 7606
//! counters, which the status does not carry) and VM pings:
//!
//! 1. EXTENDED_COMMUNITIES of 7 bytes on the type 2 → treat-as-withdraw:
//!    vmP's MAC leaves the RIB, the session stays Established, the box
//!    logs the UPDATE as treated as withdraw; pings keep flowing throughout
//!    (flooded to the VTEP the type 3 still gives).
//! 2. A duplicate EXTENDED_COMMUNITIES (a different MAC-mobility sequence,
//!    and a third copy of a bad length), a malformed AGGREGATOR and
//!    ATOMIC_AGGREGATE and an unknown optional attribute → the first copy
//!    counts, the rest is discarded or skipped (RFC 7606 §3g, §7.6, §7.7),
//!    and the route is taken with the first copy's sequence number.
//! 3. A bad marker (1/1) and a header length above 4096 (1/2) → the box
//!    sends a NOTIFICATION (read on the socket), the session goes down,
//!    `last_down` names it, the peer's routes are withdrawn; a bad OPEN
//!    (hold time 2 s: 2/6) on the next connection is refused the same way;
//!    then the speaker reconnects, the routes and the pings come back.
//! 4. A truncated MP_REACH_NLRI: the next hop overrunning the attribute,
//!    and an EVPN NLRI overrunning it → NOTIFICATION 3/9 (UPDATE
//!    message error / optional attribute error): RFC 7606 §3(j) and §5.3
//!    require a session reset (or AFI/SAFI disable) when the NLRIs cannot
//!    be located, and the box implements the reset; then recovery.
//! 5. 1,000 garbage UPDATEs (seeded: random attribute types, flags,
//!    lengths and bytes, well-framed random EVPN NLRIs, always an invalid
//!    ORIGIN so none installs a route) → all treated as withdraw, no reset,
//!    routerd-host alive, the routes intact, pings flowing throughout; the
//!    box's CPU time for the flood is printed.
//!
//! Printed: the box's session counters before and after each case, the
//! NOTIFICATIONs read, reconnect → routes back → traffic times, and the
//! CPU figures. Traffic is bounded: pings only.
//!
//! Needs root, /dev/net/tun, `ip`, `bridge`, `ping`, `wg` and
//! `wireguard-go`; without them it prints "skipped: …" and passes, unless
//! `CI` is set, where it fails. Every wait is bounded.

mod common;

use common::evpn::{
    box_config, box_key, cpu_seconds, pve_wireguard, vm_nic, vm_on_bridge, wait_until, Neighbour, ASN, HOLD, SEGMENT_MTU, VM_B, VM_B_MAC,
    VM_P, VNI,
};
use common::frr::{log_lines, until_ping};
use common::{in_netns, mac_text, output_within, ping, prerequisites, routerctl, run, skip_or_fail, start_routerd_host, wg_keypair, Lab};
use routerd_bgp::evpn::{ImetRoute, MacIpRoute, TUNNEL_VXLAN};
use routerd_bgp::update::{decode_update, encode_evpn_announce, encode_evpn_withdraw, OutAttrs};
use routerd_bgp::wire::{self, Writer, HEADER_LEN};
use routerd_bgp::{EvpnRoute, ExtCommunity, Mac, PmsiTunnel, Rd, RouteTarget};
use serde_json::Value;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The addresses `common::evpn` gives the box and pve (here the speaker).
const BOX_TUN: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const PEER_TUN: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const VM_P_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xaa, 0x01];
/// A MAC no VM has: case 2's route.
const GHOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xcc, 0x01];
/// The speaker sends a KEEPALIVE every third of the hold time both sides propose.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(HOLD as u64 / 3);
/// Case 5.
const FLOOD: usize = 1000;

// ------------------------------------------------------------ messages

/// One message written by the product's encoder.
fn message(f: impl FnOnce(&mut Writer<'_>) -> Result<(), wire::Error>) -> Vec<u8> {
    let mut buf = vec![0u8; wire::MAX_MESSAGE_LEN];
    let mut w = Writer::new(&mut buf);
    f(&mut w).expect("the message encodes");
    let n = w.len();
    buf.truncate(n);
    buf
}

/// The speaker's OPEN: L2VPN/EVPN, route refresh, 4-octet AS (`asn`).
fn open(hold: u16) -> Vec<u8> {
    message(|w| wire::encode_open(w, ASN, hold, PEER_TUN))
}

fn keepalive() -> Vec<u8> {
    message(wire::encode_keepalive)
}

/// The speaker's RD, as FRR derives one: router id : index.
fn rd() -> Rd {
    Rd::ipv4(PEER_TUN, 2)
}

fn imet() -> EvpnRoute {
    EvpnRoute::Imet(ImetRoute { rd: rd(), eth_tag: 0, originator: IpAddr::V4(PEER_TUN) })
}

fn type2(mac: [u8; 6]) -> EvpnRoute {
    EvpnRoute::MacIp(MacIpRoute { rd: rd(), esi: [0; 10], eth_tag: 0, mac: Mac(mac), ip: None, label1: VNI, label2: None })
}

fn nlri(routes: &[EvpnRoute]) -> Vec<u8> {
    message(|w| routes.iter().try_for_each(|r| r.encode(w)))
}

/// RT 65000:100 and encapsulation VXLAN: what FRR puts on every EVPN route.
fn rt_and_vxlan() -> [ExtCommunity; 2] {
    [ExtCommunity::RouteTarget(RouteTarget::auto(ASN, VNI)), ExtCommunity::Encapsulation { tunnel_type: TUNNEL_VXLAN }]
}

/// A valid announcement of `route` (a type 3 also gets its PMSI tunnel).
fn announce(route: EvpnRoute) -> Vec<u8> {
    let ext = rt_and_vxlan();
    let pmsi = matches!(route, EvpnRoute::Imet(_)).then(|| PmsiTunnel::ingress_replication(VNI, PEER_TUN));
    let attrs = OutAttrs { next_hop: PEER_TUN, local_pref: 100, ext_communities: &ext, pmsi };
    let n = nlri(&[route]);
    message(|w| encode_evpn_announce(w, &attrs, &n))
}

fn withdraw(route: EvpnRoute) -> Vec<u8> {
    let n = nlri(&[route]);
    message(|w| encode_evpn_withdraw(w, &n))
}

/// One path attribute: flags, type, length (two bytes when the value is
/// longer than 255), value.
fn attr(flags: u8, ty: u8, value: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(value.len() + 4);
    if value.len() > 255 {
        a.extend([flags | 0x10, ty]);
        a.extend((value.len() as u16).to_be_bytes());
    } else {
        a.extend([flags & !0x10, ty, value.len() as u8]);
    }
    a.extend_from_slice(value);
    a
}

/// An UPDATE of these raw attributes (no IPv4 withdrawn routes or NLRI),
/// its three length fields right.
fn update(attrs: &[Vec<u8>]) -> Vec<u8> {
    let body = attrs.concat();
    let mut m = vec![0xff; 16];
    m.extend(((HEADER_LEN + 4 + body.len()) as u16).to_be_bytes());
    m.push(wire::msg::UPDATE);
    m.extend([0, 0]);
    m.extend((body.len() as u16).to_be_bytes());
    m.extend(body);
    m
}

fn origin_igp() -> Vec<u8> {
    attr(0x40, 1, &[0])
}

fn empty_as_path() -> Vec<u8> {
    attr(0x40, 2, &[])
}

fn local_pref() -> Vec<u8> {
    attr(0x40, 5, &100u32.to_be_bytes())
}

fn ext_communities(list: &[ExtCommunity]) -> Vec<u8> {
    attr(0xc0, 16, &list.iter().flat_map(|c| c.to_bytes()).collect::<Vec<u8>>())
}

/// MP_REACH_NLRI for L2VPN/EVPN with next hop 10.1.0.2 and `nlri` (raw).
fn mp_reach(nlri: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 25, 70, 4];
    v.extend(PEER_TUN.octets());
    v.push(0);
    v.extend_from_slice(nlri);
    attr(0x80, 14, &v)
}

/// xorshift64*: the flood is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// EVPN NLRIs that are framed right (type, length, that many bytes) but
/// hold random bytes: types 1 to 5 and one nobody defined.
fn random_nlris(rng: &mut Rng) -> Vec<u8> {
    let mut n = Vec::new();
    for _ in 0..rng.below(6) {
        let ty = [1u8, 2, 3, 4, 5, 9][rng.below(6)];
        let len = [0, 17, 33, 34, 37, rng.below(60)][rng.below(6)];
        n.push(ty);
        n.push(len as u8);
        n.extend(rng.bytes(len));
    }
    n
}

/// A garbage UPDATE that RFC 7606 handles without a reset: its framing is
/// sound, everything inside is random. An ORIGIN of 7 comes first, so each
/// is a treat-as-withdraw whatever else it holds; random types are flagged
/// optional (an unknown well-known type would be a reset, 3/2); MP_REACH,
/// when present, has a sound next hop and well-framed NLRIs.
fn garbage_update(rng: &mut Rng) -> Vec<u8> {
    let mut attrs = vec![attr(0x40, 1, &[7])];
    for _ in 0..rng.below(8) {
        let ty = [1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 16, 17, 18, 22, 99, 240][rng.below(16)];
        let flags = if ty >= 99 { 0x80 | (rng.next() as u8 & 0x60) } else { rng.next() as u8 & 0xe0 };
        let len = rng.below(48);
        attrs.push(attr(flags, ty, &rng.bytes(len)));
    }
    match rng.below(3) {
        0 => attrs.push(mp_reach(&random_nlris(rng))),
        1 => {
            let mut v = vec![0, 25, 70];
            v.extend(random_nlris(rng));
            attrs.push(attr(0x80, 15, &v));
        }
        _ => {}
    }
    update(&attrs)
}

// ------------------------------------------------------------ the speaker

/// What the box sent on the speaker's connection.
#[derive(Default)]
struct Inbox {
    /// (type, body) of every message, in order.
    messages: Vec<(u8, Vec<u8>)>,
    /// The box closed the connection (or it failed).
    closed: bool,
}

/// One connection of the test's BGP speaker to the box; a thread in the
/// peer's namespace reads what the box sends, answers its OPEN with a
/// KEEPALIVE and sends one every [`KEEPALIVE_EVERY`]. Dropping it closes
/// the connection and joins the thread.
struct Speaker {
    writer: Arc<Mutex<TcpStream>>,
    inbox: Arc<Mutex<Inbox>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Speaker {
    /// Dials 10.1.0.1:179 from namespace `ns` (trying for up to 10 s) and sends `open`.
    fn dial(ns: &str, open: Vec<u8>) -> Speaker {
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (inbox2, stop2) = (Arc::clone(&inbox), Arc::clone(&stop));
        let thread = in_netns(ns, move || {
            let to = SocketAddr::from((BOX_TUN, 179));
            let t0 = Instant::now();
            let stream = loop {
                match TcpStream::connect_timeout(&to, Duration::from_secs(1)) {
                    Ok(s) => break s,
                    Err(_) if t0.elapsed() < Duration::from_secs(10) => std::thread::sleep(Duration::from_millis(100)),
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("connect {to}: {e}")));
                        return;
                    }
                }
            };
            stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            stream.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
            let writer = Arc::new(Mutex::new(stream.try_clone().unwrap()));
            let _ = writer.lock().unwrap().write_all(&open);
            let _ = ready_tx.send(Ok(Arc::clone(&writer)));
            converse(stream, &writer, &inbox2, &stop2);
        });
        let writer = match ready_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(w)) => w,
            Ok(Err(e)) => panic!("the speaker cannot reach the box: {e}"),
            Err(e) => panic!("the speaker's thread did not report: {e}"),
        };
        Speaker { writer, inbox, stop, thread: Some(thread) }
    }

    /// Writes `m` whole; false if the connection is gone.
    fn send(&self, m: &[u8]) -> bool {
        self.writer.lock().map(|mut s| s.write_all(m).is_ok()).unwrap_or(false)
    }

    /// The first NOTIFICATION the box sent (code, subcode, data), waiting up to `limit`.
    fn notification(&self, limit: Duration) -> Option<(u8, u8, Vec<u8>)> {
        let t0 = Instant::now();
        loop {
            if let Some(n) = self.inbox.lock().unwrap().messages.iter().find(|(ty, _)| *ty == wire::msg::NOTIFICATION) {
                return Some((n.1.first().copied()?, n.1.get(1).copied()?, n.1.get(2..).unwrap_or(&[]).to_vec()));
            }
            if t0.elapsed() >= limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the box closed the connection, waiting up to `limit`.
    fn closed(&self, limit: Duration) -> bool {
        let t0 = Instant::now();
        while !self.inbox.lock().unwrap().closed {
            if t0.elapsed() >= limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// The EVPN routes the box announced on this connection, in order.
    fn announced(&self) -> Vec<EvpnRoute> {
        let inbox = self.inbox.lock().unwrap();
        let mut out = Vec::new();
        for (_, body) in inbox.messages.iter().filter(|(ty, _)| *ty == wire::msg::UPDATE) {
            let Ok(u) = decode_update(body, true) else { continue };
            if let Some(mp) = u.attrs.mp_reach {
                out.extend(mp.routes().flatten());
            }
        }
        out
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(s) = self.writer.lock() {
            let _ = s.shutdown(Shutdown::Both);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The speaker's side of a connection until the box closes it or the
/// speaker is dropped: collect the box's messages, KEEPALIVE after its
/// OPEN and then every [`KEEPALIVE_EVERY`].
fn converse(mut stream: TcpStream, writer: &Mutex<TcpStream>, inbox: &Mutex<Inbox>, stop: &AtomicBool) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    let mut last_keepalive: Option<Instant> = None;
    let close = |inbox: &Mutex<Inbox>| inbox.lock().unwrap().closed = true;
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => return close(inbox),
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(_) => return close(inbox),
        }
        loop {
            let h = match wire::decode_header(&pending) {
                Ok(Some(h)) if pending.len() >= h.len => h,
                Ok(_) => break,
                // The box never sends a broken header; stop reading if it did.
                Err(_) => return close(inbox),
            };
            let body = pending[HEADER_LEN..h.len].to_vec();
            pending.drain(..h.len);
            if h.ty == wire::msg::OPEN {
                let _ = writer.lock().unwrap().write_all(&keepalive());
                last_keepalive = Some(Instant::now());
            }
            inbox.lock().unwrap().messages.push((h.ty, body));
        }
        if last_keepalive.is_some_and(|t| t.elapsed() >= KEEPALIVE_EVERY) {
            let _ = writer.lock().unwrap().write_all(&keepalive());
            last_keepalive = Some(Instant::now());
        }
    }
}

// ------------------------------------------------------------ the box, seen from outside

/// `routerctl ARGS --json --port PORT` as JSON, quietly (the waits poll it).
fn ctl_json(port: &str, args: &[&str]) -> Value {
    let (status, stdout, stderr) =
        output_within(Command::new(routerctl()).args(args).args(["--json", "--port", port]), Duration::from_secs(30));
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("routerctl {args:?} ({status}) printed no JSON ({e}):\n{stdout}{stderr}"))
}

/// The box's one BGP peer as `routerctl bgp summary --json` shows it.
fn peer_status(port: &str) -> Value {
    ctl_json(port, &["bgp", "summary"])["bgp"]["peers"][0].clone()
}

/// The routes the box holds from its peer: (type, MAC or "", seq).
fn peer_routes(port: &str) -> Vec<(u64, String, u64)> {
    let v = ctl_json(port, &["bgp", "routes"]);
    v["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["from"] != "local")
        .map(|r| (r["type"].as_u64().unwrap_or(0), r["mac"].as_str().unwrap_or("").to_string(), r["seq"].as_u64().unwrap_or(0)))
        .collect()
}

/// The peer's counters in one line, for the test's log.
fn counters_line(p: &Value) -> String {
    format!(
        "state {} established {} downs {} last_down {} prefixes {} messages in {} out {}",
        p["state"], p["established"], p["downs"], p["last_down"], p["prefixes_received"], p["messages_in"], p["messages_out"]
    )
}

/// The last RFC 7606 line of the box's log (routerd-host logs the session
/// counters when they move, rate-limited).
fn fault_line(log: &str) -> String {
    log_lines(log, "malformed UPDATE").last().map(|(_, l)| l.clone()).unwrap_or_default()
}

/// `ping -i 0.2` from `ns` to `target` while a case runs (at most 60 s),
/// its replies counted as they arrive; [`Pinger::finish`] interrupts it
/// and returns (sent, received). Dropping it kills the ping.
struct Pinger {
    child: Option<Child>,
    replies: Arc<Mutex<u32>>,
    /// ping's whole output, once it ended.
    reader: Option<JoinHandle<String>>,
}

impl Pinger {
    fn start(ns: &str, target: &str) -> Pinger {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "ping", "-n", "-i", "0.2", "-W", "1", "-w", "60", target])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ping");
        let replies = Arc::new(Mutex::new(0u32));
        let (count, stdout) = (Arc::clone(&replies), child.stdout.take().expect("ping's stdout"));
        let reader = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains(" bytes from ") {
                    *count.lock().unwrap() += 1;
                }
                all += &line;
                all.push('\n');
            }
            all
        });
        Pinger { child: Some(child), replies, reader: Some(reader) }
    }

    fn replies(&self) -> u32 {
        *self.replies.lock().unwrap()
    }

    fn finish(mut self) -> (u32, u32) {
        let Some(mut child) = self.child.take() else { return (0, 0) };
        // SIGINT: ping prints its summary and exits.
        // SAFETY: kill(2) on our own child's pid (`ip netns exec` execs ping).
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        if common::wait_exit(&mut child, Duration::from_secs(5)).is_none() {
            let _ = child.kill();
        }
        let _ = child.wait();
        let out = self.reader.take().and_then(|r| r.join().ok()).unwrap_or_default();
        let num = |word: &str| -> u32 {
            out.lines()
                .find_map(|l| {
                    let i = l.find(word)?;
                    l[..i].trim_end().rsplit([' ', ',']).next()?.parse().ok()
                })
                .unwrap_or(0)
        };
        (num(" packets transmitted"), num(" received"))
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn malformed_updates_get_rfc7606_and_the_box_keeps_forwarding() {
    let install = "apt-get install --no-install-recommends iproute2 iputils-ping wireguard-tools wireguard-go";
    if let Some(reason) = prerequisites(&["ip", "bridge", "ping", "wg", "wireguard-go"], install) {
        return skip_or_fail("routerd-host hostile BGP input test", &reason);
    }
    // Built (if need be) before the clock starts: the waits poll it.
    let _ = routerctl();
    let test_start = Instant::now();
    let pid = std::process::id();
    let x = pid % 200 + 20;
    let (ns_box, ns_peer, ns_vmp, ns_vmb) = (format!("rhx{pid}b"), format!("rhx{pid}p"), format!("rhx{pid}vp"), format!("rhx{pid}vb"));
    let (veth_box, veth_peer, veth_vm, veth_br) = (format!("rhxb{pid}"), format!("rhxp{pid}"), format!("rhxv{pid}"), format!("rhxt{pid}"));
    let (tap, wg_if) = (format!("rhxl{pid}"), format!("rhxg{pid}"));
    let (wan, peer_ul) = (format!("10.79.{x}.1"), format!("10.79.{x}.2"));
    let mut lab = Lab::new(std::env::temp_dir().join(format!("routerd-host-hostile-{pid}")));
    let dir = lab.dir.clone();
    for ns in [&ns_box, &ns_peer, &ns_vmp, &ns_vmb] {
        lab.netns(ns);
    }
    common::veth(&ns_box, &veth_box, &format!("{wan}/24"), &ns_peer, &veth_peer, &format!("{peer_ul}/24"));

    let (peer_key_file, peer_public) = wg_keypair(&dir, "peer.key");
    let (key_file, box_public) = box_key(&dir, "box.key");

    // The peer: WireGuard (tunnel address 10.1.0.2), a VXLAN port that
    // learns, its BUM traffic to the box, the VM.
    pve_wireguard(&mut lab, &ns_peer, &wg_if, &peer_key_file, &box_public, &wan);
    let peer = |args: &[&str]| run(&[&["ip", "-n", &ns_peer][..], args].concat()).unwrap();
    peer(&["link", "add", "br100", "type", "bridge"]);
    peer(&["link", "add", "vxlan100", "type", "vxlan", "id", "100", "local", &PEER_TUN.to_string(), "dstport", "4789"]);
    peer(&["link", "set", "vxlan100", "mtu", SEGMENT_MTU, "master", "br100", "up"]);
    run(&["ip", "netns", "exec", &ns_peer, "bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vxlan100", "dst", &BOX_TUN.to_string()])
        .unwrap();
    peer(&["link", "set", "br100", "up"]);
    vm_on_bridge(&ns_peer, "br100", &veth_br, &ns_vmp, &veth_vm, &mac_text(VM_P_MAC), VM_P);

    // The box, with its control socket.
    let cfg_file = dir.join("box.toml");
    let (box_tun, peer_tun) = (BOX_TUN.to_string(), PEER_TUN.to_string());
    let peer = Neighbour { name: "peer", public_key: &peer_public, endpoint: format!("{peer_ul}:51821"), tunnel: &peer_tun };
    std::fs::write(&cfg_file, box_config("hostile-box", "lan1", &box_tun, &wan, &[peer])).unwrap();
    let sock = dir.join("ctl.sock");
    let port = format!("unix:{}", sock.display());
    let lan_map = format!("lan1={tap}");
    let (cfg_arg, key_arg, sock_arg) = (cfg_file.to_str().unwrap(), key_file.to_str().unwrap(), sock.to_str().unwrap());
    let args = ["--config", cfg_arg, "--key-file", key_arg, "--control", sock_arg, "--port", &lan_map];
    let host = start_routerd_host(&mut lab, &ns_box, "box", &args);
    let box_pid = host.pid;
    run(&["ip", "-n", &ns_box, "link", "set", &tap, "netns", &ns_vmb]).unwrap();
    vm_nic(&ns_vmb, &tap, VM_B_MAC, VM_B);

    let fail = |what: &str| -> ! {
        host.dump_status();
        panic!("{what}\n--- box log\n{}", host.log());
    };
    let wait = |what: &str, limit: Duration, ok: &mut dyn FnMut() -> bool| {
        wait_until(what, limit, Duration::from_millis(50), ok).unwrap_or_else(|e| fail(&e))
    };
    let has = |routes: &[(u64, String, u64)], ty: u64, mac: &str| routes.iter().any(|(t, m, _)| *t == ty && m == mac);
    let vm_p_mac = mac_text(VM_P_MAC);
    let ghost_mac = mac_text(GHOST_MAC);

    // A session with the box and both routes: Established, the routes in
    // its RIB, the VMs reaching each other. Returns the speaker and the time
    // from the dial to the first ping answered.
    let bring_up = |why: &str| -> (Speaker, Duration) {
        let t0 = Instant::now();
        let established_before = peer_status(&port)["established"].as_u64().unwrap_or(0);
        let s = Speaker::dial(&ns_peer, open(HOLD));
        wait(&format!("the session Established ({why})"), Duration::from_secs(15), &mut || {
            let p = peer_status(&port);
            p["state"] == "Established" && p["established"].as_u64().unwrap_or(0) > established_before
        });
        assert!(s.send(&announce(imet())) && s.send(&announce(type2(VM_P_MAC))), "the speaker could not announce");
        wait(&format!("the box to hold the peer's type 3 and type 2 ({why})"), Duration::from_secs(10), &mut || {
            let r = peer_routes(&port);
            has(&r, 3, "") && has(&r, 2, &vm_p_mac)
        });
        if until_ping(&ns_vmb, VM_P, Duration::from_secs(15)).is_none() {
            fail(&format!("vmB never reached vmP ({why})"));
        }
        (s, t0.elapsed())
    };

    // 0. Up: the session, both routes, pings both ways, the box's own type 3 to us.
    let (mut speaker, took) = bring_up("first session");
    println!("session up, routes in, vmB → vmP answered {:.0} ms after the dial", took.as_secs_f64() * 1e3);
    let (a, b) = (ping(&ns_vmb, VM_P, 3, 56), ping(&ns_vmp, VM_B, 3, 56));
    if a < 2 || b < 2 {
        fail(&format!("pings: vmB → vmP {a}/3, vmP → vmB {b}/3"));
    }
    wait("the box's own type 3 on the speaker's connection", Duration::from_secs(10), &mut || {
        speaker.announced().iter().any(|r| matches!(r, EvpnRoute::Imet(i) if i.originator == IpAddr::V4(BOX_TUN)))
    });
    println!("the box announced to the speaker: {:?}", speaker.announced());
    let p0 = peer_status(&port);
    println!("before the cases: {}", counters_line(&p0));
    let established = p0["established"].clone();

    // 1. EXTENDED_COMMUNITIES of 7 bytes: treat-as-withdraw (RFC 7606 §7.14).
    let pinger = Pinger::start(&ns_vmb, VM_P);
    wait("pings flowing before case 1", Duration::from_secs(10), &mut || pinger.replies() >= 2);
    let mut bad_ext = rt_and_vxlan().iter().flat_map(|c| c.to_bytes()).collect::<Vec<u8>>();
    bad_ext.pop();
    let case1 = update(&[origin_igp(), empty_as_path(), local_pref(), attr(0xc0, 16, &bad_ext), mp_reach(&nlri(&[type2(VM_P_MAC)]))]);
    assert!(speaker.send(&case1));
    wait("vmP's MAC withdrawn by the malformed UPDATE", Duration::from_secs(10), &mut || !has(&peer_routes(&port), 2, &vm_p_mac));
    wait("the box to log the treat-as-withdraw", Duration::from_secs(10), &mut || {
        fault_line(&host.log()).contains("1 treated as withdraw")
    });
    // Forwarding goes on after the withdrawal: three more answers.
    let seen = pinger.replies();
    wait("pings answered after the withdrawal", Duration::from_secs(10), &mut || pinger.replies() >= seen + 3);
    let p1 = peer_status(&port);
    let routes1 = peer_routes(&port);
    let (sent, got) = pinger.finish();
    println!(
        "case 1 (EXTENDED_COMMUNITIES of 7 bytes): {}\n  routes from the peer {routes1:?}\n  box: {}",
        counters_line(&p1),
        fault_line(&host.log())
    );
    println!("  vmB → vmP during the case: {got}/{sent} answered (unknown unicast flooded to the type 3's VTEP)");
    if p1["state"] != "Established" || p1["established"] != established || p1["downs"] != p0["downs"] || !has(&routes1, 3, "") {
        fail("case 1: the session did not stay up with its type 3");
    }
    // `routerctl bgp summary --json` counts it too.
    if p1["treat_as_withdraw"].as_u64() != p0["treat_as_withdraw"].as_u64().map(|n| n + 1) {
        fail(&format!("case 1: treat_as_withdraw {} → {}", p0["treat_as_withdraw"], p1["treat_as_withdraw"]));
    }
    // The last one or two may still be in flight when ping is interrupted.
    if got + 2 < sent {
        fail(&format!("case 1: pings lost: {got}/{sent} answered"));
    }
    assert!(speaker.send(&announce(type2(VM_P_MAC))));
    wait("vmP's MAC announced again", Duration::from_secs(10), &mut || has(&peer_routes(&port), 2, &vm_p_mac));

    // 2. Duplicates and garbled optional attributes: keep the first copy,
    // discard the rest (RFC 7606 §3g, §7.6, §7.7), skip the unknown one.
    let first_copy = ext_communities(&[rt_and_vxlan()[0], rt_and_vxlan()[1], ExtCommunity::MacMobility { sticky: false, seq: 3 }]);
    let second_copy = ext_communities(&[rt_and_vxlan()[0], rt_and_vxlan()[1], ExtCommunity::MacMobility { sticky: false, seq: 9 }]);
    let case2 = update(&[
        origin_igp(),
        empty_as_path(),
        local_pref(),
        first_copy,
        second_copy,
        attr(0xc0, 16, &bad_ext),
        attr(0xc0, 7, &[1, 2, 3]),
        attr(0x40, 6, &[1]),
        attr(0xc0, 99, &[1, 2, 3, 4]),
        mp_reach(&nlri(&[type2(GHOST_MAC)])),
    ]);
    assert!(speaker.send(&case2));
    let mut routes2 = Vec::new();
    wait("the ghost MAC taken despite the garbage", Duration::from_secs(10), &mut || {
        routes2 = peer_routes(&port);
        has(&routes2, 2, &ghost_mac)
    });
    wait("the box to log the discarded attributes", Duration::from_secs(10), &mut || {
        fault_line(&host.log()).contains("4 attributes discarded")
    });
    let p2 = peer_status(&port);
    if p2["attributes_discarded"].as_u64() != p1["attributes_discarded"].as_u64().map(|n| n + 4) {
        fail(&format!("case 2: attributes_discarded {} → {}", p1["attributes_discarded"], p2["attributes_discarded"]));
    }
    println!(
        "case 2 (duplicates, bad AGGREGATOR/ATOMIC_AGGREGATE, unknown optional): {}\n  routes {routes2:?}\n  box: {}",
        counters_line(&p2),
        fault_line(&host.log())
    );
    let seq = routes2.iter().find(|(t, m, _)| *t == 2 && *m == ghost_mac).map_or(0, |r| r.2);
    if seq != 3 || p2["state"] != "Established" || p2["established"] != established {
        fail(&format!("case 2: sequence {seq} (want the first copy's 3), or the session went down"));
    }
    assert!(speaker.send(&withdraw(type2(GHOST_MAC))));
    wait("the ghost MAC withdrawn", Duration::from_secs(10), &mut || !has(&peer_routes(&port), 2, &ghost_mac));

    // 3, 4: faults that reset the session. Each: NOTIFICATION on the
    // socket, the box closes, `last_down` names it, the peer's routes go;
    // then a new connection brings everything back.
    let mut bad_marker = keepalive();
    bad_marker[0] = 0;
    let mut too_long = announce(type2(VM_P_MAC));
    too_long[16..18].copy_from_slice(&5000u16.to_be_bytes());
    // MP_REACH whose next hop (4 bytes announced) overruns the attribute.
    let short_next_hop = update(&[origin_igp(), empty_as_path(), attr(0x80, 14, &[0, 25, 70, 4, 10, 1])]);
    // An EVPN NLRI that announces 33 bytes and carries 20.
    let mut cut = nlri(&[type2(VM_P_MAC)]);
    cut.truncate(22);
    let cut_nlri = update(&[origin_igp(), empty_as_path(), local_pref(), ext_communities(&rt_and_vxlan()), mp_reach(&cut)]);
    let resets: [(&str, Vec<u8>, (u8, u8)); 4] = [
        ("3a: header marker not all ones", bad_marker, (1, 1)),
        ("3b: header length 5000", too_long, (1, 2)),
        ("4a: MP_REACH next hop overruns the attribute", short_next_hop, (3, 9)),
        ("4b: EVPN NLRI overruns MP_REACH", cut_nlri, (3, 9)),
    ];
    for (i, (case, bytes, want)) in resets.into_iter().enumerate() {
        let before = peer_status(&port);
        println!("case {case}, before: {}", counters_line(&before));
        let sent_at = Instant::now();
        assert!(speaker.send(&bytes), "case {case}: the connection was gone before the send");
        let Some(n) = speaker.notification(Duration::from_secs(5)) else { fail(&format!("case {case}: no NOTIFICATION from the box")) };
        let closed = speaker.closed(Duration::from_secs(5));
        let mut after = Value::Null;
        wait(&format!("case {case}: the session down in the box's status"), Duration::from_secs(5), &mut || {
            after = peer_status(&port);
            after["state"] != "Established" && after["downs"].as_u64() > before["downs"].as_u64()
        });
        let routes = peer_routes(&port);
        println!(
            "case {case}: NOTIFICATION {}/{} data {:02x?} after {:.0} ms, connection closed: {closed}\n  {}\n  routes from the peer: {routes:?}",
            n.0,
            n.1,
            n.2,
            sent_at.elapsed().as_secs_f64() * 1e3,
            counters_line(&after)
        );
        let want_text = format!("sent NOTIFICATION {}/{}", want.0, want.1);
        if (n.0, n.1) != want || !closed || !after["last_down"].as_str().unwrap_or("").starts_with(&want_text) || !routes.is_empty() {
            fail(&format!("case {case}: want NOTIFICATION {}/{}, the connection closed and the routes withdrawn", want.0, want.1));
        }
        drop(speaker);
        if i == 0 {
            // A bad OPEN on the next connection: hold time 2 s (RFC 4271 §6.2: 2/6).
            let s = Speaker::dial(&ns_peer, open(2));
            let n = s.notification(Duration::from_secs(5));
            let closed = s.closed(Duration::from_secs(5));
            let mut p = Value::Null;
            wait("the bad OPEN in last_down", Duration::from_secs(5), &mut || {
                p = peer_status(&port);
                p["last_down"].as_str().unwrap_or("").starts_with("sent NOTIFICATION 2/6")
            });
            println!("bad OPEN (hold time 2): NOTIFICATION {n:?}, closed: {closed}; {}", counters_line(&p));
            if n.as_ref().map(|n| (n.0, n.1)) != Some((2, 6)) || !closed {
                fail("the bad OPEN was not refused with 2/6");
            }
        }
        let (s, took) = bring_up(case);
        speaker = s;
        println!("  reconnected: Established, routes back and vmB → vmP answered {:.0} ms after the dial", took.as_secs_f64() * 1e3);
    }
    if ping(&ns_vmp, VM_B, 3, 56) < 2 {
        fail("vmP → vmB after the resets");
    }

    // 5. A flood of garbage UPDATEs: every one a treat-as-withdraw, no reset.
    let before = peer_status(&port);
    println!("case 5, before: {}", counters_line(&before));
    let faults_before = fault_line(&host.log());
    let pinger = Pinger::start(&ns_vmb, VM_P);
    wait("pings flowing before case 5", Duration::from_secs(10), &mut || pinger.replies() >= 2);
    let mut rng = Rng(0x7606_0019);
    let flood: Vec<Vec<u8>> = (0..FLOOD).map(|_| garbage_update(&mut rng)).collect();
    let bytes: usize = flood.iter().map(Vec::len).sum();
    let cpu0 = cpu_seconds(box_pid);
    let t0 = Instant::now();
    for (i, m) in flood.iter().enumerate() {
        if !speaker.send(m) {
            fail(&format!("case 5: the connection broke at garbage UPDATE {i}"));
        }
    }
    let want_in = before["messages_in"].as_u64().unwrap_or(0) + FLOOD as u64;
    let mut after = Value::Null;
    wait("the box to read the whole flood", Duration::from_secs(30), &mut || {
        after = peer_status(&port);
        after["messages_in"].as_u64().unwrap_or(0) >= want_in || after["state"] != "Established"
    });
    let took = t0.elapsed();
    let cpu = cpu_seconds(box_pid) - cpu0;
    let seen = pinger.replies();
    wait("pings answered after the flood", Duration::from_secs(10), &mut || pinger.replies() >= seen + 3);
    let (sent, got) = pinger.finish();
    let routes = peer_routes(&port);
    println!(
        "case 5: {FLOOD} garbage UPDATEs ({bytes} bytes) read in {:.0} ms; routerd-host CPU {:.0} ms for them\n  {}\n  routes {routes:?}\n  box before: {faults_before}",
        took.as_secs_f64() * 1e3,
        cpu * 1e3,
        counters_line(&after)
    );
    println!("  vmB → vmP during the flood: {got}/{sent} answered");
    let alive = std::fs::metadata(format!("/proc/{box_pid}")).is_ok();
    if !alive || after["state"] != "Established" || after["established"] != before["established"] {
        fail(&format!("case 5: routerd-host alive {alive}, session {}", counters_line(&after)));
    }
    if !has(&routes, 3, "") || !has(&routes, 2, &vm_p_mac) || routes.len() != 2 {
        fail(&format!("case 5: the flood changed the routes: {routes:?}"));
    }
    if got + 2 < sent {
        fail(&format!("case 5: pings lost: {got}/{sent} answered"));
    }
    let mut line = String::new();
    wait("the box to log the flood's treat-as-withdraws", Duration::from_secs(10), &mut || {
        line = fault_line(&host.log());
        line.split(" treated as withdraw").next().and_then(|s| s.rsplit(' ').next()).and_then(|n| n.parse::<u64>().ok())
            >= Some(FLOOD as u64 + 1)
    });
    println!("  box after: {line}");
    let (a, b) = (ping(&ns_vmb, VM_P, 3, 56), ping(&ns_vmp, VM_B, 3, 56));
    if a < 2 || b < 2 {
        fail(&format!("after the flood: vmB → vmP {a}/3, vmP → vmB {b}/3"));
    }

    drop(speaker);
    println!("the box's BGP log:");
    for (_, l) in log_lines(&host.log(), "bgp: ") {
        println!("  {l}");
    }
    let cpu = cpu_seconds(box_pid);
    println!("routerd-host CPU time: {cpu:.2} s in all; whole test {:.1} s", test_start.elapsed().as_secs_f64());
}
