//! `routerctl upgrade FIRMWARE`: put a new firmware in the box's other
//! slot, boot it on trial and wait until it confirms itself.
//!
//! The disk of a routerd box has two firmware slots (docs/DISK-LAYOUT.md).
//! The upgrade never touches the slot the box runs from:
//!
//! 1. Here, before anything is sent: the file must be a routerd firmware
//!    (`routerd_provision::firmware::inspect`: an x86-64 ELF with a
//!    multiboot2 header and a `.note.routerd`), fit a slot
//!    ([`FIRMWARE_MAX`]) and not be a test build that never confirms (the
//!    hidden `--allow-test-build` lets the upgrade tests install one).
//! 2. The box's status names the running slot; a box without slots (booted
//!    another way) or on a trial not yet decided is refused. The plan is
//!    shown and confirmed (as `apply` does: a prompt on a terminal, `--yes`
//!    elsewhere).
//! 3. Streaming: [`Op::UpgradeBegin`] with the size and SHA-256, then
//!    [`Op::UpgradeChunk`]s in order. Every answer says how many bytes the
//!    box holds; it must be exactly the end of the chunk just sent. When the
//!    line breaks (a timeout, a closed socket, the box's session gone) a new
//!    session sends the same `UpgradeBegin`: the box answers how much of
//!    this same image it already holds, and the stream resumes there — also
//!    in a later run of the same command.
//! 4. [`Op::UpgradeCommit`]: the box reads the slot back, checks it, marks
//!    it for a trial boot and reboots. An answer lost to the reboot is
//!    treated as "probably rebooting".
//! 5. Waiting (unless `--no-wait`): a new session every second until the
//!    box runs the new slot confirmed, or is back on the old one with the
//!    new slot marked failed (GRUB counted the trial down). A status counts
//!    only once the box rebooted after the commit: its uptime is shorter
//!    than the time since the commit was sent (the old firmware, still
//!    answering before it reboots, has been up at least as long as the
//!    stream took).
//!
//! The protocol steps run on a [`Link`] (sessions that may break, and a
//! clock), so the unit tests drive the whole flow against a simulated box
//! with cut lines, lying answers and slow boots, in virtual time.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use routerd_provision::firmware;
use routerd_provision::frame;
use routerd_provision::message::{
    FailureKind, FirmwareIdentity, FirmwareStatus, Op, Reply, Status, UpgradeBegin, UpgradeChunk, UpgradeProgress, FIRMWARE_MAX,
    UPGRADE_CHUNK,
};
use serde_json::{json, Value};

use crate::box_cmd::{failed, to_json, Conn};
use crate::client::{Client, PortSpec};
use crate::progress::Progress;
use crate::{Failure, EXIT_FAILED, EXIT_USAGE};

/// Reconnects in a row (without a byte of progress between them) before
/// the upgrade gives up.
pub const MAX_RECONNECTS: u32 = 5;
/// Tries a trial boot gets (GRUB's `routerd_tries`, set by the box).
const TRIAL_BOOTS: u32 = 3;
/// Offsets of chunks are multiples of this (the slot's sectors).
const SECTOR: u32 = 512;

/// `routerctl upgrade --help`'s description (set on the command in main.rs).
pub const LONG_ABOUT: &str = "Install a new firmware on a box booted from a routerd disk, without risking the running one.\n\n\
        The disk has two firmware slots. The file goes into the slot the box does not run from, over the \
        same line as every other command (progress with rate and ETA on stderr; a cut line is resumed where \
        it stopped, also by running the same command again). The box checks what it received (SHA-256, a \
        bootable routerd firmware), then reboots into the new slot on trial. The new firmware confirms \
        itself once it runs; if it does not within 3 boots (a crash, a hang, a power cut), the box goes back \
        to the slot it runs now by itself. The configuration and the keys are not touched.\n\n\
        FIRMWARE is the image's ELF: `target/release/routerd` after `cargo xtask image`, or the routerd \
        file of a release. It is checked before anything is sent: an ELF for x86-64 with a multiboot2 header \
        and a routerd note (its version and build), at most 16 MiB.\n\n\
        routerctl shows what will happen and asks (--yes: don't ask; required without a terminal), then \
        waits for the box to come back and confirm (--no-wait: stop once the box reboots; --wait SECS: how \
        long to wait, default 300).";

/// `routerctl upgrade --help`'s examples, JSON and exit codes.
pub const AFTER_HELP: &str = "Examples:\n  \
        routerctl upgrade target/release/routerd --port /dev/ttyUSB0\n  \
        routerctl upgrade routerd-0.2.0 --port unix:/tmp/onprem.sock --yes --json | jq .outcome\n  \
        routerctl upgrade routerd-0.2.0 --port /dev/ttyUSB0 --yes --no-wait && routerctl status --port /dev/ttyUSB0\n\n\
        JSON: {schema, port, slot, from, to, replaces, bytes, sent, seconds, resumed, outcome: \
        confirmed|rolled_back|rebooting|timeout, firmware} (from: the running firmware; replaces: what the slot \
        held; firmware: the box's slots as last seen); a failure adds {result: \"fail\", error: {kind, message}}.\n\
        Exit codes: 0 the new firmware runs and confirmed itself (with --no-wait: the box accepted it and \
        reboots), 1 it did not (the box went back to the running firmware, no answer in time, the box refused \
        or is unreachable, declined), 2 FIRMWARE is not a routerd firmware, too large or a test build, or no \
        --yes without a terminal.";

/// `routerctl upgrade`'s arguments.
#[derive(Args)]
pub struct UpgradeArgs {
    /// The new firmware (the image's ELF, e.g. target/release/routerd)
    #[arg(value_name = "FIRMWARE")]
    pub firmware: PathBuf,
    /// Upgrade without asking
    #[arg(long, short)]
    pub yes: bool,
    /// Print one JSON document at the end (everything else goes to stderr)
    #[arg(long)]
    pub json: bool,
    /// Stop once the box accepted the firmware and reboots into it
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the box to come back and confirm, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 300, conflicts_with = "no_wait")]
    pub wait: u64,
    /// Install a test build that never confirms a trial boot (the upgrade tests)
    #[arg(long, hide = true)]
    pub allow_test_build: bool,
}

