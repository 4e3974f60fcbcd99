//! `routerctl image build` and `routerctl flash`, end to end: the real
//! routerctl builds images from the real firmware, and QEMU boots them the
//! way hardware would — SeaBIOS or OVMF reading the disk, GRUB from it, the
//! firmware from a slot through GRUB's blocklist.
//!
//! Checked: the raw image boots to `boot: ready` on BIOS and UEFI from
//! virtio-blk, AHCI and NVMe, and on virtio-blk the box finds its empty
//! store; GRUB's trial-boot logic counts a trial slot down in the env block
//! across boots (save_env works, BIOS and UEFI), falls back to the good
//! slot when the tries run out and when a slot does not load; the qcow2
//! passes `qemu-img check` and boots; the ISO boots; `--config` comes up
//! configured, with keys made on the box; the same inputs give the same
//! bytes; flash writes and verifies a file, notices a target that changed
//! under it, and refuses the disk of `/`.
//!
//! OVMF puts 64-bit PCI BARs at the top of the CPU's physical address space
//! (896 GiB with `-cpu max`'s 40 bits): the UEFI boots here run with QEMU's
//! defaults, so they also prove the firmware maps and reaches them.

mod common;

use common::{env_vars, set_env};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use routerd_e2e::qemu::{Boot, DiskBus, Firmware, Machine, MachineType, Vm};
use routerd_e2e::{check, image, two_nic_machine};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(90);
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS.fd";

fn routerctl(args: &[&str]) -> Output {
    routerctl_env(args, &[])
}

fn routerctl_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_routerctl"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run routerctl");
    eprintln!(
        "$ routerctl {}\n{}{}-> {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status
    );
    out
}

