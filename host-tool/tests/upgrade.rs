//! `routerctl upgrade` end to end: a disk made by `routerctl image build
//! --config`, booted by SeaBIOS and GRUB in QEMU (resets reboot the same
//! machine, as hardware does), upgraded over its serial socket.
//!
//! - A newer build (the same firmware re-stamped with another build name,
//!   which the firmware then reports) streams into slot B, the box reboots
//!   into it on trial, confirms itself, and stays on it across a reboot;
//!   configuration, generation and WireGuard key are unchanged.
//! - A test build that never confirms: GRUB tries it three times, then the
//!   box is back on slot A, says slot B failed, configuration intact.
//! - Power cuts (SIGKILL of QEMU) at random moments of upgrades: every boot
//!   after a cut runs a complete firmware — the old one, or the new one on
//!   trial or confirmed. `ROUTERD_SOAK_UPGRADE_CUTS=20` for the long run
//!   (3 by default), `ROUTERD_SOAK_SEED` to repeat one.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{routerctl, status, Scratch};
use routerd_e2e::qemu::{Boot, Firmware, Machine, MachineType, NicModel, Vm};
use routerd_e2e::{check, image, two_nic_machine};
use routerd_provision::firmware::restamp;
use routerd_provision::message::FirmwareIdentity;
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(90);

/// A raw image seeded with the on-prem configuration, in `s`'s directory.
fn seeded_disk(s: &Scratch) -> PathBuf {
    let cfg = s.file("onprem.toml", &common::onprem_config("upgrader", None, &["10.20.0.50/32"]));
    let disk = s.dir.join("box.img");
    let fw = image().to_str().unwrap().to_string();
    let out = routerctl(&["image", "build", "--firmware", &fw, "--config", &cfg, "-o", disk.to_str().unwrap(), "--force"]);
    assert!(out.status.success(), "image build");
    disk
}

/// The image re-stamped as another build (`flags`: a test build).
fn restamped(s: &Scratch, name: &str, build: &str, flags: u32) -> String {
    let mut elf = std::fs::read(image()).unwrap();
    assert!(restamp(&mut elf, "0.1.0", build, flags), "the image has a routerd note");
    let path = s.dir.join(name);
    std::fs::write(&path, elf).unwrap();
    path.to_str().unwrap().to_string()
}

fn machine(disk: &Path, id: u8) -> Machine {
    let (mut m, _links) = two_nic_machine(MachineType::Pc, NicModel::VirtioNet, id, "");
    m.boot = Boot::Disk(Firmware::Bios);
    m.disks.push(disk.to_path_buf());
    m.reboot = true;
    m
}

fn start(m: &Machine) -> (Vm, String) {
    let mut vm = check(m.spawn());
    check(vm.wait_for("boot: ready", BOOT));
    check(vm.wait_for("firmware: ", Duration::from_secs(30)));
    vm.release_serial();
    let port = format!("unix:{}", vm.serial_path().display());
    (vm, port)
}

fn slot<'a>(st: &'a Value, name: &str) -> &'a Value {
    st["firmware"]["slots"].as_array().and_then(|s| s.iter().find(|x| x["slot"] == name)).unwrap_or(&Value::Null)
}

fn upgrade(port: &str, file: &str, extra: &[&str]) -> (i32, Value, f64) {
    let t = Instant::now();
    let mut args = vec!["upgrade", file, "--port", port, "--yes", "--json", "--wait", "300"];
    args.extend_from_slice(extra);
    let out = routerctl(&args);
    let doc = serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), doc, t.elapsed().as_secs_f64())
}