// ---------------------------------------------------------------- the file

/// A firmware file, checked.
pub struct Firmware {
    pub bytes: Vec<u8>,
    pub identity: FirmwareIdentity,
    pub sha256: [u8; 32],
}

impl Firmware {
    fn size(&self) -> u32 {
        u32::try_from(self.bytes.len()).unwrap_or(u32::MAX)
    }
}

/// Reads and checks FIRMWARE (nothing is sent anywhere): exit 2 for a file
/// that is not a routerd firmware, too large, or a test build.
pub fn load(path: &Path, allow_test_build: bool) -> Result<Firmware, Failure> {
    let name = path.display();
    let mut f = std::fs::File::open(path).map_err(|e| Failure::usage(format!("upgrade: {name}: {e}")))?;
    let len = f.metadata().map_err(|e| Failure::usage(format!("upgrade: {name}: {e}")))?.len();
    // The head first: a large file that is not a firmware is named as such
    // without reading it all.
    let mut head = Vec::with_capacity(firmware::HEAD);
    (&mut f).take(firmware::HEAD as u64).read_to_end(&mut head).map_err(|e| Failure::usage(format!("upgrade: {name}: {e}")))?;
    let identity = firmware::inspect(&head).map_err(|e| Failure::usage(format!("upgrade: {name}: {e}")))?;
    if len > u64::from(FIRMWARE_MAX) {
        return Err(Failure::usage(format!(
            "upgrade: {name}: {len} bytes is larger than a firmware slot ({FIRMWARE_MAX} bytes, {})",
            crate::progress::size(u64::from(FIRMWARE_MAX))
        )));
    }
    if identity.flags & FirmwareIdentity::FLAG_NEVER_CONFIRMS != 0 && !allow_test_build {
        return Err(Failure::usage(format!(
            "upgrade: {name}: {identity} is a test build that never confirms a trial boot: the box would always go back to \
             the firmware it runs now. Install a release build"
        )));
    }
    let mut bytes = head;
    f.read_to_end(&mut bytes).map_err(|e| Failure::usage(format!("upgrade: {name}: {e}")))?;
    if bytes.len() as u64 != len || bytes.len() > FIRMWARE_MAX as usize {
        return Err(Failure::usage(format!("upgrade: {name}: changed while it was read ({len} bytes, then {})", bytes.len())));
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    let mut sha256 = [0u8; 32];
    sha256.copy_from_slice(digest.as_ref());
    Ok(Firmware { bytes, identity, sha256 })
}

// ---------------------------------------------------------------- pure decisions

/// The slot an upgrade writes: the one the box does not run from.
pub fn other_slot(running: &str) -> Option<&'static str> {
    match running {
        "A" => Some("B"),
        "B" => Some("A"),
        _ => None,
    }
}

/// The identity in `slot`, if the box reports one.
pub fn slot_identity<'a>(fw: &'a FirmwareStatus, slot: &str) -> Option<&'a FirmwareIdentity> {
    fw.slots.iter().find(|s| s.slot.as_str() == slot).and_then(|s| s.identity.as_ref())
}

/// `routerd 0.1.0 (build abc)`, or what stands for none.
fn ident(i: Option<&FirmwareIdentity>) -> String {
    i.map_or_else(|| "no routerd firmware".to_string(), |i| i.to_string())
}

/// `slot A running routerd 0.1.0 (build abc); slot B standby routerd 0.1.0
/// (build def)`: both slots in one line (status, doctor, this command).
pub fn slots_text(fw: &FirmwareStatus) -> String {
    let slots: Vec<String> = fw
        .slots
        .iter()
        .map(|s| match &s.identity {
            Some(i) => format!("slot {} {} {i}", s.slot, s.state),
            None => format!("slot {} {}", s.slot, if s.state.is_empty() { "empty" } else { s.state.as_str() }),
        })
        .collect();
    if slots.is_empty() {
        return format!("running from slot {}", fw.running);
    }
    slots.join("; ")
}

/// Lines about a trial and a failed one, for `routerctl status` (each ends
/// with a newline; empty when there is nothing to say).
pub fn trial_lines(fw: &FirmwareStatus) -> String {
    let mut o = String::new();
    if let Some(n) = fw.trial_tries_left {
        let back = other_slot(&fw.running).unwrap_or("?");
        let left = match n {
            0 => format!("this is its last try: the box goes back to slot {back} if this boot does not confirm"),
            n => format!("{} left before the box goes back to slot {back}", crate::plural(usize::from(n), "boot")),
        };
        o += &format!(
            "trial: slot {} ({}) is not confirmed yet: {left}{}\n",
            fw.running,
            ident(slot_identity(fw, &fw.running)),
            fw.confirm_in_ms.map_or(String::new(), |ms| format!("; this boot gives up in {} s", ms.div_ceil(1000)))
        );
    }
    if let Some(f) = &fw.failed {
        o += &format!(
            "last upgrade FAILED: slot {f} ({}) did not confirm; the box went back to slot {}\n",
            ident(slot_identity(fw, f)),
            fw.running
        );
    }
    o
}

/// The largest chunk to send: what the box takes, at most
/// [`UPGRADE_CHUNK`], whole sectors (offsets must be multiples of 512).
pub fn chunk_len(chunk_max: u32) -> Result<u32, String> {
    let n = chunk_max.min(UPGRADE_CHUNK as u32) / SECTOR * SECTOR;
    if n == 0 {
        return Err(format!("the box takes chunks of at most {chunk_max} bytes: less than one sector (512)"));
    }
    Ok(n)
}

/// Checks the box's answer to `UpgradeBegin` and returns the chunk length
/// to use and the offset to resume at.
pub fn check_begin(p: &UpgradeProgress, size: u32, slot: &str) -> Result<(u32, u32), String> {
    if p.slot.as_str() != slot {
        return Err(format!("the box writes slot {:?}, but its status said it runs the other one than {slot}", p.slot.as_str()));
    }
    if p.size != size {
        return Err(format!("the box expects {} bytes, the file has {size}", p.size));
    }
    if p.received > size || (p.received < size && !p.received.is_multiple_of(SECTOR)) {
        return Err(format!("the box says it holds {} bytes of {size}: not a place a chunk can start", p.received));
    }
    Ok((chunk_len(p.chunk_max)?, p.received))
}

