//! The messages inside frames: postcard-encoded, fixed-capacity, versioned.
//!
//! routerctl sends [`Request`]s; the box sends [`Up`] frames: a
//! [`Response`] echoing the request's sequence number, or a [`LogLine`]
//! (console output while a session holds the line).
//!
//! Compatibility rule: postcard carries no field names, so both sides must
//! agree on the layout. The first variant of [`Op`], [`Up`] and [`Reply`]
//! is the hello and never changes shape; everything else may change with
//! [`PROTOCOL_VERSION`]. A hello carries the protocol version and
//! [`PROTOCOL_HASH`] (which covers the configuration's `SCHEMA_HASH`); a box
//! refuses every other request from a peer whose hello did not match.
//!
//! Decoding treats input as hostile: postcard checks lengths and tags,
//! heapless refuses lists and strings beyond their capacity, config values
//! re-check themselves, and trailing bytes are refused.

use alloc::boxed::Box;
use config_schema::{Claim, Config, Ipv4Cidr, Name, PortRole};
use core::net::{Ipv4Addr, SocketAddr};
use heapless::{String, Vec};
use serde::{Deserialize, Serialize};

use crate::frame::MAX_PAYLOAD;

/// Bumped with every change of a message layout.
pub const PROTOCOL_VERSION: u16 = 1;

/// The message layout, summarised by hand (edit it with any change to a
/// type in this module; the hash is what is compared).
pub const PROTOCOL_DESCRIPTION: &str = "routerd-provision/1;\
Request{seq:u32,op:Op};Op{Hello{version,hash},Bye,Ping,Status{mark},GetConfig,Plan(Config),Apply(Config),\
ClaimAdd(Claim),ClaimRemove(Cidr),KeyShow,KeyGenerate(Name),KeyImport(Name,[u8;32]),Reboot,ClaimClearConflict(Cidr)};\
Up{Response{seq,reply},Log{ms,level,text}};Reply{Hello,Done,Pong,Status,Config,Plan,Applied,Keys,Error,Probing};\
Probing{address,probes,interval_ms,done_in_ms};\
Status{device,software,uptime,configured,ports,tunnel,peers,claims,segments,counters,drops,drops_since_mark,mark_age,wireguard,wireguard_load,serial,host};\
PortStatus{..,tx_ring_full,rx_loans_out,rx_foreign_loans,tx_dropped,tx_dropped_since_mark};ClaimState{Active,Probing,Conflict,Disabled};\
ClaimStatus{..,loops,live_host_heard_ms_ago,conflict_hold_ms,next_probe_in_ms,probes_sent,probes_answered};\
SegmentStatus{name,vni,port,udp_port,fdb_local,fdb_remote,vteps{address,fdb_remote}};\
WireguardLoad{under_load,last_under_load_ms_ago,handshakes,cookie_replies_sent,cookies_received,refused_under_load,cookie_replies_sent_since_mark,refused_under_load_since_mark};\
StorageInit{disk,force};Status.storage;StorageStatus{disks,disk,first_lba,blocks,generation,boots,saved_ms_ago,saves,save_errors,damaged_slots,note};\
HostReport{checks,ip_forward,wan_socket,wan_tun,held{address,interface,removed,seconds_ago},removals,last_event,routes,forward_drops,firewalls,errors};\
Op+{PresharedKeyGenerate(Name),PresharedKeyImport(Name,[u8;32]),PresharedKeyReveal(Name)};Reply+{PresharedKey{slot,key}};\
KeyInfo{slot,kind,public_key:Option,generated,in_use};KeyKind{Private,Preshared};MAX_KEYS=tunnels+peers;\
Outcome{applied,errors,warnings,problems,changes,keys,omitted};Failure{kind,message,problems};\
Op+{History,GetGeneration(u64),Rollback{generation,dry_run},ApplyConfirm{config,window_ms},Confirm,FactoryReset{device}};\
Reply+{History(History),Confirmed{generation}};History{entries{generation,applied_ms,origin,confirmed,size,hash},running,pending};\
Origin{Apply,ClaimAdd,ClaimRemove,Rollback,Reverted,RevertedAtRestart,Upgraded};PendingConfirm{generation,reverts_to,left_ms,window_ms};\
Status+{generation,pending_confirm};\
Status+{wall_clock_ms,clock_source};\
Op+{Conntrack(ConntrackQuery{limit,proto,address})};Reply+{Conntrack(ConntrackList{flows,capacity,matched,entries{proto,src,sport,dst,dport,nat,state,expires_in_ms,packets}})}\
Op+{UpgradeBegin(UpgradeBegin{size,sha256,identity}),UpgradeChunk(UpgradeChunk{offset,data}),UpgradeCommit};Reply+{Upgrade(UpgradeProgress{slot,size,received,chunk_max})};\
FirmwareIdentity{version,build,flags};Status+{firmware(FirmwareStatus{running,trial_tries_left,failed,confirm_in_ms,slots{slot,identity,state}})};\
Op+{CaptureStart(CaptureRequest{port,filter{any_of{not,test{Host,Port,Proto{Icmp,Tcp,Udp,Arp},Inbound,Outbound}}},snaplen,rate}),CaptureRead{max_bytes},CaptureStop};\
Reply+{Captured(CaptureBatch{running,stopped,frames{ts_us,port,tx,len,caplen},data,waiting,captured,captured_bytes,skipped_rate,skipped_full,rate,ring_bytes,ports})};\
Status+{bgp(BgpStatus{asn,router_id,hold_time,vtep,peers{address,name,state{Idle,Connect,Active,OpenSent,OpenConfirm,Established},uptime_ms,prefixes_received,established,downs,last_down,messages_in,messages_out,treat_as_withdraw,attributes_discarded,withdraw_nlri_errors},vnis{vni,segment,flood_list,flood_list_total,remote_macs,local_macs},counters})};\
Op+{BgpRoutes{vni,offset}};Reply+{BgpRoutes(BgpRoutes{total,offset,routes{route_type,vni,rd,mac,ip,next_hop,peer{address,name},seq}})};\
PeerStatus.endpoint:Option<SocketAddr>;";

const fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

/// Identifies the protocol layout *and* the configuration schema: two ends
/// with the same hash read each other's messages correctly.
pub const PROTOCOL_HASH: u64 =
    fnv1a(fnv1a(0xcbf2_9ce4_8422_2325, PROTOCOL_DESCRIPTION.as_bytes()), &config_schema::SCHEMA_HASH.to_le_bytes());

/// Lists in a reply are bounded; these are the bounds.
pub const MAX_PROBLEMS: usize = 16;
pub const MAX_CHANGES: usize = 48;
/// Key slots: a private key per tunnel and a preshared key per peer.
pub const MAX_KEYS: usize = config_schema::limits::MAX_TUNNELS + config_schema::limits::MAX_PEERS;
pub const MAX_PORT_STATUS: usize = config_schema::limits::MAX_PORTS;
pub const MAX_PEER_STATUS: usize = config_schema::limits::MAX_PEERS;
pub const MAX_CLAIM_STATUS: usize = config_schema::limits::MAX_CLAIMS;
pub const MAX_SEGMENT_STATUS: usize = config_schema::limits::MAX_SEGMENTS;
pub const MAX_VTEP_STATUS: usize = config_schema::limits::MAX_VTEPS;
pub const MAX_COUNTS: usize = 48;
/// Applied configurations a box keeps (`routerctl config history`): the
/// running one and up to seven before it, as space allows (see
/// `routerd_control::persist`).
pub const HISTORY_MAX: usize = 8;
/// The commit-confirm window a box accepts, in milliseconds (5 s … 60 min).
pub const CONFIRM_MIN_MS: u32 = 5_000;
pub const CONFIRM_MAX_MS: u32 = 60 * 60 * 1000;
pub const LOG_TEXT: usize = 240;

/// Short text in messages.
pub type Text<const N: usize> = String<N>;

/// Host → box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Echoed in the response. A request with the same number as the last
    /// one is a retransmission: the box resends its answer without running
    /// the operation twice.
    pub seq: u32,
    pub op: Op,
}

/// What routerctl asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum Op {
    /// Opens a session (must stay variant 0).
    Hello { version: u16, hash: u64 },
    /// Ends the session; the console is readable again.
    Bye,
    /// Keeps an idle session open.
    Ping,
    /// Ports, tunnel, peers, claims, counters. With `mark`, the box also
    /// remembers the drop counters so the next status reports drops since.
    Status { mark: bool },
    /// The running configuration (none before the first apply).
    GetConfig,
    /// Everything apply would check and change, changing nothing.
    Plan(Box<Config>),
    /// Validate, bind, build and swap in atomically; on any error nothing changes.
    Apply(Box<Config>),
    /// The running configuration plus one claim, applied as a whole.
    ClaimAdd(Claim),
    /// The running configuration minus the claim for this address.
    ClaimRemove(Ipv4Cidr),
    /// The box's key slots: names, kinds, public halves of private keys
    /// (never a secret).
    KeyShow,
    /// Make a new private key in the slot (`device:NAME`), on the box.
    /// Refused for a preshared-key slot.
    KeyGenerate(Name),
    /// Put a private key made elsewhere in the slot (explicit, discouraged).
    /// Refused for a preshared-key slot.
    KeyImport(Name, [u8; 32]),
    /// Answer, then reset the box.
    Reboot,
    /// Ask the box to check, with ARP probes, whether the live host that
    /// put this claim in conflict is gone; it captures again only if no one
    /// answers. Answered with [`Reply::Probing`]; the outcome shows in status.
    ClaimClearConflict(Ipv4Cidr),
    /// Put a new GPT with a `ROUTERD-STATE` partition on the named disk
    /// (`vda`, …) and an empty store in it, then save the running state
    /// there. Refused when the disk holds anything unless `force`.
    StorageInit { disk: Name, force: bool },
    /// Make a new preshared key in the slot (`peers[i].preshared_key =
    /// "device:NAME"`), on the box; a tunnel using it restarts. The peer's
    /// box needs the same key: [`Op::PresharedKeyReveal`] here, import there.
    /// Refused for a private-key slot.
    PresharedKeyGenerate(Name),
    /// Put a preshared key made elsewhere (the other box's, `wg genpsk`) in
    /// the slot; a tunnel using it restarts. Refused for a private-key slot.
    PresharedKeyImport(Name, [u8; 32]),
    /// The preshared key in the slot ([`Reply::PresharedKey`]), so the
    /// operator can give it to the peer. Refused for a private-key slot:
    /// private keys never leave the box.
    PresharedKeyReveal(Name),
    /// The configurations the box keeps, oldest first ([`Reply::History`]).
    History,
    /// A kept configuration by generation ([`Reply::Config`]); `NotFound`
    /// names the kept ones.
    GetGeneration(u64),
    /// Apply a kept configuration again through the apply path (state
    /// carried, keys unchanged), as a new generation; with `dry_run`, the
    /// plan only ([`Reply::Plan`]).
    Rollback { generation: u64, dry_run: bool },
    /// [`Op::Apply`], then go back to the last confirmed generation by
    /// itself unless [`Op::Confirm`] arrives within `window_ms`
    /// ([`CONFIRM_MIN_MS`] ..= [`CONFIRM_MAX_MS`]).
    ApplyConfirm { config: Box<Config>, window_ms: u32 },
    /// Keep what runs: ends a pending commit-confirm ([`Reply::Confirmed`]).
    Confirm,
    /// Forget the configuration, its history and every key slot, and erase
    /// the store. `device` must be the running configuration's device name
    /// (empty on an unconfigured box): a reset of the wrong box is refused.
    FactoryReset { device: Text<24> },
    /// The connection-tracking table, filtered ([`Reply::Conntrack`]; at
    /// most `limit` ≤ [`MAX_FLOW_LIST`] flows).
    Conntrack(ConntrackQuery),
    /// Start (or resume) streaming a firmware into the slot that is not
    /// running (upgrade). The answer says how much of this same image
    /// (size and SHA-256) the slot already holds: a cut line resumes there.
    UpgradeBegin(UpgradeBegin),
    /// Bytes of the firmware at `offset` (a multiple of 512; at most
    /// [`UPGRADE_CHUNK`] bytes; only the last may be shorter than that).
    UpgradeChunk(Box<UpgradeChunk>),
    /// Every byte is there: read the slot back, check its SHA-256 and that
    /// it is a bootable routerd firmware, mark it for a trial boot and
    /// reboot into it (the answer goes out first).
    UpgradeCommit,
    // capture
    /// Start copying the frames that match into a bounded ring on the box
    /// (replacing a capture that runs); answered with an empty
    /// [`Reply::Captured`] that names the rate cap and the ring's size.
    CaptureStart(Box<CaptureRequest>),
    // capture
    /// The frames held, oldest first (at most `max_bytes` of frame data,
    /// capped at [`CAPTURE_BATCH_BYTES`]), and the counters
    /// ([`Reply::Captured`]). A capture not read for 30 s stops by itself.
    CaptureRead { max_bytes: u32 },
    // capture
    /// Stop copying; the answer carries frames still held (`waiting`: read
    /// the rest with [`Op::CaptureRead`]).
    CaptureStop,
    // bgp
    /// The EVPN routes the box holds, received and its own
    /// ([`Reply::BgpRoutes`]): only `vni`'s when given, from position
    /// `offset` on, at most [`MAX_BGP_ROUTE_ROWS`] per answer. Refused
    /// (`NotConfigured`) on a box that runs no BGP.
    BgpRoutes { vni: Option<u32>, offset: u32 },
}

