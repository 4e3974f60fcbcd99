//! Generations: every apply is one, the box keeps the last eight (as space
//! allows), a rollback applies a kept one again through the apply path, a
//! commit-confirm goes back by itself unless confirmed — also across a
//! restart — and a factory reset forgets configuration, history and keys.

use rand_core::OsRng;
use routerd_control::persist::{SavedKey, SavedKeyV1, SavedV1, SavedV2, SAVED_MAX, SAVED_VERSION};
use routerd_control::{Event, NicInfo, NicSnapshot, Node, Saved};
use routerd_dataplane::{FrameBuf, Instant, PortId, Transmit, BUF_SIZE, HEADROOM};
use routerd_provision::message::{text, FailureKind, History, Op, Origin, Reply, Status};

const MACS: [[u8; 6]; 2] = [[0x02, 0xa0, 0, 0, 0, 0], [0x02, 0xa0, 0, 0, 0, 1]];

fn cfg(keepalive: u16) -> Box<config_schema::Config> {
    let text = format!(
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
public_key = "ca67+D0dVOzK/Bjvjlowc7W4uQ/zJ1jT9fh1LNCS51w="
endpoint = "203.0.113.10:51820"
persistent_keepalive = {keepalive}
allowed_ips = ["10.20.0.50/32", "10.20.0.51/32"]

[[claims]]
address = "10.20.0.50/32"
owner = "cloud"
capture = {{ method = "proxy-arp", port = "lan0" }}
delivery = {{ tunnel = "wg0", peer = "cloud" }}
"#
    );
    Box::new(config_schema::human::from_toml(&text).unwrap())
}

fn node() -> Box<Node<OsRng>> {
    let nics: Vec<NicInfo> = MACS.iter().map(|&mac| NicInfo::ethernet(mac)).collect();
    let mut n = Box::new(Node::new(&nics, Some(OsRng), "0.1.0", "test"));
    n.set_wall_clock(Instant::ZERO, core::time::Duration::from_secs(1_800_000_000));
    n
}

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn nics() -> [NicSnapshot; 2] {
    [NicSnapshot { link_up: true, ..NicSnapshot::default() }; 2]
}

fn ask(n: &mut Node<OsRng>, ms: u64, op: Op) -> Reply {
    n.handle(t(ms), op, &nics())
}

fn applied(r: Reply) {
    assert!(matches!(r, Reply::Applied(_)), "{r:?}");
}

fn status(n: &mut Node<OsRng>, ms: u64) -> Box<Status> {
    match ask(n, ms, Op::Status { mark: false }) {
        Reply::Status(s) => s,
        other => panic!("{other:?}"),
    }
}

fn history(n: &mut Node<OsRng>, ms: u64) -> Box<History> {
    match ask(n, ms, Op::History) {
        Reply::History(h) => h,
        other => panic!("{other:?}"),
    }
}

fn origins(h: &History) -> Vec<(u64, Origin, bool)> {
    h.entries.iter().map(|e| (e.generation, e.origin, e.confirmed)).collect()
}

fn public_key(n: &mut Node<OsRng>, ms: u64) -> [u8; 32] {
    status(n, ms).tunnel.expect("a tunnel runs").public_key
}

fn events(n: &mut Node<OsRng>) -> Vec<String> {
    std::iter::from_fn(|| n.take_event()).filter(|e| matches!(e, Event::Reverted(_))).map(|e| e.to_string()).collect()
}

/// Garbage into lan0: one `ethernet_truncated` drop (runtime state an
/// apply must carry).
fn one_drop(n: &mut Node<OsRng>, ms: u64) {
    let mut raw = [0u8; BUF_SIZE];
    let mut fb = FrameBuf::new(&mut raw, HEADROOM, 3).unwrap();
    struct NoTx;
    impl Transmit for NoTx {
        fn send(&mut self, _: PortId, _: &[u8]) -> bool {
            false
        }
    }
    n.process(t(ms), PortId(0), &mut fb, &mut NoTx);
}

fn drops(n: &mut Node<OsRng>, ms: u64) -> u64 {
    status(n, ms).drops.iter().map(|d| d.value).sum()
}

fn addr(s: &str) -> config_schema::Ipv4Cidr {
    s.parse().unwrap()
}