/// The next chunk after `offset`: `(offset, len)`, `None` when all is sent.
pub fn next_chunk(offset: u32, size: u32, chunk: u32) -> Option<(u32, u32)> {
    (offset < size).then(|| (offset, chunk.min(size - offset)))
}

/// How long one chunk may take to be answered: its frame on the wire at
/// `baud` (10 bits a byte) twice over, two seconds for the box's write, and
/// never less than the per-answer `--timeout`.
pub fn chunk_timeout(per_answer: Duration, baud: u32) -> Duration {
    let wire = frame::max_frame_len(UPGRADE_CHUNK + 64) as u64 * 10 * 1000 / u64::from(baud.max(1));
    per_answer.max(Duration::from_millis(wire * 2 + 2000))
}

/// `2 tries left`, `1 try left`.
pub fn tries_left(n: u8) -> String {
    if n == 1 {
        "1 try left".to_string()
    } else {
        format!("{n} tries left")
    }
}

/// Back-off before reconnect number `n` (1-based): 1 s, 2 s, … 5 s.
pub fn backoff(n: u32) -> Duration {
    Duration::from_secs(u64::from(n.clamp(1, 5)))
}

/// Where the box stands after the commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Not rebooted yet (the old firmware still answers), or no slots seen.
    NotYet,
    /// Running the new slot on trial, this many boots left.
    Trial(u8),
    /// Running the new slot, confirmed.
    Confirmed,
    /// Back on another slot after the reboot; `recorded`: the box marked
    /// the target failed (its trial ran out).
    RolledBack { recorded: bool },
}

/// Judges one status seen after the commit (`rebooted`: the box has
/// booted since the commit).
pub fn stage(fw: Option<&FirmwareStatus>, target: &str, rebooted: bool) -> Stage {
    let Some(fw) = fw.filter(|_| rebooted) else { return Stage::NotYet };
    if fw.running.as_str() == target {
        return match fw.trial_tries_left {
            Some(n) => Stage::Trial(n),
            None => Stage::Confirmed,
        };
    }
    Stage::RolledBack { recorded: fw.failed.as_deref() == Some(target) }
}

/// Whether a box up for `uptime_ms` booted after the commit sent
/// `since_commit` ago.
pub fn rebooted_since(uptime_ms: u64, since_commit: Duration) -> bool {
    u128::from(uptime_ms) <= since_commit.as_millis()
}

// ---------------------------------------------------------------- the line

/// The box as the upgrade sees it: sessions that may break, and time.
pub trait Link {
    /// Opens a new session (one still open is forgotten first). `quick`:
    /// give up sooner (polling a box that may still be booting).
    fn open(&mut self, quick: bool) -> Result<(), String>;
    /// One request in the open session; an error means the line or the
    /// session broke.
    fn request(&mut self, op: Op, timeout: Duration) -> Result<Reply, String>;
    /// Ends the session: with a bye when `bye`, else it is just forgotten.
    fn close(&mut self, bye: bool);
    /// Waits.
    fn sleep(&mut self, d: Duration);
    /// Time since the link was made.
    fn elapsed(&self) -> Duration;
}

/// The real line: [`Client`] sessions on `--port`.
struct Serial {
    spec: PortSpec,
    baud: u32,
    timeout: Duration,
    client: Option<Client>,
    started: Instant,
}

impl Link for Serial {
    fn open(&mut self, quick: bool) -> Result<(), String> {
        self.close(false);
        let t = if quick { self.timeout.min(Duration::from_secs(1)) } else { self.timeout };
        let mut c = Client::connect(&self.spec, self.baud, t).map_err(|e| e.0)?;
        c.timeout = self.timeout;
        self.client = Some(c);
        Ok(())
    }

    fn request(&mut self, op: Op, timeout: Duration) -> Result<Reply, String> {
        let c = self.client.as_mut().ok_or_else(|| "no session".to_string())?;
        c.request_with(op, timeout).map_err(|e| e.0)
    }

