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
mod nics;
mod router;
mod rt;

extern crate alloc;

use hal_x86::bootinfo::{BootInfo, IdentityMapped, MemoryKind};
use hal_x86::clock::{self, Clock};
use hal_x86::entropy::Entropy;
use log::{info, warn};
use nics::{bring_up_pci, Nics};
use router::WgDevice;
use routerd_control::Runtime;
use routerd_netdev::{NetDevice, TxToken, MAX_FRAME};

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
    rt::init_heap();
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

    let rsdp = boot_info.as_ref().and_then(|b| b.rsdp);
    let ecam = hal_x86::acpi::find_ecam(&mem, rsdp);
    let soft_off = hal_x86::acpi::find_soft_off(&mem, rsdp);
    match &soft_off {
        Some(s) => info!("power: ACPI soft off through PM1a {:#x} (SLP_TYP {})", s.pm1a_control, s.slp_typ_a),
        None => warn!("power: no ACPI soft-off description; shutdown will halt"),
    }
    let mut nics = Nics::new();
    let mut device_seed = None;
    let found = bring_up_pci(ecam, &mut nics, &mut device_seed);

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
    info!(
        "boot: ready in {}.{:03} ms since entry ({found} NICs, {} running)",
        ready_ns / 1_000_000,
        ready_ns / 1000 % 1000,
        nics.len()
    );

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

    if let Some(mut entropy) = entropy {
        if let Some(runtime) = load_config(boot_info.as_ref(), &nics) {
            // SAFETY: routerd_main runs once; these statics are taken here
            // and nowhere else.
            let (wg, bufs) = unsafe {
                (
                    &mut *core::ptr::addr_of_mut!(WG_DEVICE),
                    &mut *core::ptr::addr_of_mut!(FRAME_BUFFERS),
                )
            };
            let device = router::wireguard(runtime.tunnel.as_ref(), &mut entropy);
            let tunnel_ok = device.is_some();
            let wg = wg.write(match device {
                Some(d) => d,
                None => WgDevice::new(routerd_wireguard::SecretKey::generate(&mut entropy), Default::default()),
            });
            let now = routerd_dataplane::Instant::from_millis(clock.now_ms());
            match (tunnel_ok, routerd_dataplane::Dataplane::new(runtime.dataplane.clone(), now)) {
                (true, Ok(dataplane)) => {
                    info!(
                        "dataplane: {} ports, {} claims, {} segments; forwarding",
                        runtime.dataplane.ports.len(),
                        runtime.dataplane.claims.len(),
                        runtime.dataplane.segments.len()
                    );
                    let mut r = router::Router { dataplane, wg, entropy, runtime, clock };
                    r.run(&mut nics, bufs)
                }
                (_, Err(e)) => warn!("dataplane: configuration refused: {e:?}"),
                (false, _) => warn!("wg: tunnel not started"),
            }
        }
    } else {
        warn!("dataplane: not started without a trusted entropy source (no keys)");
    }

    info!("not forwarding: idling (console: type `help`)");
    let mut line = console::LineReader::new();
    loop {
        // Keep the receive rings moving so the devices never back up.
        for (_, n) in nics.iter_mut() {
            n.receive(64, &mut |_| {});
            n.poll();
        }
        if let Some(l) = line.poll() {
            if !l.trim().is_empty() {
                console::print(format_args!(
                    "not forwarding: no configuration applied. Boot with routerd.config=<base64 postcard> \
                     (serial provisioning with routerctl is coming); `status` works once forwarding\n"
                ));
            }
        }
        core::hint::spin_loop();
    }
}

static mut WG_DEVICE: core::mem::MaybeUninit<WgDevice> = core::mem::MaybeUninit::uninit();
static mut FRAME_BUFFERS: router::Buffers = router::Buffers::new();

/// The configuration from `routerd.config=<base64 postcard>` on the kernel
/// command line, validated and bound to this box's NICs. Every problem is
/// logged with its configuration path; any error means no forwarding.
fn load_config(boot: Option<&BootInfo>, nics: &Nics) -> Option<Runtime> {
    use base64::Engine;
    let Some(text) = boot.and_then(|b| b.cmdline_option("routerd.config")) else {
        info!("config: none given (routerd.config=…); waiting for provisioning");
        return None;
    };
    let mut bytes = [0u8; config_schema::CONFIG_WIRE_MAX];
    let n = match base64::engine::general_purpose::STANDARD.decode_slice(text, &mut bytes) {
        Ok(n) => n,
        Err(e) => {
            warn!("config: routerd.config is not base64 ({e})");
            return None;
        }
    };
    let cfg = match config_schema::decode(bytes.get(..n).unwrap_or(&[])) {
        Ok(c) => c,
        Err(e) => {
            warn!("config: cannot decode ({e:?})");
            return None;
        }
    };
    let report = config_schema::validate(&cfg);
    for p in &report.problems {
        match p.severity {
            config_schema::Severity::Error => warn!("config: error: {p}"),
            config_schema::Severity::Warning => warn!("config: warning: {p}"),
        }
    }
    if !report.is_valid() {
        warn!("config: {} errors; not applied", report.errors);
        return None;
    }
    match routerd_control::build(&cfg, &nics.infos()) {
        Ok(rt) => {
            info!("config: device {} side {} applied", cfg.device.name.as_str(), cfg.device.side.as_str());
            Some(rt)
        }
        Err(e) => {
            warn!("config: {e}");
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

