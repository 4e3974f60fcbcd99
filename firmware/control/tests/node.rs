//! The node's operations: plan, atomic apply, claims, keys, status.

use rand_core::OsRng;
use routerd_control::{NicInfo, NicSnapshot, Node};
use routerd_dataplane::Instant;
use routerd_provision::message::{ChangeKind, ClaimRole, ClaimState, FailureKind, KeyKind, Op, Reply};

const MACS: [[u8; 6]; 2] = [[0x02, 0xa0, 0, 0, 0, 0], [0x02, 0xa0, 0, 0, 0, 1]];
const PEER_KEY: &str = "ca67+D0dVOzK/Bjvjlowc7W4uQ/zJ1jT9fh1LNCS51w=";

fn toml(extra_claim: bool) -> String {
    let mut s = format!(
        r#"
[device]
name = "edge"
side = "onprem"

[[ports]]
name = "lan0"
role = "lan"
address = "10.20.0.2/24"

[[ports]]
name = "wan0"
role = "wan"
address = "192.168.1.35/24"
gateway = "192.168.1.1"

[[wireguard]]
name = "wg0"
private_key = "device:wg0"

[[peers]]
name = "cloud"
tunnel = "wg0"
public_key = "{PEER_KEY}"
endpoint = "203.0.113.10:51820"
allowed_ips = ["10.20.0.50/32", "10.20.0.51/32", "10.20.0.52/32"]

[[claims]]
address = "10.20.0.50/32"
owner = "cloud"
capture = {{ method = "proxy-arp", port = "lan0" }}
delivery = {{ tunnel = "wg0", peer = "cloud" }}
"#
    );
    if extra_claim {
        s.push_str(
            r#"
[[claims]]
address = "10.20.0.51/32"
owner = "cloud"
mss_clamp = 1300
capture = { method = "proxy-arp", port = "lan0" }
delivery = { tunnel = "wg0", peer = "cloud" }
"#,
        );
    }
    s
}

fn cfg(extra: bool) -> Box<config_schema::Config> {
    Box::new(config_schema::human::from_toml(&toml(extra)).unwrap())
}

fn node() -> Box<Node<OsRng>> {
    let nics: Vec<NicInfo> = MACS.iter().map(|&mac| NicInfo::ethernet(mac)).collect();
    Box::new(Node::new(&nics, Some(OsRng), "0.1.0", "test"))
}

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn nics() -> [NicSnapshot; 2] {
    [NicSnapshot { link_up: true, rx_frames: 5, ..NicSnapshot::default() }; 2]
}

fn status(n: &mut Node<OsRng>, now: u64) -> Box<routerd_provision::Status> {
    match n.handle(t(now), Op::Status { mark: false }, &nics()) {
        Reply::Status(s) => s,
        other => panic!("{other:?}"),
    }
}

#[test]
fn unconfigured_node_reports_ports_and_refuses_claim_ops() {
    let mut n = node();
    let st = status(&mut n, 1);
    assert!(!st.configured);
    assert_eq!(st.ports.len(), 2);
    assert_eq!(st.ports[0].name.as_str(), "lan0");
    assert_eq!(st.ports[1].name.as_str(), "wan0");
    assert_eq!(st.ports[1].mac, MACS[1]);
    let c = cfg(true).claims[1].clone();
    match n.handle(t(2), Op::ClaimAdd(c), &nics()) {
        Reply::Error(f) => assert_eq!(f.kind, FailureKind::NotConfigured),
        other => panic!("{other:?}"),
    }
    assert!(matches!(n.handle(t(3), Op::GetConfig, &nics()), Reply::Config(None)));
}