    fn close(&mut self, bye: bool) {
        if let Some(c) = self.client.take() {
            if bye {
                let _ = c.close();
            } else {
                c.forget();
            }
        }
    }

    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

// ---------------------------------------------------------------- the flow

/// What happened, for the JSON document and the last line.
#[derive(Default, Debug)]
pub struct Report {
    pub slot: Option<String>,
    /// The running firmware.
    pub from: Option<FirmwareIdentity>,
    /// What the target slot held before.
    pub replaces: Option<FirmwareIdentity>,
    pub to: Option<FirmwareIdentity>,
    pub bytes: u64,
    /// Bytes sent in this run (less than `bytes` after a resume).
    pub sent: u64,
    pub seconds: f64,
    /// Sessions the stream resumed in after the line broke.
    pub resumed: u32,
    pub outcome: Option<&'static str>,
    /// The box's slots as last seen.
    pub firmware: Option<FirmwareStatus>,
}

impl Report {
    fn json(&self, port: &str, error: Option<&Failure>) -> Value {
        let mut doc = json!({
            "schema": 1,
            "port": port,
            "slot": self.slot,
            "from": to_json(&self.from),
            "to": to_json(&self.to),
            "replaces": to_json(&self.replaces),
            "bytes": self.bytes,
            "sent": self.sent,
            "seconds": (self.seconds * 10.0).round() / 10.0,
            "resumed": self.resumed,
            "outcome": self.outcome,
            "firmware": to_json(&self.firmware),
        });
        if let Some(f) = error {
            doc["result"] = json!("fail");
            doc["error"] = json!({ "kind": if f.code == EXIT_USAGE { "usage" } else { "failed" }, "message": f.message.trim_end() });
        }
        doc
    }
}

/// Human lines: stdout, or stderr when stdout is for the JSON document.
fn say(json_out: bool, text: &str) {
    if json_out {
        eprintln!("{text}");
    } else {
        println!("{text}");
    }
}

/// `routerctl upgrade`.
pub fn run(args: &UpgradeArgs, conn: &Conn) -> Result<u8, Failure> {
    let mut report = Report::default();
    let started = Instant::now();
    let r = upgrade(args, conn, &mut report);
    if report.outcome.is_some() || report.sent > 0 {
        report.seconds = started.elapsed().as_secs_f64();
    }
    if !args.json {
        return r;
    }
    match r {
        Ok(code) => {
            crate::out::document(&report.json(conn.port(), None));
            Ok(code)
        }
        Err(f) => {
            eprintln!("routerctl: {}", f.message.trim_end());
            crate::out::document(&report.json(conn.port(), Some(&f)));
            Ok(f.code)
        }
    }
}

fn upgrade(args: &UpgradeArgs, conn: &Conn, report: &mut Report) -> Result<u8, Failure> {
    let fw = load(&args.firmware, args.allow_test_build)?;
    report.to = Some(fw.identity.clone());
    report.bytes = fw.bytes.len() as u64;
    let client = conn.connect()?;
    let spec = PortSpec::parse(conn.port()).map_err(Failure::usage)?;
    let timeout = Duration::from_millis(conn.timeout.max(50));
    let mut link = Serial { spec, baud: conn.baud, timeout, client: Some(client), started: Instant::now() };
    let status = match link.request(Op::Status { mark: false }, timeout) {
        Ok(Reply::Status(st)) => st,
        Ok(Reply::Error(f)) => return Err(crate::box_cmd::refusal(&f)),
        Ok(other) => return Err(crate::box_cmd::unexpected(&other)),
        Err(e) => return Err(failed(e)),
    };
    let (target, old) = plan(&status, report)?;
    let plan_text = plan_text(&status, &fw, target, old);
    say(args.json, plan_text.trim_end());
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(Failure::usage("not upgraded: add --yes to upgrade without asking (stdin is not a terminal)"));
        }
        // The box closes a session idle for 20 s: not one open while a
        // person reads the plan.
        link.close(true);
        eprint!("Proceed? [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            if args.json {
                return Err(failed("not upgraded (declined)"));
            }
            println!("not upgraded");
            return Ok(EXIT_FAILED);
        }
        link.open(false).map_err(failed)?;
    }
    let options = Options {
        chunk_timeout: chunk_timeout(timeout, conn.baud),
        commit_timeout: timeout.max(Duration::from_secs(30)),
        poll: Duration::from_secs(1),
        wait: if args.no_wait { None } else { Some(Duration::from_secs(args.wait)) },
        progress_lines: true,
    };
    let code = install(&mut link, &fw, target, old, &options, report, args.json)?;
    link.close(true);
    Ok(code)
}

/// The target slot and the running one, or why not.
fn plan(status: &Status, report: &mut Report) -> Result<(&'static str, &'static str), Failure> {
    let Some(slots) = &status.firmware else {
        return Err(failed(
            "the box did not boot from a routerd disk (no firmware slots): write an image with `routerctl image build` + \
             `routerctl flash`",
        ));
    };
    report.firmware = Some(slots.clone());
    let running = slots.running.as_str();
    let Some(target) = other_slot(running) else {
        return Err(failed(format!("the box says it runs from slot {running:?}: neither A nor B; not upgraded")));
    };
    let old = other_slot(target).unwrap_or("A");
    if let Some(n) = slots.trial_tries_left {
        return Err(failed(format!(
            "the box runs slot {running} ({}) on trial, not confirmed yet ({} left): let it confirm itself or go back to \
             slot {target} first (`routerctl status` shows which), then upgrade",
            ident(slot_identity(slots, running)),
            crate::plural(usize::from(n), "boot")
        )));
    }
    report.slot = Some(target.to_string());
    report.from = slot_identity(slots, old).cloned();
    report.replaces = slot_identity(slots, target).cloned();
    Ok((target, old))
}

/// What will happen, before it does.
fn plan_text(status: &Status, fw: &Firmware, target: &str, old: &str) -> String {
    let slots = status.firmware.clone().unwrap_or_default();
    let running = ident(slot_identity(&slots, old));
    let mut o = format!(
        "upgrade {} ({}, sha256 {}):\n",
        if status.device.is_empty() { "the box".to_string() } else { status.device.to_string() },
        crate::progress::size(fw.bytes.len() as u64),
        crate::image::hex(&fw.sha256[..8])
    );
    o += &format!("  slot {target}: {} → {}\n", ident(slot_identity(&slots, target)), fw.identity);
    o += &format!("  running: slot {old} ({running}), stays as the fallback\n");
    if slot_identity(&slots, old) == Some(&fw.identity) {
        o += "  (the file is the same version and build as the running firmware)\n";
    }
    o += &format!(
        "  the box reboots into slot {target} on trial; if it does not confirm itself within {TRIAL_BOOTS} boots it returns to \
         slot {old}. The configuration and keys are not touched.\n"
    );
    o
}

/// Timings of [`install`] (the tests shorten them).
pub struct Options {
    pub chunk_timeout: Duration,
    pub commit_timeout: Duration,
    /// Between two sessions while waiting for the box.
    pub poll: Duration,
    /// How long to wait for the confirmation (`None`: `--no-wait`).
    pub wait: Option<Duration>,
    /// Progress as lines when stderr is not a terminal.
    pub progress_lines: bool,
}

