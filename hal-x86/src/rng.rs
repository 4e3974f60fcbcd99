//! virtio-rng: the hypervisor's entropy, for CPUs without RDRAND/RDSEED.

use crate::dma::IdentityHal;
use crate::pci::{Device, VENDOR_VIRTIO};
use virtio_drivers::device::rng::VirtIORng;
use virtio_drivers::transport::pci::bus::{Command, ConfigurationAccess, PciRoot};
use virtio_drivers::transport::pci::PciTransport;

/// Whether `dev` is a virtio entropy device (transitional or modern id).
pub fn is_virtio_rng(dev: &Device) -> bool {
    dev.info.vendor_id == VENDOR_VIRTIO && matches!(dev.info.device_id, 0x1005 | 0x1044)
}

/// 32 bytes from the device, or `None` if it does not deliver them.
pub fn seed<C: ConfigurationAccess>(root: &mut PciRoot<C>, dev: &Device) -> Option<[u8; 32]> {
    let (_, command) = root.get_status_command(dev.address);
    root.set_command(dev.address, command | Command::MEMORY_SPACE | Command::IO_SPACE | Command::BUS_MASTER);
    let transport = PciTransport::new::<IdentityHal, C>(root, dev.address).ok()?;
    let mut rng = VirtIORng::<IdentityHal, _>::new(transport).ok()?;
    let mut out = [0u8; 32];
    let mut filled = 0;
    // The device may return fewer bytes than asked; a few rounds suffice.
    for _ in 0..8 {
        let n = rng.request_entropy(out.get_mut(filled..)?).ok()?;
        filled += n;
        if filled >= out.len() {
            return Some(out);
        }
    }
    None
}
