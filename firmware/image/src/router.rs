//! The polled main loop: NICs ⇄ node (dataplane + WireGuard), and COM1.
//!
//! Each turn: read the clock once; take a bounded batch from every NIC into
//! frame buffers with headroom; run each frame through the node's dataplane
//! (which calls the WireGuard tunnel for sealing and opening); send what it
//! returns on the NIC bound to the port; run timers when due; let the
//! drivers reclaim transmit slots; then read what arrived on COM1.
//!
//! COM1 carries two audiences (`routerd_provision::session`): every byte
//! goes to the provisioning session; while no session is open it also goes
//! to the human's line editor. Requests run between forwarding turns, so a
//! long answer (a whole configuration at 115200 baud) delays forwarding
//! for its duration; nothing is lost, the NIC rings buffer meanwhile.

use crate::console;
use crate::nics::Nics;
use alloc::boxed::Box;
use hal_x86::clock::Clock;
use hal_x86::entropy::Entropy;
use log::{info, warn};
use routerd_control::{NicSnapshot, Node};
use routerd_dataplane::{self as dp, FrameBuf, Instant, PortId, Transmit};
use routerd_netdev::{NetDevice, TxToken};
use routerd_provision::message::{Op, Reply};
use routerd_provision::session::{Session, Step};

/// Frames taken from one NIC per turn.
const BATCH: usize = 32;
/// Serial bytes taken per turn (the UART FIFO holds 16; QEMU holds more).
const SERIAL_BUDGET: usize = 4096;

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
pub struct Router {
    pub node: Box<Node<Entropy>>,
    pub session: Box<Session>,
    pub clock: Clock,
    pub watch: Watch,
}

/// What the console reports when it changes: link state (claim changes
/// come from the dataplane as events, with their reasons).
pub struct Watch {
    next: Instant,
    links: [Option<bool>; crate::nics::MAX_NICS],
}

impl Watch {
    pub const fn new() -> Watch {
        Watch { next: Instant::from_millis(0), links: [None; crate::nics::MAX_NICS] }
    }
}

/// How often link state is compared.
const WATCH_MS: u64 = 100;

impl Router {
    fn now(&self) -> Instant {
        Instant::from_millis(self.clock.now_ms())
    }

    /// Runs forever.
    pub fn run(&mut self, nics: &mut Nics, bufs: &mut Buffers) -> ! {
        let mut line = console::LineReader::new();
        loop {
            let now = self.now();
            let busy = self.forward(now, nics, bufs);
            for (_, n) in nics.iter_mut() {
                n.poll();
            }
            self.serial(now, nics, &mut line);
            if now >= self.watch.next {
                self.watch.next = Instant::from_millis(now.millis() + WATCH_MS);
                self.report_changes(nics);
            }
            if !busy {
                core::hint::spin_loop();
            }
        }
    }

    /// One forwarding turn; true when any NIC had frames.
    fn forward(&mut self, now: Instant, nics: &mut Nics, bufs: &mut Buffers) -> bool {
        let mut busy = false;
        for nic in 0..nics.len() {
            let port = self.node.port_of_nic(nic);
            let Some(n) = nics.get_mut(nic) else { continue };
            let Some(port) = port else {
                // A NIC the configuration does not use (or none yet): keep
                // its ring moving.
                n.receive(BATCH, &mut |_| {});
                continue;
            };
            let mut count = 0usize;
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
            busy |= count > 0;
            // A port is bound, so a configuration runs.
            let Some(mut f) = self.node.forwarding() else { continue };
            let mut tx = NicTransmit { nics: &mut *nics, nic_of_port: f.nic_of_port };
            for i in 0..count {
                let (Some(raw), Some(&len)) = (bufs.frames.get_mut(i), bufs.lens.get(i)) else { continue };
                let Ok(mut fb) = FrameBuf::new(raw, dp::HEADROOM, len) else { continue };
                f.dataplane.process_and_transmit(now, port, &mut fb, &mut f.tunnel, &mut tx);
            }
        }
        if let Some(mut f) = self.node.forwarding() {
            let due = f.dataplane.poll_at(&f.tunnel).is_none_or(|t| t <= now);
            if due || busy {
                let mut tx = NicTransmit { nics: &mut *nics, nic_of_port: f.nic_of_port };
                f.dataplane.poll(now, &mut f.tunnel, &mut tx);
            }
        }
        busy
    }

