//! QEMU launcher.
