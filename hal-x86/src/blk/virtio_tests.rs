//! Tests of `virtio.rs` against a fake virtio-blk device: the device side
//! of the split virtqueue over host memory, a disk in a `Vec`, and switches
//! that make it misbehave.
extern crate std;

use super::*;
use crate::blk::gpt;
use std::cell::RefCell;
use std::rc::Rc;
use std::vec;
use std::vec::Vec;
use virtio_drivers::transport::{DeviceType, InterruptStatus};
use virtio_drivers::PhysAddr;
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// The test HAL: identity-mapped pages from the heap, zeroed, never freed
/// (a few dozen pages per test run).
pub(super) struct HeapHal;

pub(super) fn heap_pages(pages: usize) -> Option<dma::DmaRegion> {
    let layout = std::alloc::Layout::from_size_align(pages * 4096, 4096).ok()?;
    // SAFETY: a non-zero size (every caller asks for at least one page).
    let ptr = core::ptr::NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })?;
    Some(dma::DmaRegion { phys: ptr.as_ptr() as u64, ptr, len: pages * 4096 })
}

// SAFETY: host memory is "identity mapped" for the fake device, which
// dereferences the addresses it is given; pages are zeroed and never reused.
unsafe impl virtio_drivers::Hal for HeapHal {
    fn dma_alloc(pages: usize, _direction: virtio_drivers::BufferDirection) -> (PhysAddr, core::ptr::NonNull<u8>) {
        let r = heap_pages(pages).expect("heap");
        (r.phys, r.ptr)
    }
    unsafe fn dma_dealloc(_paddr: PhysAddr, _vaddr: core::ptr::NonNull<u8>, _pages: usize) -> i32 {
        0
    }
    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> core::ptr::NonNull<u8> {
        core::ptr::NonNull::new(paddr as usize as *mut u8).unwrap()
    }
    unsafe fn share(buffer: core::ptr::NonNull<[u8]>, _direction: virtio_drivers::BufferDirection) -> PhysAddr {
        buffer.cast::<u8>().as_ptr() as PhysAddr
    }
    unsafe fn unshare(_paddr: PhysAddr, _buffer: core::ptr::NonNull<[u8]>, _direction: virtio_drivers::BufferDirection) {}
}

/// What QEMU's virtio-blk-pci offers, and features the driver must leave
/// alone: SEG_MAX, NOTIFY_ON_EMPTY, INDIRECT_DESC, EVENT_IDX, MQ, DISCARD,
/// WRITE_ZEROES.
const EXTRAS: u64 = (1 << 2) | (1 << 24) | (1 << 28) | (1 << 29) | (1 << 12) | (1 << 13) | (1 << 14);
const QEMU: u64 = feature::SIZE_MAX | feature::BLK_SIZE | feature::FLUSH | feature::CONFIG_WCE | feature::VERSION_1 | EXTRAS;

#[derive(Clone, Copy, Default)]
struct DevQueue {
    desc: PhysAddr,
    avail: PhysAddr,
    used: PhysAddr,
    size: u32,
    last_avail: u16,
    used_idx: u16,
}

/// One request as the device saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    kind: u32,
    sector: u64,
    len: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Misbehave {
    Not,
    /// Never completes.
    Hang,
    /// Completes with this status.
    Status(u8),
    /// Completes without writing the status byte (used length 0).
    NoStatus,
    /// Completes with this used length.
    UsedLen(u32),
    /// Completes with another descriptor's id.
    WrongId,
}

/// A descriptor as the device reads it: address, length, device-writable.
type Desc = (u64, usize, bool);

struct Dev {
    offered: u64,
    driver_features: u64,
    refuse_features: bool,
    status: u32,
    config: [u8; 64],
    wce_sticky: bool,
    queue: DevQueue,
    disk: Vec<u8>,
    seen: Vec<Seen>,
    notifies: usize,
    misbehave: Misbehave,
    serial: Option<&'static [u8]>,
}

