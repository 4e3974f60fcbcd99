//! Linux TAP and TUN devices: the host build's "NICs".
//!
//! A LAN port is a TAP device: the kernel side of it is a wire into Linux
//! (bridge it, move it into a namespace, or give it an address), and
//! routerd-host is the box on the other end of that wire, with its own MAC.
//! The device is created if missing (non-persistent: it disappears when
//! routerd-host exits) or attached to if it exists (`ip tuntap add … mode
//! tap`). The fd is non-blocking; reads and writes are one frame each.
//!
//! This module and `wan.rs` are the platform layer: the only places with
//! `unsafe` (system calls), each block with a `// SAFETY:` line.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

const IFF_TUN: libc::c_short = 0x0001;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// Longest interface name Linux accepts (IFNAMSIZ − 1).
pub const MAX_IFNAME: usize = libc::IFNAMSIZ - 1;

/// TAP (Ethernet frames) or TUN (IPv4 packets, no header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tap,
    Tun,
}

/// An open TAP/TUN device.
#[derive(Debug)]
pub struct Device {
    file: File,
    name: String,
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    if name.is_empty() || name.len() > MAX_IFNAME || name.bytes().any(|b| b == 0 || b == b'/' || b.is_ascii_whitespace()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a valid interface name (1..={MAX_IFNAME} characters, no '/' or spaces)"),
        ));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(ifr)
}

/// A throwaway socket for interface ioctls.
fn ioctl_socket() -> io::Result<File> {
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own; File closes it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

impl Device {
    /// Create or attach to the device `name`.
    pub fn open(name: &str, kind: Kind) -> io::Result<Device> {
        let mut ifr = ifreq(name)?;
        // SAFETY: a NUL-terminated path literal; the result is checked.
        let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("open /dev/net/tun: {e} (needs root or CAP_NET_ADMIN)")));
        }
        // SAFETY: fd is a fresh descriptor we own; File closes it on drop.
        let file = unsafe { File::from_raw_fd(fd) };
        let flags = match kind {
            Kind::Tap => IFF_TAP,
            Kind::Tun => IFF_TUN,
        };
        ifr.ifr_ifru.ifru_flags = flags | IFF_NO_PI;
        // SAFETY: TUNSETIFF reads and writes the ifreq, which lives across the call.
        if unsafe { libc::ioctl(fd, TUNSETIFF as _, &mut ifr as *mut libc::ifreq) } < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("TUNSETIFF {name}: {e}")));
        }
        Ok(Device { file, name: name.to_string() })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The MAC address of the kernel side (TAP only).
    pub fn kernel_mac(&self) -> io::Result<[u8; 6]> {
        let sock = ioctl_socket()?;
        let mut ifr = ifreq(&self.name)?;
        // SAFETY: SIOCGIFHWADDR fills the ifreq, which lives across the call.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR as _, &mut ifr as *mut libc::ifreq) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: SIOCGIFHWADDR succeeded, so the union holds a sockaddr.
        let data = unsafe { ifr.ifr_ifru.ifru_hwaddr.sa_data };
        let mut mac = [0u8; 6];
        for (m, d) in mac.iter_mut().zip(data.iter()) {
            *m = *d as u8;
        }
        Ok(mac)
    }

    /// Bring the kernel side up (IFF_UP), so Linux sends frames into it.
    pub fn set_up(&self) -> io::Result<()> {
        let sock = ioctl_socket()?;
        let mut ifr = ifreq(&self.name)?;
        // SAFETY: SIOCGIFFLAGS fills the ifreq, which lives across the call.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut ifr as *mut libc::ifreq) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the union's flags member was just written by the kernel.
        unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        // SAFETY: SIOCSIFFLAGS reads the ifreq, which lives across the call.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &mut ifr as *mut libc::ifreq) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Read one frame (TAP) or packet (TUN). `WouldBlock` when none is waiting.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for writes of buf.len() bytes.
        let n = unsafe { libc::read(self.file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Write one frame (TAP) or packet (TUN).
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: frame is valid for reads of frame.len() bytes.
        let n = unsafe { libc::write(self.file.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

impl AsRawFd for Device {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// Register a device or socket with the runtime for read readiness.
/// Only for the types of this crate (`Device`, `socket2::Socket`), which own
/// their descriptor for their whole life and always return the same one.
pub fn register<T: AsRawFd + OwnsFd>(inner: T) -> io::Result<tokio::io::unix::AsyncFd<T>> {
    // SAFETY: `OwnsFd` types own an open descriptor that stays open and the
    // same until they are dropped, which the AsyncFd does last.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(inner, tokio::io::Interest::READABLE) }.map_err(io::Error::from)
}

/// Types that own one descriptor for their whole life.
pub trait OwnsFd {}
impl OwnsFd for Device {}
impl OwnsFd for socket2::Socket {}

/// routerd-host's own MAC on a TAP port whose configuration names none: the
/// kernel side's MAC with the last byte changed, locally administered. Both
/// ends of the wire need different MACs (the dataplane drops frames from its
/// own MAC as reflections).
pub fn box_mac_for(kernel: [u8; 6]) -> [u8; 6] {
    let mut m = kernel;
    m[0] = (m[0] | 0x02) & !0x01;
    m[5] ^= 0x01;
    if m == kernel {
        m[4] ^= 0x01;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_mac_differs_and_is_local_unicast() {
        for k in [[0x02, 0, 0, 0, 0, 0], [0x5e, 1, 2, 3, 4, 0xff], [0xff; 6]] {
            let m = box_mac_for(k);
            assert_ne!(m, k);
            assert_eq!(m[0] & 0x03, 0x02, "{m:02x?}");
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(ifreq("lan0").is_ok());
        assert!(ifreq("").is_err());
        assert!(ifreq("a-name-that-is-too-long").is_err());
        assert!(ifreq("a/b").is_err());
    }
}
