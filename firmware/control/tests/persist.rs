//! The node remembers: what it saves (configuration, key slots, state) goes
//! through `routerd-storage`'s store on a disk and comes back after a
//! "reboot" — the same configuration running, the same WireGuard identity —
//! and a power cut at any point of a save brings back the old or the new
//! configuration, never neither and never a mix.

use rand_core::OsRng;
use routerd_control::{NicInfo, NicSnapshot, Node, Saved};
use routerd_dataplane::Instant;
use routerd_provision::message::{KeyKind, Op, Reply};
use routerd_storage::testing::{CacheAtCut, Cut, MemDisk, PowerCutDisk};
use routerd_storage::{BlockSize, Region, Store};

const MACS: [[u8; 6]; 2] = [[0x02, 0xa0, 0, 0, 0, 0], [0x02, 0xa0, 0, 0, 0, 1]];
const PEER_KEY: &str = "ca67+D0dVOzK/Bjvjlowc7W4uQ/zJ1jT9fh1LNCS51w=";
const REGION: Region = Region { first_lba: 0, blocks: 2048 };

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
public_key = "{PEER_KEY}"
endpoint = "203.0.113.10:51820"
persistent_keepalive = {keepalive}
allowed_ips = ["10.20.0.50/32"]

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
    Box::new(Node::new(&nics, Some(OsRng), "0.1.0", "test"))
}

fn public_key(n: &mut Node<OsRng>) -> [u8; 32] {
    let snaps = [NicSnapshot::default(); 2];
    match n.handle(Instant::from_millis(1), Op::Status { mark: false }, &snaps) {
        Reply::Status(s) => s.tunnel.expect("a tunnel runs").public_key,
        other => panic!("{other:?}"),
    }
}

/// What the platform does after an apply: save the node's state.
fn save<D: routerd_storage::BlockDevice>(store: &mut Store<D>, n: &Node<OsRng>) -> Result<(), routerd_storage::StoreError> {
    let mut buf = vec![0u8; routerd_control::persist::SAVED_MAX];
    let bytes = n.saved_state(Instant::from_millis(5)).encode(&mut buf).expect("the record fits").to_vec();
    store.save(&bytes).map(|_| ())
}

/// What the platform does at boot: a new node, restored from the store.
fn boot(disk: MemDisk) -> (Box<Node<OsRng>>, Reply) {
    let mut store = Store::open(disk, REGION).expect("the store opens after any cut");
    let mut buf = vec![0u8; routerd_storage::MAX_PAYLOAD];
    let bytes = store.load(&mut buf).expect("load").expect("a record").to_vec();
    let saved = Saved::decode(&bytes).expect("a record this box reads");
    let mut n = node();
    let reply = n.restore(saved, Instant::ZERO);
    (n, reply)
}

#[test]
fn a_rebooted_node_runs_the_same_configuration_with_the_same_key() {
    let mut n = node();
    assert!(!n.take_unsaved());
    assert!(matches!(n.handle(Instant::ZERO, Op::Apply(cfg(25)), &[]), Reply::Applied(_)));
    assert!(n.take_unsaved(), "an apply asks to be saved");
    assert!(!n.take_unsaved(), "once");
    n.set_wall_clock(Instant::ZERO, core::time::Duration::from_secs(1_800_000_000));
    let key = public_key(&mut n);
    let mut store = Store::format(MemDisk::new(BlockSize::B512, REGION.blocks), REGION).unwrap();
    save(&mut store, &n).unwrap();

    let (mut again, reply) = boot(store.into_device());
    assert!(matches!(reply, Reply::Applied(_)), "{reply:?}");
    assert_eq!(again.config(), Some(&*cfg(25)));
    assert_eq!(public_key(&mut again), key, "the other site need not be re-keyed");
    assert_eq!(again.generation(), 1);
    let s = again.saved_state(Instant::ZERO);
    assert_eq!(s.boots, 1);
    assert_eq!(s.wall_clock_ms, None, "the platform sets the clock; the saved time is its floor");
    assert!(again.take_unsaved(), "the boot count moved: save again");
}

