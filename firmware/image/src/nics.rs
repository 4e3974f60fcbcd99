//! The NICs the image drives: found on PCI, named by the contract (`lan0`,
//! `wan0`, `lan1`, … in bus order), brought up through `hal_x86::nic`.

use hal_x86::blk::BlockDevice;
use hal_x86::nic::{self, Nic};
use hal_x86::pci::{self, Cam};
use log::{info, warn};
use routerd_dataplane::MacText;
use routerd_netdev::NetDevice;
use virtio_drivers::transport::pci::bus::PciRoot;

/// Most NICs the image drives.
pub const MAX_NICS: usize = 8;

/// The running NICs, in contract order, with their names.
pub struct Nics {
    list: [Option<(NicName, Nic)>; MAX_NICS],
}

impl Nics {
    pub fn new() -> Nics {
        Nics { list: [const { None }; MAX_NICS] }
    }

    pub fn len(&self) -> usize {
        self.list.iter().flatten().count()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&NicName, &mut Nic)> {
        self.list.iter_mut().flatten().map(|(name, nic)| (&*name, nic))
    }

    pub fn push(&mut self, name: NicName, nic: Nic) -> bool {
        match self.list.iter_mut().find(|s| s.is_none()) {
            Some(slot) => {
                *slot = Some((name, nic));
                true
            }
            None => false,
        }
    }
}

/// The forwarding turn (`routerd_control::run`) reaches them by contract index.
impl routerd_control::Nics for Nics {
    type Dev = Nic;
    fn slots(&self) -> usize {
        MAX_NICS
    }
    fn nic(&mut self, i: usize) -> Option<&mut Nic> {
        self.get_mut(i)
    }
}

impl Nics {
    pub fn get_mut(&mut self, i: usize) -> Option<&mut Nic> {
        self.list.get_mut(i)?.as_mut().map(|(_, n)| n)
    }

    /// The MACs in contract order, for binding configuration ports.
    pub fn infos(&self) -> heapless::Vec<routerd_control::NicInfo, MAX_NICS> {
        self.list.iter().flatten().map(|(_, n)| routerd_control::NicInfo::of(n)).collect()
    }
}

/// Lists every PCI function, names the NICs and brings up their drivers;
/// returns how many network functions were found.
pub fn bring_up_pci(
    ecam: Option<hal_x86::acpi::Ecam>,
    clock: hal_x86::clock::Clock,
    nics: &mut Nics,
    disks: &mut heapless::Vec<(hal_x86::blk::DiskName, hal_x86::blk::Disk), { crate::storage::MAX_DISKS }>,
    rng_seed: &mut Option<[u8; 32]>,
) -> usize {
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
        if hal_x86::rng::is_virtio_rng(dev) && rng_seed.is_none() {
            *rng_seed = hal_x86::rng::seed(&mut root, dev);
            match rng_seed {
                Some(_) => info!("pci: {} {:04x}:{:04x} virtio-rng delivered 32 bytes", dev.address, info.vendor_id, info.device_id),
                None => warn!("pci: {} virtio-rng did not deliver entropy", dev.address),
            }
            continue;
        }
        if hal_x86::blk::is_block_device(dev) {
            let probed = hal_x86::blk::probe(&mut root, dev, clock, &mut |d| {
                let kind = d.kind();
                let name = kind.name(disks.iter().filter(|(_, o)| o.kind() == kind).count());
                info!(
                    "pci: {} {:04x}:{:04x} {} {name}: {} blocks of {} bytes{}",
                    dev.address,
                    info.vendor_id,
                    info.device_id,
                    kind.driver(),
                    d.block_count(),
                    d.block_size().bytes(),
                    if d.read_only() { ", read-only" } else { "" }
                );
                if disks.push((name.clone(), d)).is_err() {
                    warn!("pci: {name} not used: the image drives at most {} disks", crate::storage::MAX_DISKS);
                }
            });
            if let Err(e) = probed {
                warn!("pci: {} {:04x}:{:04x} disk not usable: {e:?}", dev.address, info.vendor_id, info.device_id);
            }
            continue;
        }
        if !dev.is_network() {
            info!(
                "pci: {} {:04x}:{:04x} class {:02x}.{:02x} {}",
                dev.address,
                info.vendor_id,
                info.device_id,
                info.class,
                info.subclass,
                dev.class_name()
            );
            continue;
        }
        let name = NicName(found);
        found += 1;
        info!(
            "pci: {} {:04x}:{:04x} class {:02x}.{:02x} {} {name}",
            dev.address,
            info.vendor_id,
            info.device_id,
            info.class,
            info.subclass,
            dev.class_name()
        );
        // The driver reads the MAC as part of bringing the device up.
        match nic::probe(&mut root, dev) {
            Ok(mut n) => {
                let up = if n.link_up() { "up" } else { "down" };
                info!("nic: {name} mac {} ({}, link {up})", MacText(routerd_dataplane::Mac(n.mac())), n.driver());
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

/// NICs are named by the contract (`lan0`, `wan0`, `lan1`, …).
pub use routerd_control::ContractName as NicName;