/// The images of this run (the tests share it and run in parallel, so
/// none can remove it at its end): a run removes what earlier runs whose
/// process is gone left behind (a few hundred MB each).
fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let tmp = std::env::temp_dir();
        for e in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(pid) = name.strip_prefix("routerd-image-test-") else { continue };
            if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let d = tmp.join(format!("routerd-image-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

/// Builds an image with routerctl; returns its path and the sha256 printed.
fn build(name: &str, extra: &[&str]) -> (PathBuf, String) {
    let out = dir().join(name);
    let fw = image().to_str().unwrap().to_string();
    let mut args = vec!["image", "build", "--firmware", &fw, "-o", out.to_str().unwrap(), "--force"];
    args.extend_from_slice(extra);
    let o = routerctl(&args);
    assert!(o.status.success(), "image build failed");
    let text = String::from_utf8(o.stdout).unwrap();
    let sha = text.lines().find_map(|l| l.strip_prefix("sha256 ")).unwrap().split_whitespace().next().unwrap().to_string();
    (out, sha)
}

/// The raw image every boot test starts from (a copy each, since boots write).
fn raw() -> &'static Path {
    static RAW: OnceLock<PathBuf> = OnceLock::new();
    RAW.get_or_init(|| build("base.img", &[]).0)
}

fn copy_of(src: &Path, name: &str) -> PathBuf {
    let p = dir().join(name);
    std::fs::copy(src, &p).unwrap();
    p
}

fn uefi(tag: &str) -> Firmware {
    let vars = dir().join(format!("vars-{tag}.fd"));
    std::fs::copy(OVMF_VARS, &vars).expect("OVMF_VARS.fd (apt-get install -y --no-install-recommends ovmf)");
    Firmware::Uefi { code: PathBuf::from(OVMF_CODE), vars }
}

/// A machine that boots `disk` through its firmware.
fn disk_machine(disk: &Path, fw: Firmware, bus: DiskBus) -> Machine {
    let mut m = Machine::new(image()).unwrap();
    if matches!(fw, Firmware::Uefi { .. }) {
        m.machine = MachineType::Q35;
        m.memory_mib = 256;
    }
    m.boot = Boot::Disk(fw);
    m.disks.push(disk.to_path_buf());
    m.disk_bus = bus;
    m
}

fn boot_to(m: &Machine, text: &str) -> (Vm, f64) {
    let started = Instant::now();
    let mut vm = check(m.spawn());
    check(vm.wait_for(text, BOOT));
    (vm, started.elapsed().as_secs_f64())
}

#[test]
fn raw_image_boots_on_bios_and_uefi_from_every_disk_controller() {
    let cases = [
        ("bios", DiskBus::Virtio),
        ("uefi", DiskBus::Virtio),
        ("bios", DiskBus::Ahci),
        ("bios", DiskBus::Nvme),
        ("uefi", DiskBus::Ahci),
        ("uefi", DiskBus::Nvme),
    ];
    for (fw, bus) in cases {
        let disk = copy_of(raw(), &format!("boot-{fw}-{bus:?}.img"));
        let firmware = if fw == "uefi" { uefi(&format!("{bus:?}")) } else { Firmware::Bios };
        let (mut vm, secs) = boot_to(&disk_machine(&disk, firmware, bus), "boot: ready");
        let console = vm.console();
        assert!(console.contains("routerd: slot A from (hd0,gpt4)"), "GRUB chose slot A:\n{console}");
        assert!(console.contains("command line \"console=ttyS0,115200 routerd.slot=A\""), "{console}");
        // Whether the box finds its store depends on its driver for the bus.
        let name = bus.disk_name(0);
        let store = format!("storage: {name}: empty store");
        if bus == DiskBus::Virtio {
            check(vm.wait_for(&store, Duration::from_secs(20)));
        } else {
            let _ = vm.wait_for(&store, Duration::from_secs(10));
        }
        let storage_line = vm.console().lines().filter(|l| l.contains("storage:")).collect::<Vec<_>>().join(" | ");
        eprintln!("{fw} {bus:?}: boot: ready {secs:.1} s after QEMU started; {storage_line}");
        vm.kill();
        let _ = std::fs::remove_file(&disk);
    }
}

/// One boot up to the firmware's command line; returns it.
fn boot_cmdline(disk: &Path, fw: &Firmware) -> String {
    let (mut vm, _) = boot_to(&disk_machine(disk, fw.clone(), DiskBus::Virtio), "boot: ready");
    let console = vm.console();
    vm.kill();
    console.lines().find_map(|l| l.split("command line \"").nth(1)).unwrap_or_default().trim_end_matches('"').to_string()
}

#[test]
fn trial_boot_counts_down_in_grubs_env_block_and_falls_back() {
    assert_eq!(env_vars(raw()), "routerd_slot=A\nrouterd_trial=\nrouterd_tries=0\n");
    for fw in ["bios", "uefi"] {
        let disk = copy_of(raw(), &format!("trial-{fw}.img"));
        let firmware = if fw == "uefi" { uefi("trial") } else { Firmware::Bios };
        set_env(&disk, "routerd_slot=A\nrouterd_trial=B\nrouterd_tries=2\n");
        assert_eq!(boot_cmdline(&disk, &firmware), "console=ttyS0,115200 routerd.slot=B routerd.trial=1", "{fw}: first trial boot");
        assert_eq!(env_vars(&disk), "routerd_slot=A\nrouterd_trial=B\nrouterd_tries=1\n", "{fw}: GRUB saved the count");
        assert_eq!(boot_cmdline(&disk, &firmware), "console=ttyS0,115200 routerd.slot=B routerd.trial=0", "{fw}: last trial boot");
        assert_eq!(env_vars(&disk), "routerd_slot=A\nrouterd_trial=B\nrouterd_tries=0\n");
        // Not confirmed: the next boot goes back to A and says B failed.
        assert_eq!(boot_cmdline(&disk, &firmware), "console=ttyS0,115200 routerd.slot=A", "{fw}: fallback");
        assert_eq!(env_vars(&disk), "routerd_slot=A\nrouterd_trial=\nrouterd_tries=0\nrouterd_failed=B\n");
        let _ = std::fs::remove_file(&disk);
    }
    // A confirmed slot B boots; a slot that does not load falls back.
    let disk = copy_of(raw(), "slot-b.img");
    set_env(&disk, "routerd_slot=B\nrouterd_trial=\nrouterd_tries=0\n");
    assert_eq!(boot_cmdline(&disk, &Firmware::Bios), "console=ttyS0,115200 routerd.slot=B");
    let mut d = std::fs::read(&disk).unwrap();
    let slot_b = 55296 * 512;
    d[slot_b..slot_b + 4096].fill(0);
    std::fs::write(&disk, d).unwrap();
    let (mut vm, _) = boot_to(&disk_machine(&disk, Firmware::Bios, DiskBus::Virtio), "boot: ready");
    let console = vm.console();
    vm.kill();
    assert!(console.contains("routerd: slot B does not load"), "{console}");
    assert!(console.contains("command line \"console=ttyS0,115200 routerd.slot=A\""), "{console}");
    let _ = std::fs::remove_file(&disk);
}

#[test]
fn qcow2_passes_qemu_img_check_and_boots() {
    let (q, sha) = build("proxmox.qcow2", &["--format", "qcow2"]);
    let check_out =
        Command::new("qemu-img").arg("check").arg(&q).output().expect("qemu-img (apt-get install -y --no-install-recommends qemu-utils)");
    assert!(check_out.status.success(), "{}", String::from_utf8_lossy(&check_out.stdout));
    assert!(String::from_utf8_lossy(&check_out.stdout).contains("No errors were found"));
    let info = Command::new("qemu-img").args(["info", "--output=json"]).arg(&q).output().unwrap();
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["virtual-size"], 52 << 20);
    // Same inputs, same bytes.
    assert_eq!(build("proxmox-again.qcow2", &["--format", "qcow2"]).1, sha);
    let disk = copy_of(&q, "boot.qcow2");
    let (mut vm, secs) = boot_to(&disk_machine(&disk, Firmware::Bios, DiskBus::Virtio), "boot: ready");
    check(vm.wait_for("storage: vda: empty store", Duration::from_secs(20)));
    eprintln!("qcow2: boot: ready {secs:.1} s after QEMU started");
}