/// Box → host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum Up {
    /// Must stay variant 0 (carries the hello reply).
    Response(Response),
    /// A console line produced while the session held the line.
    Log(LogLine),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub seq: u32,
    pub reply: Reply,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Milliseconds since boot.
    pub ms: u64,
    /// 1 error … 5 trace (`log::Level as u8`).
    pub level: u8,
    pub text: Text<LOG_TEXT>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum Reply {
    /// Must stay variant 0.
    Hello(Hello),
    /// The operation was carried out (bye, reboot).
    Done,
    Pong,
    Status(Box<Status>),
    Config(Option<Box<Config>>),
    /// What an apply of this configuration would do (nothing was changed).
    Plan(Box<Outcome>),
    /// The configuration is running.
    Applied(Box<Outcome>),
    /// Every key slot (boxed: 20 of them would make every reply large).
    Keys(Box<Vec<KeyInfo, MAX_KEYS>>),
    Error(Box<Failure>),
    /// A claim's probe started; its outcome shows in status after `done_in_ms`.
    Probing(Probing),
    /// The secret of a preshared-key slot, asked for by name
    /// ([`Op::PresharedKeyReveal`]); no other reply carries one.
    PresharedKey {
        slot: Name,
        key: [u8; 32],
    },
    /// The kept configurations ([`Op::History`]).
    History(Box<History>),
    /// The pending commit-confirm ended: `generation` stays.
    Confirmed {
        generation: u64,
    },
    /// Tracked flows ([`Op::Conntrack`]).
    Conntrack(Box<ConntrackList>),
    /// Where an upgrade stands ([`Op::UpgradeBegin`], [`Op::UpgradeChunk`],
    /// and [`Op::UpgradeCommit`] just before the reboot).
    Upgrade(UpgradeProgress),
    // capture
    /// A capture's frames and counters ([`Op::CaptureStart`],
    /// [`Op::CaptureRead`], [`Op::CaptureStop`]).
    Captured(Box<CaptureBatch>),
    // bgp
    /// A page of EVPN routes ([`Op::BgpRoutes`]).
    BgpRoutes(Box<BgpRoutes>),
}

/// Largest firmware chunk one [`Op::UpgradeChunk`] carries (64 sectors:
/// with the frame's overhead well inside [`MAX_PAYLOAD`]).
pub const UPGRADE_CHUNK: usize = 32 * 1024;
/// Largest firmware a slot takes (the slot partitions are 16 MiB).
pub const FIRMWARE_MAX: u32 = 16 * 1024 * 1024;

/// What a firmware says it is: its `.note.routerd` ELF note, which the
/// firmware reports for itself and which routerctl and the box read from
/// a file or a slot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareIdentity {
    /// The release (`0.1.0`).
    pub version: Text<16>,
    /// The commit it was built from (`abc123def456`, `-dirty` when the tree
    /// had changes).
    pub build: Text<32>,
    /// [`FirmwareIdentity::FLAG_NEVER_CONFIRMS`] and nothing else yet.
    pub flags: u32,
}

impl FirmwareIdentity {
    /// A test build of the upgrade tests: it boots and forwards but never
    /// confirms a trial boot, so the box must fall back to the old slot.
    /// routerctl refuses to install one unless told it is a test.
    pub const FLAG_NEVER_CONFIRMS: u32 = 1;
}

impl core::fmt::Display for FirmwareIdentity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "routerd {} (build {})", self.version, self.build)?;
        if self.flags & Self::FLAG_NEVER_CONFIRMS != 0 {
            f.write_str(" [test build: never confirms]")?;
        }
        Ok(())
    }
}

/// [`Op::UpgradeBegin`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeBegin {
    /// The firmware file's length in bytes (at most [`FIRMWARE_MAX`]).
    pub size: u32,
    /// Its SHA-256: the box checks the slot against it before booting it.
    pub sha256: [u8; 32],
    /// What the file's note says (shown in logs; the box reads the note
    /// from the slot again at commit).
    pub identity: FirmwareIdentity,
}

/// [`Op::UpgradeChunk`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeChunk {
    pub offset: u32,
    pub data: Vec<u8, UPGRADE_CHUNK>,
}

/// [`Reply::Upgrade`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeProgress {
    /// The slot being written (`A` or `B`): never the running one.
    pub slot: Text<1>,
    pub size: u32,
    /// Bytes written from the start, in order (the next chunk's offset).
    pub received: u32,
    /// The largest chunk the box takes.
    pub chunk_max: u32,
}

/// The firmware slots of a box that booted from a routerd disk
/// ([`Status::firmware`]; `None` on a box started another way: `-kernel`,
/// the ISO, routerd-host).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareStatus {
    /// The slot this firmware runs from (`A`/`B`).
    pub running: Text<1>,
    /// On a trial boot: boots left before the box goes back (0: this is
    /// the last try); `None` once confirmed or when not on trial.
    pub trial_tries_left: Option<u8>,
    /// A slot whose trial ran out without confirming (the box came back).
    pub failed: Option<Text<1>>,
    /// On an unconfirmed trial: milliseconds until the box gives up on
    /// this boot and restarts.
    pub confirm_in_ms: Option<u64>,
    /// Both slots.
    pub slots: Vec<SlotStatus, 2>,
}

/// One firmware slot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotStatus {
    pub slot: Text<1>,
    /// The note of the firmware in it (`None`: empty or not a routerd
    /// firmware).
    pub identity: Option<FirmwareIdentity>,
    /// `running`, `trial` (running, not confirmed yet), `standby` (the
    /// other, bootable), `failed` (its trial ran out), `upgrading` (being
    /// written), `empty`.
    pub state: Text<12>,
}

/// Most flows one [`Reply::Conntrack`] lists (the table holds more; the
/// reply says how many matched).
pub const MAX_FLOW_LIST: usize = 128;

/// Which flows [`Op::Conntrack`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConntrackQuery {
    /// At most this many (capped at [`MAX_FLOW_LIST`]).
    pub limit: u16,
    /// Only this IP protocol (6 tcp, 17 udp, 1 icmp).
    pub proto: Option<u8>,
    /// Only flows with this address on either end, translated or not.
    pub address: Option<Ipv4Addr>,
}

/// One tracked flow, as its first packet arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowEntry {
    pub proto: u8,
    pub src: Ipv4Addr,
    /// ICMP: the echo identifier.
    pub sport: u16,
    pub dst: Ipv4Addr,
    pub dport: u16,
    /// SNAT: the address and port (identifier) it was given.
    pub nat: Option<(Ipv4Addr, u16)>,
    /// `established`, `unreplied`, … (`routerd_dataplane::State::name`).
    pub state: Text<12>,
    pub expires_in_ms: u64,
    /// Packets seen (original, reply).
    pub packets: [u32; 2],
}

/// [`Reply::Conntrack`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConntrackList {
    /// Flows in the table.
    pub flows: u32,
    pub capacity: u32,
    /// Flows matching the query (`entries` holds the first `limit`).
    pub matched: u32,
    pub entries: Vec<FlowEntry, MAX_FLOW_LIST>,
}

/// What made a generation (`routerctl config history`'s "what").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    /// `routerctl apply` (or a configuration given at boot).
    Apply,
    ClaimAdd(Ipv4Addr),
    ClaimRemove(Ipv4Addr),
    /// `routerctl rollback N`.
    Rollback(u64),
    /// The commit-confirm of generation N ran out: back to the confirmed one.
    Reverted(u64),
    /// Generation N was still unconfirmed when the box restarted: the
    /// confirmed one was restored instead.
    RevertedAtRestart(u64),
    /// Restored from a record of older software, which kept no history.
    Upgraded,
}

impl core::fmt::Display for Origin {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Origin::Apply => f.write_str("apply"),
            Origin::ClaimAdd(a) => write!(f, "claim add {a}"),
            Origin::ClaimRemove(a) => write!(f, "claim remove {a}"),
            Origin::Rollback(n) => write!(f, "rollback to {n}"),
            Origin::Reverted(n) => write!(f, "revert of {n} (not confirmed)"),
            Origin::RevertedAtRestart(n) => write!(f, "revert of {n} (not confirmed before a restart)"),
            Origin::Upgraded => f.write_str("boot-restored (from older software)"),
        }
    }
}

/// One kept configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub generation: u64,
    /// Wall-clock time of the apply, milliseconds since the Unix epoch, as
    /// the box knew it (`None`: the box had no clock).
    pub applied_ms: Option<u64>,
    pub origin: Origin,
    /// Not part of a commit-confirm still pending.
    pub confirmed: bool,
    /// The configuration's wire form (`config_schema::encode`): its length
    /// and CRC-32C (routerctl shows the CRC as 8 hex digits).
    pub size: u32,
    pub hash: u32,
}

