//! x86_64 hardware layer for the routerd image.
//!
//! Small safe interfaces over the machine: the COM1 console, PCI enumeration,
//! the TSC clock, power control, the loaders' boot information and the DMA
//! memory virtio devices need. Everything `unsafe` in the image lives here or
//! in the image's boot glue; nothing here knows about routing.
//!
//! This crate only means something on bare metal. It still compiles on the
//! host (the workspace builds it), and its pure parts (boot information
//! parsing, PCI class names) are unit-tested there.
#![no_std]

pub mod acpi;
pub mod blk;
pub mod bootinfo;
pub mod clock;
pub mod dma;
pub mod entropy;
pub mod mmio;
pub mod nic;
pub mod paging;
pub mod pci;
pub mod power;
pub mod rng;
pub mod rtc;
pub mod serial;
