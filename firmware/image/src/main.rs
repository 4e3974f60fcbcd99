//! The routerd firmware image: boots on bare x86_64 and wires the dataplane
//! libraries to the hardware layer.
//!
//! Today it brings the machine up (long mode, SSE/AVX, console, clock),
//! reads the boot information, lists the PCI devices and names the NICs
//! (`lan0`, `wan0`, `lan1`, … in bus order); the polled main loop that runs
//! the dataplane comes with the NIC drivers.
//!
//! Kernel command-line options (space separated `key=value`):
//! - `routerd.test=shutdown` — end the run cleanly once boot is complete;
//! - `routerd.test=panic` — panic once boot is complete (tests the panic path);
//! - `routerd.test=echo` — send every received frame back out of the port it
//!   came in on, addressed to its sender (tests the NIC drivers end to end);
//! - `routerd.reset=factory` — erase the state partition's store before
//!   anything is restored (configuration, history and keys are gone): a
//!   factory reset for a box whose serial line is all you have. Remove it
//!   again, or every boot starts blank.
#![no_std]
#![no_main]

mod boot;
mod console;
mod nics;
mod router;
mod rt;
mod slots;
mod storage;

extern crate alloc;

use alloc::boxed::Box;
use hal_x86::bootinfo::{BootInfo, IdentityMapped, MemoryKind};
use hal_x86::clock::{self, Clock};
use hal_x86::entropy::Entropy;
use log::{info, warn};
use nics::{bring_up_pci, Nics};
use routerd_control::Node;
use routerd_netdev::{NetDevice, TxToken, MAX_FRAME};
use routerd_provision::firmware;
use routerd_provision::message::Reply;
use routerd_provision::session::Session;

/// The release this image was built from.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit this image was built from (`-dirty` with local changes).
pub const BUILD_ID: &str = env!("ROUTERD_BUILD_ID");

/// The `.note.routerd` ELF note: what this firmware is, readable from the
/// file (routerctl, the box reading its other slot) and by the firmware
/// itself ([`identity`]).
#[repr(C, align(4))]
pub struct Note {
    namesz: u32,
    descsz: u32,
    kind: u32,
    name: [u8; 8],
    desc: [u8; firmware::NOTE_DESC],
}

#[used]
#[link_section = ".note.routerd"]
static NOTE: Note = Note {
    namesz: firmware::NOTE_NAME.len() as u32,
    descsz: firmware::NOTE_DESC as u32,
    kind: firmware::NOTE_TYPE,
    name: *firmware::NOTE_NAME,
    desc: firmware::note_desc(VERSION, BUILD_ID, 0),
};

/// This firmware's identity, read from its note at run time (a re-stamped
/// file reports what its note says).
pub fn identity() -> routerd_provision::message::FirmwareIdentity {
    // SAFETY: NOTE is a plain static; the volatile read keeps the compiler
    // from folding the build-time value in.
    let desc = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(NOTE.desc)) };
    firmware::parse_desc(&desc).unwrap_or_default()
}

