//! Disks: the block-device interface, the virtio-blk, AHCI and NVMe drivers and GPT.
//!
//! The box keeps its state in the GPT partition labelled `ROUTERD-STATE`
//! (`routerd-storage`'s `Store` runs over it). This module gives the image
//! the three pieces in front of that store:
//!
//! - [`probe`] turns a PCI storage function into a running [`Disk`]
//!   ([`virtio::VirtioBlk`]: virtio-blk, transitional or modern, polled;
//!   [`ahci::AhciDisk`]: one per SATA disk on an AHCI controller, any
//!   vendor, polled; [`nvme::NvmeDisk`]: namespace 1 of an NVMe
//!   controller, any vendor, polled);
//! - [`gpt::find_state_partition`] finds the partition on any
//!   [`BlockDevice`] (protective MBR, both GPT headers and their entry arrays
//!   CRC-checked, the backup used when the primary is damaged);
//! - [`gpt::create_state_partition`] writes a fresh GPT with that one
//!   partition to a disk the operator named, refusing any disk that is not
//!   blank unless forced.
//!
//! Every driver implements `routerd_storage::BlockDevice` (re-exported here).

pub mod ahci;
pub mod gpt;
pub mod nvme;
pub mod virtio;

use crate::clock::Clock;
use crate::pci::{Device, VENDOR_VIRTIO};
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, PciRoot};

/// virtio-blk's PCI device ids: transitional (legacy id) and modern.
pub const DEVICE_VIRTIO_BLK_TRANSITIONAL: u16 = 0x1001;
pub const DEVICE_VIRTIO_BLK_MODERN: u16 = 0x1042;

/// Whether [`probe`] has a driver for `dev`: the image asks this during its
/// PCI enumeration and names the disks it brings up as Linux would.
pub fn is_block_device(dev: &Device) -> bool {
    dev.info.vendor_id == VENDOR_VIRTIO && matches!(dev.info.device_id, DEVICE_VIRTIO_BLK_TRANSITIONAL | DEVICE_VIRTIO_BLK_MODERN)
        || is_ahci(dev)
        || nvme::is_nvme(dev)
}

/// An AHCI controller (class 01.06, prog-if 01), whoever made it.
fn is_ahci(dev: &Device) -> bool {
    (dev.info.class, dev.info.subclass, dev.info.prog_if) == (ahci::CLASS_STORAGE, ahci::SUBCLASS_SATA, ahci::PROG_IF_AHCI)
}

/// Why a storage function could not be brought up.
#[derive(Debug)]
pub enum ProbeError {
    /// No driver for this vendor:device.
    Unsupported {
        vendor: u16,
        device: u16,
    },
    Virtio(virtio::Error),
    Ahci(ahci::Error),
    Nvme(nvme::Error),
}

/// The kinds of disk the image drives, named the way Linux names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskKind {
    /// virtio-blk: `vda`, `vdb`, …
    Virtio,
    /// SATA disks on AHCI controllers: `sda`, `sdb`, …
    Sata,
    /// NVMe, namespace 1 of each controller: `nvme0n1`, `nvme1n1`, …
    Nvme,
}

impl DiskKind {
    /// What the console calls the controller.
    pub fn driver(self) -> &'static str {
        match self {
            DiskKind::Virtio => "virtio-blk",
            DiskKind::Sata => "ahci",
            DiskKind::Nvme => "nvme",
        }
    }

    /// Linux's name for the `index`-th disk of this kind (counted from 0 in
    /// PCI bus order, per kind).
    pub fn name(self, index: usize) -> DiskName {
        let mut n = DiskName::new();
        let letter = char::from(b'a'.saturating_add(u8::try_from(index).unwrap_or(25).min(25)));
        let _ = match self {
            DiskKind::Virtio => core::fmt::Write::write_fmt(&mut n, format_args!("vd{letter}")),
            DiskKind::Sata => core::fmt::Write::write_fmt(&mut n, format_args!("sd{letter}")),
            // At most "nvme99n1": the eight characters a DiskName holds.
            DiskKind::Nvme => core::fmt::Write::write_fmt(&mut n, format_args!("nvme{}n1", index.min(99))),
        };
        n
    }
}

/// A disk's name (`vda`, `sda`, `nvme0n1`).
pub type DiskName = heapless::String<8>;

/// A running disk, whatever its controller: the one type the image keeps in
/// its disk list and hands to the store.
pub enum Disk {
    Virtio(virtio::VirtioBlk),
    Ahci(ahci::AhciDisk),
    Nvme(nvme::NvmeDisk),
}

impl Disk {
    pub fn kind(&self) -> DiskKind {
        match self {
            Disk::Virtio(_) => DiskKind::Virtio,
            Disk::Ahci(_) => DiskKind::Sata,
            Disk::Nvme(_) => DiskKind::Nvme,
        }
    }

    /// Whether the device refuses writes.
    pub fn read_only(&self) -> bool {
        match self {
            Disk::Virtio(d) => d.read_only(),
            Disk::Ahci(d) => d.read_only(),
            Disk::Nvme(d) => d.read_only(),
        }
    }
}