#[test]
fn upgrade_to_a_newer_build_confirms_and_keeps_configuration_and_keys() {
    let s = Scratch::new("upgrade-newer");
    let disk = seeded_disk(&s);
    let newer = restamped(&s, "newer.elf", "upgrade-test-new", 0);
    let m = machine(&disk, 0x81);
    let (mut vm, port) = start(&m);
    let before = status(&port);
    assert_eq!(before["firmware"]["running"], "A", "{}", before["firmware"]);
    assert_eq!(slot(&before, "B")["state"], "standby");
    let key = before["tunnel"]["public_key"].clone();
    let generation = before["generation"].clone();
    assert_eq!(before["configured"], true);

    let (code, doc, secs) = upgrade(&port, &newer, &[]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["outcome"], "confirmed", "{doc}");
    eprintln!("upgrade to a newer build: confirmed {secs:.1} s after routerctl started");

    let after = status(&port);
    assert_eq!(after["firmware"]["running"], "B", "{}", after["firmware"]);
    assert_eq!(after["firmware"]["trial_tries_left"], Value::Null);
    assert_eq!(after["build"], "upgrade-test-new", "the box reports the new build");
    assert_eq!(slot(&after, "B")["identity"]["build"], "upgrade-test-new");
    assert_eq!(slot(&after, "B")["state"], "running");
    assert_eq!(slot(&after, "A")["state"], "standby", "the old firmware stays as the fallback");
    assert_eq!(slot(&after, "A")["identity"]["build"], before["build"]);
    assert_eq!(after["tunnel"]["public_key"], key, "the key is unchanged");
    assert_eq!(after["generation"], generation, "the configuration is unchanged");
    assert_eq!(after["device"], "upgrader");

    // Confirmed means for good: a reboot comes back on slot B, not on trial.
    assert!(routerctl(&["reboot", "--port", &port, "--yes"]).status.success());
    let t = Instant::now();
    let again = loop {
        std::thread::sleep(Duration::from_secs(2));
        let out = routerctl(&["status", "--port", &port, "--json"]);
        if out.status.success() {
            let v = serde_json::from_slice::<Value>(&out.stdout).unwrap()["status"].clone();
            if v["uptime_ms"].as_u64().unwrap_or(u64::MAX) < 60_000 && v["firmware"]["running"].is_string() {
                break v;
            }
        }
        assert!(t.elapsed() < BOOT, "the box did not come back after the reboot");
    };
    assert_eq!(again["firmware"]["running"], "B");
    assert_eq!(again["firmware"]["trial_tries_left"], Value::Null);
    vm.kill();
}

#[test]
fn an_upgrade_that_never_confirms_falls_back_to_the_old_slot() {
    let s = Scratch::new("upgrade-fallback");
    let disk = seeded_disk(&s);
    let bad = restamped(&s, "never.elf", "never-confirms", FirmwareIdentity::FLAG_NEVER_CONFIRMS);
    let m = machine(&disk, 0x82);
    let (mut vm, port) = start(&m);
    let before = status(&port);
    let key = before["tunnel"]["public_key"].clone();

    // routerctl refuses a test build unless told.
    let (code, _, _) = upgrade(&port, &bad, &[]);
    assert_eq!(code, 2);

    let (code, doc, secs) = upgrade(&port, &bad, &["--allow-test-build"]);
    assert_eq!(code, 1, "{doc}");
    assert_eq!(doc["outcome"], "rolled_back", "{doc}");
    eprintln!("an upgrade that never confirms: back on slot A {secs:.1} s after routerctl started");

    let after = status(&port);
    assert_eq!(after["firmware"]["running"], "A", "{}", after["firmware"]);
    assert_eq!(after["firmware"]["failed"], "B");
    assert_eq!(slot(&after, "B")["state"], "failed");
    assert_eq!(after["build"], before["build"], "the old firmware runs");
    assert_eq!(after["tunnel"]["public_key"], key);
    assert_eq!(after["generation"], before["generation"], "a firmware rollback leaves the configuration alone");
    assert_eq!(after["configured"], true);
    vm.kill();
}

/// The confirmation is a raw write of the env block's first sector; GRUB
/// reads the block through FAT. Both firmwares GRUB runs on agree.
#[test]
fn a_trial_boot_confirms_itself_in_grubs_env_block_on_bios_and_uefi() {
    let s = Scratch::new("upgrade-trial");
    let disk = seeded_disk(&s);
    for uefi in [false, true] {
        let boot = |disk: &Path| {
            let mut m = machine(disk, 0x84);
            if uefi {
                let vars = s.dir.join("OVMF_VARS.fd");
                std::fs::copy("/usr/share/OVMF/OVMF_VARS.fd", &vars).expect("OVMF (apt-get install -y --no-install-recommends ovmf)");
                m.boot = Boot::Disk(Firmware::Uefi { code: PathBuf::from("/usr/share/OVMF/OVMF_CODE.fd"), vars });
                m.machine = MachineType::Q35;
                m.memory_mib = 256;
            }
            check(m.spawn())
        };
        let fw = if uefi { "UEFI" } else { "BIOS" };
        common::set_env(&disk, "routerd_slot=A\nrouterd_trial=B\nrouterd_tries=3\n");
        let mut vm = boot(&disk);
        check(vm.wait_for("TRIAL boot of slot B", BOOT));
        check(vm.wait_for("slot B confirmed healthy", Duration::from_secs(60)));
        vm.kill();
        drop(vm);
        assert_eq!(common::env_vars(&disk), "routerd_slot=B\nrouterd_trial=\nrouterd_tries=0\nrouterd_failed=\n", "{fw}");
        // The next boot runs slot B, not on trial.
        let mut vm = boot(&disk);
        check(vm.wait_for("firmware: routerd", BOOT));
        let console = vm.console();
        vm.kill();
        assert!(console.contains("command line \"console=ttyS0,115200 routerd.slot=B\""), "{fw}: {console}");
        assert!(!console.contains("TRIAL"), "{fw}: {console}");
    }
}

