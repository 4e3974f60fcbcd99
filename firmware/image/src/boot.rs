//! Boot glue: the first instructions the image runs.
//!
//! Both loaders we support leave the CPU in 32-bit protected mode with paging
//! off and a pointer to their boot information in `ebx`:
//! - QEMU `-kernel` finds `_start32` through the PVH ELF note
//!   (`XEN_ELFNOTE_PHYS32_ENTRY`); `ebx` points at an `hvm_start_info`.
//! - GRUB finds the multiboot2 header; `eax` holds the multiboot2 magic and
//!   `ebx` the boot information structure.
//!
//! `_start32` zeroes `.bss`, identity-maps the first 64 GiB with 2 MiB pages
//! (RAM, the PCI hole and the usual 64-bit BAR window) and, where the CPU has
//! 1 GiB pages, the rest of the first TiB uncached (UEFI firmware such as
//! OVMF puts 64-bit BARs high: 896 GiB with 40 address bits; windows beyond
//! are mapped when a driver asks, `hal_x86::paging`), enters long mode,
//! enables SSE and, where the CPU has them, XSAVE with AVX state in XCR0 (the
//! crypto crates query CPU features once and cache the answer, so this must
//! happen before any Rust code runs), and calls [`crate::routerd_main`] with
//! the loader's magic and info pointer. Interrupts stay off for good: the
//! dataplane is polled.

use core::arch::global_asm;

/// TSC value read by the very first instructions; boot time is measured from it.
/// It lives in `.data`, not `.bss`, because the boot code clears `.bss` after
/// recording it.
#[no_mangle]
#[link_section = ".data.boot_tsc"]
pub static mut BOOT_TSC: u64 = 0;

/// 1 GiB regions identity-mapped with 2 MiB pages on every CPU.
pub const IDENTITY_MAPPED_GIB: u64 = 64;
/// 1 GiB regions identity-mapped when the CPU has 1 GiB pages (two PDPTs).
pub const IDENTITY_MAPPED_GIB_LARGE: u32 = 1024;

/// How many GiB the boot code identity-mapped: [`IDENTITY_MAPPED_GIB`], or
/// [`IDENTITY_MAPPED_GIB_LARGE`] when the CPU has 1 GiB pages. Written once
/// by `_start32` (after `.bss` is cleared, hence `.data`).
#[no_mangle]
#[link_section = ".data.boot_tsc"]
pub static mut BOOT_MAPPED_GIB: u32 = IDENTITY_MAPPED_GIB as u32;

/// The identity-mapped range `[0, identity_mapped_bytes())`.
pub fn identity_mapped_bytes() -> u64 {
    // SAFETY: written once by the boot code before any Rust runs; read-only after.
    let gib = unsafe { core::ptr::addr_of!(BOOT_MAPPED_GIB).read() };
    u64::from(gib) << 30
}

