//! The runtime pieces a `no_std` binary on the linux-gnu target must bring:
//! memory primitives (the prebuilt `compiler_builtins` lacks them), the
//! unwinding personality the prebuilt `core` references, and the panic
//! handler.
//!
//! The memory primitives use `rep movsb`/`rep stosb` in inline assembly so
//! the compiler cannot turn them back into calls to themselves; on CPUs with
//! ERMS (every x86_64 from the last decade) these are also the fast path.

use core::alloc::{GlobalAlloc, Layout};
use core::arch::asm;
use core::fmt::Write;
use core::panic::PanicInfo;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

/// # Safety
/// Standard C `memcpy` contract: `n` bytes, non-overlapping, valid pointers.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller upholds memcpy's contract; DF is clear per the ABI.
    unsafe {
        asm!("rep movsb",
            inout("rcx") n => _, inout("rdi") dest => _, inout("rsi") src => _,
            options(nostack, preserves_flags));
    }
    dest
}

/// # Safety
/// Standard C `memmove` contract.
#[no_mangle]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if n == 0 {
        return dest;
    }
    if (dest as usize) <= (src as usize) || (dest as usize) >= (src as usize).wrapping_add(n) {
        // SAFETY: a forward copy is correct when dest is below src or past it.
        unsafe { memcpy(dest, src, n) };
    } else {
        // Overlap with dest above src: copy backwards, then restore DF.
        // SAFETY: the pointers address the last byte of each valid range.
        unsafe {
            asm!("std", "rep movsb", "cld",
                inout("rcx") n => _,
                inout("rdi") dest.add(n - 1) => _,
                inout("rsi") src.add(n - 1) => _,
                options(nostack));
        }
    }
    dest
}

/// # Safety
/// Standard C `memset` contract.
#[no_mangle]
pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller upholds memset's contract.
    unsafe {
        asm!("rep stosb",
            inout("rcx") n => _, inout("rdi") dest => _, in("al") c as u8,
            options(nostack, preserves_flags));
    }
    dest
}

/// # Safety
/// Standard C `memcmp` contract.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: i < n and both ranges are valid for n bytes.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// # Safety
/// Standard C `bcmp` contract.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

/// The prebuilt `core` references the personality routine; with
/// `panic = "abort"` nothing ever unwinds, so it is never called.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    let mut out = crate::console::panic_writer();
    let _ = write!(out, "\nPANIC: {}", info.message());
    if let Some(loc) = info.location() {
        let _ = write!(out, "\n  at {}:{}:{}", loc.file(), loc.line(), loc.column());
    }
    let _ = write!(out, "\nrouterd stopped: fatal error\n");
    hal_x86::power::fail()
}

/// The heap. `ring` links against `alloc`; the node boxes what is large
/// (configurations, the dataplane, the WireGuard device, a staged set of
/// them beside the running one during an apply) and, with `[bgp]`, the
/// BGP service and its TCP endpoint (ARCHITECTURE.md "Memory" has the
/// figures). Nothing allocates per packet. Counted, so the console can say
/// how much is in use and the most ever used.
#[global_allocator]
static HEAP: CountedHeap = CountedHeap { heap: linked_list_allocator::LockedHeap::empty(), peak: AtomicUsize::new(0) };

/// Bytes of heap. Measured in QEMU (host/tests/image_evpn.rs): 344 KiB in
/// use at boot, 1.4 MiB with one EVPN peer running (the BGP service and
/// its TCP endpoint ≈ 1 MiB of it); 16 peers add 16 KiB each, and an apply
/// that replaces the BGP service holds two for a moment: under 3 MiB at
/// worst. An apply that would not fit is refused (`router::bgp_room`).
pub const HEAP_BYTES: usize = 4 * 1024 * 1024;
static mut HEAP_MEMORY: [u8; HEAP_BYTES] = [0; HEAP_BYTES];

/// Hands the heap its memory; call once, before anything allocates.
pub fn init_heap() {
    // SAFETY: called once at boot; the array is used for nothing else.
    unsafe {
        HEAP.heap.lock().init(core::ptr::addr_of_mut!(HEAP_MEMORY).cast::<u8>(), HEAP_BYTES);
    }
}

/// `linked_list_allocator`'s heap with the most bytes ever in use.
struct CountedHeap {
    heap: linked_list_allocator::LockedHeap,
    peak: AtomicUsize,
}

// SAFETY: every call goes to the inner allocator with the caller's
// arguments unchanged; the counter only reads its figures.
unsafe impl GlobalAlloc for CountedHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut heap = self.heap.lock();
        let p = heap.allocate_first_fit(layout).map_or(core::ptr::null_mut(), |a| a.as_ptr());
        self.peak.fetch_max(heap.used(), Ordering::Relaxed);
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: `ptr` came from `alloc` with this `layout` (GlobalAlloc's contract).
            unsafe { self.heap.lock().deallocate(p, layout) };
        }
    }
}

/// How the heap is used now, in bytes.
#[derive(Clone, Copy, Debug)]
pub struct HeapUsage {
    pub used: usize,
    /// The most ever in use since boot.
    pub peak: usize,
    pub size: usize,
}

/// `1483 KiB in use, at most 1470 KiB so far, of 4096 KiB`.
impl core::fmt::Display for HeapUsage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} KiB in use, at most {} KiB so far, of {} KiB", self.used / 1024, self.peak / 1024, self.size / 1024)
    }
}

pub fn heap_usage() -> HeapUsage {
    let used = HEAP.heap.lock().used();
    HeapUsage { used, peak: HEAP.peak.load(Ordering::Relaxed).max(used), size: HEAP_BYTES }
}

/// Blocks a fallible check may ask for at once ([`heap_holds`]).
pub const MAX_PROBE_BLOCKS: usize = 32;

/// Whether the heap can hand out all of `blocks` at once, now: each is
/// allocated in turn and everything is freed again. `alloc` panics when
/// the heap is exhausted (`Box::new` has no fallible form on stable), so
/// whatever is about to allocate much asks first and refuses cleanly. A
/// probe does not move the peak.
pub fn heap_holds(blocks: &[Layout]) -> bool {
    let mut heap = HEAP.heap.lock();
    let mut taken: heapless::Vec<(NonNull<u8>, Layout), MAX_PROBE_BLOCKS> = heapless::Vec::new();
    let mut all = blocks.len() <= MAX_PROBE_BLOCKS;
    for l in blocks.iter().take(MAX_PROBE_BLOCKS) {
        match heap.allocate_first_fit(*l) {
            Ok(p) => {
                // Capacity: at most MAX_PROBE_BLOCKS are taken.
                let _ = taken.push((p, *l));
            }
            Err(()) => {
                all = false;
                break;
            }
        }
    }
    for (p, l) in taken {
        // SAFETY: allocated just above with this layout, freed once.
        unsafe { heap.deallocate(p, l) };
    }
    all
}
