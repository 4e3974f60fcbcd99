//! Power cuts and garbage against the real image's store: QEMU is SIGKILLed
//! at random moments while `routerctl apply` is being written, with the
//! disk's write cache volatile (`cache=writeback`), and the state partition
//! is filled with garbage or with a record from a newer format.
//!
//! After every cut the box must come back running either the configuration
//! it last acknowledged or the one that was in flight — never neither, never
//! a corrupt one — with the same WireGuard identity. Garbage must be refused
//! with a clear console line, without a panic, and the box must still answer
//! provisioning.
//!
//! `ROUTERD_SOAK_CUTS=100` runs the long soak by hand (CI runs a few);
//! `ROUTERD_SOAK_SEED` repeats a run.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{onprem_config, routerctl, status, Scratch};
use routerd_e2e::qemu::{MachineType, NicModel, Vm};
use routerd_e2e::two_nic_machine;
use routerd_storage::testing::SplitMix64;
use serde_json::Value;

/// Cuts in a CI run; `ROUTERD_SOAK_CUTS` overrides.
const CI_CUTS: usize = 10;

/// The configuration of generation `n`: only the device name tells them apart.
fn config(n: usize) -> String {
    onprem_config(&format!("cut{n}"), None, &["10.20.0.50/32"])
}

struct Lab {
    scratch: Scratch,
    boots: u8,
}

impl Lab {
    fn new(what: &str) -> Lab {
        Lab { scratch: Scratch::new(what), boots: 0 }
    }

    /// A box on the disk, once its console printed `expect`.
    fn boot(&mut self, expect: &str) -> (Vm, String) {
        self.boots = self.boots.wrapping_add(1);
        let (mut machine, _links) = two_nic_machine(MachineType::Pc, NicModel::VirtioNet, 0x70u8.wrapping_add(self.boots % 64), "");
        machine.disks.push(self.scratch.disk.clone());
        common::boot(machine, expect)
    }

    fn file(&self, n: usize) -> String {
        self.scratch.file(&format!("cut{n}.toml"), &config(n))
    }

    /// Overwrites the state partition (as `status` located it) with `bytes`
    /// from its start.
    fn overwrite_partition(&self, first_lba: u64, bytes: &[u8]) {
        let mut f = std::fs::OpenOptions::new().write(true).open(&self.scratch.disk).unwrap();
        f.seek(SeekFrom::Start(first_lba * 512)).unwrap();
        f.write_all(bytes).unwrap();
        f.sync_all().unwrap();
    }

    fn read_disk(&self) -> Vec<u8> {
        let mut v = Vec::new();
        std::fs::File::open(&self.scratch.disk).unwrap().read_to_end(&mut v).unwrap();
        v
    }
}

fn device(st: &Value) -> String {
    st["device"].as_str().unwrap_or("").to_string()
}

