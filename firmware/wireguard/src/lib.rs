//! WireGuard as a sans-I/O state machine (`no_std`).
//!
//! Time and randomness are parameters; datagrams and output buffers belong to
//! the caller.
#![no_std]