#[test]
fn every_apply_is_a_generation_with_what_made_it() {
    let mut n = node();
    assert_eq!(history(&mut n, 1).running, None);
    applied(ask(&mut n, 10, Op::Apply(cfg(25))));
    let mut claim = cfg(25).claims[0].clone();
    claim.address = addr("10.20.0.51/32");
    applied(ask(&mut n, 20, Op::ClaimAdd(claim)));
    applied(ask(&mut n, 30, Op::ClaimRemove(addr("10.20.0.51/32"))));
    applied(ask(&mut n, 40, Op::Rollback { generation: 2, dry_run: false }));
    let h = history(&mut n, 50);
    let a = "10.20.0.51".parse().unwrap();
    assert_eq!(
        origins(&h),
        [(1, Origin::Apply, true), (2, Origin::ClaimAdd(a), true), (3, Origin::ClaimRemove(a), true), (4, Origin::Rollback(2), true)]
    );
    assert_eq!(h.running, Some(4));
    assert_eq!(h.pending, None);
    assert_eq!(status(&mut n, 51).generation, 4);
    // Times are the box's wall clock; the same configuration, the same size and hash.
    assert_eq!(h.entries[0].applied_ms, Some(1_800_000_000_010));
    assert_eq!((h.entries[1].size, h.entries[1].hash), (h.entries[3].size, h.entries[3].hash));
    assert_ne!(h.entries[0].hash, h.entries[1].hash);
    // A stored configuration by number; one not kept is refused, naming the kept ones.
    let Reply::Config(Some(c)) = ask(&mut n, 60, Op::GetGeneration(3)) else { panic!() };
    assert_eq!(c, cfg(25));
    match ask(&mut n, 61, Op::GetGeneration(9)) {
        Reply::Error(f) => {
            assert_eq!(f.kind, FailureKind::NotFound);
            assert_eq!(f.message.as_str(), "generation 9 is not kept on this box (kept: 1, 2, 3, 4)");
        }
        other => panic!("{other:?}"),
    }
    // Refusals make no generation.
    assert!(matches!(ask(&mut n, 62, Op::Rollback { generation: 4, dry_run: false }), Reply::Error(_)));
    assert!(matches!(ask(&mut n, 63, Op::Rollback { generation: 77, dry_run: false }), Reply::Error(f) if f.kind == FailureKind::NotFound));
    assert!(matches!(ask(&mut n, 64, Op::ClaimRemove(addr("10.20.0.99/32"))), Reply::Error(_)));
    assert_eq!(history(&mut n, 65).entries.len(), 4);

    // Eight are kept; the oldest go first; numbers are never reused.
    for k in 0..10u16 {
        applied(ask(&mut n, 100 + u64::from(k), Op::Apply(cfg(30 + k))));
    }
    let h = history(&mut n, 200);
    let numbers: Vec<u64> = h.entries.iter().map(|e| e.generation).collect();
    assert_eq!(numbers, (7..=14).collect::<Vec<_>>());
}

#[test]
fn a_rollback_carries_runtime_state_and_keeps_the_keys() {
    let mut n = node();
    applied(ask(&mut n, 10, Op::Apply(cfg(25))));
    let key = public_key(&mut n, 11);
    applied(ask(&mut n, 20, Op::Apply(cfg(20))));
    one_drop(&mut n, 30);
    assert_eq!(drops(&mut n, 31), 1);
    // The dry run is the plan: what would change, nothing changed.
    let Reply::Plan(plan) = ask(&mut n, 40, Op::Rollback { generation: 1, dry_run: true }) else { panic!() };
    assert_eq!(plan.changes.len(), 1, "{:?}", plan.changes);
    assert_eq!((plan.changes[0].section.as_str(), plan.changes[0].subject.as_str()), ("peers", "cloud"));
    assert!(plan.keys_created.is_empty());
    assert_eq!(n.config(), Some(&*cfg(20)));
    assert_eq!(history(&mut n, 41).entries.len(), 2);

    applied(ask(&mut n, 50, Op::Rollback { generation: 1, dry_run: false }));
    assert_eq!(n.config(), Some(&*cfg(25)));
    assert_eq!(public_key(&mut n, 51), key, "keys unchanged");
    assert_eq!(drops(&mut n, 52), 1, "runtime state carried like any apply");
    let Reply::Keys(k) = ask(&mut n, 53, Op::KeyShow) else { panic!() };
    assert_eq!(k.len(), 1);
    assert_eq!(origins(&history(&mut n, 54)).last(), Some(&(3, Origin::Rollback(1), true)));
}