#[test]
fn power_cuts_during_applies_never_lose_the_configuration() {
    let cuts = std::env::var("ROUTERD_SOAK_CUTS").ok().and_then(|v| v.parse().ok()).unwrap_or(CI_CUTS);
    let seed = std::env::var("ROUTERD_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64);
    eprintln!("power cuts: {cuts}, seed {seed} (ROUTERD_SOAK_SEED={seed} repeats this run)");
    let mut rng = SplitMix64::new(seed);
    let mut lab = Lab::new("power-cut");

    let (mut vm, mut port) = lab.boot("not forwarding: no configuration yet");
    assert!(routerctl(&["storage", "init", "--disk", "vda", "--yes", "--port", &port]).status.success());
    let saves_before = status(&port)["storage"]["saves"].as_u64().unwrap();
    let file = lab.file(1);
    let t = Instant::now();
    assert!(routerctl(&["apply", &file, "--port", &port, "--yes"]).status.success());
    let apply_time = t.elapsed();
    let st = status(&port);
    let key = st["tunnel"]["public_key"].as_str().unwrap().to_string();
    let saves_per_apply = st["storage"]["saves"].as_u64().unwrap() - saves_before;
    eprintln!(
        "an apply, durable before its answer: {:.0} ms (routerctl, round trip included); saves per apply: {saves_per_apply}",
        apply_time.as_secs_f64() * 1000.0
    );

    // The cut falls anywhere from the start of the apply to a little after
    // its answer would have come (most cuts land while it is in flight).
    let window_ms = (apply_time.as_millis() as usize * 6 / 5).max(50);
    let mut acked = 1usize;
    let (mut came_back_old, mut came_back_new, mut acked_before_cut) = (0, 0, 0);
    for cut in 0..cuts {
        let next = acked + 1;
        let file = lab.file(next);
        let mut child = Command::new(env!("CARGO_BIN_EXE_routerctl"))
            .args(["apply", &file, "--port", &port, "--yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = Duration::from_millis(rng.below(window_ms) as u64);
        std::thread::sleep(delay);
        vm.kill();
        let answered = child.wait().unwrap().success();
        drop(vm);
        if answered {
            acked_before_cut += 1;
        }

        let (vm2, port2) = lab.boot("storage: vda: restored configuration generation");
        let st = status(&port2);
        let name = device(&st);
        assert_eq!(st["configured"], true, "cut {cut}: the box came back without a configuration");
        assert_eq!(st["tunnel"]["public_key"], key.as_str(), "cut {cut}: the WireGuard identity changed");
        if answered {
            assert_eq!(name, format!("cut{next}"), "cut {cut} after {delay:?}: the apply was acknowledged, yet the box runs {name}");
        } else {
            assert!(
                name == format!("cut{acked}") || name == format!("cut{next}"),
                "cut {cut} after {delay:?}: the box runs {name}, neither cut{acked} nor cut{next}"
            );
        }
        if name == format!("cut{next}") {
            came_back_new += 1;
            acked = next;
        } else {
            came_back_old += 1;
        }
        assert!(!vm2.console().contains("panic"), "cut {cut}: {}", vm2.console());
        // The next apply goes to the box that came back.
        vm = vm2;
        port = port2;
    }
    eprintln!(
        "{cuts} power cuts during applies: {came_back_old} came back with the previous configuration, {came_back_new} with the new one \
         ({acked_before_cut} of them acknowledged before the cut); never neither, always the same key"
    );
    drop(vm);
}

#[test]
fn garbage_in_the_state_partition_is_refused_and_the_box_still_answers() {
    let mut lab = Lab::new("state-garbage");
    let (mut vm, port) = lab.boot("not forwarding: no configuration yet");
    assert!(routerctl(&["storage", "init", "--disk", "vda", "--yes", "--port", &port]).status.success());
    let file = lab.file(1);
    assert!(routerctl(&["apply", &file, "--port", &port, "--yes"]).status.success());
    let st = status(&port);
    let first_lba = st["storage"]["first_lba"].as_u64().unwrap();
    let blocks = st["storage"]["blocks"].as_u64().unwrap();
    vm.kill();
    drop(vm);
    let good = lab.read_disk();
    let part = (first_lba * 512) as usize..((first_lba + blocks) * 512) as usize;

    // 1. Random bytes over the whole partition (the GPT stays intact).
    let mut rng = SplitMix64::new(0x5eed);
    let mut noise = vec![0u8; part.len()];
    rng.fill(&mut noise);
    lab.overwrite_partition(first_lba, &noise);
    let (mut vm, port) = lab.boot("holds no valid store (damaged superblock, 2 damaged record slot(s))");
    let st = status(&port);
    assert_eq!(st["configured"], false, "nothing is restored from garbage");
    assert_eq!(st["storage"]["damaged_slots"], 2, "{}", st["storage"]);
    assert!(!vm.console().contains("panic"), "{}", vm.console());
    // The operator can start over on the named disk, and only with --force.
    let refused = routerctl(&["storage", "init", "--disk", "vda", "--yes", "--port", &port]);
    assert_ne!(refused.status.code(), Some(0), "the disk in use is not re-made without --force");
    assert!(routerctl(&["storage", "init", "--disk", "vda", "--yes", "--force", "--port", &port]).status.success());
    assert!(routerctl(&["apply", &file, "--port", &port, "--yes"]).status.success());
    vm.kill();
    drop(vm);

    // 2. A well-formed store holding a record from a newer format: the
    //    store's checksums pass, the record's version does not.
    let mut image = good.clone();
    {
        use routerd_storage::testing::MemDisk;
        use routerd_storage::{BlockSize, Region, Store};
        let disk = MemDisk::from_image(BlockSize::from_bytes(512).unwrap(), image.clone());
        let mut store = Store::open(disk, Region { first_lba, blocks }).expect("the saved store opens on the host");
        let mut buf = vec![0u8; routerd_storage::MAX_PAYLOAD];
        let mut record = store.load(&mut buf).unwrap().expect("a record").to_vec();
        // postcard: the record starts with its version as a varint; 200 is
        // two bytes.
        assert!(record[0] < 0x80, "a one-byte version today");
        record.splice(0..1, [0xc8, 0x01]);
        store.save(&record).unwrap();
        image.copy_from_slice(store.into_device().image());
    }
    lab.overwrite_partition(first_lba, &image[part.clone()]);
    let (vm, port) = lab.boot("not restored");
    assert!(vm.console().contains("200"), "the console names the version it cannot read: {}", vm.console());
    let st = status(&port);
    assert_eq!(st["configured"], false);
    assert!(!vm.console().contains("panic"), "{}", vm.console());
    drop(vm);
}