#[test]
fn plan_changes_nothing_and_apply_runs_with_a_generated_key() {
    let mut n = node();
    let Reply::Plan(plan) = n.handle(t(1), Op::Plan(cfg(false)), &nics()) else { panic!() };
    assert!(plan.changes.iter().any(|c| c.kind == ChangeKind::Add && c.subject.as_str() == "10.20.0.50/32"));
    assert_eq!(plan.keys_created.len(), 1, "the plan says a key will be made");
    assert!(n.config().is_none(), "plan applied something");
    assert!(matches!(n.handle(t(2), Op::KeyShow, &nics()), Reply::Keys(k) if k.is_empty()));

    let Reply::Applied(out) = n.handle(t(3), Op::Apply(cfg(false)), &nics()) else { panic!() };
    assert_eq!(out.keys_created.len(), 1);
    let public = out.keys_created[0].public_key.expect("a private key shows its public half");
    let st = status(&mut n, 4);
    assert!(st.configured);
    assert_eq!(st.device.as_str(), "edge");
    assert_eq!(st.tunnel.as_ref().unwrap().public_key, public);
    assert_eq!(st.peers[0].endpoint, Some("203.0.113.10:51820".parse().unwrap()));
    let claim = &st.claims[0];
    assert_eq!(claim.role, ClaimRole::ProxyArp);
    assert_eq!(claim.state, ClaimState::Probing, "a new proxy-ARP claim asks before it answers");
    assert_eq!(claim.mss, 1380);
    assert!(matches!(n.handle(t(5), Op::GetConfig, &nics()), Reply::Config(Some(c)) if *c == *cfg(false)));
    // The private key never leaves: KeyShow lists public halves only.
    let Reply::Keys(keys) = n.handle(t(6), Op::KeyShow, &nics()) else { panic!() };
    assert_eq!(keys[0].public_key, Some(public));
    assert_eq!(keys[0].kind, KeyKind::Private);
    assert!(keys[0].in_use && keys[0].generated);
}