#[test]
fn an_unconfirmed_apply_reverts_by_itself_and_the_revert_is_a_generation() {
    let mut n = node();
    // Nothing to go back to: refused.
    assert!(matches!(ask(&mut n, 1, Op::ApplyConfirm { config: cfg(25), window_ms: 60_000 }), Reply::Error(_)));
    applied(ask(&mut n, 10, Op::Apply(cfg(25))));
    // Windows outside 5 s ..= 60 min are refused.
    for w in [4_999, 3_600_001] {
        assert!(matches!(ask(&mut n, 11, Op::ApplyConfirm { config: cfg(20), window_ms: w }), Reply::Error(_)), "{w}");
    }
    assert!(
        matches!(ask(&mut n, 12, Op::Confirm), Reply::Error(f) if f.kind == FailureKind::NotFound && f.message.contains("nothing is waiting"))
    );
    one_drop(&mut n, 15);
    applied(ask(&mut n, 1_000, Op::ApplyConfirm { config: cfg(20), window_ms: 60_000 }));
    let st = status(&mut n, 19_000);
    let p = st.pending_confirm.expect("on trial");
    assert_eq!((p.generation, p.reverts_to, p.left_ms, p.window_ms), (2, 1, 42_000, 60_000));
    let mut text = String::new();
    st.write_summary(&mut text).unwrap();
    assert!(text.contains("pending confirmation: generation 2 reverts to 1 in 42 s"), "{text}");
    assert_eq!(origins(&history(&mut n, 19_001)), [(1, Origin::Apply, true), (2, Origin::Apply, false)]);

    // Not yet: the loop's turns before the deadline change nothing.
    n.apply_services(t(60_999));
    assert_eq!(n.config(), Some(&*cfg(20)));
    assert!(events(&mut n).is_empty());
    n.apply_services(t(61_000));
    assert_eq!(n.config(), Some(&*cfg(25)), "back on the confirmed generation");
    assert_eq!(events(&mut n), ["config: generation 2 was not confirmed within 1 min; reverted to generation 1 (now generation 3)"]);
    let h = history(&mut n, 61_001);
    assert_eq!(origins(&h).last(), Some(&(3, Origin::Reverted(2), true)));
    assert_eq!((h.running, h.pending), (Some(3), None));
    assert_eq!(drops(&mut n, 61_002), 1, "the revert carries state like any apply");
    assert!(n.take_unsaved(), "the revert is saved");
    // Too late to confirm.
    assert!(matches!(ask(&mut n, 61_003, Op::Confirm), Reply::Error(_)));
}

#[test]
fn a_confirm_in_time_keeps_it_and_a_request_after_the_deadline_reverts_first() {
    let mut n = node();
    applied(ask(&mut n, 10, Op::Apply(cfg(25))));
    applied(ask(&mut n, 20, Op::ApplyConfirm { config: cfg(20), window_ms: 10_000 }));
    assert!(n.take_unsaved());
    assert_eq!(ask(&mut n, 10_019, Op::Confirm), Reply::Confirmed { generation: 2 });
    assert!(n.take_unsaved(), "the confirmation is saved");
    n.apply_services(t(100_000));
    assert_eq!(n.config(), Some(&*cfg(20)), "kept");
    assert!(events(&mut n).is_empty());
    assert_eq!(origins(&history(&mut n, 100_001)).last(), Some(&(2, Origin::Apply, true)));

    // A platform that only answers requests (no loop turn) still reverts:
    // the next request after the deadline sees it first.
    applied(ask(&mut n, 200_000, Op::ApplyConfirm { config: cfg(21), window_ms: 5_000 }));
    let st = status(&mut n, 205_000);
    assert_eq!(st.pending_confirm, None);
    assert_eq!(st.generation, 4);
    assert_eq!(n.config(), Some(&*cfg(20)));
    assert_eq!(events(&mut n), ["config: generation 3 was not confirmed within 5 s; reverted to generation 2 (now generation 4)"]);
}

