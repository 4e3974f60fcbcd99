//! `routerctl capture`: frames from the box into a pcap file (or stdout).
//!
//! The filter expression is parsed here ([`parse_filter`]) into the small
//! fixed structure the box evaluates (`message::CaptureFilter`): clauses of
//! terms — `host A.B.C.D`, `port N`, `icmp`, `tcp`, `udp`, `arp`,
//! `inbound`, `outbound`, each maybe after `not` — joined by `and`, the
//! clauses by `or` (`and` binds tighter; no parentheses). Errors name the
//! token.
//!
//! The session: `CaptureStart`, then `CaptureRead` in a loop (right away
//! while the box says frames are waiting, else after a short pause), each
//! batch appended to the pcap and flushed so a reader of a pipe
//! (`| wireshark -k -i -`, `| tshark -r -`) sees frames as they come;
//! `CaptureStop` at the end (`--count`, `--duration`, Ctrl-C, the reader of
//! stdout gone, or the box stopped it), then the frames still held, then a
//! bye. Over a tty each read asks for at most a quarter second of line time,
//! because the box writes its answer between forwarding turns.
//!
//! The pcap ([`PcapWriter`]) is the classic libpcap format: microsecond
//! timestamps, `LINKTYPE_ETHERNET`, little-endian. It is complete after
//! every batch (the format has no trailer), so a routerctl killed outright
//! still leaves a readable file; the box stops a capture nobody reads after
//! 30 s.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use config_schema::Name;
use routerd_provision::message::{
    CaptureBatch, CaptureFilter, CaptureProto, CaptureRequest, CaptureTerm, CaptureTest, Op, Reply, CAPTURE_BATCH_BYTES, CAPTURE_CLAUSES,
    CAPTURE_SNAP_MAX, CAPTURE_TERMS,
};
use serde_json::json;

use crate::box_cmd::{failed, refusal, unexpected, Conn};
use crate::client::PortSpec;
use crate::{Failure, EXIT_FAILED};

/// `routerctl capture`'s options.
#[derive(Args)]
pub struct CaptureArgs {
    /// Where the pcap goes: a file, or `-` for stdout (a pipe: `| wireshark -k -i -`)
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    pub write: PathBuf,
    /// Only this port (a port name of the box's configuration: lan0, wan0, …); default: every port
    #[arg(long, value_name = "PORT")]
    pub on: Option<String>,
    /// Only frames matching EXPR (see FILTERS below), evaluated on the box
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// Bytes kept of each frame (the box keeps at most 2048: whole frames)
    #[arg(long, value_name = "N", default_value_t = 262_144)]
    pub snaplen: u32,
    /// Stop after N frames
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop after SECS seconds
    #[arg(long, value_name = "SECS")]
    pub duration: Option<u64>,
    /// Frame bytes per second the box copies at most: a number with K or M (1024s), or `none` [default: the image 8K, routerd-host none]
    #[arg(long, value_name = "BYTES_PER_S")]
    pub rate: Option<String>,
    /// After the capture, print one JSON summary on stdout (only with -w FILE)
    #[arg(long)]
    pub json: bool,
}

/// The help's long text.
pub const LONG_ABOUT: &str = "Copy frames the box receives and sends into a pcap file that Wireshark and \
    tcpdump read (classic libpcap, Ethernet, microsecond timestamps). The box copies the frames \
    that pass the filter into a bounded ring as they are received (before the box changes them) \
    and as they are sent, at a bounded rate, and counts the frames it had to skip; routerctl reads \
    them out over the provisioning session and writes each batch at once, so `-w -` into a pipe \
    works live.\n\n\
    On the WAN port of the image you see the underlay: WireGuard's UDP (port 51820 unless \
    configured), ARP for the gateway. On a LAN port the hosts' own traffic. routerd-host's WAN \
    port is a UDP socket and a TUN: each datagram is shown as the frame it was on the wire \
    (Ethernet with zero MACs, IPv4 or IPv6, UDP between the WAN address and listen port and the \
    peer; an IPv4 end beside an IPv6 one written ::ffff:a.b.c.d), and the TUN's packets behind \
    the same Ethernet header, so Wireshark decodes the WireGuard messages there too.\n\n\
    A serial line is slow: 115200 baud carries about 11 KB/s, and the box writes its answers \
    between forwarding turns. So the image copies at most 8 KiB/s by default (what the line \
    carries) into a 128 KiB ring; more is skipped and counted, and every read asks for at most a \
    quarter second of line time. --rate raises the cap (QEMU's serial socket is fast; on a real \
    line the box's forwarding pays for it). routerd-host, reached over its unix socket, has no \
    cap and a 1 MiB ring.";

