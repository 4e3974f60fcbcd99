//! Fuzzing the parsers of the WAN services: the DHCP client (smoltcp's,
//! behind our frame intake) and the resolver's answer reader. Valid
//! messages are mutated (bit flips, truncation, extension, splices of
//! random bytes, pointer and count fields set to hostile values) and fed
//! in; the only oracle is "no panic, no hang" plus the resolver's own
//! contract (an answer it takes is one it asked for). A short run on every
//! `cargo test`; `ROUTERD_FUZZ_SECS=600 cargo test --release -p
//! routerd-control --test fuzz_services` for a long one.

use routerd_control::dhcp::DhcpClient;
use routerd_control::dns::{Policy, Resolver, MAX_QUERY};
use routerd_dataplane::{Instant, Mac, PortId, Transmit};
use smoltcp::wire::{DhcpMessageType, DhcpPacket, DhcpRepr, EthernetAddress, Ipv4Address};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant as Clock};

const MAC: [u8; 6] = [0x02, 0xa0, 0, 0, 0, 1];

/// xorshift64*: reproducible from the seed printed on failure.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, seed: &[u8], fixed_prefix: usize) -> Vec<u8> {
    let mut m = seed.to_vec();
    for _ in 0..1 + rng.below(6) {
        match rng.below(6) {
            0 if m.len() > fixed_prefix => {
                let i = fixed_prefix + rng.below(m.len() - fixed_prefix);
                m[i] ^= 1 << rng.below(8);
            }
            1 if m.len() > fixed_prefix => {
                let i = fixed_prefix + rng.below(m.len() - fixed_prefix);
                m[i] = rng.next() as u8;
            }
            2 => m.truncate(fixed_prefix + rng.below(m.len().saturating_sub(fixed_prefix) + 1)),
            3 => m.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
            4 if m.len() > fixed_prefix + 2 => {
                // A compression pointer or a count set to something hostile.
                let i = fixed_prefix + rng.below(m.len() - fixed_prefix - 1);
                let v = [0xc0 | rng.below(0x40) as u8, rng.next() as u8];
                m[i..i + 2].copy_from_slice(&v);
            }
            _ => {
                let i = rng.below(m.len() + 1).max(fixed_prefix.min(m.len()));
                let junk: Vec<u8> = (0..rng.below(16)).map(|_| rng.next() as u8).collect();
                m.splice(i..i, junk);
            }
        }
    }
    m
}

struct Sink(usize);

impl Transmit for Sink {
    fn send(&mut self, _: PortId, _: &[u8]) -> bool {
        self.0 += 1;
        true
    }
}

fn dhcp_frame(kind: DhcpMessageType, xid: u32) -> Vec<u8> {
    let dns: [Ipv4Address; 2] = [Ipv4Addr::new(192, 168, 1, 53), Ipv4Addr::new(9, 9, 9, 9)];
    let repr = DhcpRepr {
        message_type: kind,
        transaction_id: xid,
        secs: 0,
        client_hardware_address: EthernetAddress(MAC),
        client_ip: Ipv4Address::UNSPECIFIED,
        your_ip: Ipv4Addr::new(192, 168, 1, 77),
        server_ip: Ipv4Addr::new(192, 168, 1, 1),
        router: Some(Ipv4Addr::new(192, 168, 1, 1)),
        subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
        relay_agent_ip: Ipv4Address::UNSPECIFIED,
        broadcast: false,
        requested_ip: None,
        client_identifier: None,
        server_identifier: Some(Ipv4Addr::new(192, 168, 1, 1)),
        parameter_request_list: None,
        dns_servers: Some(dns.iter().copied().collect()),
        max_size: None,
        lease_duration: Some(600),
        renew_duration: None,
        rebind_duration: None,
        additional_options: &[],
    };
    let mut payload = vec![0u8; repr.buffer_len()];
    repr.emit(&mut DhcpPacket::new_unchecked(&mut payload[..])).unwrap();
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2([0x02, 0x5e, 0, 0, 0, 1], [0xff; 6])
        .ipv4([192, 168, 1, 1], [255; 4], 64)
        .udp(67, 68)
        .write(&mut out, &payload)
        .unwrap();
    out
}

