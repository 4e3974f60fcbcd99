//! Shared harness for the end-to-end scenarios: find or build the image,
//! describe machines, and fail with the captured console.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub use routerd_qemu as qemu;

pub mod net;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The image under test: `ROUTERD_IMAGE` if set, otherwise built once per
/// test process with `cargo build -p routerd --release`.
pub fn image() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        if let Some(p) = std::env::var_os("ROUTERD_IMAGE") {
            return PathBuf::from(p);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(workspace_root())
            .args(["build", "--package", "routerd", "--release"])
            .status()
            .expect("cannot run cargo to build the image");
        assert!(status.success(), "building the image failed ({status})");
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"));
        target.join("release").join("routerd")
    })
}

/// A locally administered MAC for test NIC `n` of machine `m`.
pub fn test_mac(m: u8, n: u8) -> [u8; 6] {
    [0x52, 0x54, 0x00, 0xe2, m, n]
}

/// Unwraps a harness result, printing the console on failure.
pub fn check<T>(r: Result<T, qemu::Error>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// A `kind` machine with two `model` NICs on unix datagram sockets (MACs
/// `test_mac(id, 0)` for `lan0` and `test_mac(id, 1)` for `wan0`), booting
/// with `cmdline`, and the harness end of each NIC.
pub fn two_nic_machine(kind: qemu::MachineType, model: qemu::NicModel, id: u8, cmdline: &str) -> (qemu::Machine, Vec<net::Link>) {
    let mut m = qemu::Machine::new(image()).expect("run dir");
    m.machine = kind;
    m.cmdline = cmdline.to_string();
    let mut links = Vec::new();
    for n in 0..2u8 {
        let guest = m.run_dir.join(format!("nic{n}.guest"));
        let harness = m.run_dir.join(format!("nic{n}.harness"));
        links.push(net::Link::bind(harness.clone(), guest.clone()));
        m.nics.push(qemu::Nic { model, mac: test_mac(id, n), backend: qemu::NetBackend::Dgram { guest, harness } });
    }
    (m, links)
}
