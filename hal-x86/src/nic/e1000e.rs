//! Intel 82574L (e1000e) driver — placeholder until the driver lands: probing
//! reports it as not yet supported.

use crate::pci::Device;
use routerd_netdev::{DeviceStats, NetDevice, TxToken};
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, PciRoot};

/// PCI device id of the 82574L.
pub const DEVICE_82574L: u16 = 0x10d3;

#[derive(Debug)]
pub enum Error {
    NotYetSupported,
}

pub struct E1000e {
    _private: (),
}

impl E1000e {
    pub fn new<C: ConfigurationAccess>(_root: &mut PciRoot<C>, _dev: &Device) -> Result<E1000e, Error> {
        Err(Error::NotYetSupported)
    }
}

pub struct Tx<'a>(&'a mut E1000e);

impl TxToken for Tx<'_> {
    fn send<R>(self, _len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        fill(&mut [])
    }
}

impl NetDevice for E1000e {
    type TxToken<'a> = Tx<'a>;
    fn mac(&self) -> [u8; 6] {
        [0; 6]
    }
    fn link_up(&mut self) -> bool {
        false
    }
    fn receive(&mut self, _budget: usize, _on_frame: &mut dyn FnMut(&mut [u8])) -> usize {
        0
    }
    fn transmit(&mut self) -> Option<Tx<'_>> {
        None
    }
    fn poll(&mut self) {}
    fn stats(&self) -> DeviceStats {
        DeviceStats::default()
    }
}