/// Streams, commits and waits; the session is open on entry. Returns the
/// exit code of a finished upgrade (0) or the failure.
pub fn install(
    link: &mut dyn Link,
    fw: &Firmware,
    target: &str,
    old: &str,
    o: &Options,
    report: &mut Report,
    json_out: bool,
) -> Result<u8, Failure> {
    stream(link, fw, target, o, report)?;
    let commit_at = link.elapsed();
    let committed = match link.request(Op::UpgradeCommit, o.commit_timeout) {
        Ok(Reply::Upgrade(_)) => {
            say(json_out, &format!("slot {target} verified by the box; it reboots into it on trial"));
            true
        }
        Ok(Reply::Error(f)) if f.kind != FailureKind::NoSession => {
            return Err(failed(format!("the box refused the commit: {}; the running firmware is unchanged", f.message)));
        }
        Ok(other) => return Err(crate::box_cmd::unexpected(&other)),
        Err(e) => {
            say(json_out, &format!("no answer to the commit ({e}): the box is probably rebooting"));
            false
        }
    };
    link.close(false);
    let Some(wait) = o.wait else {
        report.outcome = Some("rebooting");
        say(
            json_out,
            &format!(
                "upgrade: the box {} into slot {target} ({}) on trial; `routerctl status` shows whether it confirmed",
                if committed { "reboots" } else { "probably reboots" },
                fw.identity
            ),
        );
        return Ok(0);
    };
    eprintln!("waiting for the box to boot slot {target}…");
    let mut last = "no answer from the box since the commit".to_string();
    let mut shown_trial: Option<u8> = None;
    loop {
        let since = link.elapsed().saturating_sub(commit_at);
        if since >= wait {
            report.outcome = Some("timeout");
            return Err(failed(format!(
                "upgrade: no confirmation within {} s; last seen: {last}. The box decides by itself: `routerctl status` shows \
                 where it ends up",
                wait.as_secs()
            )));
        }
        link.sleep(o.poll);
        if let Err(e) = link.open(true) {
            if last.starts_with("no answer") {
                last = format!("no answer from the box since the commit ({e})");
            }
            continue;
        }
        let st = match link.request(Op::Status { mark: false }, o.chunk_timeout.min(Duration::from_secs(5))) {
            Ok(Reply::Status(st)) => st,
            _ => {
                link.close(false);
                continue;
            }
        };
        link.close(true);
        let since = link.elapsed().saturating_sub(commit_at);
        let rebooted = rebooted_since(st.uptime_ms, since);
        if st.firmware.is_some() {
            report.firmware = st.firmware.clone();
        }
        last = match &st.firmware {
            Some(f) => {
                format!("{}, up {} s{}", slots_text(f), st.uptime_ms / 1000, if rebooted { "" } else { " (not rebooted since the commit)" })
            }
            None => format!("no firmware slots reported, up {} s", st.uptime_ms / 1000),
        };
        let fws = st.firmware.as_ref();
        match stage(fws, target, rebooted) {
            Stage::NotYet => {}
            Stage::Trial(n) => {
                if shown_trial != Some(n) {
                    eprintln!("slot {target} booted on trial ({}); waiting for it to confirm…", tries_left(n));
                    shown_trial = Some(n);
                }
            }
            Stage::Confirmed => {
                report.outcome = Some("confirmed");
                let f = fws.cloned().unwrap_or_default();
                let running = slot_identity(&f, target);
                let mut line = format!(
                    "upgrade: slot {target} confirmed: {} is running; slot {old} keeps {} as the fallback",
                    ident(running),
                    ident(slot_identity(&f, old))
                );
                if running.is_some_and(|r| *r != fw.identity) {
                    line += &format!(" (the file was {})", fw.identity);
                }
                say(json_out, &line);
                return Ok(0);
            }
            Stage::RolledBack { recorded } => {
                report.outcome = Some("rolled_back");
                let f = fws.cloned().unwrap_or_default();
                let back = f.running.to_string();
                let why = if recorded {
                    "the new firmware did not confirm"
                } else {
                    "the box came back on its old slot without recording a failed trial (was the commit carried out?)"
                };
                return Err(failed(format!(
                    "upgrade FAILED: {why}; the box went back to slot {back} ({}). The configuration is unchanged.",
                    ident(slot_identity(&f, &back))
                )));
            }
        }
    }
}

/// Sends the file from where the box stands, resuming after broken lines.
fn stream(link: &mut dyn Link, fw: &Firmware, target: &str, o: &Options, report: &mut Report) -> Result<(), Failure> {
    let size = fw.size();
    let begin = Op::UpgradeBegin(UpgradeBegin { size, sha256: fw.sha256, identity: fw.identity.clone() });
    let mut progress = Progress::new(format!("sending to slot {target}:"), u64::from(size)).every(Duration::from_secs(1));
    if o.progress_lines {
        progress = progress.lines(Duration::from_secs(10));
    }
    let mut failures = 0u32;
    let mut first = true;
    loop {
        let broke = match link.request(begin.clone(), o.chunk_timeout) {
            Ok(Reply::Upgrade(p)) => {
                let (chunk, from) = check_begin(&p, size, target).map_err(|e| failed(format!("upgrade stopped: {e}")))?;
                if first && from > 0 {
                    eprintln!("resuming at {from} bytes (the box kept them from an earlier run)");
                    progress.restart(u64::from(from));
                } else if !first {
                    progress.pause();
                    eprintln!("resuming at {from} bytes");
                    report.resumed += 1;
                }
                first = false;
                match send_from(link, fw, from, chunk, o, report, &mut progress, &mut failures)? {
                    None => {
                        // The last chunk drew the final line; nothing sent
                        // (all there already) draws it here.
                        if from == size {
                            progress.show(u64::from(size));
                        }
                        progress.done();
                        return Ok(());
                    }
                    Some(e) => e,
                }
            }
            Ok(Reply::Error(f)) if f.kind == FailureKind::NoSession => f.message.to_string(),
            Ok(Reply::Error(f)) => {
                return Err(failed(format!("the box refused the upgrade: {}; the running firmware is unchanged", f.message)));
            }
            Ok(other) => return Err(crate::box_cmd::unexpected(&other)),
            Err(e) => e,
        };
        progress.pause();
        reconnect(link, &mut failures, broke)?;
    }
}

