//! The image boots, reports its hardware and ends the way it was asked to.

use qemu::{Machine, MachineType, NicModel};
use routerd_e2e::{check, image, qemu, test_mac};
use std::time::Duration;

/// TCG on a loaded 2-core machine: boot takes well under a second, but leave
/// room for a busy CI host.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

fn two_nic_machine(kind: MachineType, model: NicModel, cmdline: &str) -> Machine {
    routerd_e2e::two_nic_machine(kind, model, 1, cmdline).0
}

fn boots_and_shuts_down(kind: MachineType, model: NicModel) {
    let m = two_nic_machine(kind, model, "routerd.test=shutdown");
    let mut vm = check(m.spawn());
    check(vm.wait_for("routerd 0.1.0 (build ", BOOT_TIMEOUT));
    for (n, name) in [(0u8, "lan0"), (1u8, "wan0")] {
        let line = format!("{name} mac {}", qemu::format_mac(test_mac(1, n)));
        check(vm.wait_for(&line, BOOT_TIMEOUT));
    }
    check(vm.wait_for("boot: ready in ", BOOT_TIMEOUT));
    let status = check(vm.wait_exit(BOOT_TIMEOUT));
    let console = vm.console();
    assert_eq!(status.code(), Some(qemu::EXIT_CLEAN), "not a clean shutdown ({status}); console:\n{console}");
    assert!(console.contains("mem: ") && console.contains("MiB usable"), "no memory map; console:\n{console}");
    assert!(console.contains("(2 NICs, "), "wrong NIC count; console:\n{console}");
    assert!(!console.contains("PANIC"), "panicked; console:\n{console}");
}

#[test]
fn pc_two_virtio_nics_boot_and_shut_down_cleanly() {
    boots_and_shuts_down(MachineType::Pc, NicModel::VirtioNet);
}

#[test]
fn q35_two_virtio_nics_boot_and_shut_down_cleanly() {
    boots_and_shuts_down(MachineType::Q35, NicModel::VirtioNet);
}

#[test]
fn q35_two_e1000e_nics_are_listed_with_their_macs() {
    boots_and_shuts_down(MachineType::Q35, NicModel::E1000e);
}

#[test]
fn panic_is_reported_on_the_console_and_as_failure() {
    let m = two_nic_machine(MachineType::Pc, NicModel::VirtioNet, "routerd.test=panic");
    let mut vm = check(m.spawn());
    check(vm.wait_for("PANIC: deliberate panic requested by routerd.test=panic", BOOT_TIMEOUT));
    check(vm.wait_for("  at firmware/image/src/main.rs:", BOOT_TIMEOUT));
    let status = check(vm.wait_exit(BOOT_TIMEOUT));
    assert_eq!(status.code(), Some(qemu::EXIT_PANIC), "panic did not report failure ({status}); console:\n{}", vm.console());
}

#[test]
fn boot_information_reaches_the_image() {
    let m = two_nic_machine(MachineType::Pc, NicModel::VirtioNet, "routerd.test=shutdown extra=1");
    let mut vm = check(m.spawn());
    check(vm.wait_for("boot: loader Pvh, command line \"routerd.test=shutdown extra=1\"", BOOT_TIMEOUT));
    check(vm.wait_exit(BOOT_TIMEOUT));
}

#[test]
fn grub_accepts_the_image_as_multiboot2() {
    let out = std::process::Command::new("grub-file").args(["--is-x86-multiboot2"]).arg(image()).status();
    match out {
        Ok(s) => assert!(s.success(), "grub-file rejects the image as multiboot2 ({s})"),
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: grub-file not available ({e}); apt-get install -y --no-install-recommends grub-common");
        }
        Err(e) => panic!("grub-file not available in CI ({e}); .ci/run must install grub-common"),
    }
}

#[test]
fn grub_boots_the_image_through_multiboot2() {
    let mut m = two_nic_machine(MachineType::Pc, NicModel::VirtioNet, "");
    let iso = m.run_dir.join("routerd.iso");
    if let Err(e) = qemu::grub_iso(image(), "routerd.test=shutdown via=grub", &iso) {
        if std::env::var_os("CI").is_none() {
            eprintln!("skipped: {e}");
            return;
        }
        panic!("{e}");
    }
    m.boot = qemu::Boot::GrubIso(iso);
    let mut vm = check(m.spawn());
    check(vm.wait_for("boot: loader Multiboot2, command line \"routerd.test=shutdown via=grub\"", BOOT_TIMEOUT));
    check(vm.wait_for("wan0 mac ", BOOT_TIMEOUT));
    let status = check(vm.wait_exit(BOOT_TIMEOUT));
    assert_eq!(status.code(), Some(qemu::EXIT_CLEAN), "GRUB boot did not shut down cleanly; console:\n{}", vm.console());
}

#[test]
fn entropy_is_health_checked_and_its_absence_refused() {
    let m = two_nic_machine(MachineType::Pc, NicModel::VirtioNet, "routerd.test=shutdown");
    let mut vm = check(m.spawn());
    check(vm.wait_for("passed its health check; ChaCha20 generator seeded", BOOT_TIMEOUT));
    check(vm.wait_exit(BOOT_TIMEOUT));

    // qemu64 has neither RDRAND nor RDSEED: the box must say it will not make keys.
    let mut m = two_nic_machine(MachineType::Pc, NicModel::VirtioNet, "routerd.test=shutdown");
    m.cpu = "qemu64".into();
    let mut vm = check(m.spawn());
    check(vm.wait_for("entropy: NoSource; the box will refuse to generate keys", BOOT_TIMEOUT));
    let status = check(vm.wait_exit(BOOT_TIMEOUT));
    assert_eq!(status.code(), Some(qemu::EXIT_CLEAN), "console:\n{}", vm.console());

    // The same CPU with a virtio-rng device: the device's bytes, checked,
    // seed the generator.
    let mut m = two_nic_machine(MachineType::Q35, NicModel::VirtioNet, "routerd.test=shutdown");
    m.cpu = "qemu64".into();
    m.devices.push("virtio-rng-pci".into());
    let mut vm = check(m.spawn());
    check(vm.wait_for("virtio-rng delivered 32 bytes", BOOT_TIMEOUT));
    check(vm.wait_for("entropy: VirtioRng passed its health check", BOOT_TIMEOUT));
    check(vm.wait_exit(BOOT_TIMEOUT));
}

#[test]
fn without_the_debug_exit_device_shutdown_powers_off_through_acpi() {
    for kind in [MachineType::Pc, MachineType::Q35] {
        let mut m = two_nic_machine(kind, NicModel::VirtioNet, "routerd.test=shutdown");
        m.debug_exit = false;
        let mut vm = check(m.spawn());
        check(vm.wait_for("power: ACPI soft off through PM1a", BOOT_TIMEOUT));
        let status = check(vm.wait_exit(BOOT_TIMEOUT));
        // QEMU exits 0 on an ACPI power-off (a triple fault would too, but
        // then the console would not end with the shutdown line and no panic).
        assert_eq!(status.code(), Some(0), "{kind:?}: console:\n{}", vm.console());
        let console = vm.console();
        assert!(console.contains("shutdown requested") && !console.contains("PANIC"), "{console}");
    }
}
