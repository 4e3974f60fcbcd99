//! Device windows outside the boot identity map.
//!
//! The boot code identity-maps the first 64 GiB (2 MiB pages), or the first
//! TiB where the CPU has 1 GiB pages. UEFI firmware puts 64-bit PCI BARs at
//! the top of the physical address space, which on a CPU with many address
//! bits (a Proxmox VM with `cpu: host`, OVMF) is far above that. Before a
//! driver touches a BAR it asks [`reach`]: a window inside the boot map is
//! reachable as it is; one above it is identity-mapped here with uncached
//! 1 GiB pages, taking page-directory-pointer tables from a small fixed pool.
//!
//! Contract: the image calls [`enable`] once, before any driver is probed,
//! with what the boot code mapped. Until then (and in host tests) [`reach`]
//! only answers from the range it was told and never writes a page table.
//! Mappings are added, never removed; the image is single-threaded with
//! interrupts off, so no other code walks the tables meanwhile.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Spare page-directory-pointer tables: each maps 512 GiB, so eight cover
/// eight distinct 512 GiB regions of BARs.
const SPARE_PDPTS: usize = 8;
/// Linear addresses are 48 bits and the identity map lives in the lower half.
const LOWER_HALF: u64 = 1 << 47;
/// Present, writable, write-through, cache-disabled, page size (1 GiB).
const DEVICE_GIB_PAGE: u64 = 0x9b;
/// Present, writable (a PML4 entry pointing at a PDPT).
const TABLE: u64 = 0x3;
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

#[repr(C, align(4096))]
struct Spare(UnsafeCell<[[u64; 512]; SPARE_PDPTS]>);

// SAFETY: tables are handed out once each (USED only grows) and written only
// by `map_gib_range`, which the single-threaded image calls.
unsafe impl Sync for Spare {}

static SPARE: Spare = Spare(UnsafeCell::new([[0; 512]; SPARE_PDPTS]));
static USED: AtomicUsize = AtomicUsize::new(0);
static ACTIVE: AtomicBool = AtomicBool::new(false);
static GIB_PAGES: AtomicBool = AtomicBool::new(false);
static MAPPED_BELOW: AtomicU64 = AtomicU64::new(64 << 30);

/// The boot code identity-mapped `[0, mapped_below)`; `gib_pages`: the CPU
/// has 1 GiB pages (without them nothing above is ever mapped).
pub fn enable(mapped_below: u64, gib_pages: bool) {
    MAPPED_BELOW.store(mapped_below, Ordering::Relaxed);
    GIB_PAGES.store(gib_pages, Ordering::Relaxed);
    ACTIVE.store(true, Ordering::Relaxed);
}

/// The range the boot code mapped.
pub fn mapped_below() -> u64 {
    MAPPED_BELOW.load(Ordering::Relaxed)
}

/// Windows mapped above the boot map so far (each a 512 GiB region).
pub fn regions_added() -> usize {
    USED.load(Ordering::Relaxed)
}

/// Whether `[address, address + size)` can be reached at its physical
/// address, mapping it first when it lies above the boot map. False when it
/// cannot be: no 1 GiB pages, the pool is used up, or it is not in the lower
/// half of the address space.
pub fn reach(address: u64, size: u64) -> bool {
    let Some(end) = address.checked_add(size.max(1)) else { return false };
    if end <= mapped_below() {
        return true;
    }
    if !ACTIVE.load(Ordering::Relaxed) || !GIB_PAGES.load(Ordering::Relaxed) || end > LOWER_HALF {
        return false;
    }
    // SAFETY: enabled by the image, which runs identity-mapped on the tables
    // CR3 names, single-threaded with interrupts off; the range is checked
    // to be in the lower half.
    unsafe { map_gib_range(address, end) }
}

/// Maps every 1 GiB page touching `[start, end)` that is not mapped yet.
///
/// # Safety
/// The caller guarantees what [`reach`] checks: the image's own page
/// tables, identity mapped, no concurrent walker.
#[cfg(target_arch = "x86_64")]
unsafe fn map_gib_range(start: u64, end: u64) -> bool {
    use x86_64::registers::control::Cr3;
    let (frame, flags) = Cr3::read();
    let pml4 = frame.start_address().as_u64() as usize as *mut u64;
    let mut gib = start >> 30;
    let last = (end - 1) >> 30;
    while gib <= last {
        let (l4, l3) = ((gib >> 9) as usize, (gib & 511) as usize);
        // SAFETY: the PML4 has 512 entries and l4 < 256 (lower half).
        let e4 = unsafe { pml4.add(l4).read_volatile() };
        let pdpt = if e4 & 1 != 0 {
            (e4 & ADDRESS_MASK) as usize as *mut u64
        } else {
            let i = USED.load(Ordering::Relaxed);
            if i >= SPARE_PDPTS {
                return false;
            }
            USED.store(i + 1, Ordering::Relaxed);
            // SAFETY: table `i` was never handed out; it is zero (`.bss`).
            let table = unsafe { (*SPARE.0.get()).as_mut_ptr().add(i) } as *mut u64;
            // SAFETY: a PML4 entry of the live tables; the new table is zero
            // (nothing present) until entries are written below.
            unsafe { pml4.add(l4).write_volatile(table as u64 | TABLE) };
            table
        };
        // SAFETY: l3 < 512 entries of a PDPT the tables point at.
        let e3 = unsafe { pdpt.add(l3).read_volatile() };
        if e3 & 1 == 0 {
            // SAFETY: as above; an absent entry becomes an identity 1 GiB page.
            unsafe { pdpt.add(l3).write_volatile((gib << 30) | DEVICE_GIB_PAGE) };
        }
        gib += 1;
    }
    // SAFETY: reloading CR3 with its own value drops cached paging structures.
    unsafe { Cr3::write(frame, flags) };
    true
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn map_gib_range(_start: u64, _end: u64) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_the_boot_map_is_reachable_and_nothing_above_before_enable() {
        assert!(reach(0xfebf_0000, 0x1000));
        assert!(reach((64 << 30) - 4096, 4096));
        // Not enabled (host tests): never maps, never touches CR3.
        assert!(!reach(896 << 30, 0x4000));
        assert!(!reach(u64::MAX - 10, 100), "overflow is refused");
        assert_eq!(regions_added(), 0);
    }
}