/// xorshift64*: the cut moments, reproducible from the printed seed.
fn next(x: &mut u64) -> u64 {
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[test]
fn power_cuts_during_upgrades_always_leave_a_complete_firmware() {
    let cuts: u32 = std::env::var("ROUTERD_SOAK_UPGRADE_CUTS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let mut seed: u64 = std::env::var("ROUTERD_SOAK_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1
    });
    eprintln!("power cuts during upgrades: {cuts} cuts, ROUTERD_SOAK_SEED={seed}");
    let s = Scratch::new("upgrade-cuts");
    let disk = seeded_disk(&s);
    let builds = [restamped(&s, "one.elf", "cut-one", 0), restamped(&s, "two.elf", "cut-two", 0)];
    let (mut vm, mut port) = start(&machine(&disk, 0x83));
    let first = status(&port);
    let old_build = first["build"].as_str().unwrap_or_default().to_string();
    let key = first["tunnel"]["public_key"].clone();
    // How long one upgrade takes to hand over (the transfer and the commit;
    // it depends on how busy the machine is): learnt from the first round,
    // whose cut lands right after the hand-over (the reboot into the trial).
    // The cuts spread over it and a few seconds beyond (the trial boot).
    let mut span_ms: Option<u64> = None;
    let mut outcomes = std::collections::BTreeMap::<String, u32>::new();
    for cut in 0..cuts {
        // A trial from the previous round confirms first (an upgrade is
        // refused while the box is on trial).
        let t = Instant::now();
        while status(&port)["firmware"]["trial_tries_left"].is_number() {
            assert!(t.elapsed() < BOOT, "cut {cut}: the trial never ended");
            std::thread::sleep(Duration::from_millis(500));
        }
        let file = &builds[(cut % 2) as usize];
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_routerctl"))
            .args(["upgrade", file, "--port", &port, "--yes", "--no-wait"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let at = span_ms.map(|s| next(&mut seed) % s.max(1)).unwrap_or(u64::MAX);
        let mut handed_over = false;
        while started.elapsed() < Duration::from_millis(at) {
            if !handed_over && matches!(child.try_wait(), Ok(Some(_))) {
                // Handed over: the box resets into the trial. The first round
                // cuts here and learns how long a hand-over takes; later cuts
                // may land in the reboot, the trial boot or the confirmation.
                handed_over = true;
                let took = started.elapsed().as_millis() as u64 + 4_000;
                let first = span_ms.is_none();
                span_ms = Some(span_ms.unwrap_or(0).max(took));
                if first {
                    break;
                }
            }
            assert!(started.elapsed() < Duration::from_secs(600), "cut {cut}: the upgrade never handed over");
            std::thread::sleep(Duration::from_millis(20));
        }
        let at = started.elapsed().as_millis();
        vm.kill();
        let _ = child.kill();
        let _ = child.wait();
        // The next boot must run a whole firmware: the old one, or a new one
        // (on trial or confirmed).
        // A new machine (its own run directory: dropping the old Vm removes
        // the old one), the same disk.
        let mut next_vm = check(machine(&disk, 0x83).spawn());
        check(next_vm.wait_for("boot: ready", BOOT));
        check(next_vm.wait_for("firmware: ", Duration::from_secs(30)));
        let console = next_vm.console();
        // "firmware: routerd 0.1.0 (build X) from slot B (vda); slot A: …": the running one.
        let line = console
            .lines()
            .find_map(|l| l.split("firmware: routerd").nth(1))
            .and_then(|l| l.split(" from ").next())
            .unwrap_or_default()
            .to_string();
        let what = ["cut-one", "cut-two"]
            .iter()
            .find(|b| line.contains(*b))
            .map(|b| b.to_string())
            .or_else(|| line.contains(&old_build).then(|| "old".to_string()))
            .unwrap_or_else(|| panic!("cut {cut} at {at} ms: the box runs something unknown: {line}\n{console}"));
        let trial = console.contains("TRIAL boot");
        eprintln!("cut {cut} at {at} ms: boots {what}{}", if trial { " on trial" } else { "" });
        *outcomes.entry(format!("{what}{}", if trial { " (trial)" } else { "" })).or_default() += 1;
        next_vm.release_serial();
        port = format!("unix:{}", next_vm.serial_path().display());
        vm = next_vm;
        let st = status(&port);
        assert_eq!(st["configured"], true, "cut {cut}: the configuration runs");
        assert_eq!(st["tunnel"]["public_key"], key, "cut {cut}: the key is the same");
    }
    vm.kill();
    eprintln!("power cuts during upgrades: {outcomes:?}");
}