/// Chunks from `from` to the end; `Ok(Some(why))` when the line broke.
#[allow(clippy::too_many_arguments)]
fn send_from(
    link: &mut dyn Link,
    fw: &Firmware,
    from: u32,
    chunk: u32,
    o: &Options,
    report: &mut Report,
    progress: &mut Progress,
    failures: &mut u32,
) -> Result<Option<String>, Failure> {
    let size = fw.size();
    let mut at = from;
    while let Some((offset, len)) = next_chunk(at, size, chunk) {
        let end = offset + len;
        let bytes = fw.bytes.get(offset as usize..end as usize).ok_or_else(|| failed(format!("chunk {offset}+{len} outside the file")))?;
        let mut c = Box::new(UpgradeChunk { offset, data: Default::default() });
        c.data.extend_from_slice(bytes).map_err(|_| failed(format!("a chunk of {len} bytes is larger than {UPGRADE_CHUNK}")))?;
        match link.request(Op::UpgradeChunk(c), o.chunk_timeout) {
            Ok(Reply::Upgrade(p)) if p.received == end => {
                at = end;
                report.sent += u64::from(len);
                *failures = 0;
                progress.show(u64::from(at));
            }
            Ok(Reply::Upgrade(p)) => {
                progress.pause();
                return Err(failed(format!(
                    "upgrade stopped: after the chunk at offset {offset} ({len} bytes) the box says it holds {} bytes, not {end}; \
                     nothing was committed, the running firmware is unchanged",
                    p.received
                )));
            }
            Ok(Reply::Error(f)) if f.kind == FailureKind::NoSession => return Ok(Some(f.message.to_string())),
            Ok(Reply::Error(f)) => {
                progress.pause();
                return Err(failed(format!(
                    "the box refused the chunk at offset {offset}: {}; nothing was committed, the running firmware is unchanged",
                    f.message
                )));
            }
            Ok(other) => return Err(crate::box_cmd::unexpected(&other)),
            Err(e) => return Ok(Some(e)),
        }
    }
    Ok(None)
}