global_asm!(
    r#"
    .section .multiboot2, "a"
    .balign 8
mb2_header_start:
    .long 0xE85250D6
    .long 0
    .long mb2_header_end - mb2_header_start
    .long 0x100000000 - (0xE85250D6 + (mb2_header_end - mb2_header_start))
    .balign 8
    /* entry address tag: the 32-bit entry point */
    .short 3
    .short 0
    .long 12
    .long _start32
    .balign 8
    /* end tag */
    .short 0
    .short 0
    .long 8
mb2_header_end:

    .section .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .balign 4
    .long _start32
    .balign 4

    .section .boot.text, "ax"
    .code32
    .global _start32
_start32:
    cli
    cld
    mov %eax, %ebp
    mov %ebx, %esi
    rdtsc
    mov %eax, BOOT_TSC
    mov %edx, BOOT_TSC + 4

    /* Zero .bss (page tables and the stack live there); both ends are
       8-byte aligned, so dwords cover it exactly. */
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    shr $2, %ecx
    xor %eax, %eax
    rep stosl

    mov $boot_stack_top, %esp

    /* PML4[0] -> PDPT */
    mov $boot_pdpt, %eax
    or $3, %eax
    mov %eax, boot_pml4

    /* PDPT[i] -> PD page i */
    xor %ecx, %ecx
1:
    mov %ecx, %eax
    shl $12, %eax
    add $boot_pd, %eax
    or $3, %eax
    mov %eax, boot_pdpt(,%ecx,8)
    inc %ecx
    cmp ${gib}, %ecx
    jne 1b

    /* PD entry i maps i * 2 MiB: present, writable, 2 MiB page. */
    xor %ecx, %ecx
2:
    mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, boot_pd(,%ecx,8)
    mov %ecx, %eax
    shr $11, %eax
    mov %eax, boot_pd + 4(,%ecx,8)
    inc %ecx
    cmp ${gib} * 512, %ecx
    jne 2b

    /* With 1 GiB pages (CPUID 0x80000001 EDX bit 26), the rest of the
       first TiB: PDPT entries gib..511 and, through PML4[1], the PDPT
       right after it (boot_pdpt_hi), each i GiB, present, writable,
       uncached (PWT|PCD: device memory), page size. */
    mov $0x80000000, %eax
    cpuid
    cmp $0x80000001, %eax
    jb 8f
    mov $0x80000001, %eax
    cpuid
    bt $26, %edx
    jnc 8f
    mov $boot_pdpt_hi, %eax
    or $3, %eax
    mov %eax, boot_pml4 + 8
    mov ${gib}, %ecx
6:
    mov %ecx, %eax
    shl $30, %eax
    or $0x9b, %eax
    mov %eax, boot_pdpt(,%ecx,8)
    mov %ecx, %eax
    shr $2, %eax
    mov %eax, boot_pdpt + 4(,%ecx,8)
    inc %ecx
    cmp ${large}, %ecx
    jne 6b
    movl ${large}, BOOT_MAPPED_GIB

8:

    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $(1 << 5), %eax
    mov %eax, %cr4
    mov $0xC0000080, %ecx
    rdmsr
    or $(1 << 8), %eax
    wrmsr
    mov %cr0, %eax
    or $((1 << 31) | 1), %eax
    mov %eax, %cr0

    lgdt boot_gdt_ptr
    pushl $0x08
    pushl $_start64
    lret

    .code64
_start64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    mov $boot_stack_top, %rsp

    /* SSE: CR0.EM off, CR0.MP on, CR4.OSFXSR and OSXMMEXCPT on. */
    mov %cr0, %rax
    and $~(1 << 2), %rax
    or $(1 << 1), %rax
    mov %rax, %cr0
    mov %cr4, %rax
    or $((1 << 9) | (1 << 10)), %rax
    mov %rax, %cr4

    /* XSAVE and AVX state, when the CPU has them. */
    mov $1, %eax
    cpuid
    bt $26, %ecx
    jnc 4f
    mov %ecx, %r8d
    mov %cr4, %rax
    or $(1 << 18), %rax
    mov %rax, %cr4
    mov $3, %eax
    bt $28, %r8d
    jnc 3f
    or $4, %eax
3:
    xor %edx, %edx
    xor %ecx, %ecx
    xsetbv
4:
    /* The upper halves of registers are undefined after the mode switch. */
    mov %ebp, %edi
    mov %esi, %esi
    xor %ebp, %ebp
    call routerd_main
5:
    hlt
    jmp 5b

    .section .rodata.boot_gdt, "a"
    .balign 16
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF
    .quad 0x00CF92000000FFFF
boot_gdt_end:
    .balign 4
boot_gdt_ptr:
    .short boot_gdt_end - boot_gdt - 1
    .long boot_gdt

    .section .bss.boot, "aw", @nobits
    .balign 4096
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
    /* Must follow boot_pdpt: the loop above indexes past its end into it. */
boot_pdpt_hi:
    .skip 4096
boot_pd:
    .skip 4096 * {gib}
boot_stack:
    .skip {stack}
boot_stack_top:
"#,
    gib = const IDENTITY_MAPPED_GIB,
    large = const IDENTITY_MAPPED_GIB_LARGE,
    stack = const STACK_BYTES,
    options(att_syntax)
);

/// The one stack the image runs on (no interrupts, no threads).
pub const STACK_BYTES: usize = 1024 * 1024;