#[test]
fn iso_boots_on_bios_and_uefi() {
    let (iso, sha) = build("live.iso", &["--format", "iso"]);
    assert_eq!(build("live-again.iso", &["--format", "iso"]).1, sha, "same inputs, same ISO");
    let mut m = Machine::new(image()).unwrap();
    m.boot = Boot::GrubIso(iso.clone());
    let (mut vm, secs) = boot_to(&m, "boot: ready");
    assert!(vm.console().contains("routerd.slot=live"), "{}", vm.console());
    vm.kill();
    eprintln!("iso (BIOS, CD): boot: ready {secs:.1} s after QEMU started");
    // UEFI from the same ISO written to a USB stick (its hybrid GPT's ESP).
    let stick = copy_of(&iso, "live-stick.img");
    let (mut vm, secs) = boot_to(&disk_machine(&stick, uefi("iso"), DiskBus::Virtio), "boot: ready");
    assert!(vm.console().contains("routerd.slot=live"), "{}", vm.console());
    vm.kill();
    eprintln!("iso (UEFI, as a USB disk): boot: ready {secs:.1} s after QEMU started");
}

#[test]
fn config_seeds_the_state_partition_and_the_box_runs_it() {
    let file = dir().join("seeded.toml");
    std::fs::write(&file, common::onprem_config("seeded", None, &["10.20.0.50/32"])).unwrap();
    let (img, sha) = build("seeded.img", &["--config", file.to_str().unwrap()]);
    assert_eq!(build("seeded-again.img", &["--config", file.to_str().unwrap()]).1, sha, "same inputs, same bytes");
    assert_ne!(sha, build("plain.img", &[]).1, "the configuration is in the image");

    let disk = copy_of(&img, "seeded-boot.img");
    let (mut m, _links) = two_nic_machine(MachineType::Pc, routerd_e2e::qemu::NicModel::VirtioNet, 0x71, "");
    m.boot = Boot::Disk(Firmware::Bios);
    m.disks.push(disk.clone());
    let (mut vm, _) = boot_to(&m, "boot: ready");
    check(vm.wait_for("restored configuration generation 1", Duration::from_secs(30)));
    vm.release_serial();
    let port = format!("unix:{}", vm.serial_path().display());
    let out = routerctl(&["status", "--port", &port, "--json"]);
    assert!(out.status.success());
    let st = serde_json::from_slice::<Value>(&out.stdout).unwrap()["status"].clone();
    assert_eq!(st["configured"], true);
    assert_eq!(st["device"], "seeded");
    assert_eq!(st["storage"]["disk"], "vda");
    let key = st["tunnel"]["public_key"].as_str().unwrap_or_default();
    assert_eq!(key.len(), 44, "the box made its key at first boot: {}", st["tunnel"]);
    vm.kill();
    let _ = std::fs::remove_file(&disk);
}

