//! The serial provisioning protocol: one cable, two audiences.
//!
//! With no session open, the box's serial port is a readable console. A
//! session is a sequence of frames that a human's terminal never produces:
//! every frame is delimited by `0x00` bytes (which console text never
//! contains), COBS-encoded so the payload has no `0x00` of its own, and ends
//! with a CRC-32 of the payload. A receiver that sees garbage, a cut cable or
//! a human typing simply fails to decode, counts it, and resynchronises at
//! the next `0x00`.
//!
//! This crate is `no_std` and allocation-free; both the image and
//! `routerctl` use it.
#![no_std]

extern crate alloc;

pub mod firmware;
pub mod frame;
pub mod message;
pub mod session;

pub use message::*;