#[test]
fn a_second_apply_on_trial_restarts_the_timer_and_keeps_the_confirmed_target() {
    let mut n = node();
    applied(ask(&mut n, 10, Op::Apply(cfg(25))));
    applied(ask(&mut n, 1_000, Op::ApplyConfirm { config: cfg(20), window_ms: 10_000 }));
    // A claim added on trial is part of the trial: the timer keeps running.
    let mut claim = cfg(25).claims[0].clone();
    claim.address = addr("10.20.0.51/32");
    applied(ask(&mut n, 2_000, Op::ClaimAdd(claim)));
    let p = status(&mut n, 2_001).pending_confirm.unwrap();
    assert_eq!((p.generation, p.reverts_to, p.left_ms), (3, 1, 8_999));
    // Another commit-confirm: the timer restarts, the target stays 1.
    applied(ask(&mut n, 9_000, Op::ApplyConfirm { config: cfg(21), window_ms: 30_000 }));
    let p = status(&mut n, 9_001).pending_confirm.unwrap();
    assert_eq!((p.generation, p.reverts_to, p.left_ms), (4, 1, 29_999));
    let h = history(&mut n, 9_002);
    assert_eq!(h.entries.iter().map(|e| e.confirmed).collect::<Vec<_>>(), [true, false, false, false]);
    n.apply_services(t(20_000));
    assert_eq!(n.config(), Some(&*cfg(21)), "the first window no longer counts");
    n.apply_services(t(39_000));
    assert_eq!(n.config(), Some(&*cfg(25)), "back to the last confirmed generation, not the one before the second apply");
    assert_eq!(origins(&history(&mut n, 39_001)).last(), Some(&(5, Origin::Reverted(4), true)));
}

fn record(n: &Node<OsRng>, ms: u64) -> Vec<u8> {
    let mut buf = vec![0u8; SAVED_MAX];
    n.saved_state(t(ms)).encode(&mut buf).expect("the record fits").to_vec()
}

fn reboot(bytes: &[u8]) -> (Box<Node<OsRng>>, Reply) {
    let saved = Saved::decode(bytes).expect("a record this box reads");
    let mut n = node();
    let reply = n.restore(saved, t(0));
    (n, reply)
}

#[test]
fn a_restart_on_trial_comes_back_on_the_confirmed_generation() {
    let mut n = node();
    applied(ask(&mut n, 10, Op::Apply(cfg(25))));
    let key = public_key(&mut n, 11);
    applied(ask(&mut n, 20, Op::ApplyConfirm { config: cfg(20), window_ms: 600_000 }));
    // Power fails with the trial saved.
    let bytes = record(&n, 30);
    let (mut back, reply) = reboot(&bytes);
    applied(reply);
    assert_eq!(back.config(), Some(&*cfg(25)), "the confirmed configuration, not the one on trial");
    assert_eq!(public_key(&mut back, 1), key);
    assert_eq!(
        events(&mut back),
        ["config: generation 2 was waiting for confirmation when the box restarted; restored generation 1 instead (now generation 3)"]
    );
    let h = history(&mut back, 2);
    assert_eq!(origins(&h), [(1, Origin::Apply, true), (2, Origin::Apply, false), (3, Origin::RevertedAtRestart(2), true)]);
    assert_eq!(h.pending, None);
    assert!(back.take_unsaved());
    // The next boot restores generation 3 as it is: no new generation.
    let (mut again, reply) = reboot(&record(&back, 3));
    applied(reply);
    assert_eq!(again.config(), Some(&*cfg(25)));
    assert!(events(&mut again).is_empty());
    assert_eq!(history(&mut again, 1).running, Some(3));
    assert_eq!(again.generation(), 3);

    // A confirmed trial comes back as it is.
    applied(ask(&mut again, 10, Op::ApplyConfirm { config: cfg(21), window_ms: 600_000 }));
    assert!(matches!(ask(&mut again, 11, Op::Confirm), Reply::Confirmed { generation: 4 }));
    let (mut kept, reply) = reboot(&record(&again, 12));
    applied(reply);
    assert_eq!(kept.config(), Some(&*cfg(21)));
    assert_eq!(history(&mut kept, 1).entries.len(), 4);
}

