//! The underlay between two stand-in box WAN ports (simulated hosts where
//! the boxes would be): routing, 1:1 NAT, roaming, latency, loss, counters.

mod common;

use common::{ip, run_dir, settled, wait_for};
use routerd_lab::{Attachment, AttachmentCounters, DropReason, HostConfig, ListenMode, SimHost, SocketPair, Underlay, UnderlayConfig};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

const ONPREM: usize = 0;
const CLOUD: usize = 1;

/// Every frame that came in is accounted for exactly once.
fn check_accounting(name: &str, c: &AttachmentCounters) {
    assert_eq!(c.frames_in, c.arp_answered + c.served + c.routed + c.drops_in(), "{name}: {c}");
}

#[test]
fn boxes_talk_through_nat_roam_and_survive_impairments() {
    let dir = run_dir("underlay");
    let (ul_onprem, box_onprem) = SocketPair::link(&dir, "onprem");
    let (ul_cloud, box_cloud) = SocketPair::link(&dir, "cloud");
    let mut config = UnderlayConfig::new(vec![
        Attachment::new("onprem", ul_onprem.clone(), "192.168.1.35/24".parse().unwrap(), ip("192.168.1.1")),
        Attachment::new("cloud", ul_cloud, "10.0.0.4/24".parse().unwrap(), ip("10.0.0.1")).with_public(ip("203.0.113.10")),
    ]);
    config.seed = 7;
    let underlay = Underlay::start(config).unwrap();
    assert_eq!(underlay.attachment("cloud"), Some(CLOUD));

    // Simulated hosts where the boxes' WAN ports would be.
    let onprem = SimHost::start(
        HostConfig::new("onprem-wan", box_onprem, [0x52, 0x54, 0, 0, 0, 0x12], vec!["192.168.1.35/24".parse().unwrap()])
            .with_gateway(ip("192.168.1.1")),
    )
    .unwrap();
    let cloud = SimHost::start(
        HostConfig::new("cloud-wan", box_cloud, [0x52, 0x54, 0, 0, 0, 0x22], vec!["10.0.0.4/24".parse().unwrap()])
            .with_gateway(ip("10.0.0.1")),
    )
    .unwrap();
    onprem.listen(5002, ListenMode::Sink).unwrap();
    cloud.listen(5001, ListenMode::Sink).unwrap();

    // onprem dials the cloud's public address; NAT delivers it to 10.0.0.4.
    let ping = onprem.ping(ip("203.0.113.10"), 3, Duration::from_secs(3));
    println!("{ping}");
    assert!(ping.all_received(), "{ping}");
    let up = onprem.transfer(ip("203.0.113.10"), 5001, 256 * 1024, Duration::from_secs(120));
    println!("{up}");
    assert!(up.ok(), "{up}");
    let rec = wait_for(Duration::from_secs(10), || cloud.server_records().last().cloned()).expect("cloud record");
    assert_eq!(rec.local.ip(), &ip("10.0.0.4"), "NAT rewrote the destination to the private address");
    assert_eq!(rec.peer.ip(), &ip("192.168.1.35"));

    // The cloud's traffic appears from its public address.
    let down = cloud.transfer(ip("192.168.1.35"), 5002, 64 * 1024, Duration::from_secs(60));
    assert!(down.ok(), "{down}");
    let rec = wait_for(Duration::from_secs(10), || onprem.server_records().last().cloned()).expect("onprem record");
    assert_eq!(rec.peer.ip(), &ip("203.0.113.10"), "NAT rewrote the source to the public address");

    // The cloud box roams to another public address.
    assert!(underlay.set_public_address(CLOUD, Some(ip("203.0.113.20"))));
    assert_eq!(underlay.public_address(CLOUD), Some(ip("203.0.113.20")));
    let before = underlay.counters(ONPREM).unwrap();
    let old = onprem.ping(ip("203.0.113.10"), 2, Duration::from_millis(500));
    assert_eq!(old.received, 0, "{old}");
    let after = settled(|| underlay.counters(ONPREM).unwrap());
    assert_eq!(after.dropped(DropReason::NoRoute) - before.dropped(DropReason::NoRoute), 2);
    let new = onprem.ping(ip("203.0.113.20"), 3, Duration::from_secs(3));
    assert!(new.all_received(), "{new}");
    let down = cloud.transfer(ip("192.168.1.35"), 5002, 64 * 1024, Duration::from_secs(60));
    assert!(down.ok(), "{down}");
    let rec = wait_for(Duration::from_secs(10), || onprem.server_records().get(1).cloned()).expect("second record");
    assert_eq!(rec.peer.ip(), &ip("203.0.113.20"), "the peer sees the endpoint change");

    // Latency and 10% loss on a bounded number of pings.
    let all_drops = || -> u64 {
        let ul: u64 = [ONPREM, CLOUD].iter().map(|&a| underlay.counters(a).unwrap().drops().iter().map(|d| d.1).sum::<u64>()).sum();
        ul + onprem.counters().rx_queue_full + cloud.counters().rx_queue_full
    };
    let drops_before = settled(all_drops);
    let latency = Duration::from_millis(20);
    underlay.set_latency(latency);
    underlay.set_loss(10.0);
    let lossy = onprem.ping(ip("203.0.113.20"), 40, Duration::from_secs(1));
    println!("{lossy}");
    underlay.set_loss(0.0);
    underlay.set_latency(Duration::ZERO);
    let loss: u64 = settled(|| [ONPREM, CLOUD].iter().map(|&a| underlay.counters(a).unwrap().dropped(DropReason::Loss)).sum());
    let drops = settled(all_drops) - drops_before;
    assert!(loss > 0 && lossy.received > 0 && lossy.received < lossy.sent, "{lossy}");
    // Each unanswered request is one drop (the request or its reply; on an
    // unloaded machine always a `loss`) or one reply that came too late.
    assert_eq!(u64::from(lossy.sent - lossy.received), drops + u64::from(lossy.late), "{lossy}");
    // A lower bound the underlay guarantees (both ways delayed), not a speed.
    assert!(lossy.rtt_min().unwrap() >= latency * 2, "{lossy}");

    // Garbage on the wire is counted, and routing goes on.
    let junk = UnixDatagram::unbound().unwrap();
    for i in 0..50u8 {
        let frame: Vec<u8> = (0..u16::from(i) * 3).map(|j| (j as u8).wrapping_mul(i)).collect();
        junk.send_to(&frame, &ul_onprem.bind).unwrap();
    }
    let again = onprem.ping(ip("203.0.113.20"), 2, Duration::from_secs(3));
    assert!(again.all_received(), "{again}");

    // The counters add up at every place a frame crosses.
    let (c_onprem, c_cloud, h_onprem, h_cloud) =
        settled(|| (underlay.counters(ONPREM).unwrap(), underlay.counters(CLOUD).unwrap(), onprem.counters(), cloud.counters()));
    println!("onprem {c_onprem}\ncloud  {c_cloud}");
    check_accounting("onprem", &c_onprem);
    check_accounting("cloud", &c_cloud);
    assert_eq!(c_onprem.frames_in, h_onprem.frames_out + 50, "every host frame and the junk reached the underlay");
    assert_eq!(c_cloud.frames_in, h_cloud.frames_out);
    assert_eq!(c_onprem.frames_out, h_onprem.frames_in);
    assert_eq!(c_cloud.frames_out, h_cloud.frames_in);
    assert_eq!(c_onprem.dropped(DropReason::Malformed) + c_onprem.dropped(DropReason::NotIpv4), 50);
    // The onprem stand-in asked for its gateway once; the cloud one learned
    // the gateway's MAC from the underlay's own request for 10.0.0.4.
    assert_eq!(c_onprem.arp_answered, 1);
    assert!(c_cloud.arp_answered <= 1 && c_cloud.arp_requests_sent >= 1, "{c_cloud}");
    assert!(c_cloud.nat_inbound > 0 && c_cloud.nat_outbound > 0);
    assert_eq!((c_onprem.nat_inbound, c_onprem.nat_outbound), (0, 0));
    for c in [&c_onprem, &c_cloud] {
        for r in [DropReason::NoPeer, DropReason::TtlExpired, DropReason::Unresolved] {
            assert_eq!(c.dropped(r), 0, "{r}: {c}");
        }
    }

    onprem.stop();
    cloud.stop();
    underlay.stop();
    assert!(!ul_onprem.bind.exists(), "stop removes the underlay's sockets");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_box_that_is_not_up_is_a_counted_drop() {
    let dir = run_dir("absent");
    let (ul_onprem, box_onprem) = SocketPair::link(&dir, "onprem");
    let (ul_cloud, _nobody) = SocketPair::link(&dir, "cloud");
    let underlay = Underlay::start(UnderlayConfig::new(vec![
        Attachment::new("onprem", ul_onprem, "192.168.1.35/24".parse().unwrap(), ip("192.168.1.1")),
        Attachment::new("cloud", ul_cloud, "10.0.0.4/24".parse().unwrap(), ip("10.0.0.1"))
            .with_public(ip("203.0.113.10"))
            .with_box_mac([0x52, 0x54, 0, 0, 0, 0x22]),
    ]))
    .unwrap();
    let onprem = SimHost::start(
        HostConfig::new("onprem-wan", box_onprem, [0x52, 0x54, 0, 0, 0, 0x12], vec!["192.168.1.35/24".parse().unwrap()])
            .with_gateway(ip("192.168.1.1")),
    )
    .unwrap();
    let r = onprem.ping(ip("203.0.113.10"), 2, Duration::from_millis(300));
    assert_eq!(r.received, 0);
    let c = settled(|| underlay.counters(CLOUD).unwrap());
    assert_eq!(c.dropped(DropReason::NoPeer), 2, "{c}");
    assert_eq!(c.frames_out, 0);
    drop(onprem);
    drop(underlay);
    let _ = std::fs::remove_dir_all(&dir);
}