#[test]
fn build_refuses_what_it_should() {
    let fw = image().to_str().unwrap().to_string();
    let existing = dir().join("exists.img");
    std::fs::write(&existing, b"keep me").unwrap();
    let o = routerctl(&["image", "build", "--firmware", &fw, "-o", existing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");

    let bad = dir().join("bad.toml");
    std::fs::write(
        &bad,
        common::onprem_config("seeded", None, &["10.20.0.50/32"]).replace("address = \"10.20.0.2/24\"", "address = \"10.20.0.2/33\""),
    )
    .unwrap();
    let out = dir().join("bad.img");
    let o = routerctl(&["image", "build", "--firmware", &fw, "--config", bad.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_ne!(o.status.code(), Some(0));
    assert!(!out.exists(), "nothing built from an invalid configuration");

    let o = routerctl(&[
        "image",
        "build",
        "--firmware",
        &fw,
        "--format",
        "iso",
        "--config",
        bad.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let o = routerctl(&["image", "build", "--firmware", "/etc/hostname", "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not an ELF64"));
}

#[test]
fn flash_writes_a_file_verifies_it_and_notices_corruption() {
    let img = raw().to_str().unwrap();
    let target = dir().join("flashed.img");
    let t = target.to_str().unwrap();
    let o = routerctl(&["flash", img, "--device", t, "--dry-run"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("would write"));
    assert!(!target.exists(), "a dry run writes nothing");

    let o = routerctl(&["flash", img, "--device", t]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("written and verified"));
    assert_eq!(std::fs::read(&target).unwrap(), std::fs::read(raw()).unwrap());

    let o = routerctl_env(&["flash", img, "--device", t], &[("ROUTERCTL_TEST_CORRUPT_AFTER_WRITE", "1048576")]);
    assert_eq!(o.status.code(), Some(1), "a target that reads back differently fails");
    assert!(String::from_utf8_lossy(&o.stderr).contains("verification FAILED"));

    let (q, _) = build("flash.qcow2", &["--format", "qcow2"]);
    let o = routerctl(&["flash", q.to_str().unwrap(), "--device", t]);
    assert_eq!(o.status.code(), Some(2), "qcow2 is for Proxmox");
    let o = routerctl(&["flash", img, "--device", img]);
    assert_eq!(o.status.code(), Some(2), "not onto itself");
}

#[test]
fn flash_refuses_the_disk_of_the_running_system() {
    // The block device `/` is mounted from, if there is one here.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let Some(source) = mountinfo.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-")?;
        (f.get(4) == Some(&"/")).then(|| f.get(sep + 2).map(|s| s.to_string())).flatten()
    }) else {
        return;
    };
    if !source.starts_with("/dev/") || !Path::new(&source).exists() {
        eprintln!("/ is on {source}, not a block device here: nothing to refuse");
        return;
    }
    let img = raw().to_str().unwrap();
    let o = routerctl(&["flash", img, "--device", &source, "--dry-run", "--force", "--yes"]);
    assert_eq!(o.status.code(), Some(2), "refused: {source} is mounted at /");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("in use") || err.contains("running system") || err.contains("partition"), "{err}");
    // Only after the dry run refused: the real run refuses the same way
    // (and the kernel's O_EXCL would stop it if it did not).
    let o = routerctl(&["flash", img, "--device", &source, "--force", "--yes"]);
    assert_eq!(o.status.code(), Some(2));
}
