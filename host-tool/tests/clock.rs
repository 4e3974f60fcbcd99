//! The box's wall clock: the real image in QEMU with its RTC set
//! (`-rtc base=…`), read by the real `routerctl`.
//!
//! Checked: with an RTC in 2031 and no disk, `status --json` reports a wall
//! clock within a minute of it, from `rtc`, and the text status prints it;
//! with a disk whose saved floor is later than the RTC (booted once at 2031,
//! `storage init`, apply, killed; booted again at 2029) the clock starts at
//! the floor + 30 min, not at the RTC — WireGuard's handshake timestamps
//! never go backwards across a reboot.

mod common;

use std::path::Path;

use common::{onprem_config, routerctl, status, Scratch};
use routerd_e2e::qemu::{MachineType, NicModel, Vm};
use routerd_e2e::two_nic_machine;

/// `date -u -d 2031-05-06T07:08:09 +%s`
const RTC_2031_MS: u64 = 1_935_817_689_000;
const MINUTE_MS: u64 = 60_000;

fn boot(rtc: &str, disk: Option<&Path>, id: u8, expect: &str) -> (Vm, String) {
    let (mut machine, _links) = two_nic_machine(MachineType::Pc, NicModel::VirtioNet, id, "");
    machine.rtc_base = Some(rtc.to_string());
    machine.disks.extend(disk.map(Path::to_path_buf));
    common::boot(machine, expect)
}

#[test]
fn the_wall_clock_comes_from_the_rtc() {
    let (vm, port) = boot("2031-05-06T07:08:09", None, 0x71, "clock: RTC 2031-05-06 07:08:");
    let st = status(&port);
    let wall = st["wall_clock_ms"].as_u64().unwrap_or_else(|| panic!("no wall clock in status: {st}"));
    assert!((RTC_2031_MS..RTC_2031_MS + MINUTE_MS).contains(&wall), "wall clock {wall} not within a minute of the RTC {RTC_2031_MS}");
    assert_eq!(st["clock_source"], "rtc");
    let text = String::from_utf8_lossy(&routerctl(&["status", "--port", &port]).stdout).to_string();
    assert!(text.contains("clock: 2031-05-06 07:0") && text.contains("(from rtc)"), "{text}");
    drop(vm);
}

#[test]
fn a_saved_floor_later_than_the_rtc_wins() {
    let scratch = Scratch::new("clock");
    let disk = scratch.disk();
    let file = scratch.file("clocked.toml", &onprem_config("clocked", None, &["10.20.0.50/32"]));

    // 1. At 2031: a store, a configuration, saved (the floor is ~2031-05-06 07:08).
    let (mut vm, port) = boot("2031-05-06T07:08:09", Some(disk), 0x72, "not forwarding: no configuration yet");
    assert!(routerctl(&["storage", "init", "--disk", "vda", "--yes", "--port", &port]).status.success());
    assert!(routerctl(&["apply", &file, "--port", &port, "--yes"]).status.success());
    let floor = status(&port)["wall_clock_ms"].as_u64().unwrap();
    vm.kill();
    drop(vm);

    // 2. The RTC now says 2029 (set back, or a replaced board): the floor
    // plus 30 minutes wins.
    let (vm, port) = boot("2029-01-01T00:00:00", Some(disk), 0x73, "behind the saved floor; starting at floor + 30 min");
    let st = status(&port);
    assert_eq!(st["configured"], true);
    assert_eq!(st["clock_source"], "saved floor");
    let wall = st["wall_clock_ms"].as_u64().unwrap();
    // The floor saved with the apply is a little before the status read.
    let start = floor + 30 * MINUTE_MS;
    assert!((start - MINUTE_MS..start + 2 * MINUTE_MS).contains(&wall), "wall clock {wall}: expected the floor {floor} + 30 min");
    assert!(wall > RTC_2031_MS, "never behind what the box already sent");
    drop(vm);
}