/// The help's examples and grammar.
pub const AFTER_HELP: &str = "Examples:\n  \
    routerctl capture -w tunnel.pcap --on wan0 --filter \"udp port 51820\" --duration 30 --port /dev/ttyUSB0\n  \
    routerctl capture -w - --port unix:/tmp/onprem.sock | wireshark -k -i -\n  \
    routerctl capture -w - --filter \"icmp or arp\" --count 20 --port unix:/run/routerd.sock | tshark -r -\n  \
    routerctl capture -w lan.pcap --on lan0 --filter \"host 10.20.0.50 and not arp\" --rate 64K --port unix:/tmp/qemu.sock\n\n\
    FILTERS (a small part of tcpdump's):\n  \
    host A.B.C.D    IPv4 source or destination (ARP: sender or target address)\n  \
    port N          TCP or UDP source or destination port\n  \
    icmp, tcp, udp  the IPv4 protocol (also `proto icmp`); `udp port N` is `udp and port N`\n  \
    arp             ARP frames\n  \
    inbound, outbound   received or sent by the box\n  \
    not T           the opposite of T (also `!`)\n  \
    A and B         both (also `&&`); binds tighter than or\n  \
    A or B          either (also `||`); no parentheses: at most 4 clauses of 8 terms\n\n\
    Ctrl-C stops cleanly: the box is told, the frames it still holds are written, the file is complete. \
    At the end stderr says what was captured and skipped:\n  \
    captured 41 frames (6120 bytes) on lan0,wan0; skipped 0 (rate cap 8 KiB/s), 0 (ring full)\n\
    With --json (and -w FILE) the same as one JSON document on stdout.\n\n\
    Exit codes: 0 captured (even nothing), 1 the box is unreachable or refused, 2 bad usage (a filter that \
    does not parse, an unknown port).";

/// pcap's `LINKTYPE_ETHERNET`.
const LINKTYPE_ETHERNET: u32 = 1;