impl Dev {
    fn new(sectors: u64) -> Dev {
        let mut d = Dev {
            offered: QEMU,
            driver_features: 0,
            refuse_features: false,
            status: 0,
            config: [0; 64],
            wce_sticky: false,
            queue: DevQueue::default(),
            disk: vec![0; sectors as usize * SECTOR],
            seen: Vec::new(),
            notifies: 0,
            misbehave: Misbehave::Not,
            serial: None,
        };
        d.set32(config::CAPACITY_LOW, sectors as u32);
        d.set32(config::CAPACITY_HIGH, (sectors >> 32) as u32);
        d.set32(config::SIZE_MAX, 1 << 20);
        d.set32(config::BLK_SIZE, 512);
        d.config[config::WRITEBACK] = 1;
        d
    }

    fn set32(&mut self, at: usize, v: u32) {
        self.config[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn read16(addr: PhysAddr) -> u16 {
        // SAFETY: `addr` lies in a ring the driver handed to the device.
        unsafe { (addr as usize as *const u16).read_volatile() }
    }

    fn write16(addr: PhysAddr, v: u16) {
        // SAFETY: as in `read16`; the device owns the used ring.
        unsafe { (addr as usize as *mut u16).write_volatile(v) }
    }

    fn avail_flags(&self) -> u16 {
        Self::read16(self.queue.avail)
    }

    /// The descriptor chain of the next published request: head and
    /// (address, length, device-writable) per descriptor.
    fn take(&mut self) -> Option<(u16, Vec<Desc>)> {
        let q = self.queue;
        if q.last_avail == Self::read16(q.avail + 2) {
            return None;
        }
        let head = Self::read16(q.avail + 4 + 2 * u64::from(q.last_avail % q.size as u16));
        self.queue.last_avail = q.last_avail.wrapping_add(1);
        let mut chain = Vec::new();
        let mut i = head;
        loop {
            let d = q.desc + 16 * u64::from(i);
            // SAFETY: a descriptor the driver published.
            let (addr, len) = unsafe { ((d as usize as *const u64).read_volatile(), ((d + 8) as usize as *const u32).read_volatile()) };
            let flags = Self::read16(d + 12);
            chain.push((addr, len as usize, flags & 2 != 0));
            if flags & 1 == 0 || chain.len() > q.size as usize {
                break;
            }
            i = Self::read16(d + 14);
        }
        Some((head, chain))
    }

    fn complete(&mut self, head: u16, len: u32) {
        let q = self.queue;
        let e = q.used + 4 + 8 * u64::from(q.used_idx % q.size as u16);
        // SAFETY: the used ring's element `used_idx`, ours to write.
        unsafe {
            (e as usize as *mut u32).write_volatile(u32::from(head));
            ((e + 4) as usize as *mut u32).write_volatile(len);
        }
        self.queue.used_idx = q.used_idx.wrapping_add(1);
        Self::write16(q.used + 2, self.queue.used_idx);
    }

    /// Serves every published request, as QEMU does on a notification.
    fn serve(&mut self) {
        while let Some((head, chain)) = self.take() {
            assert!(chain.len() == 2 || chain.len() == 3, "header, [data,] status: {chain:?}");
            let (hdr, hdr_len, hdr_w) = chain[0];
            assert_eq!((hdr_len, hdr_w), (16, false), "a device-readable 16-byte header");
            let (status_at, status_len, status_w) = *chain.last().unwrap();
            assert_eq!((status_len, status_w), (1, true), "a device-writable status byte");
            // SAFETY: the header the driver published.
            let h = unsafe { core::slice::from_raw_parts(hdr as usize as *const u8, 16) };
            let kind = u32::from_le_bytes(h[0..4].try_into().unwrap());
            let sector = u64::from_le_bytes(h[8..16].try_into().unwrap());
            let data = (chain.len() == 3).then(|| chain[1]);
            let len = data.map_or(0, |d| d.1);
            self.seen.push(Seen { kind, sector, len });
            let at = sector as usize * SECTOR;
            let in_range = at + len <= self.disk.len();
            let (mut status, mut used) = match (kind, data) {
                (request::IN, Some((addr, len, true))) => {
                    if in_range {
                        // SAFETY: the driver's device-writable buffer of `len` bytes.
                        unsafe { core::ptr::copy_nonoverlapping(self.disk[at..].as_ptr(), addr as usize as *mut u8, len) };
                        (status::OK, len as u32 + 1)
                    } else {
                        (status::IOERR, len as u32 + 1)
                    }
                }
                (request::OUT, Some((addr, len, false))) => {
                    if in_range && self.driver_features & feature::RO == 0 {
                        // SAFETY: the driver's device-readable buffer of `len` bytes.
                        let bytes = unsafe { core::slice::from_raw_parts(addr as usize as *const u8, len) };
                        self.disk[at..at + len].copy_from_slice(bytes);
                        (status::OK, 1)
                    } else {
                        (status::IOERR, 1)
                    }
                }
                (request::FLUSH, None) if self.driver_features & feature::FLUSH != 0 => (status::OK, 1),
                (request::GET_ID, Some((addr, len, true))) => match self.serial {
                    Some(s) => {
                        let mut id = [0u8; ID_BYTES];
                        id[..s.len()].copy_from_slice(s);
                        // SAFETY: the driver's device-writable buffer.
                        unsafe { core::ptr::copy_nonoverlapping(id.as_ptr(), addr as usize as *mut u8, len.min(ID_BYTES)) };
                        (status::OK, len as u32 + 1)
                    }
                    None => (status::UNSUPP, 1),
                },
                _ => (status::UNSUPP, 1),
            };
            let mut id = head;
            match self.misbehave {
                Misbehave::Not => {}
                Misbehave::Hang => return,
                Misbehave::Status(s) => status = s,
                Misbehave::NoStatus => {
                    self.complete(head, 0);
                    continue;
                }
                Misbehave::UsedLen(n) => used = n,
                Misbehave::WrongId => id = (head + 1) % self.queue.size as u16,
            }
            // SAFETY: the status byte the driver published.
            unsafe { (status_at as usize as *mut u8).write_volatile(status) };
            self.complete(id, used);
        }
    }
}

struct Fake(Rc<RefCell<Dev>>);

impl Transport for Fake {
    fn device_type(&self) -> DeviceType {
        DeviceType::Block
    }
    fn read_device_features(&mut self) -> u64 {
        self.0.borrow().offered
    }
    fn write_driver_features(&mut self, driver_features: u64) {
        self.0.borrow_mut().driver_features = driver_features;
    }
    fn max_queue_size(&mut self, _queue: u16) -> u32 {
        256
    }
    fn notify(&mut self, _queue: u16) {
        let mut d = self.0.borrow_mut();
        d.notifies += 1;
        d.serve();
    }
    fn get_status(&self) -> DeviceStatus {
        DeviceStatus::from_bits_truncate(self.0.borrow().status)
    }
    fn set_status(&mut self, status: DeviceStatus) {
        let mut d = self.0.borrow_mut();
        let mut bits = status.bits();
        if d.refuse_features {
            bits &= !DeviceStatus::FEATURES_OK.bits();
        }
        d.status = bits;
        if bits == 0 {
            d.queue = DevQueue::default();
        }
    }
    fn set_guest_page_size(&mut self, _guest_page_size: u32) {}
    fn requires_legacy_layout(&self) -> bool {
        false
    }
    fn queue_set(&mut self, _queue: u16, size: u32, descriptors: PhysAddr, driver_area: PhysAddr, device_area: PhysAddr) {
        self.0.borrow_mut().queue = DevQueue { desc: descriptors, avail: driver_area, used: device_area, size, ..DevQueue::default() };
    }
    fn queue_unset(&mut self, _queue: u16) {}
    fn queue_used(&mut self, _queue: u16) -> bool {
        self.0.borrow().queue.size != 0
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        InterruptStatus::empty()
    }
    fn read_config_generation(&self) -> u32 {
        0
    }
    fn read_config_space<V: FromBytes + IntoBytes>(&self, offset: usize) -> Result<V, virtio_drivers::Error> {
        let d = self.0.borrow();
        let bytes = d.config.get(offset..offset + core::mem::size_of::<V>()).ok_or(virtio_drivers::Error::ConfigSpaceTooSmall)?;
        V::read_from_bytes(bytes).map_err(|_| virtio_drivers::Error::InvalidParam)
    }
    fn write_config_space<V: IntoBytes + Immutable>(&mut self, offset: usize, value: V) -> Result<(), virtio_drivers::Error> {
        let mut d = self.0.borrow_mut();
        assert_eq!((offset, value.as_bytes().len()), (config::WRITEBACK, 1), "only `writeback` is written");
        if !d.wce_sticky {
            d.config[offset] = value.as_bytes()[0];
        }
        Ok(())
    }
}

fn clock() -> Clock {
    Clock::from_hz(1_000_000_000, crate::clock::rdtsc())
}

fn start(dev: Dev) -> (Result<VirtioBlk<Fake>, Error>, Rc<RefCell<Dev>>) {
    let dev = Rc::new(RefCell::new(dev));
    (VirtioBlk::start(Fake(dev.clone()), clock()), dev)
}

fn blk(dev: Dev) -> (VirtioBlk<Fake>, Rc<RefCell<Dev>>) {
    let (b, dev) = start(dev);
    (b.expect("bring-up"), dev)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn seen(dev: &Rc<RefCell<Dev>>) -> Vec<(u32, u64, usize)> {
    dev.borrow().seen.iter().map(|s| (s.kind, s.sector, s.len)).collect()
}

#[test]
fn bring_up_negotiates_only_what_it_uses_and_no_interrupts() {
    let (b, dev) = blk(Dev::new(4096));
    let d = dev.borrow();
    assert_eq!(d.driver_features, feature::SIZE_MAX | feature::BLK_SIZE | feature::FLUSH | feature::CONFIG_WCE | feature::VERSION_1);
    assert!(DeviceStatus::from_bits_truncate(d.status).contains(DeviceStatus::DRIVER_OK | DeviceStatus::FEATURES_OK));
    assert_eq!(d.avail_flags(), 1, "VIRTQ_AVAIL_F_NO_INTERRUPT");
    assert_eq!((b.block_size(), b.block_count(), b.cache(), b.read_only()), (BlockSize::B512, 4096, Cache::WriteBack, false));
    assert!(d.seen.is_empty(), "bring-up sends no request");
}

#[test]
fn large_transfers_are_split_into_bounce_sized_requests() {
    let (mut b, dev) = blk(Dev::new(4096));
    let data = pattern(100 * 1024, 3);
    b.write(10, &data).unwrap();
    assert_eq!(seen(&dev), [(1, 10, 32768), (1, 74, 32768), (1, 138, 32768), (1, 202, 4096)]);
    assert_eq!(dev.borrow().disk[10 * 512..10 * 512 + data.len()], data[..]);
    let mut back = vec![0xa5; data.len()];
    b.read(10, &mut back).unwrap();
    assert_eq!(back, data);
    assert_eq!(seen(&dev)[4..], [(0, 10, 32768), (0, 74, 32768), (0, 138, 32768), (0, 202, 4096)]);
    assert_eq!(dev.borrow().notifies, 8, "one notification per request");
}

#[test]
fn size_max_limits_every_request() {
    let mut d = Dev::new(4096);
    d.set32(config::SIZE_MAX, 4096 + 100);
    let (mut b, dev) = blk(d);
    b.write(0, &pattern(16384, 1)).unwrap();
    assert!(seen(&dev).iter().all(|&(_, _, len)| len == 4096), "{:?}", seen(&dev));
    let mut d = Dev::new(4096);
    d.set32(config::SIZE_MAX, 100);
    assert!(matches!(start(d).0, Err(Error::SizeMaxTooSmall(100))));
}

#[test]
fn flush_is_sent_when_the_device_offers_it() {
    let (mut b, dev) = blk(Dev::new(4096));
    b.write(0, &[1; 512]).unwrap();
    b.flush().unwrap();
    assert_eq!(seen(&dev), [(1, 0, 512), (4, 0, 0)]);
    // Flush failing is an error, like any request.
    dev.borrow_mut().misbehave = Misbehave::Status(status::IOERR);
    assert!(matches!(b.flush(), Err(Error::Status(status::IOERR))));
    assert_eq!(BlockDevice::flush(&mut b), Err(BlockError::Io));
}

#[test]
fn cache_modes_decide_what_flush_means() {
    // (offered FLUSH, offered CONFIG_WCE, writeback, sticky) → cache, flush sent, flush result.
    let cases = [
        (false, false, 1, false, Cache::WriteThrough, false, true),
        (true, false, 0, false, Cache::WriteBack, true, true),
        (true, true, 0, false, Cache::WriteThrough, true, true),
        (true, true, 1, false, Cache::WriteBack, true, true),
        (false, true, 1, false, Cache::WriteThrough, false, true),
        (false, true, 1, true, Cache::Volatile, false, false),
    ];
    for (flush, wce, writeback, sticky, cache, sent, ok) in cases {
        let mut d = Dev::new(4096);
        if !flush {
            d.offered &= !feature::FLUSH;
        }
        if !wce {
            d.offered &= !feature::CONFIG_WCE;
        }
        d.config[config::WRITEBACK] = writeback;
        d.wce_sticky = sticky;
        let (mut b, dev) = blk(d);
        let case = (flush, wce, writeback, sticky);
        assert_eq!(b.cache(), cache, "{case:?}");
        b.write(0, &[2; 512]).unwrap();
        let r = b.flush();
        assert_eq!(r.is_ok(), ok, "{case:?}: {r:?}");
        if !ok {
            assert!(matches!(r, Err(Error::NotDurable)));
        }
        assert_eq!(seen(&dev).iter().any(|s| s.0 == request::FLUSH), sent, "{case:?}");
        if flush && !sticky && wce && writeback == 1 {
            assert_eq!(dev.borrow().config[config::WRITEBACK], 1, "a flushable cache is left as it is");
        }
    }
}

#[test]
fn lengths_and_ranges_are_checked_before_anything_is_sent() {
    let (mut b, dev) = blk(Dev::new(64));
    let mut buf = [0u8; 1024];
    assert!(matches!(b.read(0, &mut buf[..0]), Err(Error::BadLength)));
    assert!(matches!(b.read(0, &mut buf[..100]), Err(Error::BadLength)));
    assert!(matches!(b.read(64, &mut buf[..512]), Err(Error::OutOfRange)));
    assert!(matches!(b.read(63, &mut buf), Err(Error::OutOfRange)));
    assert!(matches!(b.write(u64::MAX, &buf), Err(Error::OutOfRange)));
    assert_eq!(BlockDevice::read(&mut b, 64, &mut buf[..512]), Err(BlockError::OutOfRange));
    assert!(seen(&dev).is_empty());
    b.read(62, &mut buf).unwrap();
    assert_eq!(seen(&dev), [(0, 62, 1024)]);
}

#[test]
fn a_read_only_device_refuses_writes_without_sending_them() {
    let mut d = Dev::new(64);
    d.offered |= feature::RO;
    let (mut b, dev) = blk(d);
    assert!(b.read_only());
    assert_eq!(BlockDevice::write(&mut b, 0, &[0; 512]), Err(BlockError::ReadOnly));
    assert!(seen(&dev).is_empty());
    b.read(0, &mut [0; 512]).unwrap();
}

#[test]
fn logical_blocks_of_4096_address_512_byte_sectors() {
    let mut d = Dev::new(800);
    d.set32(config::BLK_SIZE, 4096);
    let (mut b, dev) = blk(d);
    assert_eq!((b.block_size(), b.block_count()), (BlockSize::B4096, 100));
    b.write(3, &pattern(4096, 9)).unwrap();
    assert_eq!(seen(&dev), [(1, 24, 4096)]);
    assert_eq!(dev.borrow().disk[24 * 512..32 * 512], pattern(4096, 9)[..]);
    assert!(matches!(b.read(0, &mut [0; 512]), Err(Error::BadLength)));
    assert!(matches!(b.read(100, &mut [0; 4096]), Err(Error::OutOfRange)));
    b.read(99, &mut [0; 4096]).unwrap();
    let mut d = Dev::new(800);
    d.set32(config::BLK_SIZE, 1024);
    assert!(matches!(start(d).0, Err(Error::UnsupportedBlockSize(1024))));
}

#[test]
fn an_error_status_fails_that_request_only() {
    let (mut b, dev) = blk(Dev::new(64));
    b.write(1, &[7; 512]).unwrap();
    for (misbehave, want) in [
        (Misbehave::Status(status::IOERR), "Status(1)"),
        (Misbehave::Status(status::UNSUPP), "Status(2)"),
        (Misbehave::Status(77), "Status(77)"),
        (Misbehave::NoStatus, "Status(255)"),
        (Misbehave::UsedLen(100), "UsedLength { expected: 513, got: 100 }"),
    ] {
        dev.borrow_mut().misbehave = misbehave;
        let mut buf = [0u8; 512];
        let e = b.read(1, &mut buf).unwrap_err();
        assert_eq!(std::format!("{e:?}"), want);
        dev.borrow_mut().misbehave = Misbehave::Not;
        b.read(1, &mut buf).unwrap();
        assert_eq!(buf, [7; 512], "after {misbehave:?}");
    }
    // The device reading past the disk answers IOERR.
    dev.borrow_mut().disk.truncate(512);
    assert!(matches!(b.read(1, &mut [0; 512]), Err(Error::Status(status::IOERR))));
    assert!(!b.is_broken());
}

#[test]
fn protocol_violations_reset_the_device_for_good() {
    for misbehave in [Misbehave::UsedLen(2), Misbehave::WrongId, Misbehave::UsedLen(u32::MAX)] {
        let (mut b, dev) = blk(Dev::new(64));
        dev.borrow_mut().misbehave = misbehave;
        let r = b.write(0, &[1; 512]);
        assert!(matches!(r, Err(Error::UsedLength { .. } | Error::WrongToken)), "{misbehave:?}: {r:?}");
        assert!(b.is_broken());
        assert_eq!(dev.borrow().status, 0, "reset");
        dev.borrow_mut().misbehave = Misbehave::Not;
        let before = dev.borrow().seen.len();
        assert!(matches!(b.read(0, &mut [0; 512]), Err(Error::Broken)));
        assert!(matches!(b.flush(), Err(Error::Broken)));
        assert_eq!(dev.borrow().seen.len(), before, "nothing sent to a device given up on");
    }
}

#[test]
fn a_hung_device_times_out_and_is_reset() {
    let (mut b, dev) = blk(Dev::new(64));
    b.timeout_ns = 20_000_000;
    dev.borrow_mut().misbehave = Misbehave::Hang;
    let t = std::time::Instant::now();
    assert!(matches!(b.read(0, &mut [0; 512]), Err(Error::Timeout)));
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(dev.borrow().status, 0, "reset");
    assert!(matches!(b.write(0, &[0; 512]), Err(Error::Broken)));
}

#[test]
fn bring_up_refuses_what_it_cannot_drive() {
    let mut d = Dev::new(64);
    d.offered &= !feature::VERSION_1;
    let (r, dev) = start(d);
    assert!(matches!(r, Err(Error::NotModern { .. })));
    assert!(DeviceStatus::from_bits_truncate(dev.borrow().status).contains(DeviceStatus::FAILED));
    let mut d = Dev::new(64);
    d.refuse_features = true;
    assert!(matches!(start(d).0, Err(Error::FeaturesRefused { .. })));
}

#[test]
fn serial_number() {
    let mut d = Dev::new(64);
    d.serial = Some(b"routerd-disk-1");
    let (mut b, dev) = blk(d);
    assert_eq!(b.serial().unwrap().unwrap().as_bytes(), b"routerd-disk-1");
    assert_eq!(seen(&dev), [(request::GET_ID, 0, ID_BYTES)]);
    let (mut b, _) = blk(Dev::new(64));
    assert_eq!(b.serial().unwrap(), None);
}

#[test]
fn gpt_create_and_find_through_the_driver() {
    let (mut b, dev) = blk(Dev::new(16384));
    let p = gpt::create_state_partition(&mut b, [5; 32], gpt::Existing::Refuse).expect("create");
    let log = seen(&dev);
    let flush = log.iter().position(|s| s.0 == request::FLUSH).expect("a flush");
    assert!(log[..flush].iter().any(|s| s.0 == request::OUT));
    assert!(log[flush + 1..].iter().all(|s| s.0 == request::IN), "only the read-back after the flush");
    let f = gpt::find_state_partition(&mut b).unwrap();
    assert_eq!((f.partition, f.copies_agree), (p, true));
    assert_eq!(dev.borrow().disk[510..512], [0x55, 0xaa]);
}