/// The configurations a box keeps, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct History {
    pub entries: Vec<HistoryEntry, HISTORY_MAX>,
    /// The running generation (`None`: no configuration runs).
    pub running: Option<u64>,
    pub pending: Option<PendingConfirm>,
}

/// A commit-confirm in progress: unless confirmed, the box leaves
/// `generation` for `reverts_to` in `left_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingConfirm {
    pub generation: u64,
    pub reverts_to: u64,
    pub left_ms: u64,
    /// The window the last `--confirm` asked for.
    pub window_ms: u32,
}

/// A probe the box started for a claim (RFC 5227 style ARP probes, sender
/// address 0.0.0.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probing {
    pub address: Ipv4Addr,
    /// Probes it sends.
    pub probes: u8,
    /// Milliseconds between probes (and after the last one).
    pub interval_ms: u32,
    /// When the outcome is known, from now.
    pub done_in_ms: u32,
}

/// The box introduces itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u16,
    pub hash: u64,
    /// Software version and build (`0.1.0`, git id).
    pub software: Text<16>,
    pub build: Text<40>,
    /// Device name, empty before the first apply.
    pub device: Text<24>,
    /// Seconds the session may stay idle before the box closes it.
    pub idle_timeout_s: u16,
}

/// A validation finding, as `config_schema::Problem` says it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireProblem {
    /// Stable code (`claim-not-slash-32`).
    pub code: Text<32>,
    pub error: bool,
    pub path: Text<48>,
    pub value: Text<64>,
    pub message: Text<200>,
    pub hint: Text<200>,
}

impl From<&config_schema::Problem> for WireProblem {
    fn from(p: &config_schema::Problem) -> WireProblem {
        WireProblem {
            code: text(p.code.as_str()),
            error: p.severity == config_schema::Severity::Error,
            path: text(&p.path),
            value: text(&p.value),
            message: text(&p.message),
            hint: text(&p.hint),
        }
    }
}

/// Copies `s` into a fixed string, cutting at a character boundary.
pub fn text<const N: usize>(s: &str) -> Text<N> {
    let mut out = String::new();
    for ch in s.chars() {
        if out.push(ch).is_err() {
            break;
        }
    }
    out
}

/// Formats into a fixed string, keeping what fits (cut at a character
/// boundary): messages and log lines are bounded, never refused.
pub fn text_fmt<const N: usize>(args: core::fmt::Arguments<'_>) -> Text<N> {
    struct Keep<'a, const N: usize>(&'a mut Text<N>);
    impl<const N: usize> core::fmt::Write for Keep<'_, N> {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            for ch in s.chars() {
                if self.0.push(ch).is_err() {
                    return Err(core::fmt::Error);
                }
            }
            Ok(())
        }
    }
    let mut out = String::new();
    let _ = core::fmt::write(&mut Keep(&mut out), args);
    out
}

/// One change an apply makes, by identity (claims by address, peers and
/// ports by name, segments by VNI).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub kind: ChangeKind,
    /// `claims`, `peers`, `ports`, `wireguard`, `segments`, `device`, `key`.
    pub section: Text<12>,
    /// `10.20.0.50/32`, `cloud`, `wan0`, `vni 100`.
    pub subject: Text<48>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    Add,
    Remove,
    Modify,
}

/// The result of plan or apply.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Outcome {
    pub errors: u16,
    pub warnings: u16,
    /// Warnings (an apply with errors is a [`Failure`]).
    pub problems: Vec<WireProblem, MAX_PROBLEMS>,
    pub changes: Vec<Change, MAX_CHANGES>,
    /// Changes not listed (beyond `MAX_CHANGES`).
    pub changes_omitted: u16,
    /// WireGuard sessions restart (peers, key or listen port changed).
    pub tunnel_restarts: bool,
    /// Key slots the apply created: a private key's public half, for the
    /// peer's config; a preshared key by name only (the peer's box needs
    /// the secret itself: [`Op::PresharedKeyReveal`]). In a plan the key
    /// made for the dry run is not kept: only the slot names are meaningful.
    pub keys_created: Vec<KeyInfo, MAX_KEYS>,
}

/// A key slot as it may be shown: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub slot: Name,
    pub kind: KeyKind,
    /// A private key's public half (the other box's `[[peers]] public_key`);
    /// `None` for a preshared key, which has no public half.
    pub public_key: Option<[u8; 32]>,
    /// Made on this box (false: imported).
    pub generated: bool,
    /// Used by the running configuration (a tunnel's `private_key`, a
    /// peer's `preshared_key`).
    pub in_use: bool,
}

/// What a key slot holds. A slot is made for one use and keeps it: using
/// it for the other is refused, naming the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// A tunnel's X25519 private key (`[[wireguard]] private_key`).
    Private,
    /// A peer's symmetric preshared key (`[[peers]] preshared_key`, what
    /// `wg genpsk` makes); both boxes of the pair hold the same one.
    Preshared,
}

impl KeyKind {
    /// `private key`, `preshared key`: how messages name it.
    pub const fn noun(self) -> &'static str {
        match self {
            KeyKind::Private => "private key",
            KeyKind::Preshared => "preshared key",
        }
    }
}

/// Why a request was refused. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: Text<200>,
    pub problems: Vec<WireProblem, MAX_PROBLEMS>,
}

impl Failure {
    pub fn new(kind: FailureKind, message: &str) -> Box<Failure> {
        Box::new(Failure { kind, message: text(message), problems: Vec::new() })
    }

    /// A `Refused` failure with a formatted message (cut to fit).
    pub fn refused(args: core::fmt::Arguments<'_>) -> Box<Failure> {
        Box::new(Failure { kind: FailureKind::Refused, message: text_fmt(args), problems: Vec::new() })
    }

    /// An `Invalid` failure (the request itself is wrong) with a formatted
    /// message (cut to fit).
    pub fn invalid(args: core::fmt::Arguments<'_>) -> Box<Failure> {
        Box::new(Failure { kind: FailureKind::Invalid, message: text_fmt(args), problems: Vec::new() })
    }
}

/// The message, then each problem with its path and hint on lines below.
impl core::fmt::Display for Failure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.message)?;
        for p in &self.problems {
            write!(f, "\n  {}[{}] {}: {}\n    hint: {}", if p.error { "error" } else { "warning" }, p.code, p.path, p.message, p.hint)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// The frame was not a request this box understands.
    Malformed,
    /// A request arrived without a hello first.
    NoSession,
    /// Protocol version or hash differ; the hello reply says the box's.
    Version,
    /// The configuration has errors (listed).
    Invalid,
    /// Valid, but this box cannot run it (a NIC missing, a capacity).
    Refused,
    /// No trusted entropy source: no keys can be made.
    NoEntropy,
    /// The operation needs a running configuration.
    NotConfigured,
    /// No such claim or key slot.
    NotFound,
    /// The claim or key slot exists already.
    Exists,
}

/// Everything `routerctl status` and `doctor` read.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Status {
    pub device: Text<24>,
    pub side: Text<24>,
    pub software: Text<16>,
    pub build: Text<40>,
    pub uptime_ms: u64,
    pub configured: bool,
    /// Milliseconds since the running configuration was applied.
    pub applied_ms_ago: Option<u64>,
    pub ports: Vec<PortStatus, MAX_PORT_STATUS>,
    pub tunnel: Option<TunnelStatus>,
    pub peers: Vec<PeerStatus, MAX_PEER_STATUS>,
    pub claims: Vec<ClaimStatus, MAX_CLAIM_STATUS>,
    /// VXLAN segments, in configuration order, with what their FDB learned.
    pub segments: Vec<SegmentStatus, MAX_SEGMENT_STATUS>,
    /// Dataplane event counters (forwarded, syns_clamped, …).
    pub counters: Vec<Count, MAX_COUNTS>,
    /// Non-zero drop counters since the box started forwarding (an apply
    /// carries them over).
    pub drops: Vec<Count, MAX_COUNTS>,
    /// Non-zero drops since the last `Status { mark: true }`.
    pub drops_since_mark: Vec<Count, MAX_COUNTS>,
    pub mark_age_ms: Option<u64>,
    /// Non-zero WireGuard counters.
    pub wireguard: Vec<Count, MAX_COUNTS>,
    /// Handshake load on the WireGuard device (cookies, rate limits).
    pub wireguard_load: Option<WireguardLoad>,
    /// Where the box keeps its state (`None`: the platform keeps it
    /// elsewhere, e.g. routerd-host's files).
    pub storage: Option<StorageStatus>,
    pub serial: SerialStats,
    /// The Linux around a host build (`routerd-host`); `None` on the image.
    pub host: Option<HostReport>,
    /// The WAN's DHCP client, when its address is `dhcp` on the image.
    pub dhcp: Option<DhcpStatus>,
    /// Peer endpoints by DNS name, when there are any (the image's
    /// resolver; routerd-host reports its own in `host`).
    pub resolver: Option<ResolverStatus>,
    /// The running configuration's generation (0: none applied yet).
    pub generation: u64,
    /// A commit-confirm waiting for `routerctl confirm`.
    pub pending_confirm: Option<PendingConfirm>,
    /// The box's wall clock now, in milliseconds since the Unix epoch (what
    /// WireGuard's handshake timestamps count from); `None` when it has none.
    pub wall_clock_ms: Option<u64>,
    /// Where that clock came from (`rtc`, `saved floor`, `system`, `none`).
    pub clock_source: Text<16>,
    /// The firmware slots, on a box booted from a routerd disk.
    pub firmware: Option<FirmwareStatus>,
    /// The BGP EVPN service, on a box that runs one (`[bgp]`).
    pub bgp: Option<BgpStatus>,
}

