//! The routerd packet pipeline (sans-I/O, `no_std`).
//!
//! The caller hands in `(now, port, frame)` and gets back what to transmit
//! where. Nothing here knows about hardware, clocks or allocation.
#![no_std]
