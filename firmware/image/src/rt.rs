//! The runtime pieces a `no_std` binary on the linux-gnu target must bring:
//! memory primitives (the prebuilt `compiler_builtins` lacks them), the
//! unwinding personality the prebuilt `core` references, and the panic
//! handler.
//!
//! The memory primitives use `rep movsb`/`rep stosb` in inline assembly so
//! the compiler cannot turn them back into calls to themselves; on CPUs with
//! ERMS (every x86_64 from the last decade) these are also the fast path.

use core::arch::asm;
use core::fmt::Write;
use core::panic::PanicInfo;

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

/// The heap: `ring` links against `alloc` (its crypto paths used here do not
/// allocate per packet); nothing in the dataplane allocates.
#[global_allocator]
static HEAP: linked_list_allocator::LockedHeap = linked_list_allocator::LockedHeap::empty();

/// Bytes of heap.
const HEAP_BYTES: usize = 4 * 1024 * 1024;
static mut HEAP_MEMORY: [u8; HEAP_BYTES] = [0; HEAP_BYTES];

/// Hands the heap its memory; call once, before anything allocates.
pub fn init_heap() {
    // SAFETY: called once at boot; the array is used for nothing else.
    unsafe {
        HEAP.lock().init(core::ptr::addr_of_mut!(HEAP_MEMORY).cast::<u8>(), HEAP_BYTES);
    }
}
