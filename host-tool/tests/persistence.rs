//! The box remembers: the real image in QEMU with a blank disk on each
//! controller it drives (virtio-blk, AHCI, NVMe), provisioned by the real
//! `routerctl` over its serial socket.
//!
//! Checked: without a store `status` and `doctor` say the configuration will
//! not survive a reboot and list the disk; `storage init` without `--yes` is
//! refused; with it the box makes its ROUTERD-STATE partition (Linux's
//! `sfdisk` reads it, when installed); an apply is saved before its answer
//! comes back; QEMU is then killed — a power cut, with the disk's write
//! cache volatile (`cache=writeback`) — and a new QEMU on the same disk
//! comes back with the same configuration, the same WireGuard public key
//! and the next boot count, without any routerctl; a claim added and cut
//! again comes back too; `storage init` on the disk in use is refused
//! without `--force`.

mod common;

use std::path::Path;

use common::{onprem_config, routerctl, status, Scratch};
use routerd_e2e::qemu::{DiskBus, MachineType, NicModel, Vm};
use routerd_e2e::two_nic_machine;
use serde_json::Value;

/// A box on `disk`; returns it with its serial port spec.
fn boot(disk: &Path, bus: DiskBus, id: u8, expect: &str) -> (Vm, String) {
    let (mut machine, _links) = two_nic_machine(MachineType::Pc, NicModel::VirtioNet, id, "");
    machine.disks.push(disk.to_path_buf());
    machine.disk_bus = bus;
    common::boot(machine, expect)
}

#[test]
fn configuration_and_keys_survive_a_power_cut_on_virtio_blk() {
    survives_power_cuts(DiskBus::Virtio, 0x61);
}

#[test]
fn configuration_and_keys_survive_a_power_cut_on_ahci() {
    survives_power_cuts(DiskBus::Ahci, 0x64);
}

#[test]
fn configuration_and_keys_survive_a_power_cut_on_nvme() {
    survives_power_cuts(DiskBus::Nvme, 0x67);
}

fn survives_power_cuts(bus: DiskBus, id: u8) {
    let name = bus.disk_name(0);
    let name = name.as_str();
    let scratch = Scratch::new(&format!("persist-{name}"));
    let disk = scratch.disk();
    let file = scratch.file("kept.toml", &onprem_config("kept", Some(25), &["10.20.0.50/32", "10.20.0.51/32"]));
    let file = file.as_str();

    // 1. A blank disk: nothing is kept, and the box says so.
    let (mut vm, port) = boot(disk, bus, id, "not forwarding: no configuration yet");
    let st = status(&port);
    assert_eq!(st["storage"]["disks"], serde_json::json!([name]));
    assert_eq!(st["storage"]["disk"], "");
    let text = String::from_utf8_lossy(&routerctl(&["status", "--port", &port]).stdout).to_string();
    assert!(text.contains("storage: NONE") && text.contains(name), "{text}");
    let out = routerctl(&["storage", "init", "--disk", name, "--port", &port]);
    assert_eq!(out.status.code(), Some(2), "no --yes: refused here, nothing sent");
    let out = routerctl(&["storage", "init", "--disk", "vdz", "--yes", "--port", &port]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains(name), "the refusal lists the disks");

    // 2. storage init, then an apply: saved before the answer.
    assert!(routerctl(&["storage", "init", "--disk", name, "--yes", "--port", &port]).status.success());
    let out = routerctl(&["apply", file, "--port", &port, "--yes"]);
    assert!(out.status.success());
    let st = status(&port);
    let key = st["tunnel"]["public_key"].as_str().unwrap().to_string();
    assert_eq!(st["storage"]["disk"], name);
    assert_eq!(st["storage"]["generation"], 1);
    assert!(st["storage"]["saves"].as_u64().unwrap() >= 2, "init and apply saved: {}", st["storage"]);
    let again = routerctl(&["storage", "init", "--disk", name, "--yes", "--port", &port]);
    assert_ne!(again.status.code(), Some(0), "the disk in use is not re-made without --force");
    if let Ok(out) = std::process::Command::new("sfdisk").arg("--json").arg(disk).output() {
        let table = String::from_utf8_lossy(&out.stdout);
        eprintln!("sfdisk --json:\n{table}");
        if out.status.success() {
            assert!(table.contains("ROUTERD-STATE"), "Linux reads the partition: {table}");
        }
    }

    // 3. Power cut right after the answer; a new QEMU on the same disk.
    vm.kill();
    drop(vm);
    let (vm2, port2) = boot(disk, bus, id + 1, &format!("storage: {name}: restored configuration generation 1"));
    let st = status(&port2);
    assert_eq!(st["configured"], true, "configured without routerctl");
    assert_eq!(st["device"], "kept");
    assert_eq!(st["tunnel"]["public_key"], key.as_str(), "the same WireGuard identity: the other site needs nothing");
    assert_eq!(st["storage"]["boots"], 1);
    assert_eq!(st["claims"][0]["address"], "10.20.0.50");

    // 4. A claim added, cut again at once: it is there after the boot.
    assert!(routerctl(&["claims", "add", "10.20.0.51", "--owner", "cloud", "--port", &port2]).status.success());
    let mut vm2 = vm2;
    vm2.kill();
    drop(vm2);
    let (vm3, port3) = boot(disk, bus, id + 2, &format!("storage: {name}: restored configuration generation 2"));
    let st = status(&port3);
    assert_eq!(st["claims"].as_array().unwrap().len(), 2);
    assert_eq!(st["tunnel"]["public_key"], key.as_str());
    assert_eq!(st["storage"]["boots"], 2);
    let doc: Value = serde_json::from_slice(&routerctl(&["doctor", "hybrid", "--port", &port3, "--json"]).stdout).unwrap();
    let storage = doc["checks"].as_array().unwrap().iter().find(|c| c["id"] == "storage").cloned().unwrap();
    assert_eq!(storage["result"], "pass", "{storage}");
    drop(vm3);
}