#[test]
fn a_record_from_another_schema_or_garbage_is_refused_whole() {
    let mut n = node();
    assert!(matches!(n.handle(Instant::ZERO, Op::Apply(cfg(25)), &[]), Reply::Applied(_)));
    let mut s = n.saved_state(Instant::ZERO);
    s.schema ^= 1;
    let mut buf = vec![0u8; routerd_control::persist::SAVED_MAX];
    let bytes = s.encode(&mut buf).unwrap().to_vec();
    let e = Saved::decode(&bytes).unwrap_err();
    assert!(e.to_string().contains("configuration schema"), "{e}");
    for cut in 0..bytes.len() {
        assert!(Saved::decode(&bytes[..cut]).is_err(), "truncated at {cut}");
    }
    assert!(Saved::decode(&[0xff; 64]).is_err());
}

#[test]
fn a_power_cut_during_a_save_brings_back_the_old_or_the_new_configuration() {
    // Boot 1 applied keepalive 25 and saved it; then an apply of keepalive
    // 20 is being saved when power fails, at every write and flush of it.
    let mut n = node();
    assert!(matches!(n.handle(Instant::ZERO, Op::Apply(cfg(25)), &[]), Reply::Applied(_)));
    let key = public_key(&mut n);
    let mut store = Store::format(MemDisk::new(BlockSize::B512, REGION.blocks), REGION).unwrap();
    save(&mut store, &n).unwrap();
    let before = store.into_device();
    assert!(matches!(n.handle(Instant::ZERO, Op::Apply(cfg(20)), &[]), Reply::Applied(_)));

    let (mut old, mut new) = (0, 0);
    for at_op in 0..8 {
        for cache in [CacheAtCut::Lost, CacheAtCut::Written, CacheAtCut::Subset { seed: 7 }] {
            for landed_blocks in [0, 1, 3] {
                let cut = Cut { at_op, landed_blocks, torn_bytes: Some(100), cache };
                let disk = PowerCutDisk::new(before.clone(), true).with_cut(cut);
                let mut store = Store::open(disk, REGION).unwrap();
                let _ = save(&mut store, &n);
                let (mut back, reply) = boot(store.into_device().into_medium());
                assert!(matches!(reply, Reply::Applied(_)), "cut {cut:?}: {reply:?}");
                assert_eq!(public_key(&mut back), key);
                match back.config() {
                    Some(c) if *c == *cfg(25) => old += 1,
                    Some(c) if *c == *cfg(20) => new += 1,
                    other => panic!("cut {cut:?}: neither configuration: {other:?}"),
                }
            }
        }
    }
    println!("power cuts during a save: {old} came back with the old configuration, {new} with the new");
    assert!(old > 0 && new > 0, "both outcomes exercised");
}

#[test]
fn preshared_keys_come_back_after_a_reboot_with_their_kind() {
    let mut n = node();
    let mut c = cfg(25);
    c.peers[0].preshared_key = Some("device:cloud-psk".parse().unwrap());
    assert!(matches!(n.handle(Instant::ZERO, Op::Apply(c.clone()), &[]), Reply::Applied(_)));
    let slot = config_schema::Name::new("cloud-psk").unwrap();
    let reveal = |n: &mut Node<OsRng>| match n.handle(Instant::ZERO, Op::PresharedKeyReveal(slot.clone()), &[]) {
        Reply::PresharedKey { key, .. } => key,
        other => panic!("{other:?}"),
    };
    let psk = reveal(&mut n);
    let key = public_key(&mut n);
    let mut store = Store::format(MemDisk::new(BlockSize::B512, REGION.blocks), REGION).unwrap();
    save(&mut store, &n).unwrap();

    let (mut again, reply) = boot(store.into_device());
    assert!(matches!(reply, Reply::Applied(ref o) if o.keys_created.is_empty()), "nothing made again: {reply:?}");
    assert_eq!(again.config(), Some(&*c));
    assert_eq!(reveal(&mut again), psk, "the peer's side need not be given a new preshared key");
    assert_eq!(public_key(&mut again), key);
    let Reply::Keys(k) = again.handle(Instant::ZERO, Op::KeyShow, &[]) else { panic!() };
    let kinds: Vec<_> = k.iter().map(|k| (k.slot.as_str(), k.kind, k.in_use)).collect();
    assert_eq!(kinds, [("wg0", KeyKind::Private, true), ("cloud-psk", KeyKind::Preshared, true)]);
}

