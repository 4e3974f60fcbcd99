//! Memory for devices: the `virtio-drivers` HAL over the identity map.
//!
//! The image runs identity-mapped (virtual address == physical address), so
//! sharing a buffer with a device is handing over its address. Descriptor
//! rings come from a fixed pool in `.bss`, carved once at start-up; drivers
//! allocate their queues when they are brought up and never free them, so the
//! pool is a bump allocator and `dma_dealloc` does not reclaim.

use core::cell::UnsafeCell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

/// Pages in the DMA pool (4 MiB: rings and packet buffers for up to eight NICs).
pub const DMA_POOL_PAGES: usize = 1024;

#[repr(C, align(4096))]
struct Pool(UnsafeCell<[u8; DMA_POOL_PAGES * PAGE_SIZE]>);

// SAFETY: pages are handed out once each (atomic bump), so no two owners
// ever share a page.
unsafe impl Sync for Pool {}

// `.bss.dma` lets the image's linker script keep the pool out of the range
// the boot code clears; `alloc_pages` zeroes what it hands out instead.
#[link_section = ".bss.dma"]
static POOL: Pool = Pool(UnsafeCell::new([0; DMA_POOL_PAGES * PAGE_SIZE]));
static NEXT_PAGE: AtomicUsize = AtomicUsize::new(0);

/// Pages of the pool handed out so far.
pub fn pages_used() -> usize {
    NEXT_PAGE.load(Ordering::Relaxed).min(DMA_POOL_PAGES)
}

/// A block of DMA-able memory: physically contiguous, page aligned, zeroed,
/// identity mapped, owned for the rest of the run.
/// Zeroed when handed out.
pub struct DmaRegion {
    /// Physical (= virtual) address.
    pub phys: u64,
    /// Where the CPU reaches it.
    pub ptr: NonNull<u8>,
    /// Length in bytes (whole pages).
    pub len: usize,
}

/// Takes `pages` pages from the pool, or `None` when the pool is exhausted.
pub fn alloc_pages(pages: usize) -> Option<DmaRegion> {
    let mut first = NEXT_PAGE.load(Ordering::Relaxed);
    loop {
        let end = first.checked_add(pages).filter(|&e| e <= DMA_POOL_PAGES)?;
        match NEXT_PAGE.compare_exchange(first, end, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break,
            Err(now) => first = now,
        }
    }
    let base = POOL.0.get().cast::<u8>();
    // SAFETY: first + pages <= DMA_POOL_PAGES, so the range lies inside the
    // pool, and the atomic bump made it ours alone.
    let ptr = unsafe {
        let p = base.add(first * PAGE_SIZE);
        core::ptr::write_bytes(p, 0, pages * PAGE_SIZE);
        p
    };
    Some(DmaRegion { phys: ptr as u64, ptr: NonNull::new(ptr)?, len: pages * PAGE_SIZE })
}

/// The identity-mapped HAL.
pub struct IdentityHal;

// SAFETY: memory is identity mapped, so physical addresses returned by
// `dma_alloc`/`share` are exactly where the device will read and write; pool
// pages are zeroed (.bss) and never handed out twice.
unsafe impl Hal for IdentityHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        match alloc_pages(pages) {
            Some(r) => (r.phys, r.ptr),
            // Running out is a sizing error (too many queues for the pool),
            // found on the first boot with that NIC set, never by traffic.
            None => panic!("DMA pool exhausted: {pages} pages requested, {DMA_POOL_PAGES} in the pool"),
        }
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, _vaddr: NonNull<u8>, _pages: usize) -> i32 {
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        // A BAR above the boot identity map (UEFI puts 64-bit BARs high) is
        // mapped here before the driver touches it.
        let _ = crate::paging::reach(paddr, size as u64);
        NonNull::new(paddr as usize as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.cast::<u8>().as_ptr() as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}