impl Status {
    /// The status as a few human lines (the image's console `status`,
    /// `routerd-host`'s SIGUSR1 and stop report).
    pub fn write_summary(&self, w: &mut dyn core::fmt::Write) -> core::fmt::Result {
        writeln!(w, "status at {} ms", self.uptime_ms)?;
        if !self.configured {
            writeln!(w, "  not forwarding: no configuration applied (routerctl apply)")?;
        }
        if let Some(p) = &self.pending_confirm {
            p.write_line(w)?;
        }
        for p in &self.ports {
            writeln!(
                w,
                "  {}: link {}, rx {} frames, tx {} frames, rx errors {}, tx ring full {}",
                p.name.as_str(),
                if p.link_up { "up" } else { "down" },
                p.rx_frames,
                p.tx_frames,
                p.rx_errors,
                p.tx_ring_full
            )?;
            if p.rx_loans_out + p.rx_foreign_loans > 0 {
                writeln!(w, "    rx buffers on loan {}, foreign loans refused {}", p.rx_loans_out, p.rx_foreign_loans)?;
            }
        }
        if let Some(d) = &self.dhcp {
            d.write_line(w)?;
        }
        if let Some(r) = &self.resolver {
            for n in &r.names {
                write!(w, "  dns {}: ", n.name.as_str())?;
                match n.address {
                    Some(a) => write!(w, "{a}, resolved {} s ago", n.resolved_ms_ago.unwrap_or(0) / 1000)?,
                    None => write!(w, "unresolved")?,
                }
                if !n.error.is_empty() {
                    write!(w, "; last lookup: {}", n.error.as_str())?;
                }
                writeln!(w)?;
            }
        }
        for c in &self.claims {
            writeln!(
                w,
                "  claim {}: {:?} {:?} on {}, to tunnel {} pkts, from tunnel {} pkts",
                c.address, c.role, c.state, c.port, c.to_tunnel_packets, c.from_tunnel_packets
            )?;
        }
        for g in &self.segments {
            write!(w, "  segment {}: vni {} on {}, fdb {} local, {} remote", g.name, g.vni, g.port, g.fdb_local, g.fdb_remote)?;
            for v in &g.vteps {
                write!(w, ", {} behind {}", v.fdb_remote, v.address)?;
            }
            writeln!(w)?;
        }
        if !self.segments.is_empty() {
            // The dataplane counts VXLAN per box, not per segment.
            let counter = |name: &str| self.counters.iter().find(|c| c.name.as_str() == name).map_or(0, |c| c.value);
            let drops = self.drops.iter().filter(|d| d.name.starts_with("vxlan_")).fold(0u64, |a, d| a.saturating_add(d.value));
            writeln!(
                w,
                "  vxlan (all segments): encap {}, decap {}, floods {}, drops {drops}",
                counter("vxlan_encap"),
                counter("vxlan_decap"),
                counter("vxlan_floods")
            )?;
        }
        if let Some(b) = &self.bgp {
            b.write_summary(w)?;
        }
        for p in &self.peers {
            let hs = p.last_handshake_ms_ago.map(|ms| ms / 1000);
            writeln!(
                w,
                "  peer {}: endpoint {:?}, handshake {}, session {}, rx {} B, tx {} B",
                p.name,
                p.endpoint,
                OrNever(hs),
                p.has_session,
                p.rx_bytes,
                p.tx_bytes
            )?;
        }
        for d in &self.drops {
            writeln!(w, "  drop {}: {}", d.name.as_str(), d.value)?;
        }
        let total = self.drops.iter().fold(0u64, |a, d| a.saturating_add(d.value));
        writeln!(w, "  drops total: {total}")?;
        for c in &self.wireguard {
            writeln!(w, "  wg {}: {}", c.name.as_str(), c.value)?;
        }
        if let Some(l) = self.wireguard_load.filter(|l| {
            l.under_load || l.last_under_load_ms_ago.is_some() || l.cookie_replies_sent + l.cookies_received + l.refused_under_load > 0
        }) {
            let last = l.last_under_load_ms_ago.map(|ms| ms / 1000);
            writeln!(
                w,
                "  wg load: {}, last over the limit {}, cookie replies sent {}, cookies received {}, refused by rate limit {}",
                if l.under_load { "under load now" } else { "not under load" },
                OrNever(last),
                l.cookie_replies_sent,
                l.cookies_received,
                l.refused_under_load
            )?;
        }
        if let Some(h) = &self.host {
            writeln!(
                w,
                "  linux: checks {}, ip_forward {:?}, captured addresses held {}, removed since start {}",
                h.checks,
                h.ip_forward,
                h.held.len(),
                h.removals
            )?;
            for r in &h.routes {
                writeln!(w, "  route {}/32: {}", r.address, r.detail.as_str())?;
            }
            for d in &h.forward_drops {
                writeln!(w, "  forward path: {}", d.as_str())?;
            }
        }
        Ok(())
    }
}

impl PendingConfirm {
    /// `pending confirmation: generation N reverts to M in 42 s (routerctl confirm keeps it)`.
    pub fn write_line(&self, w: &mut dyn core::fmt::Write) -> core::fmt::Result {
        writeln!(
            w,
            "  pending confirmation: generation {} reverts to {} in {} s (routerctl confirm keeps it)",
            self.generation,
            self.reverts_to,
            self.left_ms.div_ceil(1000)
        )
    }
}

/// `12 s ago`, or `never`.
struct OrNever(Option<u64>);

impl core::fmt::Display for OrNever {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n} s ago"),
            None => f.write_str("never"),
        }
    }
}

/// Bounds of a [`HostReport`].
pub const MAX_HELD: usize = 8;
pub const MAX_ROUTES: usize = 16;
pub const MAX_FORWARD_DROPS: usize = 8;
pub const MAX_HOST_ERRORS: usize = 4;

/// What `routerd-host` found in the Linux it runs on: the things the OS
/// must (not) do for the box's claims to work (see `host/src/linux.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HostReport {
    /// Linux checks run so far (0: none finished yet).
    pub checks: u64,
    /// `net.ipv4.ip_forward`, if readable.
    pub ip_forward: Option<bool>,
    /// The WireGuard UDP socket (`[::]:51820`).
    pub wan_socket: Text<48>,
    /// The TUN device carrying the WAN port's IPv4 that is not WireGuard
    /// (empty: none, so provider-secondary-ip traffic cannot arrive).
    pub wan_tun: Text<16>,
    /// Captured addresses an interface holds, or held until routerd-host
    /// removed them in the last 15 minutes.
    pub held: Vec<HeldAddress, MAX_HELD>,
    /// Captured addresses removed from Linux interfaces since start.
    pub removals: u64,
    /// The last removal or failed removal, as logged.
    pub last_event: Text<160>,
    /// The kernel route each provider-secondary-ip claim needs.
    pub routes: Vec<DeliveryRoute, MAX_ROUTES>,
    /// Drop policies and terminal drop/reject rules on the forward path.
    pub forward_drops: Vec<Text<120>, MAX_FORWARD_DROPS>,
    pub forward_drops_omitted: u16,
    /// Firewall front ends consulted (`iptables nft`).
    pub firewalls: Text<24>,
    /// What could not be checked, and why.
    pub errors: Vec<Text<120>, MAX_HOST_ERRORS>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldAddress {
    pub address: Ipv4Addr,
    pub interface: Text<16>,
    /// routerd-host removed it (else it could not, or only reports).
    pub removed: bool,
    /// When it was found (0: at the last check).
    pub seconds_ago: u64,
}

/// `address/32 dev <wan_tun>`: how the kernel hands the box the packets
/// the cloud fabric delivers for a provider-secondary-ip claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRoute {
    pub address: Ipv4Addr,
    pub ok: bool,
    /// `present`, `installed`, or what is wrong (`missing`, `via eth0`).
    pub detail: Text<64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub name: Text<28>,
    pub value: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStatus {
    /// Contract name (`lan0`, `wan0`) or the configured port name.
    pub name: Text<24>,
    pub role: Option<PortRole>,
    pub mac: [u8; 6],
    pub link_up: bool,
    pub address: Option<Ipv4Cidr>,
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub rx_errors: u64,
    /// Times the NIC had no free transmit slot (as the driver counts).
    pub tx_ring_full: u64,
    /// Receive buffers out on loan to the forwarding loop now (given back
    /// within the turn, so 0 when asked), and loans given back that were not
    /// this NIC's (refused). Either above 0 means lost or mixed-up buffers.
    pub rx_loans_out: u64,
    pub rx_foreign_loans: u64,
    /// Frames the box lost because this port's transmit ring was full
    /// (drop reason `tx_full`, since the box started forwarding).
    pub tx_dropped: u64,
    /// The same since the last `Status { mark: true }`.
    pub tx_dropped_since_mark: Option<u64>,
}

/// Disks the box may keep state on.
pub const MAX_DISKS: usize = 4;

/// The resolver of peer endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResolverStatus {
    /// The servers it asks (from `[dns]`, else the DHCP lease).
    pub servers: Vec<Ipv4Addr, 3>,
    pub names: Vec<NameStatus, { config_schema::limits::MAX_PEERS }>,
    /// Answers refused (not the one awaited, malformed).
    pub refused: u64,
}

/// One name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NameStatus {
    pub name: Text<{ config_schema::limits::MAX_HOST_LEN }>,
    /// The address in use.
    pub address: Option<Ipv4Addr>,
    pub resolved_ms_ago: Option<u64>,
    pub ttl_secs: Option<u32>,
    /// The last lookup's failure (empty after a success).
    pub error: Text<64>,
    pub lookups: u32,
    pub failures: u32,
}

/// The WAN's DHCP client.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DhcpStatus {
    /// The port it runs on (`wan0`).
    pub port: Text<24>,
    /// The leased address (`None`: no lease, the port has no address).
    pub address: Option<Ipv4Cidr>,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr, 3>,
    /// The server that granted the lease.
    pub server: Option<Ipv4Addr>,
    /// The lease time the server gave, in seconds.
    pub lease_secs: Option<u32>,
    /// Since the lease was granted or last renewed.
    pub leased_ms_ago: Option<u64>,
    /// How long the port has been without a lease.
    pub unbound_ms: Option<u64>,
    /// DHCP messages sent, replies received, leases lost.
    pub sent: u32,
    pub received: u32,
    pub lost: u32,
}

impl DhcpStatus {
    /// One status line: the lease, or how long the port has been without.
    pub fn write_line(&self, w: &mut dyn core::fmt::Write) -> core::fmt::Result {
        write!(w, "  dhcp {}: ", self.port.as_str())?;
        match self.address {
            Some(a) => {
                write!(w, "{a}")?;
                if let Some(g) = self.gateway {
                    write!(w, " via {g}")?;
                }
                for (i, d) in self.dns.iter().enumerate() {
                    write!(w, "{}{d}", if i == 0 { ", dns " } else { " " })?;
                }
                if let Some(srv) = self.server {
                    write!(w, ", from {srv}")?;
                }
                if let (Some(secs), Some(ago)) = (self.lease_secs, self.leased_ms_ago) {
                    let left = u64::from(secs).saturating_sub(ago / 1000);
                    write!(w, ", lease {secs} s, {left} s left")?;
                }
            }
            None => {
                let secs = self.unbound_ms.unwrap_or(0) / 1000;
                write!(w, "no lease for {secs} s ({} requests sent, {} replies)", self.sent, self.received)?;
                if self.received == 0 && self.sent > 0 {
                    write!(w, ": no DHCP server answers")?;
                }
            }
        }
        if self.lost > 0 {
            write!(w, ", {} leases lost", self.lost)?;
        }
        writeln!(w)
    }
}

/// The box's persistent store, as it stands.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StorageStatus {
    /// Disks found (`vda`, `vdb`, …), in bus order.
    pub disks: Vec<Text<8>, MAX_DISKS>,
    /// The disk holding the `ROUTERD-STATE` partition; empty when there is
    /// none (the configuration will not survive a reboot).
    pub disk: Text<8>,
    pub first_lba: u64,
    pub blocks: u64,
    /// Generation of the configuration last saved.
    pub generation: u64,
    /// Boots that restored this state.
    pub boots: u32,
    pub saved_ms_ago: Option<u64>,
    pub saves: u64,
    pub save_errors: u64,
    /// Record slots found damaged at boot (a power cut during a save leaves one).
    pub damaged_slots: u8,
    /// What is wrong, or what happened at boot.
    pub note: Text<120>,
}