#[test]
fn a_factory_reset_forgets_configuration_history_and_keys() {
    let mut n = node();
    applied(ask(&mut n, 10, Op::Apply(cfg(25))));
    let key = public_key(&mut n, 11);
    applied(ask(&mut n, 20, Op::ApplyConfirm { config: cfg(20), window_ms: 60_000 }));
    assert!(n.take_unsaved());
    // The wrong box: refused, nothing changed.
    match ask(&mut n, 30, Op::FactoryReset { device: text("other") }) {
        Reply::Error(f) => assert!(f.message.contains("\"edge\"") && f.message.contains("\"other\""), "{}", f.message),
        other => panic!("{other:?}"),
    }
    assert!(!n.take_erase());
    assert_eq!(ask(&mut n, 31, Op::FactoryReset { device: text("edge") }), Reply::Done);
    assert!(n.take_erase(), "the platform must erase its store");
    assert!(!n.take_erase(), "once");
    assert!(!n.take_unsaved(), "nothing to save: erased, not saved");
    assert!(n.is_blank());
    let st = status(&mut n, 32);
    assert!(!st.configured && st.pending_confirm.is_none() && st.generation == 0);
    assert!(matches!(ask(&mut n, 33, Op::KeyShow), Reply::Keys(k) if k.is_empty()));
    assert!(history(&mut n, 34).entries.is_empty());
    assert!(n.forwarding().is_none(), "forwarding stopped");
    n.apply_services(t(1_000_000));
    assert!(n.config().is_none(), "the pending revert went with the rest");
    let s = n.saved_state(t(35));
    assert!(s.keys.is_empty() && s.config.is_none() && s.history.is_empty() && s.pending.is_none());
    // An unconfigured box is reset with an empty device name.
    assert_eq!(ask(&mut n, 36, Op::FactoryReset { device: text("") }), Reply::Done);
    // The next apply makes a new key and starts at generation 1.
    applied(ask(&mut n, 40, Op::Apply(cfg(25))));
    assert_ne!(public_key(&mut n, 41), key, "a new WireGuard identity");
    assert_eq!(n.generation(), 1);
}

#[test]
fn records_of_versions_1_and_2_are_read_and_history_starts_with_the_running_one() {
    let mut n = node();
    applied(ask(&mut n, 10, Op::Apply(cfg(25))));
    applied(ask(&mut n, 20, Op::Apply(cfg(20))));
    let key = public_key(&mut n, 21);
    let now = n.saved_state(t(22));
    assert_eq!(now.version, SAVED_VERSION);
    let v2 = SavedV2 {
        version: 2,
        schema: now.schema,
        generation: now.generation,
        boots: now.boots,
        wall_clock_ms: now.wall_clock_ms,
        keys: now.keys.clone(),
        config: now.config.clone(),
    };
    let v1 = SavedV1 {
        version: 1,
        schema: now.schema,
        generation: now.generation,
        boots: now.boots,
        wall_clock_ms: now.wall_clock_ms,
        keys: now.keys.iter().map(|k: &SavedKey| SavedKeyV1 { name: k.name.clone(), secret: k.secret, generated: k.generated }).collect(),
        config: now.config.clone(),
    };
    let mut buf = vec![0u8; SAVED_MAX];
    for bytes in [postcard::to_slice(&v2, &mut buf.clone()).unwrap().to_vec(), postcard::to_slice(&v1, &mut buf).unwrap().to_vec()] {
        let (mut back, reply) = reboot(&bytes);
        applied(reply);
        assert_eq!(back.config(), Some(&*cfg(20)));
        assert_eq!(public_key(&mut back, 1), key, "the WireGuard identity survives the update");
        let h = history(&mut back, 2);
        assert_eq!(origins(&h), [(2, Origin::Upgraded, true)]);
        assert_eq!(h.running, Some(2));
        // The next apply continues the numbering.
        applied(ask(&mut back, 3, Op::Apply(cfg(21))));
        assert_eq!(origins(&history(&mut back, 4)).last(), Some(&(3, Origin::Apply, true)));
        let Reply::Config(Some(c)) = ask(&mut back, 5, Op::GetGeneration(2)) else { panic!() };
        assert_eq!(c, cfg(20));
    }
    // A record layout from the future is refused, naming it.
    let mut future = record(&n, 23);
    future[0] = 4;
    assert_eq!(Saved::decode(&future).unwrap_err(), routerd_control::RestoreError::Version(4));
}