/// Writes the classic libpcap format: a global header, then records.
pub struct PcapWriter<W: Write> {
    out: W,
    snaplen: u32,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the global header (microsecond timestamps, Ethernet).
    pub fn new(mut out: W, snaplen: u32) -> io::Result<Self> {
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes()); // thiszone: UTC
        h.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
        h.extend_from_slice(&snaplen.to_le_bytes());
        h.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter { out, snaplen })
    }

    /// One frame: `data` is what was kept of `orig_len` bytes on the wire.
    pub fn record(&mut self, ts_us: u64, orig_len: u32, data: &[u8]) -> io::Result<()> {
        let data = data.get(..data.len().min(self.snaplen as usize)).unwrap_or(data);
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&u32::try_from(ts_us / 1_000_000).unwrap_or(u32::MAX).to_le_bytes());
        h[4..8].copy_from_slice(&((ts_us % 1_000_000) as u32).to_le_bytes());
        h[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
        h[12..16].copy_from_slice(&orig_len.max(data.len() as u32).to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(data)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A filter expression's error, naming the token (`--filter: …`).
fn bad(message: String) -> Failure {
    Failure::usage(format!("--filter: {message}"))
}

const GRAMMAR: &str = "host A.B.C.D, port N, icmp, tcp, udp, arp, inbound, outbound, not, and, or";

/// Parses a filter expression (see the module docs); an empty one keeps
/// every frame.
pub fn parse_filter(expr: &str) -> Result<CaptureFilter, Failure> {
    // `!x`: the `!` glued to a word is split off first.
    let mut tokens: Vec<String> = Vec::new();
    for word in expr.split_whitespace() {
        let mut w = word;
        while let Some(rest) = w.strip_prefix('!').filter(|r| !r.starts_with('=')) {
            tokens.push("!".into());
            w = rest;
        }
        if !w.is_empty() {
            tokens.push(w.to_string());
        }
    }
    let mut filter = CaptureFilter::default();
    let mut clause: Vec<CaptureTerm> = Vec::new();
    let mut i = 0;
    // What came before: an operator (or the start) wants a term next.
    let mut want_term = true;
    let mut last = String::new();
    let push_clause = |filter: &mut CaptureFilter, clause: &mut Vec<CaptureTerm>| {
        let c = std::mem::take(clause);
        if filter.any_of.len() >= CAPTURE_CLAUSES {
            return Err(bad(format!("more than {CAPTURE_CLAUSES} clauses joined by or")));
        }
        // At most CAPTURE_TERMS (checked as they were added): the collect cannot overflow.
        filter
            .any_of
            .push(c.into_iter().take(CAPTURE_TERMS).collect())
            .map_err(|_| bad(format!("more than {CAPTURE_CLAUSES} clauses joined by or")))
    };
    while let Some(tok) = tokens.get(i) {
        let lower = tok.to_ascii_lowercase();
        if tok.contains(['(', ')']) {
            return Err(bad(format!("{tok:?}: parentheses are not supported; join clauses with or (and binds tighter)")));
        }
        match lower.as_str() {
            "and" | "&&" | "or" | "||" => {
                if want_term {
                    return Err(bad(if last.is_empty() {
                        format!("{tok:?} at the start needs a term before it")
                    } else {
                        format!("{tok:?} after {last:?} needs a term between them")
                    }));
                }
                if matches!(lower.as_str(), "or" | "||") {
                    push_clause(&mut filter, &mut clause)?;
                }
                want_term = true;
                last = tok.clone();
                i += 1;
                continue;
            }
            _ => {}
        }
        if !want_term {
            // tcpdump's `udp port 53` is `udp and port 53`.
            let proto_then_port = matches!(last.to_ascii_lowercase().as_str(), "tcp" | "udp") && lower == "port";
            if !proto_then_port {
                return Err(bad(format!("expected and/or between {last:?} and {tok:?}")));
            }
        }
        // One term: any number of `not`s, then a primitive.
        let mut not = false;
        let mut j = i;
        while let Some(t) = tokens.get(j).filter(|t| t.eq_ignore_ascii_case("not") || *t == "!") {
            not = !not;
            last = t.clone();
            j += 1;
        }
        let Some(word) = tokens.get(j) else {
            return Err(bad(format!("{last:?} at the end needs a term after it")));
        };
        let arg = tokens.get(j + 1);
        let (test, used) = match word.to_ascii_lowercase().as_str() {
            "host" => {
                let a = arg.ok_or_else(|| bad(format!("{word:?} needs an address (host A.B.C.D)")))?;
                let ip = a.parse::<Ipv4Addr>().map_err(|_| bad(format!("{a:?} is not an IPv4 address")))?;
                (CaptureTest::Host(ip), 2)
            }
            "port" => {
                let a = arg.ok_or_else(|| bad(format!("{word:?} needs a number (port N)")))?;
                let p = a.parse::<u16>().map_err(|_| bad(format!("{a:?} is not a port (0-65535)")))?;
                (CaptureTest::Port(p), 2)
            }
            "proto" => {
                let a = arg.ok_or_else(|| bad(format!("{word:?} needs icmp, tcp or udp")))?;
                match a.to_ascii_lowercase().as_str() {
                    "icmp" => (CaptureTest::Proto(CaptureProto::Icmp), 2),
                    "tcp" => (CaptureTest::Proto(CaptureProto::Tcp), 2),
                    "udp" => (CaptureTest::Proto(CaptureProto::Udp), 2),
                    _ => return Err(bad(format!("{a:?} is not a protocol this filter knows (icmp, tcp, udp)"))),
                }
            }
            "icmp" => (CaptureTest::Proto(CaptureProto::Icmp), 1),
            "tcp" => (CaptureTest::Proto(CaptureProto::Tcp), 1),
            "udp" => (CaptureTest::Proto(CaptureProto::Udp), 1),
            "arp" => (CaptureTest::Proto(CaptureProto::Arp), 1),
            "inbound" => (CaptureTest::Inbound, 1),
            "outbound" => (CaptureTest::Outbound, 1),
            "and" | "&&" | "or" | "||" => return Err(bad(format!("{last:?} needs a term after it, not {word:?}"))),
            "src" | "dst" => return Err(bad(format!("{word:?} is not supported: host and port match source or destination ({GRAMMAR})"))),
            _ => return Err(bad(format!("{word:?} is not part of the filter grammar ({GRAMMAR})"))),
        };
        if clause.len() >= CAPTURE_TERMS {
            return Err(bad(format!("more than {CAPTURE_TERMS} terms joined by and")));
        }
        clause.push(CaptureTerm { not, test });
        last = word.clone();
        i = j + used;
        want_term = false;
    }
    if want_term && !last.is_empty() {
        return Err(bad(format!("{last:?} at the end needs a term after it")));
    }
    if !clause.is_empty() {
        push_clause(&mut filter, &mut clause)?;
    }
    Ok(filter)
}

/// `--rate`: `8192`, `64K`, `1M`, `none`. `u32::MAX` is "no cap".
pub fn parse_rate(s: &str) -> Result<u32, Failure> {
    let t = s.trim();
    if matches!(t.to_ascii_lowercase().as_str(), "none" | "unlimited" | "max") {
        return Ok(u32::MAX);
    }
    let upper = t.to_ascii_uppercase();
    let (digits, scale) = if let Some(d) = upper.strip_suffix("KIB").or(upper.strip_suffix("KB")).or(upper.strip_suffix('K')) {
        (d, 1024u64)
    } else if let Some(d) = upper.strip_suffix("MIB").or(upper.strip_suffix("MB")).or(upper.strip_suffix('M')) {
        (d, 1024 * 1024)
    } else {
        (upper.as_str(), 1)
    };
    let n: u64 =
        digits.trim().parse().map_err(|_| Failure::usage(format!("--rate {s:?}: give bytes per second: 8192, 64K, 1M or none")))?;
    let v = n.saturating_mul(scale);
    if v == 0 {
        return Err(Failure::usage(format!("--rate {s:?}: 0 bytes per second copies nothing")));
    }
    Ok(u32::try_from(v).unwrap_or(u32::MAX - 1).min(u32::MAX - 1))
}

/// `8 KiB/s`, `none`.
pub fn rate_text(rate: u32) -> String {
    match rate {
        u32::MAX => "none".into(),
        r if r >= 1024 * 1024 && r % (1024 * 1024) == 0 => format!("{} MiB/s", r / (1024 * 1024)),
        r if r >= 1024 && r % 1024 == 0 => format!("{} KiB/s", r / 1024),
        r => format!("{r} bytes/s"),
    }
}

/// Set by SIGINT/SIGTERM: stop cleanly.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe);
        // signal(2) with a valid function pointer has no other precondition.
        unsafe {
            libc::signal(sig, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t);
        }
    }
}