/// The WireGuard device's defence against handshake floods, as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WireguardLoad {
    /// More handshake messages per second than the device's limit arrived
    /// within the last second (or load is forced): handshakes without a
    /// valid cookie get a cookie reply instead of a Diffie-Hellman.
    pub under_load: bool,
    /// When the device last crossed its handshake limit.
    pub last_under_load_ms_ago: Option<u64>,
    /// Handshakes completed.
    pub handshakes: u64,
    /// Cookie replies sent (handshakes answered without spending a DH).
    pub cookie_replies_sent: u64,
    /// Cookie replies accepted from peers that were under load themselves.
    pub cookies_received: u64,
    /// Handshakes with a valid cookie refused by the per-source rate limit.
    pub refused_under_load: u64,
    pub cookie_replies_sent_since_mark: Option<u64>,
    pub refused_under_load_since_mark: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelStatus {
    pub name: Name,
    pub listen_port: u16,
    pub mtu: u16,
    pub public_key: [u8; 32],
    /// The WAN port MTU the tunnel MTU must fit in (MTU + 80 ≤ this).
    pub underlay_mtu: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub name: Name,
    pub public_key: [u8; 32],
    /// As configured (`host:port`; a DNS name stays a name).
    pub endpoint_configured: Text<64>,
    /// Where the peer is reached now (learned from its packets when
    /// roaming); IPv6 only on a platform whose WAN is a socket (routerd-host).
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: Vec<Ipv4Cidr, { config_schema::limits::MAX_ALLOWED_IPS }>,
    pub last_handshake_ms_ago: Option<u64>,
    pub has_session: bool,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub persistent_keepalive: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClaimRole {
    /// This box answers ARP for the address on the port.
    ProxyArp,
    /// The provider delivers the address's packets to the port; never answered.
    ProviderSecondaryIp,
    /// The owner's box: packets from the tunnel go to the host on the port.
    LocalDelivery,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClaimState {
    Active,
    /// Sending ARP probes (sender 0.0.0.0) before capturing: a new claim,
    /// or a conflict whose live host has gone quiet. Not answering ARP.
    Probing,
    /// Seen live on the LAN: capture stopped.
    Conflict,
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimStatus {
    pub address: Ipv4Addr,
    pub owner: Name,
    pub role: ClaimRole,
    pub port: Name,
    pub tunnel: Name,
    pub peer: Name,
    pub state: ClaimState,
    /// The live host seen using the address (why the claim is in conflict).
    pub conflict_mac: Option<[u8; 6]>,
    /// The MSS this claim's SYN/SYN-ACKs are clamped to, and the tunnel MTU it came from.
    pub mss: u16,
    pub mss_auto: bool,
    pub arp_replies: u64,
    pub garps_sent: u64,
    pub probes_seen: u64,
    pub conflicts: u64,
    pub to_tunnel_packets: u64,
    pub to_tunnel_bytes: u64,
    pub from_tunnel_packets: u64,
    pub from_tunnel_bytes: u64,
    pub syns_clamped: u64,
    pub loops: u64,
    /// When the live host was last heard (ARP from the address, a probe
    /// answered, IPv4 from it). Like `conflict_mac`, kept as history once
    /// the claim captures again.
    pub live_host_heard_ms_ago: Option<u64>,
    /// Silence the box waits for before it probes a conflict again.
    pub conflict_hold_ms: u64,
    /// When the next probe goes out (in conflict: once the hold has passed).
    pub next_probe_in_ms: Option<u64>,
    pub probes_sent: u64,
    /// Probes a live host answered (the address was in use).
    pub probes_answered: u64,
}

/// A VXLAN segment and what its FDB learned (live entries only). The VXLAN
/// counters — encapsulated, decapsulated, flooded, the `vxlan_*` drops — are
/// box-wide (`Status::counters`, `Status::drops`): the dataplane does not
/// count them per segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentStatus {
    pub name: Name,
    pub vni: u32,
    /// The bridged LAN port.
    pub port: Name,
    pub udp_port: u16,
    /// MACs learned on the bridged port (this site's hosts).
    pub fdb_local: u16,
    /// MACs learned behind remote VTEPs, all of them together.
    pub fdb_remote: u16,
    /// The configured remote VTEPs, in order, with the MACs behind each.
    pub vteps: Vec<VtepStatus, MAX_VTEP_STATUS>,
}

/// One remote VTEP of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VtepStatus {
    pub address: Ipv4Addr,
    /// MACs learned behind it.
    pub fdb_remote: u16,
}

/// The serial line as the box sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SerialStats {
    pub frames: u64,
    pub not_a_frame: u64,
    pub bad_checksum: u64,
    pub overflow: u64,
    pub malformed: u64,
    pub retransmits: u64,
    pub sessions: u64,
    pub idle_timeouts: u64,
}

/// Why a message could not be encoded or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageError {
    /// Larger than the buffer or [`MAX_PAYLOAD`].
    TooLarge,
    /// Not a valid message (wrong layout, a value out of range, trailing bytes).
    Malformed,
}

/// Encodes a message into `buf`; returns the bytes used.
pub fn encode<'b, T: Serialize>(msg: &T, buf: &'b mut [u8]) -> Result<&'b mut [u8], MessageError> {
    let n = buf.len().min(MAX_PAYLOAD);
    let buf = buf.get_mut(..n).ok_or(MessageError::TooLarge)?;
    postcard::to_slice(msg, buf).map_err(|_| MessageError::TooLarge)
}

/// Decodes one whole message; trailing bytes are refused.
pub fn decode<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, MessageError> {
    match postcard::take_from_bytes(bytes) {
        Ok((v, [])) => Ok(v),
        _ => Err(MessageError::Malformed),
    }
}

// capture: `routerctl capture` (Op::CaptureStart/CaptureRead/CaptureStop,
// Reply::Captured). The box copies matching frames into a bounded ring at a
// bounded rate; routerctl reads them in batches and writes a pcap.

/// Terms one capture clause holds (all of them must match: `and`).
pub const CAPTURE_TERMS: usize = 8;
/// Clauses a capture filter holds (any of them may match: `or`).
pub const CAPTURE_CLAUSES: usize = 4;
/// Frames one [`Reply::Captured`] carries at most.
pub const CAPTURE_BATCH_FRAMES: usize = 128;
/// Frame bytes one [`Reply::Captured`] carries at most (with the frames'
/// headers well inside [`MAX_PAYLOAD`]).
pub const CAPTURE_BATCH_BYTES: usize = 24 * 1024;
/// The most bytes of one frame a capture keeps (a frame buffer is 2 KiB).
pub const CAPTURE_SNAP_MAX: u32 = 2048;

/// A protocol a capture filter names (`icmp`, `tcp`, `udp`, `arp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CaptureProto {
    Icmp,
    Tcp,
    Udp,
    Arp,
}

impl CaptureProto {
    /// The word of the filter grammar.
    pub fn name(self) -> &'static str {
        match self {
            CaptureProto::Icmp => "icmp",
            CaptureProto::Tcp => "tcp",
            CaptureProto::Udp => "udp",
            CaptureProto::Arp => "arp",
        }
    }
}

/// One test of a capture filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CaptureTest {
    /// IPv4 source or destination (ARP: sender or target address).
    Host(Ipv4Addr),
    /// TCP or UDP source or destination port (first fragments only).
    Port(u16),
    Proto(CaptureProto),
    /// Received by the box.
    Inbound,
    /// Sent by the box.
    Outbound,
}

/// A test, or its negation (`not`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureTerm {
    pub not: bool,
    pub test: CaptureTest,
}

/// Which frames a capture keeps: any clause whose terms all match (no
/// clause: every frame). routerctl parses the expression; the box only
/// evaluates this.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureFilter {
    pub any_of: Vec<Vec<CaptureTerm, CAPTURE_TERMS>, CAPTURE_CLAUSES>,
}

impl core::fmt::Display for CaptureTerm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.not {
            f.write_str("not ")?;
        }
        match self.test {
            CaptureTest::Host(a) => write!(f, "host {a}"),
            CaptureTest::Port(p) => write!(f, "port {p}"),
            CaptureTest::Proto(p) => f.write_str(p.name()),
            CaptureTest::Inbound => f.write_str("inbound"),
            CaptureTest::Outbound => f.write_str("outbound"),
        }
    }
}

/// The filter as an expression of the grammar (`every frame` when empty).
impl core::fmt::Display for CaptureFilter {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.any_of.is_empty() {
            return f.write_str("every frame");
        }
        for (i, clause) in self.any_of.iter().enumerate() {
            if i > 0 {
                f.write_str(" or ")?;
            }
            for (j, t) in clause.iter().enumerate() {
                if j > 0 {
                    f.write_str(" and ")?;
                }
                write!(f, "{t}")?;
            }
        }
        Ok(())
    }
}

/// [`Op::CaptureStart`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureRequest {
    /// Only this port (its name in the configuration); `None`: every port.
    pub port: Option<Name>,
    pub filter: CaptureFilter,
    /// Bytes kept of each frame (1 ..; more than [`CAPTURE_SNAP_MAX`] keeps
    /// whole frames).
    pub snaplen: u32,
    /// Frame bytes per second the box copies at most; `None`: the
    /// platform's default (the image: a serial line's worth; routerd-host:
    /// no cap); `Some(u32::MAX)`: no cap.
    pub rate: Option<u32>,
}

/// One frame of a [`CaptureBatch`]; its bytes are the next `caplen` of
/// [`CaptureBatch::data`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedFrame {
    /// Microseconds since the Unix epoch (since boot on a box without a
    /// wall clock), millisecond resolution.
    pub ts_us: u64,
    /// The port's index in the running configuration ([`CaptureBatch::ports`]).
    pub port: u8,
    /// Sent by the box (else received).
    pub tx: bool,
    /// The frame's length on the wire.
    pub len: u16,
    /// Bytes kept (≤ `len`, ≤ the snap length).
    pub caplen: u16,
}

/// [`Reply::Captured`]: the frames the box held, oldest first, and the
/// capture's counters since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureBatch {
    /// Still copying frames.
    pub running: bool,
    /// Why it stopped (`stopped by routerctl`, `not read for 30 s`, …);
    /// empty while running.
    pub stopped: Text<80>,
    pub frames: Vec<CapturedFrame, CAPTURE_BATCH_FRAMES>,
    /// The frames' bytes, one after the other.
    pub data: Vec<u8, CAPTURE_BATCH_BYTES>,
    /// Frames still held on the box after this batch.
    pub waiting: u32,
    /// Frames copied since the start, and their length on the wire.
    pub captured: u64,
    pub captured_bytes: u64,
    /// Frames that matched but were skipped: over the rate cap, or the ring
    /// was full (routerctl reads too slowly).
    pub skipped_rate: u64,
    pub skipped_full: u64,
    /// The rate cap in force in bytes per second (`u32::MAX`: none).
    pub rate: u32,
    /// Bytes the box's ring holds.
    pub ring_bytes: u32,
    /// The running configuration's port names, by index.
    pub ports: Vec<Name, MAX_PORT_STATUS>,
}

