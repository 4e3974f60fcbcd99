//! PCI: configuration access, enumeration, and what a device is.
//!
//! Configuration space is reached through the legacy 0xCF8/0xCFC mechanism,
//! which both QEMU machines (`pc` and `q35`) and every PC chipset provide.
//! The enumeration walks bus 0 and every bus behind a PCI-to-PCI bridge, in
//! bus/device/function order — the order that defines `lan0`, `wan0`, …
//! Register layouts and BAR decoding come from the `virtio-drivers` crate's
//! PCI module, which the virtio driver uses anyway. MAC addresses are read by
//! the NIC drivers (`crate::nic`) as part of bringing a device up.

use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction, DeviceFunctionInfo, HeaderType, PciRoot};
use x86_64::instructions::port::Port;

pub use virtio_drivers::transport::pci::bus;

/// PCI vendor ids we know by name.
pub const VENDOR_INTEL: u16 = 0x8086;
pub const VENDOR_VIRTIO: u16 = 0x1af4;
pub const VENDOR_REDHAT: u16 = 0x1b36;

/// Most devices kept by one enumeration.
pub const MAX_DEVICES: usize = 64;

/// Configuration access through I/O ports 0xCF8 (address) and 0xCFC (data).
pub struct PortCam {
    _private: (),
}

impl PortCam {
    /// # Safety
    /// The caller must be the only user of ports 0xCF8..0xCFF.
    pub unsafe fn new() -> PortCam {
        PortCam { _private: () }
    }

    fn address(df: DeviceFunction, offset: u8) -> u32 {
        0x8000_0000
            | (u32::from(df.bus) << 16)
            | (u32::from(df.device & 0x1f) << 11)
            | (u32::from(df.function & 0x7) << 8)
            | u32::from(offset & 0xfc)
    }
}

impl ConfigurationAccess for PortCam {
    fn read_word(&self, df: DeviceFunction, offset: u8) -> u32 {
        // SAFETY: we own the configuration ports (constructor contract);
        // address then data is the whole access, with nothing in between.
        unsafe {
            Port::<u32>::new(0xCF8).write(Self::address(df, offset));
            Port::<u32>::new(0xCFC).read()
        }
    }

    fn write_word(&mut self, df: DeviceFunction, offset: u8, data: u32) {
        // SAFETY: as in `read_word`.
        unsafe {
            Port::<u32>::new(0xCF8).write(Self::address(df, offset));
            Port::<u32>::new(0xCFC).write(data);
        }
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PortCam { _private: () }
    }
}

/// Configuration access: PCIe ECAM when the firmware describes one (all 4 KiB
/// of each function's space, one memory access per register), port I/O
/// otherwise.
pub enum Cam {
    Port(PortCam),
    Ecam(bus::MmioCam<'static>),
}

impl Cam {
    /// ECAM at `ecam` when given (and covering bus 0), else port I/O.
    ///
    /// # Safety
    /// The caller must own PCI configuration space; `ecam` must come from the
    /// firmware's MCFG and lie inside the identity map.
    pub unsafe fn new(ecam: Option<crate::acpi::Ecam>) -> Cam {
        match ecam {
            Some(e) if e.start_bus == 0 && e.base != 0 && e.base % 4096 == 0 => {
                // SAFETY: MCFG describes a 256 MiB window for buses 0..=255 of
                // segment 0 at `base`, identity mapped by the boot code.
                Cam::Ecam(unsafe { bus::MmioCam::new(e.base as *mut u8, bus::Cam::Ecam) })
            }
            // SAFETY: forwarded from the caller.
            _ => Cam::Port(unsafe { PortCam::new() }),
        }
    }

    /// The mechanism's name for the console.
    pub fn name(&self) -> &'static str {
        match self {
            Cam::Port(_) => "port I/O 0xCF8",
            Cam::Ecam(_) => "ECAM",
        }
    }
}

impl ConfigurationAccess for Cam {
    fn read_word(&self, df: DeviceFunction, offset: u8) -> u32 {
        match self {
            Cam::Port(c) => c.read_word(df, offset),
            Cam::Ecam(c) => c.read_word(df, offset),
        }
    }

    fn write_word(&mut self, df: DeviceFunction, offset: u8, data: u32) {
        match self {
            Cam::Port(c) => c.write_word(df, offset, data),
            Cam::Ecam(c) => c.write_word(df, offset, data),
        }
    }

