//! x86_64 hardware layer.
#![no_std]