// bgp: the BGP EVPN service in status (`Status::bgp`: `routerctl bgp
// summary`, doctor's `bgp.*` checks) and its routes, a page at a time
// (`Op::BgpRoutes`: `routerctl bgp routes`).

/// Sessions in [`BgpStatus::peers`] (the configuration's `[bgp]` peers).
pub const MAX_BGP_PEER_STATUS: usize = config_schema::limits::MAX_BGP_PEERS;
/// VNIs in [`BgpStatus::vnis`]: one per segment with `control = "evpn"`.
pub const MAX_BGP_VNI_STATUS: usize = config_schema::limits::MAX_SEGMENTS;
/// VTEPs listed per VNI (the dataplane's learned-VTEP table per segment,
/// `routerd_dataplane::MAX_LEARNED_VTEPS`); more are counted in
/// [`BgpVniStatus::flood_list_total`].
pub const MAX_BGP_FLOOD_LIST: usize = 32;
/// Service and RIB counters in [`BgpStatus::counters`] (non-zero ones).
pub const MAX_BGP_COUNTS: usize = 16;
/// Routes per [`Reply::BgpRoutes`] (≈ 100 bytes each: a page is ≈ 13 KiB,
/// about a second at 115200 baud).
pub const MAX_BGP_ROUTE_ROWS: usize = 128;
/// [`BgpPeerStatus::last_down`].
pub const BGP_DOWN_TEXT: usize = 64;

/// A BGP session's state (RFC 4271 §8), named as FRR names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BgpState {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl BgpState {
    /// `Idle`, …, `Established` (FRR's words).
    pub const fn name(self) -> &'static str {
        match self {
            BgpState::Idle => "Idle",
            BgpState::Connect => "Connect",
            BgpState::Active => "Active",
            BgpState::OpenSent => "OpenSent",
            BgpState::OpenConfirm => "OpenConfirm",
            BgpState::Established => "Established",
        }
    }
}

impl core::fmt::Display for BgpState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// The BGP EVPN service (`[bgp]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpStatus {
    /// Our AS (iBGP: every peer's too).
    pub asn: u32,
    pub router_id: Ipv4Addr,
    /// The hold time we propose, seconds.
    pub hold_time: u16,
    /// Our VTEP: the next hop of the routes we originate.
    pub vtep: Ipv4Addr,
    /// Every configured peer, in configuration order.
    pub peers: Vec<BgpPeerStatus, MAX_BGP_PEER_STATUS>,
    /// Every VNI we join, in configuration order.
    pub vnis: Vec<BgpVniStatus, MAX_BGP_VNI_STATUS>,
    /// Non-zero counters of the service (`accepted`, `collisions`, …) and
    /// of the RIB (`rib_macs_full`, `rib_not_imported`, …).
    pub counters: Vec<Count, MAX_BGP_COUNTS>,
}

/// One BGP session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpPeerStatus {
    pub address: Ipv4Addr,
    pub name: Name,
    pub state: BgpState,
    /// How long the session has been Established (`None`: not up).
    pub uptime_ms: Option<u64>,
    /// The peer's routes in the RIB now.
    pub prefixes_received: u32,
    /// Times the session reached Established, and went down.
    pub established: u64,
    pub downs: u64,
    /// Why it last went down (`sent NOTIFICATION 4/0 (hold timer
    /// expired)`); empty: never.
    pub last_down: Text<BGP_DOWN_TEXT>,
    /// BGP messages received and sent on the session.
    pub messages_in: u64,
    pub messages_out: u64,
    /// Malformed UPDATEs that cost less than a reset (RFC 7606): routes
    /// treated as withdrawn, attributes discarded, withdrawn NLRIs that
    /// could not be read. Totals over the session's life on this box.
    pub treat_as_withdraw: u64,
    pub attributes_discarded: u64,
    pub withdraw_nlri_errors: u64,
}

/// One EVPN VNI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpVniStatus {
    pub vni: u32,
    /// The segment carrying it (`None`: no running segment has this VNI).
    pub segment: Option<Name>,
    /// The VTEPs learned from the peers' type-3 routes: BUM traffic of the
    /// VNI is flooded to them (besides the segment's `remote_vteps`).
    pub flood_list: Vec<Ipv4Addr, MAX_BGP_FLOOD_LIST>,
    /// Learned VTEPs in all (`flood_list` holds the first ones).
    pub flood_list_total: u16,
    /// MACs learned from the peers' type-2 routes (each MAC once).
    pub remote_macs: u32,
    /// MACs we advertise (learned on the segment's port).
    pub local_macs: u32,
}

/// [`Reply::BgpRoutes`]: `routes` are positions `offset ..` of the `total`
/// routes that match; ask again from `offset + routes.len()` for more.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BgpRoutes {
    pub total: u32,
    pub offset: u32,
    pub routes: Vec<BgpRoute, MAX_BGP_ROUTE_ROWS>,
}

/// One EVPN route, ours or a peer's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpRoute {
    /// 2 (MAC/IP advertisement) or 3 (inclusive multicast: the VTEP joins the VNI).
    pub route_type: u8,
    pub vni: u32,
    /// Route distinguisher (`10.1.0.1:3`, `65000:100`).
    pub rd: Text<24>,
    /// Type 2: the MAC.
    pub mac: Option<[u8; 6]>,
    /// Type 2: the IP with it, if advertised.
    pub ip: Option<core::net::IpAddr>,
    /// The VTEP: the next hop (type 2) or the originator (type 3).
    pub next_hop: Ipv4Addr,
    /// Who sent it (`None`: we originate it).
    pub peer: Option<BgpRoutePeer>,
    /// Type 2: the MAC-mobility sequence number (0 without one).
    pub seq: u32,
}

/// The peer a route came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpRoutePeer {
    pub address: Ipv4Addr,
    pub name: Name,
}

