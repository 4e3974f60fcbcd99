//! The box's side of the line: console until a hello, a session after.
//!
//! Sans-I/O: the platform feeds every received byte to [`Session::push`]
//! and writes whatever it returns; it runs [`Step::Execute`] requests (the
//! operations live in `routerd-control`) and hands the reply to
//! [`Session::respond`]. The session itself answers hello, ping and bye,
//! refuses requests outside a session, resends the cached answer for a
//! retransmitted sequence number, and closes after [`IDLE_TIMEOUT_MS`]
//! without a valid frame.
//!
//! While [`Session::is_open`], console output must travel as
//! [`Up::Log`] frames ([`encode_log`]); otherwise as plain text, and the
//! platform's line editor gets the bytes too (a human at a terminal).

use crate::frame::{self, Decoder, Event, MAX_FRAME, MAX_PAYLOAD};
use crate::message::{
    self, text, Failure, FailureKind, Hello, LogLine, Op, Reply, Request, Response, SerialStats, Up, PROTOCOL_HASH, PROTOCOL_VERSION,
};

/// A session with no valid frame for this long ends.
pub const IDLE_TIMEOUT_MS: u64 = 20_000;

/// What the platform does after a byte.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Step<'a> {
    /// Nothing complete yet (or a run that was not for us, counted).
    Nothing,
    /// Write these bytes to the line.
    Send(&'a [u8]),
    /// Carry out this request, then call [`Session::respond`] with its reply.
    Execute(Request),
}

/// The box's end of the serial protocol.
pub struct Session {
    decoder: Decoder<MAX_FRAME>,
    open: bool,
    last_rx_ms: u64,
    last_seq: Option<u32>,
    cached: [u8; MAX_FRAME],
    cached_len: usize,
    scratch: [u8; MAX_PAYLOAD],
    identity: Hello,
    malformed: u64,
    retransmits: u64,
    sessions: u64,
    idle_timeouts: u64,
}

impl Session {
    /// `software` and `build` identify the firmware in hello replies.
    pub fn new(software: &str, build: &str) -> Session {
        Session {
            decoder: Decoder::new(),
            open: false,
            last_rx_ms: 0,
            last_seq: None,
            cached: [0; MAX_FRAME],
            cached_len: 0,
            scratch: [0; MAX_PAYLOAD],
            identity: Hello {
                version: PROTOCOL_VERSION,
                hash: PROTOCOL_HASH,
                software: text(software),
                build: text(build),
                device: text(""),
                idle_timeout_s: (IDLE_TIMEOUT_MS / 1000) as u16,
            },
            malformed: 0,
            retransmits: 0,
            sessions: 0,
            idle_timeouts: 0,
        }
    }