/// Where the pcap goes.
enum Sink {
    File(BufWriter<File>),
    Stdout,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::File(f) => f.write(buf),
            Sink::Stdout => {
                crate::out::write_bytes(buf);
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::File(f) => f.flush(),
            Sink::Stdout => {
                crate::out::flush();
                Ok(())
            }
        }
    }
}

/// What was written, for the summary.
#[derive(Default)]
struct Tally {
    frames: u64,
    bytes: u64,
    /// Captured by the box but not written (past --count).
    not_written: u64,
    last: CaptureBatch,
}

impl Tally {
    fn write(&mut self, pcap: &mut PcapWriter<Sink>, b: &CaptureBatch, count: Option<u64>) -> Result<(), Failure> {
        let mut at = 0usize;
        for f in &b.frames {
            let n = usize::from(f.caplen);
            let data = b.data.get(at..at + n).ok_or_else(|| failed("the box sent a batch whose frames overrun its data"))?;
            at += n;
            if count.is_some_and(|c| self.frames >= c) {
                self.not_written += 1;
                continue;
            }
            pcap.record(f.ts_us, u32::from(f.len), data).map_err(|e| failed(format!("cannot write the pcap: {e}")))?;
            self.frames += 1;
            self.bytes += u64::from(f.len);
        }
        pcap.flush().map_err(|e| failed(format!("cannot write the pcap: {e}")))?;
        self.last = b.clone();
        Ok(())
    }
}

fn captured(reply: Reply) -> Result<Box<CaptureBatch>, Failure> {
    match reply {
        Reply::Captured(b) => Ok(b),
        Reply::Error(f) => Err(refusal(&f)),
        other => Err(unexpected(&other)),
    }
}

/// Sleeps up to `d`, waking early on Ctrl-C.
fn nap(d: Duration) {
    let end = Instant::now() + d;
    while !STOP.load(Ordering::Relaxed) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(20)));
    }
}

