//! What routerctl's QEMU tests of the box's state share: running the real
//! `routerctl`, reading `status --json`, booting a box with a disk, and the
//! on-prem configuration they apply.
#![allow(dead_code)] // each test file uses its own part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use routerd_e2e::check;
use routerd_e2e::qemu::{Machine, Vm};
use serde_json::Value;

/// How long a boot may take to reach the line a test waits for.
pub const BOOT: Duration = Duration::from_secs(60);

/// `routerctl ARGS`; the command and its output go to the test's log.
pub fn routerctl(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_routerctl")).args(args).output().expect("run routerctl");
    eprintln!(
        "$ routerctl {}\n{}{}-> {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status
    );
    out
}

/// `routerctl ARGS`, which must succeed: its stdout.
pub fn ok(args: &[&str]) -> String {
    let out = routerctl(args);
    assert!(out.status.success(), "routerctl {args:?} failed");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The `status` object of `routerctl status --json`.
pub fn status(port: &str) -> Value {
    serde_json::from_str::<Value>(&ok(&["status", "--port", port, "--json"])).unwrap()["status"].clone()
}

/// Spawns `machine`, waits for `expect` on its console and hands the serial
/// socket to routerctl: the box and its `--port`.
pub fn boot(machine: Machine, expect: &str) -> (Vm, String) {
    let mut vm = check(machine.spawn());
    check(vm.wait_for(expect, BOOT));
    vm.release_serial();
    let port = format!("unix:{}", vm.serial_path().display());
    (vm, port)
}

/// A scratch directory with a blank 16 MiB disk image, removed on drop.
pub struct Scratch {
    pub dir: PathBuf,
    pub disk: PathBuf,
}

impl Scratch {
    pub fn new(what: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("routerd-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let disk = dir.join("disk.img");
        std::fs::File::create(&disk).unwrap().set_len(16 << 20).unwrap();
        Scratch { dir, disk }
    }

    /// Writes `text` to `name` in the directory; its path as a string.
    pub fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }

    pub fn disk(&self) -> &Path {
        &self.disk
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The on-prem box of the same-subnet hybrid: lan0, a static wan0, the
/// WireGuard key made on the box, one peer that owns 10.20.0.50 (captured by
/// proxy-ARP), with `allowed_ips` and an optional keepalive.
pub fn onprem_config(name: &str, keepalive: Option<u16>, allowed_ips: &[&str]) -> String {
    onprem_config_for(name, "ca67+D0dVOzK/Bjvjlowc7W4uQ/zJ1jT9fh1LNCS51w=", Some("192.0.2.1"), keepalive, allowed_ips)
}

/// [`onprem_config`] with the cloud peer's public key (a test peer's
/// boringtun or wireguard-go key) and the WAN's gateway, if any (the peer
/// at 192.0.2.100 is on the WAN's link either way).
pub fn onprem_config_for(name: &str, peer_public: &str, gateway: Option<&str>, keepalive: Option<u16>, allowed_ips: &[&str]) -> String {
    let keepalive = keepalive.map(|k| format!("persistent_keepalive = {k}\n")).unwrap_or_default();
    let gateway = gateway.map(|g| format!("gateway = \"{g}\"\n")).unwrap_or_default();
    let allowed = allowed_ips.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
    format!(
        r#"
[device]
name = "{name}"
side = "onprem"

[[ports]]
name = "lan0"
role = "lan"
address = "10.20.0.2/24"

[[ports]]
name = "wan0"
role = "wan"
address = "192.0.2.2/24"
{gateway}
[[wireguard]]
name = "wg0"
private_key = "device:wg0"

[[peers]]
name = "cloud"
tunnel = "wg0"
public_key = "{peer_public}"
endpoint = "192.0.2.100:51820"
{keepalive}allowed_ips = [{allowed}]

[[claims]]
address = "10.20.0.50/32"
owner = "cloud"
capture = {{ method = "proxy-arp", port = "lan0" }}
delivery = {{ tunnel = "wg0", peer = "cloud" }}
"#
    )
}

/// GRUB's environment block signature: the tests find the block as a
/// sector starting with it (there is one, in ROUTERD-BOOT).
pub const ENV_SIG: &[u8] = b"# GRUB Environment Block\n";

/// The env block's offset in an image file.
pub fn env_offset(disk: &[u8]) -> usize {
    let hits: Vec<usize> = (0..disk.len()).step_by(512).filter(|&at| disk[at..].starts_with(ENV_SIG)).collect();
    assert_eq!(hits.len(), 1, "one env block in the image");
    hits[0]
}

pub fn env_vars(path: &Path) -> String {
    let d = std::fs::read(path).unwrap();
    let at = env_offset(&d);
    let block = &d[at + ENV_SIG.len()..at + 1024];
    String::from_utf8_lossy(block).trim_end_matches('#').to_string()
}

/// What the firmware does for an upgrade: rewrite the block's sectors raw.
pub fn set_env(path: &Path, vars: &str) {
    let mut d = std::fs::read(path).unwrap();
    let at = env_offset(&d);
    let mut block = ENV_SIG.to_vec();
    block.extend_from_slice(vars.as_bytes());
    block.resize(1024, b'#');
    d[at..at + 1024].copy_from_slice(&block);
    std::fs::write(path, d).unwrap();
}
