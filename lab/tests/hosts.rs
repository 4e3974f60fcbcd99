//! Two simulated hosts on one LAN, joined directly (no box, no QEMU).

mod common;

use common::{ip, run_dir, settled, wait_for};
use routerd_lab::{HostConfig, ListenMode, SimHost, SocketPair, SynDirection, Transfer};
use std::time::Duration;

const MIB: u64 = 1 << 20;
const A_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x10, 0x10];
const B_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x20, 0x11];

/// "onprem-host" 10.20.0.10 and "cloud-host" 10.20.0.11 + 10.20.0.50 on one link.
fn pair(name: &str, b_mtu: usize) -> (SimHost, SimHost, std::path::PathBuf) {
    let dir = run_dir(name);
    let (a_end, b_end) = SocketPair::link(&dir, "lan");
    let a = SimHost::start(HostConfig::new("onprem-host", a_end, A_MAC, vec!["10.20.0.10/24".parse().unwrap()])).unwrap();
    let mut b_config =
        HostConfig::new("cloud-host", b_end, B_MAC, vec!["10.20.0.11/24".parse().unwrap(), "10.20.0.50/24".parse().unwrap()]);
    b_config.mtu = b_mtu;
    let b = SimHost::start(b_config).unwrap();
    (a, b, dir)
}