pub fn run(args: CaptureArgs, conn: &Conn) -> Result<u8, Failure> {
    let filter = match args.filter.as_deref() {
        Some(f) => parse_filter(f)?,
        None => CaptureFilter::default(),
    };
    let port = match &args.on {
        Some(p) => Some(Name::new(p).map_err(|e| Failure::usage(format!("--on {p:?}: not a port name ({e:?}); e.g. lan0, wan0")))?),
        None => None,
    };
    if args.snaplen == 0 {
        return Err(Failure::usage("--snaplen 0: keeps no byte of a frame; give 1 or more (default 262144: whole frames)"));
    }
    if args.count == Some(0) {
        return Err(Failure::usage("--count 0: give 1 or more frames (or leave it out: until Ctrl-C)"));
    }
    if args.duration == Some(0) {
        return Err(Failure::usage("--duration 0: give 1 or more seconds (or leave it out: until Ctrl-C)"));
    }
    let rate = args.rate.as_deref().map(parse_rate).transpose()?;
    let to_stdout = args.write.as_os_str() == "-";
    if to_stdout && args.json {
        return Err(Failure::usage("--json with -w -: stdout carries the pcap; write the pcap to a file (-w FILE) for a JSON summary"));
    }
    if to_stdout && io::stdout().is_terminal() {
        return Err(Failure::usage("-w -: stdout is a terminal; pipe it (| wireshark -k -i -, | tshark -r -) or give -w FILE"));
    }
    let tty = matches!(PortSpec::parse(conn.port()), Ok(PortSpec::Tty(_)));
    // A quarter second of line time per read over a tty (10 bits a byte).
    let per_read = if tty { (conn.baud / 10 / 4).clamp(512, CAPTURE_BATCH_BYTES as u32) } else { CAPTURE_BATCH_BYTES as u32 };
    let pause = if tty { Duration::from_millis(250) } else { Duration::from_millis(100) };

    let mut c = conn.connect()?;
    let req = CaptureRequest { port: port.clone(), filter: filter.clone(), snaplen: args.snaplen, rate };
    let start = captured(c.request(Op::CaptureStart(Box::new(req))).map_err(|e| failed(e.to_string()))?)?;
    let sink = if to_stdout {
        Sink::Stdout
    } else {
        let f = File::create(&args.write).map_err(|e| failed(format!("-w {}: {e}", args.write.display())))?;
        Sink::File(BufWriter::new(f))
    };
    let mut pcap = PcapWriter::new(sink, args.snaplen).map_err(|e| failed(format!("cannot write the pcap: {e}")))?;
    let _ = pcap.flush();
    catch_signals();
    let on: Vec<String> = match &port {
        Some(p) => vec![p.to_string()],
        None => start.ports.iter().map(|p| p.to_string()).collect(),
    };
    let device = c.hello.device.to_string();
    eprintln!(
        "routerctl: capturing on {} of {}: {}; snaplen {}; rate cap {}; ring {} KiB on the box{}. Ctrl-C stops.",
        on.join(","),
        if device.is_empty() { conn.port().to_string() } else { device },
        filter,
        args.snaplen.min(CAPTURE_SNAP_MAX),
        rate_text(start.rate),
        start.ring_bytes / 1024,
        if tty && start.rate != u32::MAX {
            format!(" (a serial line at {} baud carries about {} KB/s)", conn.baud, conn.baud / 10 / 1000)
        } else {
            String::new()
        }
    );

    let began = Instant::now();
    let deadline = args.duration.map(|s| began + Duration::from_secs(s));
    let mut tally = Tally { last: (*start).clone(), ..Tally::default() };
    let mut box_stopped = None;
    let result = (|| -> Result<(), Failure> {
        loop {
            if STOP.load(Ordering::Relaxed)
                || deadline.is_some_and(|d| Instant::now() >= d)
                || args.count.is_some_and(|n| tally.frames >= n)
                || (to_stdout && crate::out::closed())
            {
                return Ok(());
            }
            let b = captured(c.request(Op::CaptureRead { max_bytes: per_read }).map_err(|e| failed(e.to_string()))?)?;
            tally.write(&mut pcap, &b, args.count)?;
            if !b.running {
                box_stopped = Some(b.stopped.to_string());
                // Whatever it still holds comes with the next reads.
                return Ok(());
            }
            if b.waiting == 0 {
                let left = deadline.map_or(pause, |d| d.saturating_duration_since(Instant::now()).min(pause));
                nap(left);
            }
        }
    })();
    // Stop (also after an error: the box should not go on copying), then
    // read what it still holds (bounded).
    let mut stopped = box_stopped.clone().unwrap_or_default();
    let mut waiting = if box_stopped.is_some() { tally.last.waiting } else { 0 };
    let mut tail = || -> Result<(), Failure> {
        if box_stopped.is_none() {
            let b = captured(c.request(Op::CaptureStop).map_err(|e| failed(e.to_string()))?)?;
            if result.is_err() {
                return Ok(());
            }
            tally.write(&mut pcap, &b, args.count)?;
            waiting = b.waiting;
            stopped = b.stopped.to_string();
        }
        for _ in 0..1000 {
            if waiting == 0 || result.is_err() || args.count.is_some_and(|n| tally.frames >= n) {
                break;
            }
            let more = captured(c.request(Op::CaptureRead { max_bytes: per_read }).map_err(|e| failed(e.to_string()))?)?;
            tally.write(&mut pcap, &more, args.count)?;
            waiting = more.waiting;
        }
        Ok(())
    };
    let tail = tail();
    let _ = c.close();
    result?;
    tail?;
    let _ = pcap.flush();
    let k = &tally.last;
    eprintln!(
        "routerctl: captured {} frames ({} bytes) on {}; skipped {} (rate cap {}), {} (ring full){}{}",
        tally.frames,
        tally.bytes,
        on.join(","),
        k.skipped_rate,
        rate_text(k.rate),
        k.skipped_full,
        if tally.not_written > 0 { format!("; {} more captured past --count, not written", tally.not_written) } else { String::new() },
        if stopped.is_empty() || stopped == "stopped by routerctl" { String::new() } else { format!("; the box stopped: {stopped}") },
    );
    if k.skipped_rate > 0 && k.rate != u32::MAX {
        eprintln!("routerctl: frames were skipped over the rate cap: a narrower --filter or --on, or a higher --rate, keeps them");
    }
    if args.json {
        crate::out::document(&json!({
            "schema": 1,
            "port": conn.port(),
            "file": args.write.display().to_string(),
            "on": on,
            "filter": filter.to_string(),
            "snaplen": args.snaplen.min(CAPTURE_SNAP_MAX),
            "frames": tally.frames,
            "bytes": tally.bytes,
            "captured_on_box": k.captured,
            "not_written": tally.not_written,
            "skipped_rate": k.skipped_rate,
            "skipped_full": k.skipped_full,
            "rate": if k.rate == u32::MAX { json!(null) } else { json!(k.rate) },
            "ring_bytes": k.ring_bytes,
            "stopped": stopped,
            "seconds": began.elapsed().as_secs_f64(),
        }));
    }
    Ok(if crate::out::failed() { EXIT_FAILED } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> String {
        parse_filter(s).map(|f| f.to_string()).unwrap_or_else(|e| format!("ERR {}", e.message))
    }

    #[test]
    fn filters_parse_into_clauses_of_terms() {
        assert_eq!(f(""), "every frame");
        assert_eq!(f("icmp"), "icmp");
        assert_eq!(f("host 10.0.0.1 and not arp"), "host 10.0.0.1 and not arp");
        assert_eq!(f("udp port 51820"), "udp and port 51820");
        assert_eq!(f("icmp or udp port 51820"), "icmp or udp and port 51820");
        assert_eq!(f("ICMP || !arp && outbound"), "icmp or not arp and outbound");
        assert_eq!(f("not not tcp"), "tcp");
        assert_eq!(f("proto udp and inbound"), "udp and inbound");
        let p = parse_filter("host 10.20.0.50 and port 22 or arp").unwrap();
        assert_eq!(p.any_of.len(), 2);
        assert_eq!(p.any_of[0][0], CaptureTerm { not: false, test: CaptureTest::Host(Ipv4Addr::new(10, 20, 0, 50)) });
        assert_eq!(p.any_of[0][1], CaptureTerm { not: false, test: CaptureTest::Port(22) });
        assert_eq!(p.any_of[1][0], CaptureTerm { not: false, test: CaptureTest::Proto(CaptureProto::Arp) });
    }

    #[test]
    fn filter_errors_name_the_token() {
        assert_eq!(f("host 10.0.0.300"), "ERR --filter: \"10.0.0.300\" is not an IPv4 address");
        assert_eq!(f("host"), "ERR --filter: \"host\" needs an address (host A.B.C.D)");
        assert_eq!(f("port 70000"), "ERR --filter: \"70000\" is not a port (0-65535)");
        assert_eq!(f("icmp and"), "ERR --filter: \"and\" at the end needs a term after it");
        assert_eq!(f("or icmp"), "ERR --filter: \"or\" at the start needs a term before it");
        assert_eq!(f("icmp and or arp"), "ERR --filter: \"or\" after \"and\" needs a term between them");
        assert_eq!(f("icmp arp"), "ERR --filter: expected and/or between \"icmp\" and \"arp\"");
        assert_eq!(f("not"), "ERR --filter: \"not\" at the end needs a term after it");
        assert!(f("vlan 5").starts_with("ERR --filter: \"vlan\" is not part of the filter grammar (host A.B.C.D"), "{}", f("vlan 5"));
        assert!(f("src host 1.2.3.4").contains("\"src\" is not supported"), "{}", f("src host 1.2.3.4"));
        assert!(f("(icmp)").contains("parentheses are not supported"), "{}", f("(icmp)"));
        assert!(f("proto gre").contains("\"gre\" is not a protocol"), "{}", f("proto gre"));
        let long = ["icmp"; 9].join(" and ");
        assert_eq!(f(&long), "ERR --filter: more than 8 terms joined by and");
        let wide = ["icmp"; 5].join(" or ");
        assert_eq!(f(&wide), "ERR --filter: more than 4 clauses joined by or");
        // A usage error: exit 2.
        assert_eq!(parse_filter("host x").unwrap_err().code, crate::EXIT_USAGE);
    }

    #[test]
    fn rates_parse_with_units() {
        assert_eq!(parse_rate("8192").ok(), Some(8192));
        assert_eq!(parse_rate("64K").ok(), Some(65536));
        assert_eq!(parse_rate("64kib").ok(), Some(65536));
        assert_eq!(parse_rate("1M").ok(), Some(1 << 20));
        assert_eq!(parse_rate("none").ok(), Some(u32::MAX));
        assert_eq!(parse_rate("99999999M").ok(), Some(u32::MAX - 1), "huge but still a cap");
        assert!(parse_rate("0").is_err() && parse_rate("fast").is_err());
        assert_eq!(rate_text(8192), "8 KiB/s");
        assert_eq!(rate_text(u32::MAX), "none");
        assert_eq!(rate_text(1 << 20), "1 MiB/s");
        assert_eq!(rate_text(1000), "1000 bytes/s");
    }

    #[test]
    fn the_pcap_is_classic_libpcap_byte_for_byte() {
        let mut buf = Vec::new();
        let mut w = PcapWriter::new(&mut buf, 262_144).unwrap();
        w.record(1_700_000_000_123_456, 60, &[0xaa; 60]).unwrap();
        w.record(1_700_000_001_000_001, 1514, &[0xbb; 100]).unwrap();
        w.flush().unwrap();
        assert_eq!(&buf[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "little-endian microsecond magic");
        assert_eq!(&buf[4..8], &[2, 0, 4, 0], "version 2.4");
        assert_eq!(&buf[8..16], &[0; 8], "UTC, no sigfigs");
        assert_eq!(u32::from_le_bytes(buf[16..20].try_into().unwrap()), 262_144);
        assert_eq!(u32::from_le_bytes(buf[20..24].try_into().unwrap()), 1, "LINKTYPE_ETHERNET");
        let r = &buf[24..];
        let le = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap());
        assert_eq!((le(&r[0..4]), le(&r[4..8]), le(&r[8..12]), le(&r[12..16])), (1_700_000_000, 123_456, 60, 60));
        assert!(r[16..76].iter().all(|&b| b == 0xaa));
        let r = &r[76..];
        assert_eq!((le(&r[0..4]), le(&r[4..8]), le(&r[8..12]), le(&r[12..16])), (1_700_000_001, 1, 100, 1514));
        assert_eq!(r.len(), 16 + 100);
        // The snap length cuts what is written, never the original length.
        let mut buf = Vec::new();
        let mut w = PcapWriter::new(&mut buf, 64).unwrap();
        w.record(0, 1000, &[1; 200]).unwrap();
        assert_eq!((le(&buf[24 + 8..24 + 12]), le(&buf[24 + 12..24 + 16]), buf.len()), (64, 1000, 24 + 16 + 64));
    }
}