    /// COM1: the provisioning session, and the human when no session is open.
    fn serial(&mut self, now: Instant, nics: &mut Nics, line: &mut console::LineReader) {
        if self.session.poll(now.millis()) {
            console::set_session(false);
            console::print(format_args!(
                "provisioning session closed after {} s idle; console is yours again\n",
                routerd_provision::session::IDLE_TIMEOUT_MS / 1000
            ));
        }
        for _ in 0..SERIAL_BUDGET {
            let Some(b) = console::try_read() else { break };
            let was_open = self.session.is_open();
            let request = match self.session.push(b, now.millis()) {
                Step::Nothing => None,
                Step::Send(frame) => {
                    console::write_bytes(frame);
                    None
                }
                Step::Execute(req) => Some(req),
            };
            if let Some(req) = request {
                let reboot = matches!(req.op, Op::Reboot);
                let reply = self.execute(now, req.op, nics);
                let frame = self.session.respond(req.seq, reply);
                console::write_bytes(frame);
                if reboot {
                    console::set_session(false);
                    info!("reboot requested over the provisioning session");
                    hal_x86::power::reset();
                }
            }
            let open = self.session.is_open();
            if open != was_open {
                console::set_session(open);
                if open {
                    info!("provisioning session opened");
                } else {
                    console::print(format_args!("provisioning session closed; console is yours again\n"));
                }
                line.clear();
            }
            if !open && !was_open {
                if let Some(l) = line.push(b) {
                    let mut text = heapless::String::<80>::new();
                    let _ = text.push_str(l.trim());
                    self.command(now, text.as_str(), nics);
                }
            }
        }
    }

    /// Logs link changes and claim transitions with their reasons (on the
    /// console, or inside frames while a session holds the line).
    fn report_changes(&mut self, nics: &mut Nics) {
        for (i, (name, n)) in nics.iter_mut().enumerate() {
            let up = n.link_up();
            if let Some(slot) = self.watch.links.get_mut(i) {
                if *slot != Some(up) {
                    if slot.is_some() {
                        info!("link: {name} is {}", if up { "up" } else { "down" });
                    }
                    *slot = Some(up);
                }
            }
        }
        while let Some(e) = self.node.take_claim_event() {
            match e.kind {
                dp::ClaimEventKind::Conflict { .. } | dp::ClaimEventKind::InUse { .. } => warn!("{e}"),
                _ => info!("{e}"),
            }
        }
    }

    fn snapshots(nics: &mut Nics) -> heapless::Vec<NicSnapshot, { crate::nics::MAX_NICS }> {
        nics.iter_mut()
            .map(|(_, n)| {
                let s = n.stats();
                NicSnapshot {
                    link_up: n.link_up(),
                    rx_frames: s.rx_frames,
                    tx_frames: s.tx_frames,
                    rx_errors: s.rx_errors,
                    tx_ring_full: s.tx_ring_full,
                }
            })
            .collect()
    }

    fn execute(&mut self, now: Instant, op: Op, nics: &mut Nics) -> Reply {
        let snaps = Self::snapshots(nics);
        let applying = matches!(op, Op::Apply(_) | Op::ClaimAdd(_) | Op::ClaimRemove(_));
        let mut reply = self.node.handle(now, op, &snaps);
        match &mut reply {
            Reply::Status(s) => s.serial = self.session.stats(),
            Reply::Applied(out) if applying => {
                if let Some(c) = self.node.config() {
                    self.session.set_device_name(c.device.name.as_str());
                    info!(
                        "config: device {} side {} applied ({} changes)",
                        c.device.name.as_str(),
                        c.device.side.as_str(),
                        out.changes.len()
                    );
                }
            }
            Reply::Error(f) if applying => warn!("config: refused: {}", f.message.as_str()),
            _ => {}
        }
        reply
    }

    /// Console commands, for a human at the serial port.
    fn command(&mut self, now: Instant, line: &str, nics: &mut Nics) {
        match line {
            "" => {}
            "status" => self.print_status(now, nics),
            "help" => console::print(format_args!(
                "commands: status, help. Provision with `routerctl apply FILE --port …` on this serial line.\n"
            )),
            other => console::print(format_args!("unknown command {other:?}; try help\n")),
        }
    }

    fn print_status(&mut self, now: Instant, nics: &mut Nics) {
        let snaps = Self::snapshots(nics);
        let st = self.node.status(now, false, &snaps);
        let _ = st.write_summary(&mut console::ConsoleText);
        console::print(format_args!("end of status\n"));
    }
}