impl BgpStatus {
    /// `bgp as 65000, router id 10.1.0.1: 1 of 2 sessions established` and
    /// a line per VNI (the console's `status`).
    pub fn write_summary(&self, w: &mut dyn core::fmt::Write) -> core::fmt::Result {
        let up = self.peers.iter().filter(|p| p.state == BgpState::Established).count();
        writeln!(w, "  bgp as {}, router id {}: {up} of {} sessions established", self.asn, self.router_id, self.peers.len())?;
        for p in self.peers.iter().filter(|p| p.state != BgpState::Established) {
            write!(w, "  bgp peer {} {}: {}", p.name, p.address, p.state)?;
            if !p.last_down.is_empty() {
                write!(w, ", last down: {}", p.last_down)?;
            }
            writeln!(w)?;
        }
        for v in &self.vnis {
            writeln!(
                w,
                "  bgp vni {}: {} VTEPs learned, {} remote MACs, {} local MACs advertised",
                v.vni, v.flood_list_total, v.remote_macs, v.local_macs
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use config_schema::{Capture, CaptureMethod, Delivery, MssClamp};
    use std::string::ToString;
    use std::vec;

    fn name(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    fn claim(last: u8) -> Claim {
        Claim {
            address: Ipv4Cidr::new(Ipv4Addr::new(10, 20, 0, last), 32).unwrap(),
            owner: name("cloud"),
            gratuitous_arp: Some(3),
            conflict_hold: None,
            local_port: None,
            mss_clamp: MssClamp::Auto,
            capture: Capture { method: CaptureMethod::ProxyArp, port: name("lan0"), configure_os_address: false },
            delivery: Delivery { tunnel: name("wg0"), peer: name("cloud") },
        }
    }

    fn big_text<const N: usize>() -> Text<N> {
        let mut s = String::new();
        while s.push('é').is_ok() {}
        while s.push('x').is_ok() {}
        s
    }

    /// The largest status the box can produce still fits in one frame.
    #[test]
    fn maximal_status_fits_a_frame() {
        let mut st = Status {
            device: big_text(),
            side: big_text(),
            software: big_text(),
            build: big_text(),
            uptime_ms: u64::MAX,
            configured: true,
            applied_ms_ago: Some(u64::MAX),
            mark_age_ms: Some(u64::MAX),
            tunnel: Some(TunnelStatus {
                name: name("abcdefghijklmnopqrstuvwx"),
                listen_port: u16::MAX,
                mtu: u16::MAX,
                public_key: [0xff; 32],
                underlay_mtu: u16::MAX,
            }),
            wireguard_load: Some(WireguardLoad {
                under_load: true,
                last_under_load_ms_ago: Some(u64::MAX),
                handshakes: u64::MAX,
                cookie_replies_sent: u64::MAX,
                cookies_received: u64::MAX,
                refused_under_load: u64::MAX,
                cookie_replies_sent_since_mark: Some(u64::MAX),
                refused_under_load_since_mark: Some(u64::MAX),
            }),
            wall_clock_ms: Some(u64::MAX),
            clock_source: big_text(),
            firmware: Some(FirmwareStatus {
                running: big_text(),
                trial_tries_left: Some(u8::MAX),
                failed: Some(big_text()),
                confirm_in_ms: Some(u64::MAX),
                slots: core::iter::repeat_n(
                    SlotStatus {
                        slot: big_text(),
                        identity: Some(FirmwareIdentity { version: big_text(), build: big_text(), flags: u32::MAX }),
                        state: big_text(),
                    },
                    2,
                )
                .collect(),
            }),
            storage: Some(StorageStatus {
                disks: core::iter::repeat_n(big_text::<8>(), MAX_DISKS).collect(),
                disk: big_text(),
                first_lba: u64::MAX,
                blocks: u64::MAX,
                generation: u64::MAX,
                boots: u32::MAX,
                saved_ms_ago: Some(u64::MAX),
                saves: u64::MAX,
                save_errors: u64::MAX,
                damaged_slots: u8::MAX,
                note: big_text(),
            }),
            serial: SerialStats {
                frames: u64::MAX,
                not_a_frame: u64::MAX,
                bad_checksum: u64::MAX,
                overflow: u64::MAX,
                malformed: u64::MAX,
                retransmits: u64::MAX,
                sessions: u64::MAX,
                idle_timeouts: u64::MAX,
            },
            ..Status::default()
        };
        let long = name("abcdefghijklmnopqrstuvwx");
        while st
            .ports
            .push(PortStatus {
                name: big_text(),
                role: Some(PortRole::Wan),
                mac: [0xff; 6],
                link_up: true,
                address: Some(Ipv4Cidr::new(Ipv4Addr::BROADCAST, 32).unwrap()),
                rx_frames: u64::MAX,
                tx_frames: u64::MAX,
                rx_errors: u64::MAX,
                tx_ring_full: u64::MAX,
                rx_loans_out: u64::MAX,
                rx_foreign_loans: u64::MAX,
                tx_dropped: u64::MAX,
                tx_dropped_since_mark: Some(u64::MAX),
            })
            .is_ok()
        {}
        while st
            .peers
            .push(PeerStatus {
                name: long.clone(),
                public_key: [0xff; 32],
                endpoint_configured: big_text(),
                endpoint: Some(SocketAddr::new(core::net::Ipv6Addr::from([0xff; 16]).into(), u16::MAX)),
                allowed_ips: core::iter::repeat_n(Ipv4Cidr::new(Ipv4Addr::BROADCAST, 32).unwrap(), 16).collect(),
                last_handshake_ms_ago: Some(u64::MAX),
                has_session: true,
                rx_bytes: u64::MAX,
                tx_bytes: u64::MAX,
                persistent_keepalive: Some(u16::MAX),
            })
            .is_ok()
        {}
        while st
            .claims
            .push(ClaimStatus {
                address: Ipv4Addr::BROADCAST,
                owner: long.clone(),
                role: ClaimRole::LocalDelivery,
                port: long.clone(),
                tunnel: long.clone(),
                peer: long.clone(),
                state: ClaimState::Disabled,
                conflict_mac: Some([0xff; 6]),
                mss: u16::MAX,
                mss_auto: true,
                arp_replies: u64::MAX,
                garps_sent: u64::MAX,
                probes_seen: u64::MAX,
                conflicts: u64::MAX,
                to_tunnel_packets: u64::MAX,
                to_tunnel_bytes: u64::MAX,
                from_tunnel_packets: u64::MAX,
                from_tunnel_bytes: u64::MAX,
                syns_clamped: u64::MAX,
                loops: u64::MAX,
                live_host_heard_ms_ago: Some(u64::MAX),
                conflict_hold_ms: u64::MAX,
                next_probe_in_ms: Some(u64::MAX),
                probes_sent: u64::MAX,
                probes_answered: u64::MAX,
            })
            .is_ok()
        {}
        while st
            .segments
            .push(SegmentStatus {
                name: long.clone(),
                vni: u32::MAX,
                port: long.clone(),
                udp_port: u16::MAX,
                fdb_local: u16::MAX,
                fdb_remote: u16::MAX,
                vteps: core::iter::repeat_n(VtepStatus { address: Ipv4Addr::BROADCAST, fdb_remote: u16::MAX }, MAX_VTEP_STATUS).collect(),
            })
            .is_ok()
        {}
        for list in [&mut st.counters, &mut st.drops, &mut st.drops_since_mark, &mut st.wireguard] {
            while list.push(Count { name: big_text(), value: u64::MAX }).is_ok() {}
        }
        let mut host = HostReport {
            checks: u64::MAX,
            ip_forward: Some(true),
            wan_socket: big_text(),
            wan_tun: big_text(),
            removals: u64::MAX,
            last_event: big_text(),
            forward_drops_omitted: u16::MAX,
            firewalls: big_text(),
            ..HostReport::default()
        };
        while host
            .held
            .push(HeldAddress { address: Ipv4Addr::BROADCAST, interface: big_text(), removed: true, seconds_ago: u64::MAX })
            .is_ok()
        {}
        while host.routes.push(DeliveryRoute { address: Ipv4Addr::BROADCAST, ok: true, detail: big_text() }).is_ok() {}
        while host.forward_drops.push(big_text()).is_ok() {}
        while host.errors.push(big_text()).is_ok() {}
        st.host = Some(host);
        st.bgp = Some(maximal_bgp_status());
        let up = Up::Response(Response { seq: u32::MAX, reply: Reply::Status(Box::new(st.clone())) });
        let mut buf = vec![0u8; MAX_PAYLOAD];
        let n = encode(&up, &mut buf).expect("maximal status must fit MAX_PAYLOAD").len();
        std::println!("maximal status: {n} bytes of {MAX_PAYLOAD}");
        assert_eq!(decode::<Up>(&buf[..n]), Ok(up));
    }

    fn maximal_bgp_status() -> BgpStatus {
        let peer = BgpPeerStatus {
            address: Ipv4Addr::BROADCAST,
            name: name("abcdefghijklmnopqrstuvwx"),
            state: BgpState::OpenConfirm,
            uptime_ms: Some(u64::MAX),
            prefixes_received: u32::MAX,
            established: u64::MAX,
            downs: u64::MAX,
            last_down: big_text(),
            messages_in: u64::MAX,
            messages_out: u64::MAX,
            treat_as_withdraw: u64::MAX,
            attributes_discarded: u64::MAX,
            withdraw_nlri_errors: u64::MAX,
        };
        let vni = BgpVniStatus {
            vni: u32::MAX,
            segment: Some(name("abcdefghijklmnopqrstuvwx")),
            flood_list: core::iter::repeat_n(Ipv4Addr::BROADCAST, MAX_BGP_FLOOD_LIST).collect(),
            flood_list_total: u16::MAX,
            remote_macs: u32::MAX,
            local_macs: u32::MAX,
        };
        BgpStatus {
            asn: u32::MAX,
            router_id: Ipv4Addr::BROADCAST,
            hold_time: u16::MAX,
            vtep: Ipv4Addr::BROADCAST,
            peers: core::iter::repeat_n(peer, MAX_BGP_PEER_STATUS).collect(),
            vnis: core::iter::repeat_n(vni, MAX_BGP_VNI_STATUS).collect(),
            counters: core::iter::repeat_n(Count { name: big_text(), value: u64::MAX }, MAX_BGP_COUNTS).collect(),
        }
    }

    /// The BGP part alone stays small enough that the status keeps room
    /// to grow: its own bound, measured.
    #[test]
    fn maximal_bgp_status_has_a_bound() {
        let mut buf = vec![0u8; MAX_PAYLOAD];
        let b = maximal_bgp_status();
        let n = encode(&b, &mut buf).unwrap().len();
        std::println!("maximal bgp status: {n} bytes");
        assert!(n <= 6 * 1024, "{n}");
        assert_eq!(decode::<BgpStatus>(&buf[..n]), Ok(b));
    }

    /// A full page of routes with the largest values (IPv6 addresses, the
    /// longest names) fits a frame with room to spare; the request is small.
    #[test]
    fn a_maximal_bgp_route_page_fits_a_frame() {
        let route = BgpRoute {
            route_type: 2,
            vni: u32::MAX,
            rd: big_text(),
            mac: Some([0xff; 6]),
            ip: Some(core::net::IpAddr::V6(core::net::Ipv6Addr::new(0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff))),
            next_hop: Ipv4Addr::BROADCAST,
            peer: Some(BgpRoutePeer { address: Ipv4Addr::BROADCAST, name: name("abcdefghijklmnopqrstuvwx") }),
            seq: u32::MAX,
        };
        let page = BgpRoutes { total: u32::MAX, offset: u32::MAX, routes: core::iter::repeat_n(route, MAX_BGP_ROUTE_ROWS).collect() };
        let up = Up::Response(Response { seq: u32::MAX, reply: Reply::BgpRoutes(Box::new(page)) });
        let mut buf = vec![0u8; MAX_PAYLOAD];
        let n = encode(&up, &mut buf).expect("a maximal route page must fit MAX_PAYLOAD").len();
        std::println!("maximal bgp route page: {n} bytes of {MAX_PAYLOAD}");
        assert!(n <= MAX_PAYLOAD / 2, "{n}");
        assert_eq!(decode::<Up>(&buf[..n]), Ok(up));
        // A local type 3: no MAC, IP or peer.
        let own = BgpRoute {
            route_type: 3,
            vni: 100,
            rd: text("10.1.0.1:1"),
            mac: None,
            ip: None,
            next_hop: Ipv4Addr::new(10, 1, 0, 1),
            peer: None,
            seq: 0,
        };
        let up = Up::Response(Response {
            seq: 1,
            reply: Reply::BgpRoutes(Box::new(BgpRoutes { total: 1, offset: 0, routes: [own].into_iter().collect() })),
        });
        let n = encode(&up, &mut buf).unwrap().len();
        assert_eq!(decode::<Up>(&buf[..n]), Ok(up));
        for cut in 0..n {
            assert!(decode::<Up>(&buf[..cut]).is_err(), "{cut}/{n}");
        }
    }

    #[test]
    fn bgp_summary_lines_name_the_sessions_and_vnis() {
        let mut b = maximal_bgp_status();
        b.asn = 65000;
        b.router_id = Ipv4Addr::new(10, 1, 0, 1);
        b.peers.truncate(2);
        b.peers[0].state = BgpState::Established;
        b.peers[1].name = name("pve2");
        b.peers[1].state = BgpState::Active;
        b.peers[1].last_down = text("sent NOTIFICATION 4/0 (hold timer expired)");
        b.vnis.truncate(1);
        b.vnis[0].vni = 100;
        b.vnis[0].flood_list_total = 2;
        b.vnis[0].remote_macs = 3;
        b.vnis[0].local_macs = 1;
        let mut out = std::string::String::new();
        b.write_summary(&mut out).unwrap();
        assert_eq!(
            out,
            "  bgp as 65000, router id 10.1.0.1: 1 of 2 sessions established\n\
             \x20 bgp peer pve2 255.255.255.255: Active, last down: sent NOTIFICATION 4/0 (hold timer expired)\n\
             \x20 bgp vni 100: 2 VTEPs learned, 3 remote MACs, 1 local MACs advertised\n"
        );
        let st = Status { bgp: Some(b), ..Status::default() };
        let mut all = std::string::String::new();
        st.write_summary(&mut all).unwrap();
        assert!(all.contains("1 of 2 sessions established"), "{all}");
    }

    /// A full firmware chunk with the largest numbers fits a frame.
    #[test]
    fn a_maximal_upgrade_chunk_fits_a_frame() {
        let mut data = Vec::new();
        while data.push(0xff).is_ok() {}
        let req = Request { seq: u32::MAX, op: Op::UpgradeChunk(Box::new(UpgradeChunk { offset: u32::MAX, data })) };
        let mut buf = vec![0u8; MAX_PAYLOAD];
        let n = encode(&req, &mut buf).expect("a full chunk fits MAX_PAYLOAD").len();
        assert!(n + 16 <= MAX_PAYLOAD, "{n}");
        assert_eq!(decode::<Request>(&buf[..n]), Ok(req));
    }

    #[test]
    fn a_maximal_apply_fits_a_frame() {
        let mut cfg = Config {
            device: config_schema::Device { name: name("abcdefghijklmnopqrstuvwx"), side: name("cloud") },
            ports: Vec::new(),
            wireguard: Vec::new(),
            peers: Vec::new(),
            claims: Vec::new(),
            segments: Vec::new(),
            dns: config_schema::Dns::default(),
            nat: Vec::new(),
            firewall: None,
            bgp: None,
        };
        while cfg.claims.push(claim(1)).is_ok() {}
        let mut buf = vec![0u8; MAX_PAYLOAD];
        let req = Request { seq: u32::MAX, op: Op::Apply(Box::new(cfg)) };
        let n = encode(&req, &mut buf).unwrap().len();
        assert!(n + 16 <= MAX_PAYLOAD);
        // The configuration's own bound leaves room for the envelope.
        const _: () = assert!(config_schema::CONFIG_WIRE_MAX + 16 <= MAX_PAYLOAD);
    }

    #[test]
    fn requests_round_trip_and_trailing_bytes_are_refused() {
        let reqs = [
            Request { seq: 0, op: Op::Hello { version: PROTOCOL_VERSION, hash: PROTOCOL_HASH } },
            Request { seq: 1, op: Op::Status { mark: true } },
            Request { seq: 2, op: Op::ClaimAdd(claim(50)) },
            Request { seq: 3, op: Op::ClaimRemove(Ipv4Cidr::new(Ipv4Addr::new(10, 20, 0, 50), 32).unwrap()) },
            Request { seq: 4, op: Op::KeyImport(name("wg0"), [7; 32]) },
            Request { seq: u32::MAX, op: Op::Reboot },
            Request { seq: 5, op: Op::ClaimClearConflict(Ipv4Cidr::new(Ipv4Addr::new(10, 20, 0, 50), 32).unwrap()) },
            Request { seq: 6, op: Op::PresharedKeyGenerate(name("cloud-psk")) },
            Request { seq: 7, op: Op::PresharedKeyImport(name("cloud-psk"), [9; 32]) },
            Request { seq: 8, op: Op::PresharedKeyReveal(name("cloud-psk")) },
            Request { seq: 9, op: Op::History },
            Request { seq: 10, op: Op::GetGeneration(u64::MAX) },
            Request { seq: 11, op: Op::Rollback { generation: 7, dry_run: true } },
            Request { seq: 12, op: Op::Confirm },
            Request { seq: 13, op: Op::FactoryReset { device: text("edge") } },
            Request { seq: 14, op: Op::BgpRoutes { vni: Some(u32::MAX), offset: u32::MAX } },
            Request { seq: 15, op: Op::BgpRoutes { vni: None, offset: 0 } },
        ];
        for r in reqs {
            let mut buf = [0u8; 512];
            let n = encode(&r, &mut buf).unwrap().len();
            assert_eq!(decode::<Request>(&buf[..n]), Ok(r.clone()));
            assert_eq!(decode::<Request>(&buf[..n + 1]), Err(MessageError::Malformed));
            for cut in 0..n {
                assert!(decode::<Request>(&buf[..cut]).is_err(), "{cut}/{n} of {r:?}");
            }
        }
    }

    /// Every key slot a box can hold, listed or reported as created, fits a
    /// frame next to the largest outcome.
    #[test]
    fn maximal_key_lists_fit_a_frame() {
        let info = |kind| KeyInfo {
            slot: name("abcdefghijklmnopqrstuvwx"),
            kind,
            public_key: (kind == KeyKind::Private).then_some([0xff; 32]),
            generated: true,
            in_use: true,
        };
        let keys: Vec<KeyInfo, MAX_KEYS> =
            (0..MAX_KEYS).map(|i| info(if i % 2 == 0 { KeyKind::Private } else { KeyKind::Preshared })).collect();
        let problem =
            WireProblem { code: big_text(), error: true, path: big_text(), value: big_text(), message: big_text(), hint: big_text() };
        let change = Change { kind: ChangeKind::Modify, section: big_text(), subject: big_text() };
        let outcome = Outcome {
            errors: u16::MAX,
            warnings: u16::MAX,
            problems: core::iter::repeat_n(problem, MAX_PROBLEMS).collect(),
            changes: core::iter::repeat_n(change, MAX_CHANGES).collect(),
            changes_omitted: u16::MAX,
            tunnel_restarts: true,
            keys_created: core::iter::repeat_n(info(KeyKind::Private), MAX_KEYS).collect(),
        };
        let mut buf = vec![0u8; MAX_PAYLOAD];
        for reply in [
            Reply::Keys(Box::new(keys)),
            Reply::Applied(Box::new(outcome)),
            Reply::PresharedKey { slot: name("abcdefghijklmnopqrstuvwx"), key: [0xff; 32] },
        ] {
            let up = Up::Response(Response { seq: u32::MAX, reply });
            let n = encode(&up, &mut buf).expect("fits MAX_PAYLOAD").len();
            assert_eq!(decode::<Up>(&buf[..n]), Ok(up));
        }
    }

    /// A full history (every generation with the largest numbers) and a
    /// commit-confirm apply of a maximal configuration fit a frame.
    #[test]
    fn maximal_history_and_confirm_apply_fit_a_frame() {
        let entry = HistoryEntry {
            generation: u64::MAX,
            applied_ms: Some(u64::MAX),
            origin: Origin::RevertedAtRestart(u64::MAX),
            confirmed: false,
            size: u32::MAX,
            hash: u32::MAX,
        };
        let pending = PendingConfirm { generation: u64::MAX, reverts_to: u64::MAX, left_ms: u64::MAX, window_ms: u32::MAX };
        let h = History { entries: core::iter::repeat_n(entry, HISTORY_MAX).collect(), running: Some(u64::MAX), pending: Some(pending) };
        let mut buf = vec![0u8; MAX_PAYLOAD];
        let up = Up::Response(Response { seq: u32::MAX, reply: Reply::History(Box::new(h)) });
        let n = encode(&up, &mut buf).unwrap().len();
        assert!(n < 512, "{n}");
        assert_eq!(decode::<Up>(&buf[..n]), Ok(up));
        // The envelope of ApplyConfirm is a few bytes more than Apply's: within the 16 kept.
        let cfg = Config {
            device: config_schema::Device { name: name("abcdefghijklmnopqrstuvwx"), side: name("cloud") },
            ports: Vec::new(),
            wireguard: Vec::new(),
            peers: Vec::new(),
            claims: Vec::new(),
            segments: Vec::new(),
            dns: config_schema::Dns::default(),
            nat: Vec::new(),
            firewall: None,
            bgp: None,
        };
        let a = encode(&Request { seq: u32::MAX, op: Op::Apply(Box::new(cfg.clone())) }, &mut buf).unwrap().len();
        let req = Request { seq: u32::MAX, op: Op::ApplyConfirm { config: Box::new(cfg), window_ms: u32::MAX } };
        let b = encode(&req, &mut buf).unwrap().len();
        assert!(b - a <= 6, "{a} {b}");
        assert_eq!(decode::<Request>(&buf[..b]), Ok(req));
        assert_eq!(Origin::Reverted(4).to_string(), "revert of 4 (not confirmed)");
        assert_eq!(Origin::ClaimAdd(Ipv4Addr::new(10, 20, 0, 52)).to_string(), "claim add 10.20.0.52");
    }

    /// A hello keeps its layout across versions: variant 0, version, hash.
    #[test]
    fn hello_layout_is_pinned() {
        let mut buf = [0u8; 64];
        let n = encode(&Request { seq: 5, op: Op::Hello { version: 1, hash: 0x0102 } }, &mut buf).unwrap().len();
        assert_eq!(&buf[..n], &[5, 0, 1, 0x82, 0x02]);
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut buf = [0u8; 300];
        for round in 0..20_000 {
            let len = (round % 300) as usize;
            for b in buf.iter_mut().take(len) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let _ = decode::<Request>(&buf[..len]);
            let _ = decode::<Up>(&buf[..len]);
        }
    }

    #[test]
    fn problems_keep_their_path_and_code() {
        let mut cfg = config_schema::Config {
            device: config_schema::Device { name: name("a"), side: name("onprem") },
            ports: Vec::new(),
            wireguard: Vec::new(),
            peers: Vec::new(),
            claims: Vec::new(),
            segments: Vec::new(),
            dns: config_schema::Dns::default(),
            nat: Vec::new(),
            firewall: None,
            bgp: None,
        };
        let mut c = claim(9);
        c.address = Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 9), 24).unwrap();
        cfg.claims.push(c).unwrap();
        let report = config_schema::validate(&cfg);
        let p = report.problems.iter().find(|p| p.path.as_str() == "claims[0].address").unwrap();
        let w = WireProblem::from(p);
        assert!(w.error);
        assert_eq!(w.path.as_str(), "claims[0].address");
        assert!(w.message.contains("10.0.0.9/24"), "{}", w.message);
    }

    // capture
    /// The largest capture batch (every frame slot, every data byte, the
    /// largest numbers and names) fits a frame, and so does the largest
    /// capture request.
    #[test]
    fn a_maximal_capture_batch_fits_a_frame() {
        let frame = CapturedFrame { ts_us: u64::MAX, port: u8::MAX, tx: true, len: u16::MAX, caplen: u16::MAX };
        let mut data = Vec::new();
        while data.push(0xff).is_ok() {}
        let batch = CaptureBatch {
            running: true,
            stopped: big_text(),
            frames: core::iter::repeat_n(frame, CAPTURE_BATCH_FRAMES).collect(),
            data,
            waiting: u32::MAX,
            captured: u64::MAX,
            captured_bytes: u64::MAX,
            skipped_rate: u64::MAX,
            skipped_full: u64::MAX,
            rate: u32::MAX,
            ring_bytes: u32::MAX,
            ports: core::iter::repeat_n(name("abcdefghijklmnopqrstuvwx"), MAX_PORT_STATUS).collect(),
        };
        let up = Up::Response(Response { seq: u32::MAX, reply: Reply::Captured(Box::new(batch)) });
        let mut buf = vec![0u8; MAX_PAYLOAD];
        let n = encode(&up, &mut buf).expect("a maximal capture batch must fit MAX_PAYLOAD").len();
        std::println!("maximal capture batch: {n} bytes of {MAX_PAYLOAD}");
        assert!(n + 1024 <= MAX_PAYLOAD, "{n}");
        assert_eq!(decode::<Up>(&buf[..n]), Ok(up));

        let term = CaptureTerm { not: true, test: CaptureTest::Host(Ipv4Addr::BROADCAST) };
        let clause: Vec<CaptureTerm, CAPTURE_TERMS> = core::iter::repeat_n(term, CAPTURE_TERMS).collect();
        let filter = CaptureFilter { any_of: core::iter::repeat_n(clause, CAPTURE_CLAUSES).collect() };
        let req = CaptureRequest { port: Some(name("abcdefghijklmnopqrstuvwx")), filter, snaplen: u32::MAX, rate: Some(u32::MAX) };
        for op in [Op::CaptureStart(Box::new(req)), Op::CaptureRead { max_bytes: u32::MAX }, Op::CaptureStop] {
            let r = Request { seq: u32::MAX, op };
            let n = encode(&r, &mut buf).unwrap().len();
            assert!(n < 512, "{n}");
            assert_eq!(decode::<Request>(&buf[..n]), Ok(r));
        }
    }

    // capture
    #[test]
    fn capture_filters_print_as_the_grammar() {
        let t = |not, test| CaptureTerm { not, test };
        let mut a: Vec<CaptureTerm, CAPTURE_TERMS> = Vec::new();
        a.push(t(false, CaptureTest::Host(Ipv4Addr::new(10, 0, 0, 1)))).unwrap();
        a.push(t(true, CaptureTest::Proto(CaptureProto::Arp))).unwrap();
        let mut b: Vec<CaptureTerm, CAPTURE_TERMS> = Vec::new();
        b.push(t(false, CaptureTest::Port(51820))).unwrap();
        b.push(t(false, CaptureTest::Outbound)).unwrap();
        let f = CaptureFilter { any_of: [a, b].into_iter().collect() };
        assert_eq!(f.to_string(), "host 10.0.0.1 and not arp or port 51820 and outbound");
        assert_eq!(CaptureFilter::default().to_string(), "every frame");
    }
}