/// Rust entry point, called by the boot glue in 64-bit mode with the
/// loader's `eax` (multiboot2 magic or nothing) and `ebx` (boot information).
#[no_mangle]
pub extern "C" fn routerd_main(eax: u32, ebx: u32) -> ! {
    // SAFETY: written once by the boot code before any Rust ran.
    let entry_tsc = unsafe { core::ptr::addr_of!(boot::BOOT_TSC).read() };
    rt::init_heap();
    console::init();
    console::print(format_args!("\n"));
    // SAFETY: nothing else in the image uses the PIT.
    let clock = unsafe { Clock::calibrate(entry_tsc) };
    console::set_clock(clock);

    // What this firmware is, from its note (a re-stamped file says so).
    let me = identity();
    let software: &'static str = alloc::string::String::from(me.version.as_str()).leak();
    let build: &'static str = alloc::string::String::from(me.build.as_str()).leak();
    info!("routerd {software} (build {build}) starting");
    if clock.is_calibrated() {
        info!("clock: TSC {}.{:03} MHz", clock.tsc_hz() / 1_000_000, clock.tsc_hz() / 1000 % 1000);
    } else {
        warn!("clock: PIT did not answer; assuming a 1 GHz TSC, times are approximate");
    }

    let mem = IdentityMapped { limit: boot::identity_mapped_bytes() };
    let gib_pages = boot::identity_mapped_bytes() > boot::IDENTITY_MAPPED_GIB << 30;
    hal_x86::paging::enable(boot::identity_mapped_bytes(), gib_pages);
    info!(
        "boot: identity map 0-{} GiB{}",
        boot::identity_mapped_bytes() >> 30,
        if gib_pages { "; device windows above are mapped as drivers reach them" } else { " (no 1 GiB pages: nothing above)" }
    );
    let boot_info = match BootInfo::parse(&mem, eax, ebx) {
        Ok(b) => Some(b),
        Err(e) => {
            warn!("boot: no usable boot information ({e:?}); running with defaults");
            None
        }
    };
    if let Some(b) = &boot_info {
        report_boot_info(b);
    }

    let rsdp = boot_info.as_ref().and_then(|b| b.rsdp);
    let ecam = hal_x86::acpi::find_ecam(&mem, rsdp);
    let soft_off = hal_x86::acpi::find_soft_off(&mem, rsdp);
    // The wall clock, read once; `Storage::boot` weighs it against the saved floor.
    let rtc_at = routerd_dataplane::Instant::from_millis(clock.now_ms());
    let rtc = hal_x86::rtc::read(hal_x86::acpi::find_rtc_century_index(&mem, rsdp));
    match &soft_off {
        Some(s) => info!("power: ACPI soft off through PM1a {:#x} (SLP_TYP {})", s.pm1a_control, s.slp_typ_a),
        None => warn!("power: no ACPI soft-off description; shutdown will halt"),
    }
    let mut nics = Nics::new();
    let mut disks = heapless::Vec::new();
    let mut device_seed = None;
    let found = bring_up_pci(ecam, clock, &mut nics, &mut disks, &mut device_seed);
    if hal_x86::paging::regions_added() > 0 {
        info!("boot: {} device window(s) above {} GiB mapped", hal_x86::paging::regions_added(), hal_x86::paging::mapped_below() >> 30);
    }

    // Keys are generated on the device, so the box must know before anything
    // else whether it has randomness it can trust.
    let entropy = match Entropy::with_device_seed(device_seed) {
        Ok(e) => {
            info!("entropy: {:?} passed its health check; ChaCha20 generator seeded", e.source());
            Some(e)
        }
        Err(e) => {
            warn!("entropy: {e:?}; the box will refuse to generate keys");
            None
        }
    };

    let ready_ns = clock.tsc_to_ns(clock::rdtsc());
    info!("boot: ready in {}.{:03} ms since entry ({found} NICs, {} running)", ready_ns / 1_000_000, ready_ns / 1000 % 1000, nics.len());

    match boot_info.as_ref().and_then(|b| b.cmdline_option("routerd.test")) {
        Some("shutdown") => {
            info!("shutdown requested by routerd.test=shutdown");
            hal_x86::power::shutdown(soft_off.as_ref())
        }
        Some("panic") => panic!("deliberate panic requested by routerd.test=panic"),
        Some("echo") => echo(&mut nics),
        Some(other) => warn!("ignoring unknown routerd.test={other}"),
        None => {}
    }

    if entropy.is_none() {
        warn!("dataplane: no trusted entropy source: the box cannot make keys and will refuse configurations");
    }
    let mut node = Box::new(Node::new(&nics.infos(), entropy, software, build));
    node.set_platform(config_schema::Platform::Image);
    let mut session = Box::new(Session::new(software, build));
    let mut storage = Box::new(storage::Storage::new(disks));
    storage.set_rtc(rtc_at, rtc);
    let now = routerd_dataplane::Instant::from_millis(clock.now_ms());
    let factory_reset = match boot_info.as_ref().and_then(|b| b.cmdline_option("routerd.reset")) {
        Some("factory") => {
            warn!("FACTORY RESET requested by routerd.reset=factory: the saved configuration and keys are erased now");
            true
        }
        Some(other) => {
            warn!("ignoring unknown routerd.reset={other} (only routerd.reset=factory)");
            false
        }
        None => false,
    };
    if storage.boot(&mut node, now, factory_reset) {
        if let Some(c) = node.config() {
            session.set_device_name(c.device.name.as_str());
        }
    }
    let slot_word = |name: &str| boot_info.as_ref().and_then(|b| b.cmdline_option(name));
    let slots = Box::new(slots::Slots::boot(me, slot_word("routerd.slot"), slot_word("routerd.trial"), &mut storage, now));
    if let Some(cfg) = boot_config(boot_info.as_ref()) {
        let now = routerd_dataplane::Instant::from_millis(clock.now_ms());
        match node.apply_with(cfg, now, &mut router::bgp_room) {
            Reply::Applied(out) => {
                // Preshared keys (no public key) are never logged.
                for k in &out.keys_created {
                    let Some(public) = k.public_key else { continue };
                    let key = routerd_wireguard::PublicKey(public);
                    info!("wg: {} public key {} (generated on this boot)", k.slot.as_str(), key.to_base64().as_str());
                }
                if let Some(c) = node.config() {
                    session.set_device_name(c.device.name.as_str());
                    info!(
                        "config: device {} side {} applied; dataplane: {} ports, {} claims, {} segments; forwarding",
                        c.device.name.as_str(),
                        c.device.side.as_str(),
                        c.ports.len(),
                        c.claims.len(),
                        c.segments.len()
                    );
                }
                router::log_heap();
            }
            Reply::Error(f) => {
                warn!("config: not applied: {}", f.message.as_str());
                for p in &f.problems {
                    warn!("config: {}: {}: {}", if p.error { "error" } else { "warning" }, p.path.as_str(), p.message.as_str());
                }
            }
            _ => {}
        }
    }
    if node.config().is_none() {
        info!("not forwarding: no configuration yet; provision with routerctl on this serial line (console: type `help`)");
    }
    // SAFETY: routerd_main runs once; this static is taken here and nowhere else.
    let forwarder = unsafe { &mut *core::ptr::addr_of_mut!(FORWARDER) };
    // From here the loop pumps the console: output no longer waits for the line.
    console::set_buffered();
    let mut r = router::Router { node, forwarder, session, storage, slots, clock, watch: router::Watch::new() };
    r.run(&mut nics)
}