#[test]
fn two_hosts_ping_and_transfer_a_mebibyte_intact() {
    let (a, b, dir) = pair("direct", 1500);

    let ping = a.ping(ip("10.20.0.50"), 5, Duration::from_secs(3));
    println!("{ping}");
    assert!(ping.all_received(), "{ping}");
    assert_eq!(ping.src, Some(ip("10.20.0.10")));
    // From the second address, as the cloud host answers for a claim.
    let back = b.ping_from(ip("10.20.0.50"), ip("10.20.0.10"), 3, Duration::from_secs(3));
    assert!(back.all_received(), "{back}");
    // Full-size requests, as an MTU probe sends them.
    let big = a.ping_sized(ip("10.20.0.50"), 1500, 2, Duration::from_secs(3));
    assert!(big.all_received() && big.size == 1500, "{big}");

    // Sink: the server's count and digest prove integrity.
    b.listen(5001, ListenMode::Sink).unwrap();
    let there = a.transfer(ip("10.20.0.50"), 5001, MIB, Duration::from_secs(120));
    println!("{there}");
    assert!(there.ok(), "{there}");
    assert_eq!((there.acked, there.returned), (MIB, MIB));
    assert_eq!((there.syn_mss, there.syn_ack_mss), (Some(1460), Some(1460)));
    let rec = wait_for(Duration::from_secs(10), || b.server_records().last().cloned()).expect("the server recorded the connection");
    assert_eq!(rec.bytes, MIB);
    assert!(rec.complete);
    assert_eq!(Some(rec.peer), there.local);
    assert_eq!(rec.local.ip(), &ip("10.20.0.50"));
    assert_eq!((rec.syn_mss, rec.syn_ack_mss), (Some(1460), Some(1460)));

    // Echo, the other way, from the claimed address.
    a.listen(7, ListenMode::Echo).unwrap();
    let echo = b.transfer_with(
        &Transfer::new(ip("10.20.0.10"), 7, MIB).from(ip("10.20.0.50")).mode(ListenMode::Echo).timeout(Duration::from_secs(120)),
    );
    println!("{echo}");
    assert!(echo.ok(), "{echo}");
    assert_eq!(echo.local.map(|l| *l.ip()), Some(ip("10.20.0.50")));

    // The SYN log saw both directions at each end.
    let a_log = a.syn_log();
    assert!(a_log.iter().any(|r| r.direction == SynDirection::Sent && !r.syn_ack && r.mss == Some(1460)));
    assert!(a_log.iter().any(|r| r.direction == SynDirection::Received && !r.syn_ack && r.src.ip() == &ip("10.20.0.50")));
    assert!(b.syn_log().iter().any(|r| r.direction == SynDirection::Received && !r.syn_ack));

    // A second server on the same port is refused; a second transfer works.
    assert!(b.listen(5001, ListenMode::Echo).is_err());
    let again = a.transfer(ip("10.20.0.50"), 5001, 10_000, Duration::from_secs(30));
    assert!(again.ok(), "{again}");

    // What one end handed over, the other received.
    let (ca, cb) = settled(|| (a.counters(), b.counters()));
    println!("{ca:?}\n{cb:?}");
    assert_eq!(ca.frames_out, cb.frames_in);
    assert_eq!(cb.frames_out, ca.frames_in);
    assert_eq!((ca.tx_no_peer, cb.tx_no_peer), (0, 0));
    assert_eq!(ca.echo_requests, 5 + 2);
    assert_eq!(ca.echo_replies, 5 + 2);

    a.stop();
    b.stop();
    assert!(!dir.join("lan.a.sock").exists(), "stop removes the host's socket");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_syn_log_shows_the_mss_each_side_announced() {
    // The cloud host's NIC has a smaller MTU: its SYN-ACK says so.
    let (a, b, dir) = pair("mss", 1420);
    b.listen(5001, ListenMode::Sink).unwrap();
    let r = a.transfer(ip("10.20.0.11"), 5001, 100_000, Duration::from_secs(60));
    assert!(r.ok(), "{r}");
    assert_eq!((r.syn_mss, r.syn_ack_mss), (Some(1460), Some(1380)));
    assert!(r.to_string().contains("SYN left with MSS 1460, SYN-ACK arrived with MSS 1380"), "{r}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn failures_are_reported_not_hidden() {
    let (a, b, dir) = pair("fail", 1500);
    // Nobody listens: smoltcp answers with a reset.
    let refused = a.transfer(ip("10.20.0.11"), 9, 1000, Duration::from_secs(10));
    assert!(!refused.ok());
    assert!(refused.failure.as_deref().unwrap_or("").contains("refused"), "{refused}");
    // A sink transfer to an echo server gets back data, not a count and a
    // digest: the integrity check must fail.
    b.listen(7, ListenMode::Echo).unwrap();
    let wrong = a.transfer(ip("10.20.0.11"), 7, 1000, Duration::from_secs(10));
    println!("{wrong}");
    assert!(!wrong.intact && !wrong.ok(), "{wrong}");
    // Nobody at that address: the ping times out, bounded.
    let lost = a.ping(ip("10.20.0.99"), 2, Duration::from_millis(300));
    assert_eq!((lost.sent, lost.received), (2, 0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn arp_probe_finds_owners_and_a_posed_conflict() {
    let (a, b, dir) = pair("arp", 1500);
    assert_eq!(a.arp_probe(ip("10.20.0.50"), Duration::from_secs(3)), Some(B_MAC));
    assert_eq!(a.arp_probe(ip("10.20.0.99"), Duration::from_millis(300)), None);
    // The cloud host now poses as a live host holding 10.20.0.99.
    b.announce_conflict(ip("10.20.0.99"));
    assert_eq!(a.arp_probe(ip("10.20.0.99"), Duration::from_secs(3)), Some(B_MAC));
    assert_eq!(a.arp_answers(ip("10.20.0.99"), Duration::from_secs(1)), vec![B_MAC]);
    b.withdraw_conflict(ip("10.20.0.99"));
    assert_eq!(a.arp_probe(ip("10.20.0.99"), Duration::from_millis(300)), None);
    let cb = b.counters();
    assert_eq!(cb.gratuitous_arps, 1);
    assert_eq!(cb.conflict_arp_replies, 2);
    assert_eq!(a.counters().arp_probes, 5);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_configurations_are_refused() {
    let dir = run_dir("badcfg");
    let (end, _) = SocketPair::link(&dir, "x");
    let none = HostConfig::new("h", end.clone(), A_MAC, vec![]);
    assert!(SimHost::start(none).is_err());
    let multicast = HostConfig::new("h", end.clone(), [0x01, 0, 0x5e, 0, 0, 1], vec!["10.0.0.1/24".parse().unwrap()]);
    assert!(SimHost::start(multicast).is_err());
    let mut tiny = HostConfig::new("h", end, A_MAC, vec!["10.0.0.1/24".parse().unwrap()]);
    tiny.mtu = 100;
    assert!(SimHost::start(tiny).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_static_neighbor_is_reached_without_arp() {
    // The cloud host reaches 10.20.0.10 (an address nobody on its LAN
    // answers ARP for, as a provider fabric delivers it) at A's MAC.
    let dir = run_dir("static");
    let (a_end, b_end) = SocketPair::link(&dir, "lan");
    let a = SimHost::start(HostConfig::new("box-lan", a_end, A_MAC, vec!["10.20.0.4/24".parse().unwrap()])).unwrap();
    let b = SimHost::start(
        HostConfig::new("cloud-host", b_end, B_MAC, vec!["10.20.0.50/24".parse().unwrap()]).with_static_neighbor(ip("10.20.0.10"), A_MAC),
    )
    .unwrap();
    // A does not hold 10.20.0.10, so it drops the echo request, but the
    // request reached its NIC without any ARP for 10.20.0.10 on the wire.
    let before = a.counters().frames_in;
    let r = b.ping(ip("10.20.0.10"), 1, Duration::from_millis(300));
    assert_eq!((r.sent, r.received), (1, 0));
    let after = settled(|| a.counters().frames_in);
    assert_eq!(after - before, 1, "exactly the echo request, no ARP");
    // Probes still ask the LAN: nobody answers for 10.20.0.10.
    assert_eq!(b.arp_probe(ip("10.20.0.10"), Duration::from_millis(300)), None);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn garbage_on_the_lan_does_not_hurt_a_host() {
    let (a, b, dir) = pair("garbage", 1500);
    let junk = std::os::unix::net::UnixDatagram::unbound().unwrap();
    let a_path = dir.join("lan.a.sock");
    let mut seed = 0x1234_5678_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // A real frame to mutate: an ARP request, an IPv4 header, a TCP SYN.
    let mut template = vec![0xffu8; 6];
    template.extend_from_slice(&B_MAC);
    template.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 20, 0, 50, 10, 20, 0, 10]);
    template.extend_from_slice(&[0x9c, 0x40, 0x13, 0x89, 0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x02, 0xff, 0xff, 0, 0, 0, 0, 2, 4, 5, 0xb4]);
    let mut sent = 0u64;
    for i in 0..2000u64 {
        let frame: Vec<u8> = match i % 3 {
            0 => (0..next() % 200).map(|_| next() as u8).collect(),
            1 => {
                let mut f = template.clone();
                let at = (next() as usize) % f.len();
                f[at] = next() as u8;
                f.truncate(14 + (next() as usize) % (f.len() - 13));
                f
            }
            _ => vec![next() as u8; 9000],
        };
        if junk.send_to(&frame, &a_path).is_ok() {
            sent += 1;
        }
        if i % 50 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    assert!(sent > 0);
    let r = b.ping(ip("10.20.0.10"), 3, Duration::from_secs(3));
    assert!(r.all_received(), "{r}");
    let c = settled(|| a.counters());
    assert!(c.frames_in >= sent, "{c:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
