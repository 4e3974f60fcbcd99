//! Frames really flow through the NIC drivers: the image in `routerd.test=echo`
//! mode sends every frame back to its sender, and the harness checks every
//! byte on both NICs, across NIC models and machine types.

use qemu::{Machine, MachineType, NicModel};
use routerd_e2e::{check, qemu, test_mac};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);
/// Frames per NIC: sizes from the minimum to a full 1514-byte frame.
const SIZES: &[usize] = &[60, 64, 128, 333, 512, 1000, 1400, 1514];

struct Port {
    sock: UnixDatagram,
    guest: PathBuf,
    mac: [u8; 6],
}

fn echo_machine(kind: MachineType, model: NicModel) -> (Machine, Vec<Port>) {
    let (m, links) = routerd_e2e::two_nic_machine(kind, model, 2, "routerd.test=echo");
    let ports = links
        .into_iter()
        .zip(0..2u8)
        .map(|(l, n)| {
            l.sock.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
            Port { sock: l.sock, guest: l.guest, mac: test_mac(2, n) }
        })
        .collect();
    (m, ports)
}

fn frame(src: [u8; 6], dst: [u8; 6], len: usize, seed: u8) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]); // IEEE local experimental ethertype
    while f.len() < len {
        f.push(seed.wrapping_add(f.len() as u8));
    }
    f
}

fn echoes_every_frame(kind: MachineType, model: NicModel) {
    let (m, ports) = echo_machine(kind, model);
    let mut vm = check(m.spawn());
    check(vm.wait_for("echo: reflecting frames on 2 NICs", TIMEOUT));
    let host = [0x02, 0, 0, 0, 0xee, 0x01];
    for (p, port) in ports.iter().enumerate() {
        for (i, &len) in SIZES.iter().enumerate() {
            let sent = frame(host, port.mac, len, (p * 16 + i) as u8);
            port.sock.send_to(&sent, &port.guest).expect("send to guest");
            let mut buf = [0u8; 2048];
            let n = match port.sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e) => panic!("nic{p}: no echo of a {len}-byte frame ({e}); console:\n{}", vm.console()),
            };
            let got = &buf[..n];
            assert_eq!(n, len, "nic{p}: echo of a {len}-byte frame has {n} bytes");
            assert_eq!(&got[..6], &host, "nic{p}: echo not addressed to the sender");
            assert_eq!(&got[6..12], &port.mac, "nic{p}: echo source is not the NIC's MAC");
            assert_eq!(&got[12..], &sent[12..], "nic{p}: payload of a {len}-byte frame changed");
        }
    }
    // Many more frames than the rings hold, in windows the receive ring can
    // always absorb (16 < 64 posted buffers): every frame must come back, so
    // ring wrap-around and buffer recycling are exercised without relying on
    // timing.
    let port = &ports[0];
    let mut buf = [0u8; 2048];
    for window in 0..25u8 {
        let sent: Vec<Vec<u8>> = (0..16u8).map(|i| frame(host, port.mac, 100 + usize::from(i), window ^ i)).collect();
        for f in &sent {
            port.sock.send_to(f, &port.guest).expect("send window");
        }
        for f in &sent {
            let n = match port.sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e) => panic!("window {window}: echo missing ({e}); console:\n{}", vm.console()),
            };
            assert_eq!(&buf[12..n], &f[12..], "window {window}: frames reordered or changed");
        }
    }
    vm.kill();
}

#[test]
fn pc_virtio_net_echoes_every_frame() {
    echoes_every_frame(MachineType::Pc, NicModel::VirtioNet);
}

#[test]
fn q35_virtio_net_echoes_every_frame() {
    echoes_every_frame(MachineType::Q35, NicModel::VirtioNet);
}

#[test]
fn pc_e1000e_echoes_every_frame() {
    echoes_every_frame(MachineType::Pc, NicModel::E1000e);
}

#[test]
fn q35_e1000e_echoes_every_frame() {
    echoes_every_frame(MachineType::Q35, NicModel::E1000e);
}