static mut FORWARDER: routerd_control::Forwarder = routerd_control::Forwarder::new();

/// The configuration from `routerd.config=<base64 postcard>` on the kernel
/// command line, decoded (the node validates and applies it like one sent
/// by routerctl).
fn boot_config(boot: Option<&BootInfo>) -> Option<Box<config_schema::Config>> {
    use base64::Engine;
    let text = boot.and_then(|b| b.cmdline_option("routerd.config"))?;
    let mut bytes = alloc::vec![0u8; config_schema::CONFIG_WIRE_MAX];
    let n = match base64::engine::general_purpose::STANDARD.decode_slice(text, &mut bytes) {
        Ok(n) => n,
        Err(e) => {
            warn!("config: routerd.config is not base64 ({e})");
            return None;
        }
    };
    match config_schema::decode(bytes.get(..n).unwrap_or(&[])) {
        Ok(c) => Some(Box::new(c)),
        Err(e) => {
            warn!("config: routerd.config cannot be decoded ({e:?})");
            None
        }
    }
}

/// Test mode: every frame goes back out of its port to its sender.
fn echo(nics: &mut Nics) -> ! {
    const BATCH: usize = 32;
    info!("echo: reflecting frames on {} NICs", nics.len());
    let mut batch = [[0u8; MAX_FRAME]; BATCH];
    let mut lens = [0usize; BATCH];
    let mut dropped = 0u64;
    loop {
        for (_, n) in nics.iter_mut() {
            let mac = n.mac();
            let mut count = 0usize;
            n.receive(BATCH, &mut |frame| {
                if let (Some(buf), Some(len)) = (batch.get_mut(count), lens.get_mut(count)) {
                    if let Some(dst) = buf.get_mut(..frame.len()) {
                        dst.copy_from_slice(frame);
                        *len = frame.len();
                        count += 1;
                    }
                }
            });
            for (buf, &len) in batch.iter_mut().zip(lens.iter()).take(count) {
                if len < 14 {
                    dropped += 1;
                    continue;
                }
                // Destination := sender, source := us.
                let (dst, rest) = buf.split_at_mut(6);
                dst.copy_from_slice(&rest[..6]);
                rest[..6].copy_from_slice(&mac);
                match n.transmit() {
                    Some(tx) => tx.send(len, |out| out.copy_from_slice(&buf[..len])),
                    None => dropped += 1,
                }
            }
            n.poll();
        }
        let _ = dropped;
        let _ = console::try_read();
    }
}

fn report_boot_info(b: &BootInfo) {
    info!("boot: loader {:?}, command line \"{}\"", b.loader, b.cmdline());
    if b.cmdline_truncated {
        warn!("boot: command line truncated to {} bytes", hal_x86::bootinfo::MAX_CMDLINE);
    }
    for r in b.memory() {
        let kind = match r.kind {
            MemoryKind::Usable => "usable",
            MemoryKind::Reserved => "reserved",
            MemoryKind::AcpiReclaimable => "ACPI reclaimable",
            MemoryKind::AcpiNvs => "ACPI NVS",
            MemoryKind::Bad => "bad",
            MemoryKind::Other(_) => "other",
        };
        info!("mem: {:#012x}-{:#012x} {:>9} KiB {kind}", r.base, r.base.saturating_add(r.len).saturating_sub(1), r.len / 1024);
    }
    if b.regions_dropped > 0 {
        warn!("mem: {} further regions not recorded", b.regions_dropped);
    }
    info!("mem: {} MiB usable in {} regions", b.usable_bytes() >> 20, b.memory().len());
}