/// A new session after the line broke (`why`), after a back-off; gives up
/// after [`MAX_RECONNECTS`] in a row without progress.
fn reconnect(link: &mut dyn Link, failures: &mut u32, mut why: String) -> Result<(), Failure> {
    link.close(false);
    loop {
        *failures += 1;
        if *failures > MAX_RECONNECTS {
            return Err(failed(format!(
                "upgrade stopped: the line broke {MAX_RECONNECTS} times in a row ({why}); nothing was committed, the running \
                 firmware is unchanged. Run the same command again: it resumes where the box stopped"
            )));
        }
        let wait = backoff(*failures);
        eprintln!("the line broke ({why}); new session in {} s ({}/{MAX_RECONNECTS})", wait.as_secs(), failures);
        link.sleep(wait);
        match link.open(false) {
            Ok(()) => return Ok(()),
            Err(e) => why = e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use routerd_provision::message::{text, Failure as BoxFailure, SlotStatus};

    fn id(build: &str) -> FirmwareIdentity {
        FirmwareIdentity { version: text("0.1.0"), build: text(build), flags: 0 }
    }

    fn slots(running: &str, a: &str, b: &str) -> FirmwareStatus {
        let mut fw = FirmwareStatus { running: text(running), ..FirmwareStatus::default() };
        for (slot, build) in [("A", a), ("B", b)] {
            let state = if slot == running { "running" } else { "standby" };
            let _ = fw.slots.push(SlotStatus { slot: text(slot), identity: Some(id(build)), state: text(state) });
        }
        fw
    }

    fn file(len: usize, build: &str) -> Firmware {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(digest.as_ref());
        Firmware { bytes, identity: id(build), sha256 }
    }

    #[test]
    fn the_target_is_the_slot_not_running() {
        assert_eq!(other_slot("A"), Some("B"));
        assert_eq!(other_slot("B"), Some("A"));
        assert_eq!(other_slot(""), None);
        assert_eq!(other_slot("C"), None);
    }

    #[test]
    fn chunk_arithmetic_resumes_on_sector_boundaries() {
        assert_eq!(chunk_len(32 * 1024), Ok(32 * 1024));
        assert_eq!(chunk_len(1 << 20), Ok(UPGRADE_CHUNK as u32), "never above UPGRADE_CHUNK");
        assert_eq!(chunk_len(1000), Ok(512), "whole sectors");
        assert!(chunk_len(511).is_err());
        assert!(chunk_len(0).is_err());
        // 70 000 bytes in 32 KiB chunks: two full, one short.
        let mut at = 0;
        let mut chunks = Vec::new();
        while let Some((o, l)) = next_chunk(at, 70_000, 32_768) {
            chunks.push((o, l));
            at = o + l;
        }
        assert_eq!(chunks, [(0, 32_768), (32_768, 32_768), (65_536, 4_464)]);
        assert_eq!(next_chunk(70_000, 70_000, 32_768), None);
        let p = |slot: &str, size, received, chunk_max| UpgradeProgress { slot: text(slot), size, received, chunk_max };
        assert_eq!(check_begin(&p("B", 70_000, 32_768, 32_768), 70_000, "B"), Ok((32_768, 32_768)));
        assert_eq!(check_begin(&p("B", 70_000, 70_000, 32_768), 70_000, "B"), Ok((32_768, 70_000)), "all there: commit");
        assert!(check_begin(&p("A", 70_000, 0, 32_768), 70_000, "B").unwrap_err().contains("slot \"A\""));
        assert!(check_begin(&p("B", 69_999, 0, 32_768), 70_000, "B").unwrap_err().contains("69999"));
        assert!(check_begin(&p("B", 70_000, 100, 32_768), 70_000, "B").unwrap_err().contains("holds 100"));
        assert!(check_begin(&p("B", 70_000, 70_001, 32_768), 70_000, "B").is_err());
    }

    #[test]
    fn timeouts_follow_the_line_speed() {
        // 32 KiB at 115200 baud is about 2.9 s on the wire.
        let t = chunk_timeout(Duration::from_secs(3), 115_200);
        assert!(t > Duration::from_secs(7) && t < Duration::from_secs(9), "{t:?}");
        assert_eq!(chunk_timeout(Duration::from_secs(30), 115_200), Duration::from_secs(30));
        assert!(chunk_timeout(Duration::from_secs(1), 9600) > Duration::from_secs(60));
        assert_eq!(
            (tries_left(2).as_str(), tries_left(1).as_str(), tries_left(0).as_str()),
            ("2 tries left", "1 try left", "0 tries left")
        );
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(9), Duration::from_secs(5));
    }

    #[test]
    fn the_stage_after_the_commit_comes_from_the_status() {
        let mut fw = slots("B", "old", "new");
        fw.trial_tries_left = Some(2);
        assert_eq!(stage(Some(&fw), "B", true), Stage::Trial(2));
        assert_eq!(stage(Some(&fw), "B", false), Stage::NotYet, "an answer from before the reboot");
        fw.trial_tries_left = None;
        assert_eq!(stage(Some(&fw), "B", true), Stage::Confirmed);
        let mut back = slots("A", "old", "new");
        assert_eq!(stage(Some(&back), "B", true), Stage::RolledBack { recorded: false });
        back.failed = Some(text("B"));
        assert_eq!(stage(Some(&back), "B", true), Stage::RolledBack { recorded: true });
        assert_eq!(stage(Some(&back), "B", false), Stage::NotYet);
        assert_eq!(stage(None, "B", true), Stage::NotYet);
        assert!(rebooted_since(4_000, Duration::from_secs(5)));
        assert!(!rebooted_since(65_000, Duration::from_secs(5)));
    }

    #[test]
    fn status_lines_name_slots_trials_and_failures() {
        let mut fw = slots("A", "abc", "def");
        assert_eq!(slots_text(&fw), "slot A running routerd 0.1.0 (build abc); slot B standby routerd 0.1.0 (build def)");
        assert_eq!(trial_lines(&fw), "");
        fw.failed = Some(text("B"));
        assert_eq!(
            trial_lines(&fw),
            "last upgrade FAILED: slot B (routerd 0.1.0 (build def)) did not confirm; the box went back to slot A\n"
        );
        let mut t = slots("B", "abc", "def");
        t.trial_tries_left = Some(1);
        t.confirm_in_ms = Some(29_500);
        assert_eq!(
            trial_lines(&t),
            "trial: slot B (routerd 0.1.0 (build def)) is not confirmed yet: 1 boot left before the box goes back to slot A; \
             this boot gives up in 30 s\n"
        );
        t.trial_tries_left = Some(0);
        t.confirm_in_ms = None;
        assert_eq!(
            trial_lines(&t),
            "trial: slot B (routerd 0.1.0 (build def)) is not confirmed yet: this is its last try: the box goes back to slot A if \
             this boot does not confirm\n"
        );
        t.slots[0].identity = None;
        t.slots[0].state = text("empty");
        assert!(slots_text(&t).starts_with("slot A empty; slot B"), "{}", slots_text(&t));
    }

    /// A box in virtual time: two slots, an upgrade in progress, a line
    /// that breaks on the requests listed in `cut_at` (counted from 1), and
    /// a boot sequence after the commit.
    struct FakeBox {
        now: Duration,
        open: bool,
        requests: u32,
        cut_at: Vec<u32>,
        /// Connection attempts refused after a cut (the box "reboots").
        refuse_opens: u32,
        slot: Vec<u8>,
        size: u32,
        chunk_max: u32,
        /// Answer chunks with this many bytes too few.
        short_by: u32,
        refuse_chunks: bool,
        committed_at: Option<Duration>,
        /// After the commit: (seconds after it, running slot, tries left, failed).
        boots: Vec<(u64, &'static str, Option<u8>, Option<&'static str>)>,
        chunks_seen: Vec<u32>,
        sleeps: Duration,
    }

    impl FakeBox {
        fn new() -> FakeBox {
            FakeBox {
                now: Duration::ZERO,
                open: true,
                requests: 0,
                cut_at: Vec::new(),
                refuse_opens: 0,
                slot: Vec::new(),
                size: 0,
                chunk_max: 32 * 1024,
                short_by: 0,
                refuse_chunks: false,
                committed_at: None,
                boots: vec![(20, "B", Some(2), None), (40, "B", None, None)],
                chunks_seen: Vec::new(),
                sleeps: Duration::ZERO,
            }
        }

        fn progress(&self) -> Reply {
            Reply::Upgrade(UpgradeProgress {
                slot: text("B"),
                size: self.size,
                received: self.slot.len() as u32,
                chunk_max: self.chunk_max,
            })
        }

        fn status(&self) -> Status {
            let mut st = Status::default();
            let Some(at) = self.committed_at else {
                st.uptime_ms = 600_000 + self.now.as_millis() as u64;
                st.firmware = Some(slots("A", "old", "old"));
                return st;
            };
            let since = self.now.saturating_sub(at);
            match self.boots.iter().rev().find(|b| since >= Duration::from_secs(b.0)) {
                None => {
                    // The old firmware, still up.
                    st.uptime_ms = 600_000 + self.now.as_millis() as u64;
                    st.firmware = Some(slots("A", "old", "old"));
                }
                Some(&(t, running, tries, failed)) => {
                    st.uptime_ms = (since - Duration::from_secs(t)).as_millis() as u64;
                    let mut fw = slots(running, "old", "new");
                    fw.trial_tries_left = tries;
                    fw.failed = failed.map(text);
                    st.firmware = Some(fw);
                }
            }
            st
        }
    }

    impl Link for FakeBox {
        fn open(&mut self, _quick: bool) -> Result<(), String> {
            self.now += Duration::from_millis(50);
            if self.refuse_opens > 0 {
                self.refuse_opens -= 1;
                return Err("connection refused".into());
            }
            self.open = true;
            Ok(())
        }

        fn request(&mut self, op: Op, _timeout: Duration) -> Result<Reply, String> {
            self.now += Duration::from_millis(10);
            if !self.open {
                return Err("no session".into());
            }
            self.requests += 1;
            if self.cut_at.contains(&self.requests) {
                self.open = false;
                return Err("the line was closed".into());
            }
            Ok(match op {
                Op::Status { .. } => Reply::Status(Box::new(self.status())),
                Op::UpgradeBegin(b) => {
                    if b.size != self.size {
                        self.size = b.size;
                        self.slot.clear();
                    }
                    self.progress()
                }
                Op::UpgradeChunk(c) => {
                    self.chunks_seen.push(c.offset);
                    if self.refuse_chunks {
                        return Ok(Reply::Error(BoxFailure::refused(format_args!("slot B: write error at sector 7"))));
                    }
                    if c.offset as usize != self.slot.len() {
                        return Ok(Reply::Error(BoxFailure::refused(format_args!("out of order"))));
                    }
                    self.slot.extend_from_slice(&c.data);
                    let Reply::Upgrade(mut p) = self.progress() else { unreachable!() };
                    p.received -= self.short_by;
                    Reply::Upgrade(p)
                }
                Op::UpgradeCommit => {
                    self.committed_at = Some(self.now);
                    self.open = false;
                    self.progress()
                }
                other => panic!("unexpected {other:?}"),
            })
        }

        fn close(&mut self, _bye: bool) {
            self.open = false;
        }

        fn sleep(&mut self, d: Duration) {
            self.now += d;
            self.sleeps += d;
        }

        fn elapsed(&self) -> Duration {
            self.now
        }
    }

    fn options(wait: Option<u64>) -> Options {
        Options {
            chunk_timeout: Duration::from_secs(1),
            commit_timeout: Duration::from_secs(1),
            poll: Duration::from_secs(1),
            wait: wait.map(Duration::from_secs),
            progress_lines: false,
        }
    }

    fn run_fake(b: &mut FakeBox, fw: &Firmware, wait: Option<u64>) -> (Result<u8, Failure>, Report) {
        let mut report = Report { bytes: fw.bytes.len() as u64, to: Some(fw.identity.clone()), ..Report::default() };
        let r = install(b, fw, "B", "A", &options(wait), &mut report, true);
        (r, report)
    }

    #[test]
    fn a_clean_upgrade_streams_commits_and_waits_for_the_confirmation() {
        let fw = file(100_000, "new");
        let mut b = FakeBox::new();
        let (r, report) = run_fake(&mut b, &fw, Some(300));
        assert_eq!(r.unwrap(), 0);
        assert_eq!(b.slot, fw.bytes, "the slot holds the file");
        assert_eq!(b.chunks_seen, [0, 32_768, 65_536, 98_304]);
        assert_eq!((report.outcome, report.resumed, report.sent), (Some("confirmed"), 0, 100_000));
        assert_eq!(report.firmware.unwrap().running.as_str(), "B");
        // Polled once a second until the confirmed boot (40 s after the commit).
        assert!(b.sleeps >= Duration::from_secs(35) && b.sleeps <= Duration::from_secs(41), "{:?}", b.sleeps);
    }

    #[test]
    fn a_cut_line_resumes_where_the_box_stands() {
        let fw = file(200_000, "new");
        let mut b = FakeBox::new();
        // Request 1 is the begin; 3 is the second chunk; 9 a chunk after the resume.
        b.cut_at = vec![3, 9];
        b.refuse_opens = 2;
        let (r, report) = run_fake(&mut b, &fw, None);
        assert_eq!(r.unwrap(), 0);
        assert_eq!(b.slot, fw.bytes);
        assert_eq!(report.resumed, 2);
        assert_eq!(report.outcome, Some("rebooting"));
        // The chunks lost with the line never arrived: the box saw each
        // offset once, in order (the resume starts where it stands).
        assert_eq!(b.chunks_seen, (0..200_000).step_by(32_768).collect::<Vec<u32>>());
        assert_eq!(report.sent, 200_000, "bytes the box kept");
        // Back-offs 1 s, 2 s, 3 s (two refused opens), then 1 s for the second cut.
        assert_eq!(b.sleeps, Duration::from_secs(1 + 2 + 3 + 1));
    }

    #[test]
    fn a_line_that_keeps_breaking_gives_up_after_five_reconnects() {
        let fw = file(70_000, "new");
        let mut b = FakeBox::new();
        b.cut_at = vec![2];
        b.refuse_opens = 100;
        let (r, report) = run_fake(&mut b, &fw, None);
        let f = r.unwrap_err();
        assert_eq!(f.code, EXIT_FAILED);
        assert!(f.message.contains("5 times in a row") && f.message.contains("connection refused"), "{}", f.message);
        assert_eq!(report.outcome, None);
        assert!(b.committed_at.is_none());
    }

    #[test]
    fn a_wrong_count_or_a_refusal_stops_with_both_numbers() {
        let fw = file(70_000, "new");
        let mut b = FakeBox::new();
        b.short_by = 512;
        let f = run_fake(&mut b, &fw, None).0.unwrap_err();
        assert!(f.message.contains("holds 32256 bytes, not 32768"), "{}", f.message);
        assert!(b.committed_at.is_none());

        let mut b = FakeBox::new();
        b.refuse_chunks = true;
        let f = run_fake(&mut b, &fw, None).0.unwrap_err();
        assert_eq!(f.code, EXIT_FAILED);
        assert!(f.message.contains("write error at sector 7"), "{}", f.message);
    }

    #[test]
    fn a_trial_that_never_confirms_is_reported_as_rolled_back() {
        let fw = file(40_000, "new");
        let mut b = FakeBox::new();
        b.boots = vec![(20, "B", Some(2), None), (50, "B", Some(1), None), (80, "B", Some(0), None), (110, "A", None, Some("B"))];
        let (r, report) = run_fake(&mut b, &fw, Some(300));
        let f = r.unwrap_err();
        assert!(
            f.message
                .starts_with("upgrade FAILED: the new firmware did not confirm; the box went back to slot A (routerd 0.1.0 (build old))"),
            "{}",
            f.message
        );
        assert_eq!(report.outcome, Some("rolled_back"));
    }

    #[test]
    fn no_confirmation_in_time_says_what_was_last_seen() {
        let fw = file(40_000, "new");
        let mut b = FakeBox::new();
        b.boots = vec![(20, "B", Some(2), None)];
        let (r, report) = run_fake(&mut b, &fw, Some(60));
        let f = r.unwrap_err();
        assert_eq!(report.outcome, Some("timeout"));
        assert!(f.message.contains("within 60 s") && f.message.contains("slot B running"), "{}", f.message);
        // The old firmware answering before its reboot is not mistaken for a result.
        let mut b = FakeBox::new();
        b.boots = vec![];
        let f = run_fake(&mut b, &fw, Some(10)).0.unwrap_err();
        assert!(f.message.contains("not rebooted since the commit"), "{}", f.message);
    }
}