#[test]
fn a_version_1_record_is_still_read_its_slots_private_keys() {
    use routerd_control::persist::{SavedKeyV1, SavedV1};
    let mut n = node();
    assert!(matches!(n.handle(Instant::ZERO, Op::Apply(cfg(25)), &[]), Reply::Applied(_)));
    let key = public_key(&mut n);
    // What the previous software wrote: the same state, slots without a kind.
    let now = n.saved_state(Instant::ZERO);
    let v1 = SavedV1 {
        version: 1,
        schema: now.schema,
        generation: now.generation,
        boots: now.boots,
        wall_clock_ms: now.wall_clock_ms,
        keys: now.keys.iter().map(|k| SavedKeyV1 { name: k.name.clone(), secret: k.secret, generated: k.generated }).collect(),
        config: now.config.clone(),
    };
    let mut buf = vec![0u8; routerd_control::persist::SAVED_MAX];
    let bytes = postcard::to_slice(&v1, &mut buf).unwrap().to_vec();
    let saved = Saved::decode(&bytes).expect("a version 1 record is read");
    assert_eq!(saved.version, routerd_control::persist::SAVED_VERSION);
    assert_eq!(saved.keys[0].kind, KeyKind::Private);
    let mut again = node();
    assert!(matches!(again.restore(saved, Instant::ZERO), Reply::Applied(_)));
    assert_eq!(public_key(&mut again), key, "the WireGuard identity survives the update");
    // A layout from the future is refused, naming it.
    let mut future = bytes.clone();
    future[0] = 9;
    assert_eq!(Saved::decode(&future).unwrap_err(), routerd_control::RestoreError::Version(9));
}

/// A saved configuration this box refuses (here: it names a NIC the box
/// does not have, as after moving the disk to other hardware) is kept: the
/// box runs nothing, `config get` shows it, the next save still holds it,
/// and an apply replaces it.
#[test]
fn a_refused_saved_configuration_is_kept_until_an_apply_replaces_it() {
    let snaps = [NicSnapshot::default(); 2];
    let first = node();
    let mut elsewhere = cfg(25);
    elsewhere.ports[0].mac = Some(config_schema::Mac([0x02, 0xbb, 0, 0, 0, 9]));
    // Validated and bound on the box that had that NIC: written here as it
    // was saved there.
    let mut saved = first.saved_state(Instant::from_millis(1));
    saved.config = Some(elsewhere.clone());
    saved.generation = 4;

    let mut n = node();
    let reply = n.restore(saved, Instant::from_millis(2));
    assert!(matches!(reply, Reply::Error(_)), "{reply:?}");
    assert!(n.config().is_none(), "nothing runs");
    let why = n.refused_config().expect("the refusal is kept").to_string();
    assert!(why.contains("02:bb:00:00:00:09"), "{why}");
    match n.handle(Instant::from_millis(3), Op::GetConfig, &snaps) {
        Reply::Config(Some(c)) => assert_eq!(c, elsewhere, "config get shows what is stored"),
        other => panic!("{other:?}"),
    }
    let again = n.saved_state(Instant::from_millis(4));
    assert_eq!(again.config, Some(elsewhere), "the next save keeps it");

    assert!(matches!(n.handle(Instant::from_millis(5), Op::Apply(cfg(25)), &snaps), Reply::Applied(_)));
    assert!(n.refused_config().is_none(), "an apply replaces it");
    assert_eq!(n.saved_state(Instant::from_millis(6)).config, Some(cfg(25)));
}