#[test]
fn an_invalid_apply_names_the_path_and_keeps_the_running_config() {
    let mut n = node();
    assert!(matches!(n.handle(t(1), Op::Apply(cfg(false)), &nics()), Reply::Applied(_)));
    let mut bad = cfg(true);
    bad.claims[1].address = config_schema::Ipv4Cidr::new("10.20.0.51".parse().unwrap(), 24).unwrap();
    match n.handle(t(2), Op::Apply(bad), &nics()) {
        Reply::Error(f) => {
            assert_eq!(f.kind, FailureKind::Invalid);
            assert!(f.problems.iter().any(|p| p.path.as_str() == "claims[1].address" && p.error), "{f:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(n.config(), Some(&*cfg(false)));
    // Valid, but this box has no third NIC: refused at bind time, nothing changes.
    let mut three = cfg(false);
    let mut extra = three.ports[0].clone();
    extra.name = config_schema::Name::new("lan1").unwrap();
    extra.address = Some(config_schema::PortAddress::Static(config_schema::Ipv4Cidr::new("10.30.0.2".parse().unwrap(), 24).unwrap()));
    three.ports.push(extra).unwrap();
    match n.handle(t(3), Op::Apply(three), &nics()) {
        Reply::Error(f) => {
            assert_eq!(f.kind, FailureKind::Refused);
            assert!(f.message.starts_with("ports[2]"), "{}", f.message);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(n.config(), Some(&*cfg(false)));
    assert_eq!(status(&mut n, 4).claims.len(), 1);
}

#[test]
fn claim_add_and_remove_keep_the_tunnel() {
    let mut n = node();
    assert!(matches!(n.handle(t(1), Op::Apply(cfg(false)), &nics()), Reply::Applied(_)));
    let before = status(&mut n, 2).tunnel.unwrap().public_key;
    let claim = cfg(true).claims[1].clone();
    let Reply::Applied(out) = n.handle(t(3), Op::ClaimAdd(claim.clone()), &nics()) else { panic!() };
    assert!(!out.tunnel_restarts, "a claim add must not restart WireGuard");
    assert_eq!(out.changes.len(), 1);
    assert_eq!(out.changes[0].subject.as_str(), "10.20.0.51/32");
    let st = status(&mut n, 4);
    assert_eq!(st.claims.len(), 2);
    assert_eq!(st.claims[1].mss, 1300);
    assert!(!st.claims[1].mss_auto);
    assert_eq!(st.tunnel.unwrap().public_key, before);
    match n.handle(t(5), Op::ClaimAdd(claim.clone()), &nics()) {
        Reply::Error(f) => assert_eq!(f.kind, FailureKind::Exists),
        other => panic!("{other:?}"),
    }
    let Reply::Applied(out) = n.handle(t(6), Op::ClaimRemove(claim.address), &nics()) else { panic!() };
    assert_eq!(out.changes[0].kind, ChangeKind::Remove);
    assert_eq!(n.config(), Some(&*cfg(false)));
    match n.handle(t(7), Op::ClaimRemove(claim.address), &nics()) {
        Reply::Error(f) => {
            assert_eq!(f.kind, FailureKind::NotFound);
            // The refusal names the address (was "no claim for that address").
            assert!(f.message.starts_with(&format!("claims: no claim for {} on this box", claim.address.addr())), "{}", f.message);
        }
        other => panic!("{other:?}"),
    }
    // A claim whose address is outside every peer's allowed IPs is invalid:
    // the add is refused with the path, the running config stays.
    let mut stray = claim;
    stray.address = config_schema::Ipv4Cidr::new("10.20.0.99".parse().unwrap(), 32).unwrap();
    match n.handle(t(8), Op::ClaimAdd(stray), &nics()) {
        Reply::Error(f) => assert!(f.problems.iter().any(|p| p.path.starts_with("claims[1]")), "{f:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(n.config(), Some(&*cfg(false)));
}

#[test]
fn key_generate_replaces_the_running_key_and_import_is_explicit() {
    let mut n = node();
    let Reply::Applied(out) = n.handle(t(1), Op::Apply(cfg(false)), &nics()) else { panic!() };
    let first = out.keys_created[0].public_key;
    let slot = config_schema::Name::new("wg0").unwrap();
    let Reply::Keys(k) = n.handle(t(2), Op::KeyGenerate(slot.clone()), &nics()) else { panic!() };
    assert_ne!(k[0].public_key, first);
    assert_eq!(Some(status(&mut n, 3).tunnel.unwrap().public_key), k[0].public_key);
    let secret = [0x42u8; 32];
    let Reply::Keys(k) = n.handle(t(4), Op::KeyImport(slot, secret), &nics()) else { panic!() };
    let want = routerd_wireguard::SecretKey::from_bytes(secret).public_key().0;
    assert_eq!(k[0].public_key, Some(want));
    assert!(!k[0].generated);
    // Re-applying the same configuration keeps the imported key.
    let Reply::Applied(out) = n.handle(t(5), Op::Apply(cfg(false)), &nics()) else { panic!() };
    assert!(out.keys_created.is_empty());
    assert!(out.changes.is_empty());
    assert_eq!(status(&mut n, 6).tunnel.unwrap().public_key, want);
}

// ------------------------------------------------- preshared keys

/// The base configuration with the peer's preshared key in `slot`.
fn with_psk(slot: &str) -> Box<config_schema::Config> {
    let mut c = cfg(false);
    c.peers[0].preshared_key = Some(format!("device:{slot}").parse().unwrap());
    c
}

fn slot(s: &str) -> config_schema::Name {
    config_schema::Name::new(s).unwrap()
}

fn reveal(n: &mut Node<OsRng>, now: u64, s: &str) -> [u8; 32] {
    match n.handle(t(now), Op::PresharedKeyReveal(slot(s)), &nics()) {
        Reply::PresharedKey { slot: got, key } => {
            assert_eq!(got.as_str(), s);
            key
        }
        other => panic!("{other:?}"),
    }
}

fn refused(reply: Reply) -> Box<routerd_provision::message::Failure> {
    match reply {
        Reply::Error(f) => f,
        other => panic!("not refused: {other:?}"),
    }
}

/// `needle` appears nowhere in the encoded reply.
fn nowhere_in(reply: &Reply, needle: &[u8; 32]) -> bool {
    let mut buf = vec![0u8; routerd_provision::frame::MAX_PAYLOAD];
    let bytes = routerd_provision::message::encode(reply, &mut buf).unwrap();
    !bytes.windows(32).any(|w| w == needle)
}

#[test]
fn a_preshared_key_slot_is_made_at_apply_and_kept_by_later_applies() {
    let mut n = node();
    let Reply::Plan(plan) = n.handle(t(1), Op::Plan(with_psk("cloud-psk")), &nics()) else { panic!() };
    let made: Vec<(&str, KeyKind)> = plan.keys_created.iter().map(|k| (k.slot.as_str(), k.kind)).collect();
    assert_eq!(made, [("wg0", KeyKind::Private), ("cloud-psk", KeyKind::Preshared)], "the plan names both slots");
    assert!(matches!(n.handle(t(2), Op::KeyShow, &nics()), Reply::Keys(k) if k.is_empty()), "a plan keeps no key");

    let Reply::Applied(out) = n.handle(t(3), Op::Apply(with_psk("cloud-psk")), &nics()) else { panic!() };
    let psk_info = out.keys_created.iter().find(|k| k.slot.as_str() == "cloud-psk").expect("the apply reports the slot it made");
    assert_eq!((psk_info.kind, psk_info.public_key, psk_info.generated), (KeyKind::Preshared, None, true));
    let psk = reveal(&mut n, 4, "cloud-psk");
    assert_ne!(psk, [0; 32]);

    // Listed by kind, never with the secret; status does not carry it either.
    let keys = n.handle(t(5), Op::KeyShow, &nics());
    let Reply::Keys(k) = &keys else { panic!() };
    assert_eq!(k.len(), 2);
    assert!(k.iter().all(|k| k.in_use && k.generated));
    assert_eq!(k[1].kind, KeyKind::Preshared);
    assert_eq!(k[1].public_key, None);
    assert!(nowhere_in(&keys, &psk), "KeyShow carries the preshared key");
    let st = n.handle(t(6), Op::Status { mark: false }, &nics());
    assert!(nowhere_in(&st, &psk), "status carries the preshared key");
    assert!(nowhere_in(&Reply::Applied(out), &psk), "the apply's outcome carries the preshared key");

    // The same file again, a claim added, a changed peer: the same key, made once.
    let Reply::Applied(out) = n.handle(t(7), Op::Apply(with_psk("cloud-psk")), &nics()) else { panic!() };
    assert!(out.keys_created.is_empty() && out.changes.is_empty() && !out.tunnel_restarts);
    assert!(matches!(n.handle(t(8), Op::ClaimAdd(cfg(true).claims[1].clone()), &nics()), Reply::Applied(_)));
    let mut changed = with_psk("cloud-psk");
    changed.peers[0].persistent_keepalive = Some(25);
    let Reply::Applied(out) = n.handle(t(9), Op::Apply(changed), &nics()) else { panic!() };
    assert!(out.keys_created.is_empty() && out.tunnel_restarts);
    assert_eq!(reveal(&mut n, 10, "cloud-psk"), psk);

    // A configuration without it leaves the slot, unused, for a later one.
    assert!(matches!(n.handle(t(11), Op::Apply(cfg(false)), &nics()), Reply::Applied(_)));
    let Reply::Keys(k) = n.handle(t(12), Op::KeyShow, &nics()) else { panic!() };
    assert!(k.iter().any(|k| k.slot.as_str() == "cloud-psk" && !k.in_use));
    assert_eq!(reveal(&mut n, 13, "cloud-psk"), psk);
}

#[test]
fn a_slot_keeps_its_kind_and_private_keys_are_never_revealed() {
    let mut n = node();
    assert!(matches!(n.handle(t(1), Op::Apply(with_psk("cloud-psk")), &nics()), Reply::Applied(_)));

    // The private key's slot named as a preshared key in the same file: validation says so.
    let f = refused(n.handle(t(2), Op::Apply(with_psk("wg0")), &nics()));
    assert_eq!(f.kind, FailureKind::Invalid);
    assert!(f.problems.iter().any(|p| p.code.as_str() == "key-slot-kind" && p.path.as_str() == "peers[0].preshared_key"), "{f}");

    // A slot the box holds with the other kind: the box says so, naming the field.
    let mut other_tunnel_key = with_psk("wg0");
    other_tunnel_key.wireguard[0].private_key = "device:wg1".parse().unwrap();
    let f = refused(n.handle(t(3), Op::Apply(other_tunnel_key), &nics()));
    assert_eq!(f.kind, FailureKind::Refused);
    assert!(f.message.starts_with("peers[0].preshared_key: slot wg0 holds a private key"), "{}", f.message);
    let mut psk_as_private = with_psk("cloud-psk");
    psk_as_private.wireguard[0].private_key = "device:cloud-psk".parse().unwrap();
    psk_as_private.peers[0].preshared_key = None;
    let f = refused(n.handle(t(4), Op::Apply(psk_as_private), &nics()));
    assert!(f.message.starts_with("wireguard[0].private_key: slot cloud-psk holds a preshared key"), "{}", f.message);
    assert_eq!(n.config(), Some(&*with_psk("cloud-psk")), "nothing changed");

    // The key operations keep to their kind.
    let f = refused(n.handle(t(5), Op::KeyGenerate(slot("cloud-psk")), &nics()));
    assert!(f.message.contains("slot cloud-psk holds a preshared key"), "{}", f.message);
    let f = refused(n.handle(t(6), Op::KeyImport(slot("cloud-psk"), [1; 32]), &nics()));
    assert!(f.message.contains("holds a preshared key"), "{}", f.message);
    let f = refused(n.handle(t(7), Op::PresharedKeyImport(slot("wg0"), [1; 32]), &nics()));
    assert!(f.message.contains("slot wg0 holds a private key"), "{}", f.message);
    let f = refused(n.handle(t(8), Op::PresharedKeyGenerate(slot("wg0")), &nics()));
    assert!(f.message.contains("holds a private key"), "{}", f.message);
    let f = refused(n.handle(t(9), Op::PresharedKeyReveal(slot("wg0")), &nics()));
    assert_eq!(f.kind, FailureKind::Refused);
    assert!(f.message.contains("never leaves the box"), "{}", f.message);
    let f = refused(n.handle(t(10), Op::PresharedKeyReveal(slot("nope")), &nics()));
    assert_eq!(f.kind, FailureKind::NotFound);
    let Reply::Keys(k) = n.handle(t(11), Op::KeyShow, &nics()) else { panic!() };
    assert!(k.iter().all(|k| k.generated), "no refused operation changed a slot");
}

#[test]
fn a_preshared_key_is_imported_or_remade_and_the_tunnel_restarts_with_it() {
    let mut n = node();
    // Imported before the first apply (the other box made it): the apply uses it.
    let Reply::Keys(k) = n.handle(t(1), Op::PresharedKeyImport(slot("cloud-psk"), [0x42; 32]), &nics()) else { panic!() };
    assert_eq!((k[0].kind, k[0].generated, k[0].in_use), (KeyKind::Preshared, false, false));
    let Reply::Applied(out) = n.handle(t(2), Op::Apply(with_psk("cloud-psk")), &nics()) else { panic!() };
    assert_eq!(out.keys_created.len(), 1, "only the private key is made");
    assert_eq!(reveal(&mut n, 3, "cloud-psk"), [0x42; 32]);

    // Replaced while the tunnel runs: WireGuard is rebuilt with it.
    assert_eq!(status(&mut n, 100).applied_ms_ago, Some(98));
    let Reply::Keys(k) = n.handle(t(200), Op::PresharedKeyImport(slot("cloud-psk"), [0x43; 32]), &nics()) else { panic!() };
    assert!(k.iter().any(|k| k.slot.as_str() == "cloud-psk" && k.in_use && !k.generated));
    assert_eq!(status(&mut n, 200).applied_ms_ago, Some(0), "the tunnel restarted");
    assert_eq!(reveal(&mut n, 201, "cloud-psk"), [0x43; 32]);
    let Reply::Keys(_) = n.handle(t(300), Op::PresharedKeyGenerate(slot("cloud-psk")), &nics()) else { panic!() };
    let made = reveal(&mut n, 301, "cloud-psk");
    assert_ne!(made, [0x43; 32]);
    assert_eq!(status(&mut n, 300).applied_ms_ago, Some(0));
    // A slot no tunnel uses changes without a restart.
    let Reply::Keys(_) = n.handle(t(400), Op::PresharedKeyImport(slot("spare"), [7; 32]), &nics()) else { panic!() };
    assert_eq!(status(&mut n, 400).applied_ms_ago, Some(100));
    assert!(n.take_unsaved(), "key changes are saved");
}

#[test]
fn without_entropy_keys_and_applies_are_refused() {
    let nics_info: Vec<NicInfo> = MACS.iter().map(|&mac| NicInfo::ethernet(mac)).collect();
    let mut n: Node<OsRng> = Node::new(&nics_info, None, "0.1.0", "test");
    match n.handle(t(1), Op::Apply(cfg(false)), &nics()) {
        Reply::Error(f) => assert_eq!(f.kind, FailureKind::NoEntropy),
        other => panic!("{other:?}"),
    }
    assert!(n.config().is_none());
}

#[test]
fn status_mark_reports_drops_since() {
    let mut n = node();
    assert!(matches!(n.handle(t(1), Op::Apply(cfg(false)), &nics()), Reply::Applied(_)));
    let Reply::Status(s) = n.handle(t(2), Op::Status { mark: true }, &nics()) else { panic!() };
    assert!(s.mark_age_ms.is_none());
    // Garbage into lan0: one drop.
    let mut raw = [0u8; routerd_dataplane::BUF_SIZE];
    let mut fb = routerd_dataplane::FrameBuf::new(&mut raw, routerd_dataplane::HEADROOM, 3).unwrap();
    struct NoTx;
    impl routerd_dataplane::Transmit for NoTx {
        fn send(&mut self, _: routerd_dataplane::PortId, _: &[u8]) -> bool {
            false
        }
    }
    n.process(t(3), routerd_dataplane::PortId(0), &mut fb, &mut NoTx);
    let Reply::Status(s) = n.handle(t(10), Op::Status { mark: true }, &nics()) else { panic!() };
    assert_eq!(s.mark_age_ms, Some(8));
    assert_eq!(s.drops_since_mark.len(), 1, "{:?}", s.drops_since_mark);
    assert_eq!(s.drops_since_mark[0].name.as_str(), "ethernet_truncated");
    let Reply::Status(s) = n.handle(t(11), Op::Status { mark: false }, &nics()) else { panic!() };
    assert!(s.drops_since_mark.is_empty());
    assert_eq!(s.drops.len(), 1);
}

// ------------------------------------------------- state across applies

use etherparse::ArpOperation;
use routerd_dataplane::{FrameBuf, PortId, Transmit, BUF_SIZE, HEADROOM};
use routerd_e2e::net as frames;

/// Frames the box sent, by port.
#[derive(Default)]
struct Wire(Vec<(PortId, Vec<u8>)>);

impl Transmit for Wire {
    fn send(&mut self, port: PortId, frame: &[u8]) -> bool {
        self.0.push((port, frame.to_vec()));
        true
    }
}

const LAN: PortId = PortId(0);
const BOX_LAN_MAC: [u8; 6] = MACS[0];
const CLIENT_MAC: [u8; 6] = [0x02, 0x11, 0, 0, 0, 10];
const CLIENT: [u8; 4] = [10, 20, 0, 10];
const LIVE_MAC: [u8; 6] = [0x02, 0x99, 0, 0, 0, 0x50];
const CLAIMED: [u8; 4] = [10, 20, 0, 50];

/// One frame into lan0; what the box sent back (in place or extra).
fn rx(n: &mut Node<OsRng>, now: u64, frame: &[u8]) -> Vec<(PortId, Vec<u8>)> {
    let mut raw = [0u8; BUF_SIZE];
    raw[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
    let mut fb = FrameBuf::new(&mut raw, HEADROOM, frame.len()).unwrap();
    let mut wire = Wire::default();
    let mut f = n.forwarding().unwrap();
    f.dataplane.process_and_transmit(t(now), LAN, &mut fb, &mut f.tunnel, &mut wire);
    wire.0
}

/// Run the timers from `from` to `to` ms in 50 ms steps; what was sent.
fn run(n: &mut Node<OsRng>, from: u64, to: u64) -> Vec<(PortId, Vec<u8>)> {
    let mut wire = Wire::default();
    let mut ms = from;
    while ms <= to {
        let mut f = n.forwarding().unwrap();
        f.dataplane.poll(t(ms), &mut f.tunnel, &mut wire);
        ms += 50;
    }
    wire.0
}

/// ARP frames about 10.20.0.50 the box sent: (op, sender IP).
fn arp_about_claimed(sent: &[(PortId, Vec<u8>)]) -> Vec<(ArpOperation, [u8; 4])> {
    sent.iter()
        .filter_map(|(_, f)| frames::parse_arp(f))
        .filter(|(_, _, spa, tpa)| *tpa == CLAIMED || *spa == CLAIMED)
        .map(|(op, _, spa, _)| (op, spa))
        .collect()
}

fn claim_state(n: &mut Node<OsRng>, now: u64) -> ClaimState {
    status(n, now).claims[0].state
}

fn who_has_claimed(n: &mut Node<OsRng>, now: u64) -> bool {
    let reply = rx(n, now, &frames::arp_request(CLIENT_MAC, CLIENT, CLAIMED));
    reply
        .iter()
        .any(|(_, f)| matches!(frames::parse_arp(f), Some((ArpOperation::REPLY, mac, ip, _)) if mac == BOX_LAN_MAC && ip == CLAIMED))
}

#[test]
fn unrelated_applies_keep_a_conflict_the_arp_cache_and_the_counters() {
    let mut n = node();
    assert!(matches!(n.handle(t(0), Op::Apply(cfg(true)), &nics()), Reply::Applied(_)));
    // The probes go unanswered: both claims capture.
    let sent = run(&mut n, 0, 1_000);
    let probes = arp_about_claimed(&sent).iter().filter(|(op, spa)| *op == ArpOperation::REQUEST && *spa == [0; 4]).count();
    assert_eq!(probes, 3, "three RFC 5227 probes for 10.20.0.50");
    assert_eq!(claim_state(&mut n, 1_000), ClaimState::Active);
    assert!(who_has_claimed(&mut n, 1_010));
    // The client ARPs for the box: the box learns it.
    assert!(!rx(&mut n, 1_020, &frames::arp_request(CLIENT_MAC, CLIENT, [10, 20, 0, 2])).is_empty());
    let known = |n: &mut Node<OsRng>| n.forwarding().unwrap().dataplane.neighbors().entries().len();
    assert_eq!(known(&mut n), 1);

    // A live host announces 10.20.0.50.
    let garp = frames::arp(ArpOperation::REQUEST, LIVE_MAC, CLAIMED, [0xff; 6], [0; 6], CLAIMED);
    rx(&mut n, 2_000, &garp);
    let st = status(&mut n, 2_001);
    assert_eq!(st.claims[0].state, ClaimState::Conflict);
    assert_eq!(st.claims[0].conflict_mac, Some(LIVE_MAC));
    let drops_before = st.drops.clone();
    let Reply::Status(_) = n.handle(t(2_002), Op::Status { mark: true }, &nics()) else { panic!() };

    // Unrelated: remove the other claim; then re-apply a changed file.
    let other = cfg(true).claims[1].address;
    assert!(matches!(n.handle(t(2_100), Op::ClaimRemove(other), &nics()), Reply::Applied(_)));
    let mut changed = cfg(false);
    changed.peers[0].persistent_keepalive = Some(25);
    let Reply::Applied(out) = n.handle(t(2_200), Op::Apply(changed), &nics()) else { panic!() };
    assert!(out.tunnel_restarts, "the peer changed: WireGuard was rebuilt");
    let st = status(&mut n, 2_300);
    assert_eq!(st.claims[0].state, ClaimState::Conflict, "an unrelated apply must not hijack the live host's address");
    assert_eq!(st.claims[0].conflict_mac, Some(LIVE_MAC));
    assert_eq!(st.claims[0].conflicts, 1);
    assert_eq!(st.claims[0].arp_replies, 1, "per-claim counters carried");
    assert_eq!(st.drops, drops_before, "drop counters carried");
    assert_eq!(st.mark_age_ms, Some(298), "the doctor's mark survives applies");
    assert_eq!(known(&mut n), 1, "the ARP cache survives applies");
    assert!(!who_has_claimed(&mut n, 2_310));
    let sent = run(&mut n, 2_300, 5_000);
    assert!(arp_about_claimed(&sent).is_empty(), "no probe, no gratuitous ARP for a live host's address: {sent:?}");

    // The operator asks while the host is still there: the probe is answered.
    let Reply::Probing(p) = n.handle(t(5_000), Op::ClaimClearConflict(cfg(false).claims[0].address), &nics()) else { panic!() };
    assert_eq!((p.probes, p.done_in_ms), (3, 600));
    run(&mut n, 5_000, 5_000);
    let answer = frames::arp(ArpOperation::REPLY, LIVE_MAC, CLAIMED, BOX_LAN_MAC, BOX_LAN_MAC, [0; 4]);
    rx(&mut n, 5_010, &answer);
    let st = status(&mut n, 5_020);
    assert_eq!(st.claims[0].state, ClaimState::Conflict);
    assert_eq!(st.claims[0].probes_answered, 1);
    // Not in conflict → refused with the reason; unknown address → not found.
    let other_addr = config_schema::Ipv4Cidr::new("10.20.0.77".parse().unwrap(), 32).unwrap();
    match n.handle(t(5_030), Op::ClaimClearConflict(other_addr), &nics()) {
        Reply::Error(f) => {
            assert_eq!(f.kind, FailureKind::NotFound);
            assert!(f.message.starts_with("claims: no claim for 10.20.0.77 on this box"), "{}", f.message);
        }
        other => panic!("{other:?}"),
    }

    // The host leaves; the hold (60 s by default) passes; probes go unanswered.
    let sent = run(&mut n, 5_050, 65_700);
    let st = status(&mut n, 65_700);
    assert_eq!(st.claims[0].state, ClaimState::Active, "captured again after the hold and unanswered probes");
    let about = arp_about_claimed(&sent);
    assert_eq!(about.iter().filter(|(_, spa)| *spa == [0; 4]).count(), 3);
    assert!(about.iter().any(|(_, spa)| *spa == CLAIMED), "then announced");
    assert!(who_has_claimed(&mut n, 65_800));
    match n.handle(t(65_900), Op::ClaimClearConflict(cfg(false).claims[0].address), &nics()) {
        Reply::Error(f) => assert!(f.message.contains("not in conflict"), "{}", f.message),
        other => panic!("{other:?}"),
    }
    // Every transition was recorded with its reason, for the log.
    let log: Vec<String> = std::iter::from_fn(|| n.take_claim_event()).map(|e| e.to_string()).collect();
    assert!(log.iter().any(|l| l.contains("CONFLICT") && l.contains("02:99:00:00:00:50")), "{log:#?}");
    assert!(log.iter().any(|l| l.contains("probing") && l.contains("operator")), "{log:#?}");
    assert!(log.iter().any(|l| l.contains("still in use") && l.contains("02:99:00:00:00:50")), "{log:#?}");
    assert!(log.iter().any(|l| l.contains("probing") && l.contains("silent for 60 s")), "{log:#?}");
    assert!(log.last().is_some_and(|l| l.contains("capturing: 3 ARP probes unanswered")), "{log:#?}");
}
