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
//! - `routerd.test=panic` — panic once boot is complete (tests the panic path).
#![no_std]
#![no_main]

mod boot;
mod console;
mod rt;

use hal_x86::bootinfo::{BootInfo, IdentityMapped, MemoryKind};
use hal_x86::clock::{self, Clock};
use hal_x86::dma::IdentityHal;
use hal_x86::pci::{self, PortCam};
use log::{info, warn};
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

    let nics = report_pci();

    let ready_ns = clock.tsc_to_ns(clock::rdtsc());
    info!(
        "boot: ready in {}.{:03} ms since entry ({nics} NICs)",
        ready_ns / 1_000_000,
        ready_ns / 1000 % 1000
    );

    match boot_info.as_ref().and_then(|b| b.cmdline_option("routerd.test")) {
        Some("shutdown") => {
            info!("shutdown requested by routerd.test=shutdown");
            hal_x86::power::shutdown()
        }
        Some("panic") => panic!("deliberate panic requested by routerd.test=panic"),
        Some(other) => warn!("ignoring unknown routerd.test={other}"),
        None => {}
    }

    info!("no dataplane in this build yet: idling");
    loop {
        // Console input has no meaning yet; drain it so the UART never stalls.
        let _ = console::try_read();
        core::hint::spin_loop();
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

/// Lists every PCI function and names the NICs; returns the NIC count.
fn report_pci() -> usize {
    // SAFETY: the image is the only user of the PCI configuration ports.
    let cam = unsafe { PortCam::new() };
    let devices = pci::enumerate(&cam);
    let mut root = PciRoot::new(cam);
    let mut nics = 0usize;
    for dev in devices.iter() {
        let info = &dev.info;
        if !dev.is_network() {
            info!(
                "pci: {} {:04x}:{:04x} class {:02x}.{:02x} {}",
                dev.address, info.vendor_id, info.device_id, info.class, info.subclass, dev.class_name()
            );
            continue;
        }
        let name = NicName(nics);
        nics += 1;
        match pci::network_mac::<_, IdentityHal>(&mut root, dev) {
            Some(m) => info!(
                "pci: {} {:04x}:{:04x} class {:02x}.{:02x} {} {name} mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                dev.address, info.vendor_id, info.device_id, info.class, info.subclass,
                dev.class_name(), m[0], m[1], m[2], m[3], m[4], m[5]
            ),
            None => info!(
                "pci: {} {:04x}:{:04x} class {:02x}.{:02x} {} {name} mac unknown",
                dev.address, info.vendor_id, info.device_id, info.class, info.subclass, dev.class_name()
            ),
        }
    }
    if devices.dropped > 0 {
        warn!("pci: {} further functions not recorded", devices.dropped);
    }
    nics
}

/// The contract name of the n-th NIC: `lan0`, `wan0`, then `lan1`, `lan2`, …
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