impl BlockDevice for Disk {
    fn block_size(&self) -> BlockSize {
        match self {
            Disk::Virtio(d) => BlockDevice::block_size(d),
            Disk::Ahci(d) => BlockDevice::block_size(d),
            Disk::Nvme(d) => BlockDevice::block_size(d),
        }
    }
    fn block_count(&self) -> u64 {
        match self {
            Disk::Virtio(d) => BlockDevice::block_count(d),
            Disk::Ahci(d) => BlockDevice::block_count(d),
            Disk::Nvme(d) => BlockDevice::block_count(d),
        }
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        match self {
            Disk::Virtio(d) => BlockDevice::read(d, lba, buf),
            Disk::Ahci(d) => BlockDevice::read(d, lba, buf),
            Disk::Nvme(d) => BlockDevice::read(d, lba, buf),
        }
    }
    fn write(&mut self, lba: u64, data: &[u8]) -> Result<(), BlockError> {
        match self {
            Disk::Virtio(d) => BlockDevice::write(d, lba, data),
            Disk::Ahci(d) => BlockDevice::write(d, lba, data),
            Disk::Nvme(d) => BlockDevice::write(d, lba, data),
        }
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        match self {
            Disk::Virtio(d) => BlockDevice::flush(d),
            Disk::Ahci(d) => BlockDevice::flush(d),
            Disk::Nvme(d) => BlockDevice::flush(d),
        }
    }
}

/// Brings up the driver for a PCI storage function and hands each disk it
/// finds to `found` (one for virtio-blk; a controller with several ports or
/// namespaces gives several). `clock` bounds how long a request may take
/// before the device is given up on.
///
/// Bringing a disk up only reads its configuration: nothing is written to
/// the medium.
pub fn probe<C: ConfigurationAccess>(
    root: &mut PciRoot<C>,
    dev: &Device,
    clock: Clock,
    found: &mut dyn FnMut(Disk),
) -> Result<(), ProbeError> {
    match (dev.info.vendor_id, dev.info.device_id) {
        (VENDOR_VIRTIO, DEVICE_VIRTIO_BLK_TRANSITIONAL | DEVICE_VIRTIO_BLK_MODERN) => {
            found(virtio::VirtioBlk::new(root, dev, clock).map(Disk::Virtio).map_err(ProbeError::Virtio)?);
            Ok(())
        }
        // Every port with a disk; none is not an error.
        _ if is_ahci(dev) => ahci::probe(root, dev, clock, &mut |d| found(Disk::Ahci(d))).map_err(ProbeError::Ahci),
        // Any vendor's NVMe controller; this driver uses namespace 1.
        _ if nvme::is_nvme(dev) => {
            found(nvme::NvmeDisk::new(root, dev, clock).map(Disk::Nvme).map_err(ProbeError::Nvme)?);
            Ok(())
        }
        (vendor, device) => Err(ProbeError::Unsupported { vendor, device }),
    }
}

pub use routerd_storage::{BlockDevice, BlockError, BlockSize};

#[cfg(test)]
pub(crate) mod testing {
    //! An in-memory disk for the host tests of this module.
    extern crate std;

    use super::{BlockDevice, BlockError, BlockSize};
    use std::vec;
    use std::vec::Vec;

    /// A disk in memory that checks every request like a driver would.
    pub struct MemDisk {
        pub size: BlockSize,
        pub data: Vec<u8>,
        /// Reads of these blocks fail with `Io`.
        pub bad_blocks: Vec<u64>,
        pub read_only: bool,
        pub writes: usize,
        pub flushes: usize,
    }

    impl MemDisk {
        pub fn new(size: BlockSize, blocks: u64) -> MemDisk {
            MemDisk { size, data: vec![0; blocks as usize * size.bytes()], bad_blocks: Vec::new(), read_only: false, writes: 0, flushes: 0 }
        }

        pub fn from_bytes(size: BlockSize, data: Vec<u8>) -> MemDisk {
            assert_eq!(data.len() % size.bytes(), 0);
            MemDisk { size, data, bad_blocks: Vec::new(), read_only: false, writes: 0, flushes: 0 }
        }

        pub fn block(&self, lba: u64) -> &[u8] {
            let bs = self.size.bytes();
            &self.data[lba as usize * bs..(lba as usize + 1) * bs]
        }

        pub fn block_mut(&mut self, lba: u64) -> &mut [u8] {
            let bs = self.size.bytes();
            &mut self.data[lba as usize * bs..(lba as usize + 1) * bs]
        }

        fn range(&self, lba: u64, len: usize) -> Result<core::ops::Range<usize>, BlockError> {
            let bs = self.size.bytes();
            if len == 0 || !len.is_multiple_of(bs) {
                return Err(BlockError::BadLength);
            }
            let start = usize::try_from(lba).ok().and_then(|l| l.checked_mul(bs)).ok_or(BlockError::OutOfRange)?;
            let end = start.checked_add(len).ok_or(BlockError::OutOfRange)?;
            if end > self.data.len() {
                return Err(BlockError::OutOfRange);
            }
            Ok(start..end)
        }
    }

    impl BlockDevice for MemDisk {
        fn block_size(&self) -> BlockSize {
            self.size
        }
        fn block_count(&self) -> u64 {
            (self.data.len() / self.size.bytes()) as u64
        }
        fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), BlockError> {
            let r = self.range(lba, buf.len())?;
            let blocks = (buf.len() / self.size.bytes()) as u64;
            if self.bad_blocks.iter().any(|&b| b >= lba && b < lba + blocks) {
                return Err(BlockError::Io);
            }
            buf.copy_from_slice(&self.data[r]);
            Ok(())
        }
        fn write(&mut self, lba: u64, data: &[u8]) -> Result<(), BlockError> {
            let r = self.range(lba, data.len())?;
            if self.read_only {
                return Err(BlockError::ReadOnly);
            }
            self.data[r].copy_from_slice(data);
            self.writes += 1;
            Ok(())
        }
        fn flush(&mut self) -> Result<(), BlockError> {
            self.flushes += 1;
            Ok(())
        }
    }
}