/// The largest configurations a box runs (the limits at their maximum,
/// every name as long as allowed): the record stays within one store slot
/// whatever the history, the oldest entries going first, and the running
/// configuration and a pending revert target always kept.
#[test]
fn maximal_configurations_keep_the_record_within_a_store_slot() {
    let nics: Vec<NicInfo> = (0..8u8).map(|i| NicInfo::ethernet([0x02, 0xa0, 0, 0, 0, i])).collect();
    let mut n = Box::new(Node::new(&nics, Some(OsRng), "0.1.0", "test"));
    let snaps = vec![NicSnapshot::default(); 8];
    let mut sizes = Vec::new();
    for k in 0..10u16 {
        let c = maximal(k);
        let reply = if k == 3 {
            n.handle(t(u64::from(k)), Op::ApplyConfirm { config: Box::new(c), window_ms: 3_600_000 }, &snaps)
        } else {
            n.handle(t(u64::from(k)), Op::Apply(Box::new(c)), &snaps)
        };
        applied(reply);
        let bytes = record(&n, 100);
        sizes.push(bytes.len());
        assert!(bytes.len() <= routerd_storage::MAX_PAYLOAD);
        let Reply::History(h) = n.handle(t(100), Op::History, &snaps) else { panic!() };
        let kept: Vec<u64> = h.entries.iter().map(|e| e.generation).collect();
        assert!(kept.contains(&(u64::from(k) + 1)), "the running one: {kept:?}");
        if k >= 3 {
            assert!(kept.contains(&3), "the pending revert target: {kept:?}");
        }
        assert!(kept.windows(2).all(|w| w[0] < w[1]));
        // What the record holds comes back whole.
        let (mut back, reply) = reboot_with(&bytes, &nics);
        applied(reply);
        let Reply::History(hb) = back.handle(t(1), Op::History, &snaps) else { panic!() };
        let back_kept: Vec<u64> = hb.entries.iter().map(|e| e.generation).collect();
        if k >= 3 {
            assert_eq!(back_kept.last(), Some(&(u64::from(k) + 2)), "restarted on trial: the revert is a new generation");
        } else {
            assert_eq!(back_kept, kept);
        }
    }
    let size = history_size(&mut n, &snaps);
    println!("maximal configuration: {size} bytes on the wire; records {sizes:?} (slot {})", routerd_storage::MAX_PAYLOAD);
    assert!(size > 8 * 1024, "a large configuration: {size}");
    let Reply::History(h) = n.handle(t(200), Op::History, &snaps) else { panic!() };
    assert!(h.entries.len() < 8, "not all eight fit: {}", h.entries.len());
    assert_eq!(h.entries.iter().map(|e| e.generation).collect::<Vec<_>>().first(), Some(&3), "pinned");
}

fn history_size(n: &mut Node<OsRng>, snaps: &[NicSnapshot]) -> u32 {
    let Reply::History(h) = n.handle(t(100), Op::History, snaps) else { panic!() };
    h.entries.last().unwrap().size
}

fn reboot_with(bytes: &[u8], nics: &[NicInfo]) -> (Box<Node<OsRng>>, Reply) {
    let saved = Saved::decode(bytes).expect("a record this box reads");
    let mut n = Box::new(Node::new(nics, Some(OsRng), "0.1.0", "test"));
    let reply = n.restore(saved, t(0));
    (n, reply)
}

