//! The polled main loop: NICs ⇄ node (dataplane + WireGuard), and COM1.
//!
//! Each turn: read the clock once; run the forwarding turn every platform
//! shares (`routerd_control::run`: NIC batches through the dataplane and
//! WireGuard, timers, driver reclaim, claim transitions logged); then read
//! what arrived on COM1.
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
use routerd_control::{Forwarder, NicSnapshot, Node};
use routerd_dataplane::Instant;
use routerd_netdev::NetDevice;
use routerd_provision::message::{text_fmt, Failure, Op, Reply};
use routerd_provision::session::{Session, Step};

/// Serial bytes taken per turn (the UART FIFO holds 16; QEMU holds more).
const SERIAL_BUDGET: usize = 4096;

/// Everything the loop owns.
pub struct Router {
    pub node: Box<Node<Entropy>>,
    /// The forwarding turn and the slots for the loans of a batch (a static).
    pub forwarder: &'static mut Forwarder,
    pub session: Box<Session>,
    pub storage: Box<crate::storage::Storage>,
    /// The firmware slots, the trial and upgrades.
    pub slots: Box<crate::slots::Slots>,
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
    pub fn run(&mut self, nics: &mut Nics) -> ! {
        let mut line = console::LineReader::new();
        loop {
            let now = self.now();
            let busy = self.forwarder.turn(&mut self.node, now, nics, &mut |e| {
                if e.is_warning() {
                    warn!("{e}")
                } else {
                    info!("{e}")
                }
            });
            self.serial(now, nics, &mut line);
            // Queued console output leaves as fast as the line takes it.
            console::pump();
            if now >= self.watch.next {
                self.watch.next = Instant::from_millis(now.millis() + WATCH_MS);
                self.report_links(nics);
                // The periodic save of the clock floor.
                self.storage.poll(&mut self.node, now);
                // A trial boot confirms itself once healthy (or gives up).
                let healthy = self.healthy(nics);
                self.slots.poll(now, healthy, &mut self.storage);
            }
            if !busy {
                core::hint::spin_loop();
            }
        }
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
                    console::flush();
                    hal_x86::power::reset();
                }
                if self.slots.take_reboot() {
                    console::set_session(false);
                    info!("upgrade: rebooting into the new firmware");
                    console::flush();
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

    /// Whether this boot is healthy enough to confirm a trial: a NIC runs,
    /// every NIC the configuration uses has link, and the stored
    /// configuration was not refused by this firmware.
    fn healthy(&mut self, nics: &mut Nics) -> bool {
        if nics.len() == 0 || self.node.refused_config().is_some() {
            return false;
        }
        let node = &self.node;
        nics.iter_mut().enumerate().all(|(i, (_, n))| node.port_of_nic(i).is_none() || n.link_up())
    }

    /// Logs link changes (on the console, or inside frames while a session
    /// holds the line).
    fn report_links(&mut self, nics: &mut Nics) {
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
                    rx_loans_out: s.rx_loans_out,
                    rx_foreign_loans: s.rx_foreign_loans,
                }
            })
            .collect()
    }

    fn execute(&mut self, now: Instant, op: Op, nics: &mut Nics) -> Reply {
        let snaps = Self::snapshots(nics);
        let applying = matches!(
            op,
            Op::Apply(_) | Op::ApplyConfirm { .. } | Op::ClaimAdd(_) | Op::ClaimRemove(_) | Op::Rollback { dry_run: false, .. }
        );
        // Fixed-size text: the image formats nothing on the heap.
        let what: routerd_provision::message::Text<64> = match &op {
            Op::ApplyConfirm { window_ms, .. } => text_fmt(format_args!(" on trial: reverts in {} s unless confirmed", window_ms / 1000)),
            Op::Rollback { generation, .. } => text_fmt(format_args!(" (rollback to generation {generation})")),
            _ => routerd_provision::message::Text::new(),
        };
        let resetting = matches!(op, Op::FactoryReset { .. });
        let mut reply = match op {
            // The disks are the platform's: the node never sees them.
            Op::StorageInit { disk, force } => self.storage.init(&mut self.node, disk.as_str(), force, now),
            op @ (Op::UpgradeBegin(_) | Op::UpgradeChunk(_) | Op::UpgradeCommit) => self.slots.handle(op, &mut self.storage),
            op => self.node.handle_with(now, op, &snaps, &mut bgp_room),
        };
        // What changed is on disk (or erased) before the answer goes out.
        self.storage.poll(&mut self.node, now);
        // A revert the request's own deadline check made is logged now.
        while let Some(e) = self.node.take_event() {
            if e.is_warning() {
                warn!("{e}")
            } else {
                info!("{e}")
            }
        }
        match &mut reply {
            Reply::Status(s) => {
                s.serial = self.session.stats();
                s.storage = Some(self.storage.status(now));
                s.firmware = self.slots.status(now);
                let (wall, source) = self.storage.clock(now);
                (s.wall_clock_ms, s.clock_source) = (wall, routerd_provision::message::text(source));
            }
            Reply::Applied(out) if applying => {
                if let Some(c) = self.node.config() {
                    self.session.set_device_name(c.device.name.as_str());
                    let n = out.changes.len();
                    info!(
                        "config: device {} side {} applied as generation {} ({n} change{}){}",
                        c.device.name.as_str(),
                        c.device.side.as_str(),
                        self.node.generation(),
                        if n == 1 { "" } else { "s" },
                        what.as_str()
                    );
                }
                log_heap();
            }
            Reply::Error(f) if applying => warn!("config: refused: {}", f.message.as_str()),
            Reply::Confirmed { generation } => info!("config: generation {generation} confirmed; it stays"),
            Reply::Done if resetting => {
                self.session.set_device_name("");
                warn!("FACTORY RESET over the provisioning session: not forwarding; configuration, history and keys forgotten");
            }
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
        console::print(format_args!("heap: {}\n", crate::rt::heap_usage()));
        console::print(format_args!("end of status\n"));
    }
}

