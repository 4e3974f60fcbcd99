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
//!   came in on, addressed to its sender (tests the NIC drivers end to end).
#![no_std]
#![no_main]

mod boot;
mod console;
mod rt;

use hal_x86::bootinfo::{BootInfo, IdentityMapped, MemoryKind};
use hal_x86::clock::{self, Clock};
use hal_x86::dma::IdentityHal;
use hal_x86::entropy::Entropy;
use hal_x86::nic::{self, Nic};
use hal_x86::pci::{self, Cam};
use log::{info, warn};
use routerd_netdev::{NetDevice, TxToken, MAX_FRAME};
use virtio_drivers::transport::pci::bus::PciRoot;

/// The release this image was built from.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit this image was built from (`-dirty` with local changes).
pub const BUILD_ID: &str = env!("ROUTERD_BUILD_ID");

/// Rust entry point, called by the boot glue in 64-bit mode with the
/// loader's `eax` (multiboot2 magic or nothing) and `ebx` (boot information).
#[no_mangle]
pub extern "C" fn routerd_main(eax: u32, ebx: u32) -> ! {
    // SAFETY: written once by the boot code before any Rust ran.
    let entry_tsc = unsafe { core::ptr::addr_of!(boot::BOOT_TSC).read() };
    console::init();
    console::print(format_args!("\n"));
    // SAFETY: nothing else in the image uses the PIT.
    let clock = unsafe { Clock::calibrate(entry_tsc) };
    console::set_clock(clock);

    info!("routerd {VERSION} (build {BUILD_ID}) starting");
    if clock.is_calibrated() {
        info!("clock: TSC {}.{:03} MHz", clock.tsc_hz() / 1_000_000, clock.tsc_hz() / 1000 % 1000);
    } else {
        warn!("clock: PIT did not answer; assuming a 1 GHz TSC, times are approximate");
    }

    let mem = IdentityMapped { limit: boot::IDENTITY_MAPPED_GIB << 30 };
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

    // Keys are generated on the device, so the box must know before anything
    // else whether it has randomness it can trust.
    let entropy = match Entropy::new() {
        Ok(e) => {
            info!("entropy: {:?} passed its health check; ChaCha20 generator seeded", e.source());
            Some(e)
        }
        Err(e) => {
            warn!("entropy: {e:?}; the box will refuse to generate keys");
            None
        }
    };
    let _ = entropy;

    let ecam = hal_x86::acpi::find_ecam(&mem, boot_info.as_ref().and_then(|b| b.rsdp));
    let mut nics = Nics::new();
    let found = bring_up_pci(ecam, &mut nics);

    let ready_ns = clock.tsc_to_ns(clock::rdtsc());
    info!(
        "boot: ready in {}.{:03} ms since entry ({found} NICs, {} running)",
        ready_ns / 1_000_000,
        ready_ns / 1000 % 1000,
        nics.len()
    );

    match boot_info.as_ref().and_then(|b| b.cmdline_option("routerd.test")) {
        Some("shutdown") => {
            info!("shutdown requested by routerd.test=shutdown");
            hal_x86::power::shutdown()
        }
        Some("panic") => panic!("deliberate panic requested by routerd.test=panic"),
        Some("echo") => echo(&mut nics),
        Some(other) => warn!("ignoring unknown routerd.test={other}"),
        None => {}
    }

    info!("no dataplane in this build yet: idling");
    loop {
        // Console input has no meaning yet; drain it so the UART never stalls.
        let _ = console::try_read();
        // Keep the receive rings moving so the devices never back up.
        for (_, n) in nics.iter_mut() {
            n.receive(64, &mut |_| {});
            n.poll();
        }
        core::hint::spin_loop();
    }
}

/// Most NICs the image drives.
const MAX_NICS: usize = 8;

/// The running NICs, in contract order, with their names.
struct Nics {
    list: [Option<(NicName, Nic)>; MAX_NICS],
}

impl Nics {
    fn new() -> Nics {
        Nics { list: [const { None }; MAX_NICS] }
    }

    fn len(&self) -> usize {
        self.list.iter().flatten().count()
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = (&NicName, &mut Nic)> {
        self.list.iter_mut().flatten().map(|(name, nic)| (&*name, nic))
    }

    fn push(&mut self, name: NicName, nic: Nic) -> bool {
        match self.list.iter_mut().find(|s| s.is_none()) {
            Some(slot) => {
                *slot = Some((name, nic));
                true
            }
            None => false,
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
        info!(
            "mem: {:#012x}-{:#012x} {:>9} KiB {kind}",
            r.base,
            r.base.saturating_add(r.len).saturating_sub(1),
            r.len / 1024
        );
    }
    if b.regions_dropped > 0 {
        warn!("mem: {} further regions not recorded", b.regions_dropped);
    }
    info!("mem: {} MiB usable in {} regions", b.usable_bytes() >> 20, b.memory().len());
}

/// Lists every PCI function, names the NICs and brings up their drivers;
/// returns how many network functions were found.
fn bring_up_pci(ecam: Option<hal_x86::acpi::Ecam>, nics: &mut Nics) -> usize {
    // SAFETY: the image is the only user of PCI configuration space; the
    // ECAM window comes from the firmware's MCFG and is identity mapped.
    let cam = unsafe { Cam::new(ecam) };
    match ecam {
        Some(e) => info!("pci: configuration through {} at {:#x} (buses {}-{})", cam.name(), e.base, e.start_bus, e.end_bus),
        None => info!("pci: configuration through {}", cam.name()),
    }
    let devices = pci::enumerate(&cam);
    let mut root = PciRoot::new(cam);
    let mut found = 0usize;
    for dev in devices.iter() {
        let info = &dev.info;
        if !dev.is_network() {
            info!(
                "pci: {} {:04x}:{:04x} class {:02x}.{:02x} {}",
                dev.address, info.vendor_id, info.device_id, info.class, info.subclass, dev.class_name()
            );
            continue;
        }
        let name = NicName(found);
        found += 1;
        match pci::network_mac::<_, IdentityHal>(&mut root, dev) {
            Some(m) => info!(
                "pci: {} {:04x}:{:04x} class {:02x}.{:02x} {} {name} mac {}",
                dev.address, info.vendor_id, info.device_id, info.class, info.subclass,
                dev.class_name(), Mac(m)
            ),
            None => info!(
                "pci: {} {:04x}:{:04x} class {:02x}.{:02x} {} {name} mac unknown",
                dev.address, info.vendor_id, info.device_id, info.class, info.subclass, dev.class_name()
            ),
        }
        match nic::probe(&mut root, dev) {
            Ok(mut n) => {
                let up = if n.link_up() { "up" } else { "down" };
                info!("nic: {name} {} mac {} link {up}", n.driver(), Mac(n.mac()));
                if !nics.push(name, n) {
                    warn!("nic: {name} not used: the image drives at most {MAX_NICS} NICs");
                }
            }
            Err(e) => warn!("nic: {name} not usable: {e:?}"),
        }
    }
    if devices.dropped > 0 {
        warn!("pci: {} further functions not recorded", devices.dropped);
    }
    found
}

/// A MAC address as the console prints it.
struct Mac([u8; 6]);

impl core::fmt::Display for Mac {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

/// The contract name of the n-th NIC: `lan0`, `wan0`, then `lan1`, `lan2`, …
#[derive(Clone, Copy)]
struct NicName(usize);

impl core::fmt::Display for NicName {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self.0 {
            0 => f.write_str("lan0"),
            1 => f.write_str("wan0"),
            n => write!(f, "lan{}", n - 1),
        }
    }
}