/// Every limit at its maximum with names as long as allowed; `k` varies a
/// keepalive so each generation differs.
fn maximal(k: u16) -> config_schema::Config {
    use config_schema::{Capture, CaptureMethod, Claim, Delivery, Name, Peer, PortAddress, PortRole, Segment, RUNS};
    let long = |s: &str| Name::new(&format!("{s:x<24}")).unwrap();
    let cidr = |s: &str| -> config_schema::Ipv4Cidr { s.parse().unwrap() };
    let mut c = *cfg(25);
    c.device.name = long("edge");
    c.peers.clear();
    c.claims.clear();
    c.ports.clear();
    let port_names: Vec<Name> = (0..RUNS.ports).map(|n| Name::new(config_schema::platform::contract_name(n).as_str()).unwrap()).collect();
    for (n, name) in port_names.iter().enumerate() {
        let (role, address, gateway) = match n {
            0 => (PortRole::Lan, "10.20.0.2/24".to_string(), None),
            1 => (PortRole::Wan, "192.168.1.35/24".to_string(), Some("192.168.1.1".parse().unwrap())),
            n => (PortRole::Lan, format!("10.3{n}.0.2/24"), None),
        };
        c.ports
            .push(config_schema::Port {
                name: name.clone(),
                role,
                mac: Some(config_schema::Mac([2, 0xa0, 0, 0, 0, n as u8])),
                address: Some(PortAddress::Static(cidr(&address))),
                gateway,
                mtu: RUNS.port_mtu_max,
            })
            .unwrap();
    }
    c.wireguard[0].address = Some(cidr("10.1.0.1/16"));
    c.dns.servers = ["192.168.1.1", "192.168.1.2", "192.168.1.3"].iter().map(|s| s.parse().unwrap()).collect();
    let per_peer = RUNS.tunnel_routes / RUNS.peers;
    for p in 0..RUNS.peers {
        let mut allowed: heapless::Vec<config_schema::Ipv4Cidr, { config_schema::limits::MAX_ALLOWED_IPS }> = heapless::Vec::new();
        allowed.push(cidr(&format!("10.2.{p}.0/24"))).unwrap();
        if p == 0 {
            allowed.push(cidr("10.20.0.96/27")).unwrap();
        }
        let mut h = 1;
        while allowed.len() < per_peer {
            allowed.push(cidr(&format!("172.16.{p}.{h}/32"))).unwrap();
            h += 1;
        }
        c.peers
            .push(Peer {
                name: long(&format!("peer{p}")),
                tunnel: c.wireguard[0].name.clone(),
                public_key: config_schema::PublicKey(routerd_wireguard::SecretKey::from_bytes([p as u8 + 1; 32]).public_key().0),
                // Dialled by the longest DNS names there are (resolved by the box).
                endpoint: Some(
                    format!("{}.{}.{}.{}.p{p:0>2}.example:51820", "a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(49))
                        .parse()
                        .unwrap(),
                ),
                allowed_ips: allowed,
                persistent_keepalive: Some(25 + k),
                preshared_key: Some(format!("device:{:x<24}", format!("psk{p}")).parse().unwrap()),
            })
            .unwrap();
    }
    for i in 0..RUNS.claims {
        let (owner, address) = if i % 2 == 0 { ("cloud", 96 + i / 2) } else { ("onprem", 10 + i / 2) };
        c.claims
            .push(Claim {
                address: cidr(&format!("10.20.0.{address}/32")),
                owner: Name::new(owner).unwrap(),
                gratuitous_arp: Some(3),
                conflict_hold: Some(60),
                local_port: None,
                mss_clamp: config_schema::MssClamp::Auto,
                capture: Capture { method: CaptureMethod::ProxyArp, port: port_names[0].clone(), configure_os_address: false },
                delivery: Delivery { tunnel: c.wireguard[0].name.clone(), peer: long("peer0") },
            })
            .unwrap();
    }
    for (s, port) in c.ports.clone().iter().filter(|p| p.role == PortRole::Lan).enumerate() {
        c.segments
            .push(Segment {
                name: long(&format!("seg{s}")),
                vni: 1000 + s as u32,
                port: port.name.clone(),
                local_vtep: "10.1.0.1".parse().unwrap(),
                remote_vteps: (0..RUNS.vteps_per_segment).map(|v| format!("10.2.{v}.1").parse().unwrap()).collect(),
                udp_port: 4789,
                mtu: 1370,
                mss_clamp: config_schema::MssClamp::Auto,
                control: Default::default(),
            })
            .unwrap();
    }
    c
}
