//! The COM1 console (16550 UART at 0x3F8, 115200 8N1).
//!
//! One cable, two audiences: today the port carries the human-readable boot
//! log; the provisioning protocol will share it. Writes never block forever:
//! when the far end does not drain (no cable, flow control stuck), bytes are
//! dropped after a bounded wait rather than hanging the dataplane.

use core::fmt;
use uart_16550::backend::PioBackend;
use uart_16550::{Config, Uart16550};

/// I/O port base of COM1.
pub const COM1_PORT: u16 = 0x3F8;

/// How many times to poll a full transmitter before dropping a byte.
const TX_SPIN_LIMIT: u32 = 100_000;

/// The console port.
pub struct Serial {
    uart: Uart16550<PioBackend>,
    /// Bytes dropped because the transmitter stayed full.
    pub dropped: u64,
}

impl Serial {
    /// Initialises COM1.
    ///
    /// # Safety
    /// The caller must be the only user of I/O ports 0x3F8..0x3FF.
    pub unsafe fn com1() -> Option<Serial> {
        // SAFETY: the caller guarantees exclusive access to COM1's ports.
        let mut uart = unsafe { Uart16550::new_port(COM1_PORT) }.ok()?;
        let mut config = Config::DEFAULT;
        config.baud_rate = uart_16550::BaudRate::Baud115200;
        uart.init(config).ok()?;
        Some(Serial { uart, dropped: 0 })
    }

    /// Writes all of `bytes`, giving up on a byte the transmitter will not take.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        let mut spins = 0u32;
        while !rest.is_empty() {
            let n = self.uart.send_bytes(rest);
            if n > 0 {
                rest = rest.get(n..).unwrap_or(&[]);
                spins = 0;
            } else if spins >= TX_SPIN_LIMIT {
                self.dropped += rest.len() as u64;
                return;
            } else {
                spins += 1;
                core::hint::spin_loop();
            }
        }
    }

    /// Writes what the transmitter takes now, without waiting: up to its
    /// FIFO's 16 bytes, or nothing while it is busy. Returns how many.
    pub fn try_write(&mut self, bytes: &[u8]) -> usize {
        self.uart.send_bytes(bytes)
    }

    /// Returns a received byte, if one is waiting.
    pub fn try_read(&mut self) -> Option<u8> {
        self.uart.try_receive_byte().ok()
    }
}

impl fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Terminals want CR LF; the log uses plain LF.
        for (i, line) in s.split('\n').enumerate() {
            if i > 0 {
                self.write_bytes(b"\r\n");
            }
            self.write_bytes(line.as_bytes());
        }
        Ok(())
    }
}