    /// The device name hello replies carry (after an apply).
    pub fn set_device_name(&mut self, name: &str) {
        self.identity.device = text(name);
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    pub fn stats(&self) -> SerialStats {
        let d = self.decoder.stats;
        SerialStats {
            frames: d.frames,
            not_a_frame: d.not_a_frame,
            bad_checksum: d.bad_checksum,
            overflow: d.overflow,
            malformed: self.malformed,
            retransmits: self.retransmits,
            sessions: self.sessions,
            idle_timeouts: self.idle_timeouts,
        }
    }

    /// Ends an idle session; true when it just closed (tell the console).
    pub fn poll(&mut self, now_ms: u64) -> bool {
        if self.open && now_ms.saturating_sub(self.last_rx_ms) >= IDLE_TIMEOUT_MS {
            self.close();
            self.idle_timeouts += 1;
            return true;
        }
        false
    }

    fn close(&mut self) {
        self.open = false;
        self.last_seq = None;
        self.cached_len = 0;
        self.decoder.reset();
    }

    /// Feeds one received byte.
    pub fn push(&mut self, byte: u8, now_ms: u64) -> Step<'_> {
        let payload_len = match self.decoder.push(byte) {
            Some(Event::Frame(p)) => match self.scratch.get_mut(..p.len()) {
                Some(dst) => {
                    dst.copy_from_slice(p);
                    p.len()
                }
                None => return Step::Nothing,
            },
            // Console text, noise, a cut frame: counted by the decoder.
            _ => return Step::Nothing,
        };
        let Ok(req) = message::decode::<Request>(self.scratch.get(..payload_len).unwrap_or(&[])) else {
            // A frame with a valid CRC that is not a request (another
            // version's message, a bug): no sequence number to answer to.
            self.malformed += 1;
            return Step::Nothing;
        };
        if let Op::Hello { version, hash } = req.op {
            let ok = version == PROTOCOL_VERSION && hash == PROTOCOL_HASH;
            if ok {
                if !self.open {
                    self.sessions += 1;
                }
                self.open = true;
                self.last_rx_ms = now_ms;
                self.last_seq = None;
                self.cached_len = 0;
            }
            // A mismatched peer gets the box's hello (whose layout never
            // changes) so it can say which versions differ; no session.
            let identity = self.identity.clone();
            return self.send(req.seq, Reply::Hello(identity), ok);
        }
        if !self.open {
            let f = Failure::new(FailureKind::NoSession, "no session: send a hello first (routerctl does)");
            return self.send(req.seq, Reply::Error(f), false);
        }
        self.last_rx_ms = now_ms;
        if self.last_seq == Some(req.seq) && self.cached_len > 0 {
            self.retransmits += 1;
            return Step::Send(self.cached.get(..self.cached_len).unwrap_or(&[]));
        }
        match req.op {
            Op::Ping => self.send(req.seq, Reply::Pong, true),
            Op::Bye => {
                let seq = req.seq;
                let n = self.encode(seq, Reply::Done);
                self.close();
                Step::Send(self.cached.get(..n).unwrap_or(&[]))
            }
            _ => Step::Execute(req),
        }
    }

    /// Encodes the reply to an executed request; returns the frame to write.
    pub fn respond(&mut self, seq: u32, reply: Reply) -> &[u8] {
        let n = self.answer(seq, reply, true);
        self.cached.get(..n).unwrap_or(&[])
    }

    fn send(&mut self, seq: u32, reply: Reply, remember: bool) -> Step<'_> {
        let n = self.answer(seq, reply, remember);
        Step::Send(self.cached.get(..n).unwrap_or(&[]))
    }

    /// Encodes an answer; `remember` makes it the one a retransmission of
    /// `seq` gets.
    fn answer(&mut self, seq: u32, reply: Reply, remember: bool) -> usize {
        let n = self.encode(seq, reply);
        if remember {
            self.last_seq = Some(seq);
            self.cached_len = n;
        }
        n
    }

    /// Encodes into the cache; an answer that cannot be encoded becomes an
    /// error the host can read (it never happens with the bounded types).
    fn encode(&mut self, seq: u32, reply: Reply) -> usize {
        let up = Up::Response(Response { seq, reply });
        let n = match message::encode(&up, &mut self.scratch) {
            Ok(b) => b.len(),
            Err(_) => {
                let f = Failure::new(FailureKind::Refused, "reply too large for one frame");
                let up = Up::Response(Response { seq, reply: Reply::Error(f) });
                message::encode(&up, &mut self.scratch).map(|b| b.len()).unwrap_or(0)
            }
        };
        frame::encode(self.scratch.get(..n).unwrap_or(&[]), &mut self.cached).unwrap_or(0)
    }
}