/// `n` cases against one DHCP client; the Ethernet/IP/UDP headers of the
/// seeds are kept intact half of the time so the DHCP payload is reached.
fn dhcp_cases(seed: u64, n: usize) {
    let mut rng = Rng(seed | 1);
    let mut c = DhcpClient::new(PortId(1), Mac(MAC), seed, Instant::ZERO);
    let mut sink = Sink(0);
    let seeds = [dhcp_frame(DhcpMessageType::Offer, 7), dhcp_frame(DhcpMessageType::Ack, 7), dhcp_frame(DhcpMessageType::Nak, 7)];
    let mut now = 0u64;
    for _ in 0..n {
        let s = &seeds[rng.below(seeds.len())];
        let keep = if rng.below(2) == 0 { 42 } else { 0 };
        let f = mutate(&mut rng, s, keep);
        c.accept(&f);
        now += rng.below(3_000) as u64;
        c.poll(Instant::from_millis(now), &mut sink);
        let _ = c.take_change();
        let _ = c.poll_at(Instant::from_millis(now));
    }
}

/// An answer to `query` (CNAME then A, with pointers) — the seed.
fn dns_seed(query: &[u8]) -> Vec<u8> {
    let mut a = query.to_vec();
    a[2] |= 0x80;
    a[7] = 2;
    let cname = b"\x04home\x03dyn\xc0\x10";
    a.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 1, 44, 0, cname.len() as u8]);
    let target = a.len(); // where the CNAME's name starts
    a.extend_from_slice(cname);
    a.extend_from_slice(&[0xc0 | (target >> 8) as u8, target as u8, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 203, 0, 113, 20]);
    a
}

/// `n` cases; how many answers resolved (the harness reaches the success path).
fn dns_cases(seed: u64, n: usize) -> usize {
    let mut rng = Rng(seed | 1);
    let server = Ipv4Addr::new(192, 0, 2, 53);
    let names = ["wro.example.net".parse().unwrap(), "roz.example.net".parse().unwrap()];
    let mut r = Resolver::new(Policy::DEFAULT);
    r.set_names(names.iter());
    r.set_servers(&[server]);
    let mut now = 0u64;
    let mut out = [0u8; MAX_QUERY];
    let never = |_: &config_schema::DnsName| None;
    let mut query: Option<(Vec<u8>, u16)> = None;
    let mut resolved = 0;
    for _ in 0..n {
        r.add_entropy(rng.next() as u32);
        if let Some(q) = r.poll(Instant::from_millis(now), &never, &mut out) {
            query = Some((out[..q.len].to_vec(), q.port));
        }
        let Some((q, port)) = &query else {
            now += 1_000;
            continue;
        };
        let keep = if rng.below(2) == 0 { 2 } else { 0 };
        // One case in eight is the seed itself, unmutated.
        let answer = if rng.below(8) == 0 { dns_seed(q) } else { mutate(&mut rng, &dns_seed(q), keep) };
        r.on_answer(Instant::from_millis(now), server, 53, *port, &answer);
        while let Some(e) = r.take_event() {
            if let routerd_control::dns::DnsEvent::Resolved { address, .. } = e {
                assert!(!address.is_unspecified() && !address.is_broadcast() && !address.is_multicast() && !address.is_loopback());
                resolved += 1;
                query = None;
            }
        }
        now += rng.below(40_000) as u64;
    }
    resolved
}

fn budget() -> Option<Duration> {
    std::env::var("ROUTERD_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).map(Duration::from_secs)
}

#[test]
fn dhcp_intake_survives_mutated_frames() {
    let until = budget().map(|b| Clock::now() + b);
    let mut seed = 1;
    loop {
        eprintln!("dhcp seed {seed}");
        dhcp_cases(seed, 5_000);
        seed += 1;
        if until.is_none_or(|u| Clock::now() >= u) {
            break;
        }
    }
}

#[test]
fn resolver_survives_mutated_answers() {
    let until = budget().map(|b| Clock::now() + b);
    let mut seed = 1;
    loop {
        eprintln!("dns seed {seed}");
        assert!(dns_cases(seed, 20_000) > 0, "seed {seed}: no answer ever resolved; the harness misses the success path");
        seed += 1;
        if until.is_none_or(|u| Clock::now() >= u) {
            break;
        }
    }
}
