//! NIC drivers behind the one [`NetDevice`] interface.
//!
//! [`probe`] turns a PCI network function into a running driver: virtio-net
//! (modern or transitional, through `virtio-drivers`) or the Intel 82574L
//! (`e1000e`, QEMU `-device e1000e`). [`Nic`] is the closed set the image
//! drives; an enum rather than trait objects, so the main loop's calls are
//! direct.

pub mod e1000e;
pub mod virtio;

use crate::pci::{Device, VENDOR_INTEL, VENDOR_VIRTIO};
use routerd_netdev::{DeviceStats, NetDevice, RxLoan, TxToken};
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, PciRoot};

/// A NIC the image can drive. The variants differ in size (e1000e keeps its
/// descriptor bookkeeping inline); there are at most 8, in one static list,
/// so boxing the large one would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Nic {
    Virtio(virtio::VirtioNet),
    E1000e(e1000e::E1000e),
}

/// Why a network function could not be brought up.
#[derive(Debug)]
pub enum ProbeError {
    /// No driver for this vendor:device.
    Unsupported {
        vendor: u16,
        device: u16,
    },
    Virtio(virtio::Error),
    E1000e(e1000e::Error),
}

/// Brings up the driver for a PCI network function.
pub fn probe<C: ConfigurationAccess>(root: &mut PciRoot<C>, dev: &Device) -> Result<Nic, ProbeError> {
    match (dev.info.vendor_id, dev.info.device_id) {
        (VENDOR_VIRTIO, 0x1000 | 0x1041) => virtio::VirtioNet::new(root, dev).map(Nic::Virtio).map_err(ProbeError::Virtio),
        (VENDOR_INTEL, e1000e::DEVICE_82574L) => e1000e::E1000e::new(root, dev).map(Nic::E1000e).map_err(ProbeError::E1000e),
        (vendor, device) => Err(ProbeError::Unsupported { vendor, device }),
    }
}

impl Nic {
    /// The driver's short name for the console.
    pub fn driver(&self) -> &'static str {
        match self {
            Nic::Virtio(_) => "virtio-net",
            Nic::E1000e(_) => "e1000e",
        }
    }
}

/// Transmit slot of either driver.
pub enum NicTx<'a> {
    Virtio(<virtio::VirtioNet as NetDevice>::TxToken<'a>),
    E1000e(<e1000e::E1000e as NetDevice>::TxToken<'a>),
}

impl TxToken for NicTx<'_> {
    fn send<R>(self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        match self {
            NicTx::Virtio(t) => t.send(len, fill),
            NicTx::E1000e(t) => t.send(len, fill),
        }
    }
}

impl NetDevice for Nic {
    type TxToken<'a> = NicTx<'a>;

    fn mac(&self) -> [u8; 6] {
        match self {
            Nic::Virtio(d) => d.mac(),
            Nic::E1000e(d) => d.mac(),
        }
    }

    fn link_up(&mut self) -> bool {
        match self {
            Nic::Virtio(d) => d.link_up(),
            Nic::E1000e(d) => d.link_up(),
        }
    }

    fn lend(&mut self, into: &mut [Option<RxLoan>]) -> usize {
        match self {
            Nic::Virtio(d) => d.lend(into),
            Nic::E1000e(d) => d.lend(into),
        }
    }

    fn give_back(&mut self, loan: RxLoan) {
        match self {
            Nic::Virtio(d) => d.give_back(loan),
            Nic::E1000e(d) => d.give_back(loan),
        }
    }

    fn receive(&mut self, budget: usize, on_frame: &mut dyn FnMut(&mut [u8])) -> usize {
        match self {
            Nic::Virtio(d) => d.receive(budget, on_frame),
            Nic::E1000e(d) => d.receive(budget, on_frame),
        }
    }

    fn transmit(&mut self) -> Option<NicTx<'_>> {
        match self {
            Nic::Virtio(d) => d.transmit().map(NicTx::Virtio),
            Nic::E1000e(d) => d.transmit().map(NicTx::E1000e),
        }
    }

    fn poll(&mut self) {
        match self {
            Nic::Virtio(d) => d.poll(),
            Nic::E1000e(d) => d.poll(),
        }
    }

    fn stats(&self) -> DeviceStats {
        match self {
            Nic::Virtio(d) => d.stats(),
            Nic::E1000e(d) => d.stats(),
        }
    }
}