    unsafe fn unsafe_clone(&self) -> Self {
        // SAFETY: forwarded from the caller.
        unsafe {
            match self {
                Cam::Port(c) => Cam::Port(c.unsafe_clone()),
                Cam::Ecam(c) => Cam::Ecam(c.unsafe_clone()),
            }
        }
    }
}

/// One function found on the bus.
#[derive(Clone, Debug)]
pub struct Device {
    pub address: DeviceFunction,
    pub info: DeviceFunctionInfo,
}

impl Device {
    /// An Ethernet controller (class 02, subclass 00).
    pub fn is_network(&self) -> bool {
        self.info.class == 0x02 && self.info.subclass == 0x00
    }

    /// A short human name for the device's class.
    pub fn class_name(&self) -> &'static str {
        class_name(self.info.class, self.info.subclass)
    }
}

/// Human name of a PCI class/subclass pair.
pub fn class_name(class: u8, subclass: u8) -> &'static str {
    match (class, subclass) {
        (0x00, _) => "unclassified",
        (0x01, 0x01) => "IDE controller",
        (0x01, 0x06) => "SATA controller",
        (0x01, 0x08) => "NVMe controller",
        (0x01, _) => "storage controller",
        (0x02, 0x00) => "Ethernet controller",
        (0x02, _) => "network controller",
        (0x03, _) => "display controller",
        (0x04, _) => "multimedia controller",
        (0x05, _) => "memory controller",
        (0x06, 0x00) => "host bridge",
        (0x06, 0x01) => "ISA bridge",
        (0x06, 0x04) => "PCI bridge",
        (0x06, _) => "bridge",
        (0x07, _) => "communication controller",
        (0x08, _) => "system peripheral",
        (0x0c, 0x03) => "USB controller",
        (0x0c, 0x05) => "SMBus controller",
        (0x0c, _) => "serial bus controller",
        (0x10, _) => "crypto controller",
        (0xff, _) => "unassigned class",
        _ => "other",
    }
}

/// The devices found, in enumeration order.
pub struct Devices {
    list: [Option<Device>; MAX_DEVICES],
    len: usize,
    /// Functions found beyond [`MAX_DEVICES`].
    pub dropped: usize,
}

impl Devices {
    pub fn iter(&self) -> impl Iterator<Item = &Device> {
        self.list.iter().take(self.len).flatten()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, d: Device) {
        match self.list.get_mut(self.len) {
            Some(slot) => {
                *slot = Some(d);
                self.len += 1;
            }
            None => self.dropped += 1,
        }
    }
}

/// Lists every function on bus 0 and behind bridges (read-only accesses).
pub fn enumerate<C: ConfigurationAccess>(access: &C) -> Devices {
    let mut out = Devices { list: [const { None }; MAX_DEVICES], len: 0, dropped: 0 };
    // SAFETY: enumeration only reads identification registers.
    let root = PciRoot::new(unsafe { access.unsafe_clone() });
    // Buses still to scan; each bridge adds its secondary bus. A visited set
    // stops a misconfigured bridge loop from scanning forever.
    let mut pending = [0u8; 32];
    let mut pending_len = 1usize;
    let mut visited = [false; 256];
    while pending_len > 0 {
        pending_len -= 1;
        let bus = pending[pending_len];
        if core::mem::replace(&mut visited[usize::from(bus)], true) {
            continue;
        }
        for (address, info) in root.enumerate_bus(bus) {
            if info.header_type == HeaderType::PciPciBridge {
                // Secondary bus number: byte 1 of the dword at 0x18.
                let secondary = (access.read_word(address, 0x18) >> 8) as u8;
                if secondary != 0 && pending_len < pending.len() {
                    pending[pending_len] = secondary;
                    pending_len += 1;
                }
            }
            out.push(Device { address, info });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_cam_addresses_follow_the_spec() {
        let df = DeviceFunction { bus: 1, device: 3, function: 2 };
        assert_eq!(PortCam::address(df, 0x13), 0x8001_1a10);
    }

    #[test]
    fn names_network_classes() {
        assert_eq!(class_name(0x02, 0x00), "Ethernet controller");
        assert_eq!(class_name(0x06, 0x04), "PCI bridge");
    }
}