/// The heap figures, logged after an apply.
pub fn log_heap() {
    info!("mem: heap {}", crate::rt::heap_usage());
}

/// The image's [`routerd_control::Bind`]: configurations bind as written,
/// but one with `[bgp]` is refused, naming `bgp`, when the heap cannot hold
/// what applying it may allocate — the staged dataplane, configuration and
/// WireGuard device, and a whole BGP service (RIB, local routes, a session
/// per peer, the TCP endpoint) beside the running one, as a replacement
/// does (conservative: an apply that keeps the running service needs none
/// of it). A failed allocation would stop the box (`Box::new` has no
/// fallible form), so the apply asks first; see `rt::heap_holds`.
pub fn bgp_room(cfg: &config_schema::Config) -> Result<Option<Box<config_schema::Config>>, Box<Failure>> {
    use core::alloc::Layout;
    let Some(b) = &cfg.bgp else { return Ok(None) };
    let mut blocks: heapless::Vec<Layout, { crate::rt::MAX_PROBE_BLOCKS }> = heapless::Vec::new();
    let fixed = [
        Layout::new::<routerd_dataplane::Dataplane>(),
        Layout::new::<routerd_control::WgDevice>(),
        Layout::new::<config_schema::Config>(),
        Layout::new::<routerd_control::bgp::Bgp>(),
        Layout::new::<routerd_bgp::Rib>(),
        Layout::new::<routerd_bgp::LocalRoutes>(),
        Layout::new::<[u8; routerd_bgp::wire::MAX_MESSAGE_LEN]>(),
        Layout::new::<routerd_control::tcp::Tcp>(),
        // The TCP endpoint's socket buffers (its sockets and interface are
        // counted in the margin).
        Layout::new::<[[u8; routerd_control::tcp::RX_BUF + routerd_control::tcp::TX_BUF]; routerd_control::tcp::MAX_SOCKETS]>(),
        // What else an apply keeps or allocates for a moment (history's
        // copy of the configuration, its outcome, smoltcp's sockets):
        // measured about 130 KiB with one peer.
        Layout::new::<[u8; 256 * 1024]>(),
    ];
    let sessions = core::iter::repeat_n(Layout::new::<routerd_bgp::Session>(), b.peers.len().min(routerd_control::bgp::MAX_BGP_PEERS));
    for l in fixed.into_iter().chain(sessions) {
        // Capacity: 10 fixed blocks and at most 16 sessions.
        let _ = blocks.push(l);
    }
    if crate::rt::heap_holds(&blocks) {
        return Ok(None);
    }
    let need: usize = blocks.iter().map(|l| l.size()).sum();
    let h = crate::rt::heap_usage();
    Err(Failure::refused(format_args!(
        "bgp: the heap cannot hold the BGP service beside the running configuration ({} KiB needed; {} KiB of {} KiB in use)",
        need / 1024,
        h.used / 1024,
        h.size / 1024
    )))
}
