//! Ending a run: QEMU's isa-debug-exit, reset, and halt.
//!
//! `shutdown` ends QEMU through the debug-exit device when it is present
//! (tests read its status), and otherwise enters ACPI S5 (soft off) with the
//! PM1 control ports and sleep types from the firmware's tables; without
//! those it halts with the CPU idle.

use x86_64::instructions::port::Port;

/// The I/O port of QEMU's `isa-debug-exit` device (`iobase=0xf4,iosize=4`).
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Status written to the debug-exit port; QEMU then exits with `(code << 1) | 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    /// A clean shutdown: QEMU exits with status 33.
    Success = 0x10,
    /// A panic or fatal error: QEMU exits with status 35.
    Failure = 0x11,
}

impl ExitCode {
    /// The exit status QEMU reports for this code.
    pub const fn qemu_status(self) -> i32 {
        ((self as i32) << 1) | 1
    }
}

/// Asks QEMU to exit. Returns only when there is no debug-exit device.
pub fn exit_qemu(code: ExitCode) {
    let mut port: Port<u32> = Port::new(DEBUG_EXIT_PORT);
    // SAFETY: port 0xf4 is the debug-exit device under QEMU; on hardware
    // without it the write goes nowhere (the port is unassigned on PCs).
    unsafe { port.write(code as u32) };
}

/// Stops the CPU for good.
pub fn halt() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// Resets the machine: PCI reset control register, then the keyboard
/// controller, then a triple fault.
pub fn reset() -> ! {
    // SAFETY: 0xCF9 (reset control) and 0x64 (8042 command) are the
    // documented reset paths on PC chipsets; writing them only resets.
    unsafe {
        Port::<u8>::new(0xCF9).write(0x06);
        for _ in 0..1000 {
            core::hint::spin_loop();
        }
        Port::<u8>::new(0x64).write(0xFE);
    }
    // A zero-length IDT turns the next exception into a triple fault.
    let empty = x86_64::structures::DescriptorTablePointer { limit: 0, base: x86_64::VirtAddr::new(0) };
    // SAFETY: loading an empty IDT and trapping is the intended way to reset.
    unsafe {
        x86_64::instructions::tables::lidt(&empty);
        core::arch::asm!("int3");
    }
    halt()
}

/// Enters ACPI S5: `SLP_TYPx | SLP_EN` to the PM1 control register(s).
pub fn soft_off(s5: &crate::acpi::SoftOff) {
    const SLP_EN: u16 = 1 << 13;
    // SAFETY: the ports come from the FADT, which defines them as the PM1
    // control blocks; writing SLP_EN there is how ACPI powers the box off.
    unsafe {
        Port::<u16>::new(s5.pm1a_control).write((s5.slp_typ_a << 10) | SLP_EN);
        if let Some(b) = s5.pm1b_control {
            Port::<u16>::new(b).write((s5.slp_typ_b << 10) | SLP_EN);
        }
    }
    // Power-off takes a moment to land.
    for _ in 0..10_000_000 {
        core::hint::spin_loop();
    }
}

/// Ends the run cleanly: QEMU's debug-exit with success when present, else
/// ACPI soft off, else halt.
pub fn shutdown(s5: Option<&crate::acpi::SoftOff>) -> ! {
    exit_qemu(ExitCode::Success);
    if let Some(s5) = s5 {
        soft_off(s5);
    }
    halt()
}

/// Ends the run with failure: QEMU exits with failure; hardware resets.
pub fn fail() -> ! {
    exit_qemu(ExitCode::Failure);
    reset()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_statuses_are_distinct_and_nonzero() {
        assert_eq!(ExitCode::Success.qemu_status(), 33);
        assert_eq!(ExitCode::Failure.qemu_status(), 35);
    }
}