/// A console line as a frame, into `out` (a few hundred bytes suffice).
pub fn encode_log<'o>(ms: u64, level: u8, line: &str, out: &'o mut [u8]) -> Option<&'o [u8]> {
    let mut payload = [0u8; message::LOG_TEXT + 32];
    let up = Up::Log(LogLine { ms, level, text: text(line.trim_end()) });
    let n = message::encode(&up, &mut payload).ok()?.len();
    let f = frame::encode(payload.get(..n)?, out).ok()?;
    out.get(..f)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::message::{decode, encode};
    use std::boxed::Box;
    use std::vec::Vec;

    fn wire(req: &Request) -> Vec<u8> {
        let mut p = std::vec![0u8; MAX_PAYLOAD];
        let n = encode(req, &mut p).unwrap().len();
        let mut f = std::vec![0u8; MAX_FRAME];
        let m = frame::encode(&p[..n], &mut f).unwrap();
        f.truncate(m);
        f
    }

    fn reply_of(bytes: &[u8]) -> Response {
        let mut d = Decoder::<MAX_FRAME>::new();
        for &b in bytes {
            if let Some(Event::Frame(p)) = d.push(b) {
                match decode::<Up>(p).unwrap() {
                    Up::Response(r) => return r,
                    Up::Log(_) => panic!("log where a response was expected"),
                }
            }
        }
        panic!("no frame in {bytes:?}");
    }

    enum Out {
        Nothing,
        Sent(Response),
        Exec(Request),
    }

    fn feed(s: &mut Session, bytes: &[u8], now: u64) -> Vec<Out> {
        let mut out = Vec::new();
        for &b in bytes {
            match s.push(b, now) {
                Step::Nothing => {}
                Step::Send(f) => out.push(Out::Sent(reply_of(f))),
                Step::Execute(r) => out.push(Out::Exec(r)),
            }
        }
        if out.is_empty() {
            out.push(Out::Nothing);
        }
        out
    }

    fn hello(seq: u32) -> Request {
        Request { seq, op: Op::Hello { version: PROTOCOL_VERSION, hash: PROTOCOL_HASH } }
    }

    fn session() -> Box<Session> {
        let mut s = Box::new(Session::new("0.1.0", "abc1234"));
        s.set_device_name("edge-pve");
        s
    }

    #[test]
    fn hello_opens_and_carries_identity() {
        let mut s = session();
        assert!(!s.is_open());
        match &feed(&mut s, &wire(&hello(1)), 0)[..] {
            [Out::Sent(Response { seq: 1, reply: Reply::Hello(h) })] => {
                assert_eq!(h.device.as_str(), "edge-pve");
                assert_eq!(h.build.as_str(), "abc1234");
                assert_eq!(h.hash, PROTOCOL_HASH);
            }
            _ => panic!("no hello reply"),
        }
        assert!(s.is_open());
        assert_eq!(s.stats().sessions, 1);
    }

    #[test]
    fn requests_without_hello_are_refused_and_change_nothing() {
        let mut s = session();
        let req = Request { seq: 9, op: Op::Reboot };
        match &feed(&mut s, &wire(&req), 0)[..] {
            [Out::Sent(Response { seq: 9, reply: Reply::Error(f) })] => assert_eq!(f.kind, FailureKind::NoSession),
            _ => panic!("expected a refusal"),
        }
        assert!(!s.is_open());
    }

    #[test]
    fn a_mismatched_hello_gets_the_box_versions_but_no_session() {
        let mut s = session();
        let req = Request { seq: 1, op: Op::Hello { version: PROTOCOL_VERSION, hash: PROTOCOL_HASH ^ 1 } };
        match &feed(&mut s, &wire(&req), 0)[..] {
            [Out::Sent(Response { reply: Reply::Hello(h), .. })] => assert_eq!(h.hash, PROTOCOL_HASH),
            _ => panic!(),
        }
        assert!(!s.is_open());
        let st = Request { seq: 2, op: Op::Status { mark: false } };
        assert!(matches!(&feed(&mut s, &wire(&st), 0)[..], [Out::Sent(Response { reply: Reply::Error(_), .. })]));
    }

    #[test]
    fn operations_are_executed_once_and_retransmissions_get_the_cached_answer() {
        let mut s = session();
        feed(&mut s, &wire(&hello(1)), 0);
        let req = Request { seq: 2, op: Op::KeyGenerate(config_schema::Name::new("wg0").unwrap()) };
        let Out::Exec(r) = feed(&mut s, &wire(&req), 10).remove(0) else { panic!("not executed") };
        assert_eq!(r, req);
        let first = s.respond(2, Reply::Done).to_vec();
        // The answer was lost; routerctl sends the same request again.
        match &feed(&mut s, &wire(&req), 20)[..] {
            [Out::Sent(resp)] => assert_eq!(*resp, reply_of(&first)),
            _ => panic!("retransmission executed again"),
        }
        assert_eq!(s.stats().retransmits, 1);
        // The next sequence number executes.
        let next = Request { seq: 3, ..req };
        assert!(matches!(&feed(&mut s, &wire(&next), 30)[..], [Out::Exec(_)]));
    }

    #[test]
    fn garbage_mid_session_does_not_break_the_next_request() {
        let mut s = session();
        feed(&mut s, &wire(&hello(1)), 0);
        let mut junk = b"\x00\x13\x37garbage \xff\xfe typed text\r\n".to_vec();
        let half = wire(&Request { seq: 4, op: Op::GetConfig });
        junk.extend_from_slice(&half[..half.len() / 2]); // cut cable
        assert!(matches!(&feed(&mut s, &junk, 5)[..], [Out::Nothing]));
        let ping = Request { seq: 5, op: Op::Ping };
        assert!(matches!(&feed(&mut s, &wire(&ping), 6)[..], [Out::Sent(Response { seq: 5, reply: Reply::Pong })]));
        let st = s.stats();
        assert!(st.not_a_frame + st.bad_checksum >= 1, "{st:?}");
    }

    #[test]
    fn idle_timeout_and_bye_close_the_session() {
        let mut s = session();
        feed(&mut s, &wire(&hello(1)), 1000);
        assert!(!s.poll(1000 + IDLE_TIMEOUT_MS - 1));
        assert!(s.poll(1000 + IDLE_TIMEOUT_MS));
        assert!(!s.is_open());
        assert_eq!(s.stats().idle_timeouts, 1);
        feed(&mut s, &wire(&hello(1)), 50_000);
        assert!(s.is_open());
        let bye = Request { seq: 2, op: Op::Bye };
        assert!(matches!(&feed(&mut s, &wire(&bye), 50_001)[..], [Out::Sent(Response { reply: Reply::Done, .. })]));
        assert!(!s.is_open());
    }

    #[test]
    fn log_lines_become_frames() {
        let mut out = [0u8; 512];
        let f = encode_log(1234, 3, "claim 10.20.0.50: conflict\n", &mut out).unwrap().to_vec();
        let mut d = Decoder::<512>::new();
        let mut got = None;
        for b in f {
            if let Some(Event::Frame(p)) = d.push(b) {
                got = Some(decode::<Up>(p).unwrap());
            }
        }
        match got {
            Some(Up::Log(l)) => {
                assert_eq!(l.ms, 1234);
                assert_eq!(l.text.as_str(), "claim 10.20.0.50: conflict");
            }
            other => panic!("{other:?}"),
        }
    }

    /// Random bytes, including frames with valid CRCs around random
    /// payloads, never panic and never open a session.
    #[test]
    fn noise_never_opens_a_session() {
        let mut s = session();
        let mut x = 0x1234_5678_9abc_def0u64;
        for i in 0..100_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let _ = s.push(x as u8, i);
            if i % 997 == 0 {
                let mut f = [0u8; 64];
                let payload = x.to_le_bytes();
                let n = frame::encode(&payload, &mut f).unwrap();
                for &b in &f[..n] {
                    let _ = s.push(b, i);
                }
            }
        }
        assert!(!s.is_open());
    }
}
