//! Generations on the real image in QEMU with a disk, provisioned by the
//! real `routerctl` over its serial socket.
//!
//! Boot on a blank disk, `storage init`, apply A, apply B on trial with a
//! short `--confirm-seconds`, let it run out: the box runs A again (status,
//! `config get`), says so on its console, and the history shows the
//! revert. Apply B on trial again and cut the power before the deadline:
//! the next boot comes back on A. Then `rollback` to B. Then `reset`, a
//! power cut and a boot on the same disk: no configuration, no keys; the
//! next apply makes a new public key. Last, `routerd.reset=factory` on the
//! kernel command line erases the store before anything is restored.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{ok, onprem_config, routerctl, status, Scratch};
use routerd_e2e::check;
use routerd_e2e::qemu::{DiskBus, MachineType, NicModel, Vm};
use routerd_e2e::two_nic_machine;
use serde_json::Value;

fn history(port: &str) -> Value {
    serde_json::from_str::<Value>(&ok(&["config", "history", "--port", port, "--json"])).unwrap()
}

fn config(keepalive: u16) -> String {
    onprem_config("gens", Some(keepalive), &["10.20.0.50/32"])
}

/// A box on `disk`, booted with `cmdline`; returns it with its serial port.
fn boot(disk: &Path, id: u8, cmdline: &str, expect: &str) -> (Vm, String) {
    let (mut machine, _links) = two_nic_machine(MachineType::Pc, NicModel::VirtioNet, id, cmdline);
    machine.disks.push(disk.to_path_buf());
    machine.disk_bus = DiskBus::Virtio;
    common::boot(machine, expect)
}

fn keepalive(port: &str) -> String {
    ok(&["config", "get", "--port", port]).lines().find(|l| l.starts_with("persistent_keepalive")).unwrap_or("").to_string()
}

#[test]
fn generations_rollback_commit_confirm_and_factory_reset_on_the_image() {
    let scratch = Scratch::new("generations");
    let disk = scratch.disk();
    let (a, b) = (scratch.file("a.toml", &config(25)), scratch.file("b.toml", &config(20)));
    let (a, b) = (a.as_str(), b.as_str());

    // 1. A blank disk, named; A applied and confirmed by nature.
    let (mut vm, port) = boot(disk, 0x71, "", "not forwarding: no configuration yet");
    ok(&["storage", "init", "--disk", "vda", "--yes", "--port", &port]);
    ok(&["apply", a, "--yes", "--port", &port]);
    let key = status(&port)["tunnel"]["public_key"].as_str().unwrap().to_string();

    // 2. B on trial for 5 s, not confirmed: the box goes back to A by itself.
    let out = ok(&["apply", b, "--yes", "--confirm-seconds", "5", "--port", &port]);
    assert!(out.contains("on trial: generation 2 reverts to 1"), "{out}");
    let st = status(&port);
    assert_eq!(st["pending_confirm"]["generation"], 2);
    assert_eq!(keepalive(&port), "persistent_keepalive = 20");
    let mark = vm.console().len();
    check(vm.attach_serial(Duration::from_secs(5)));
    check(vm.wait_for_after(
        mark,
        "config: generation 2 was not confirmed within 5 s; reverted to generation 1 (now generation 3)",
        Duration::from_secs(30),
    ));
    vm.release_serial();
    let st = status(&port);
    assert_eq!(st["generation"], 3);
    assert_eq!(st["pending_confirm"], Value::Null);
    assert_eq!(st["storage"]["generation"], 3, "the revert was saved");
    assert_eq!(keepalive(&port), "persistent_keepalive = 25", "A runs again");
    let h = history(&port);
    let what: Vec<&str> = h["generations"].as_array().unwrap().iter().map(|g| g["what"].as_str().unwrap()).collect();
    assert_eq!(what, ["apply", "apply", "revert of 2 (not confirmed)"]);
    assert_eq!(routerctl(&["confirm", "--port", &port]).status.code(), Some(1), "nothing left to confirm");

    // 3. B on trial again; the power fails before the deadline: A comes back.
    ok(&["apply", b, "--yes", "--confirm", "10", "--port", &port]);
    assert_eq!(keepalive(&port), "persistent_keepalive = 20");
    vm.kill();
    drop(vm);
    let (vm, port) = boot(disk, 0x72, "", "was waiting for confirmation when the box restarted; restored generation 3 instead");
    let st = status(&port);
    assert_eq!(st["configured"], true);
    assert_eq!(st["generation"], 5);
    assert_eq!(st["tunnel"]["public_key"], key.as_str());
    assert_eq!(keepalive(&port), "persistent_keepalive = 25", "back on the confirmed configuration");
    let last = history(&port)["generations"].as_array().unwrap().last().cloned().unwrap();
    assert_eq!(last["what"], "revert of 4 (not confirmed before a restart)");

    // 4. Rollback to generation 4 (B): a new generation, keys unchanged.
    let out = ok(&["rollback", "4", "--yes", "--port", &port]);
    assert!(out.contains("  ~ peers cloud") && out.contains("as generation 6"), "{out}");
    assert_eq!(keepalive(&port), "persistent_keepalive = 20");
    assert_eq!(status(&port)["tunnel"]["public_key"], key.as_str());
    let toml = ok(&["config", "get", "--generation", "1", "--port", &port]);
    assert!(toml.contains("persistent_keepalive = 25"), "{toml}");

    // 5. Factory reset, then a power cut: nothing comes back.
    let out = routerctl(&["reset", "--yes", "--device", "other", "--port", &port]);
    assert_eq!(out.status.code(), Some(1), "the wrong name: nothing sent");
    let out = ok(&["reset", "--yes", "--device", "gens", "--port", &port]);
    assert!(out.contains("gens: factory reset") && out.contains("erased by a factory reset"), "{out}");
    let mut vm = vm;
    vm.kill();
    drop(vm);
    let (vm, port) = boot(disk, 0x73, "", "storage: vda: empty store (nothing saved yet)");
    let st = status(&port);
    assert_eq!(st["configured"], false);
    assert_eq!(st["storage"]["disk"], "vda", "the partition stays; only the store was erased");
    let keys: Value = serde_json::from_str(&ok(&["key", "show", "--json", "--port", &port])).unwrap();
    assert!(keys["keys"].as_array().unwrap().is_empty(), "no key restored: {keys}");
    assert!(history(&port)["generations"].as_array().unwrap().is_empty());
    ok(&["apply", a, "--yes", "--port", &port]);
    let st = status(&port);
    assert_ne!(st["tunnel"]["public_key"], key.as_str(), "a new WireGuard identity");
    assert_eq!(st["generation"], 1);

    // 6. routerd.reset=factory erases the store at boot, before restoring.
    let mut vm = vm;
    vm.kill();
    drop(vm);
    let (mut vm, port) = boot(disk, 0x74, "routerd.reset=factory", "FACTORY RESET by routerd.reset=factory");
    assert!(vm.console().contains("FACTORY RESET requested by routerd.reset=factory"));
    let st = status(&port);
    assert_eq!(st["configured"], false);
    vm.kill();
}
