//! `routerctl lab`: a seed's whole scenario on one machine, no root.
//!
//! `--scenario hybrid` (the default) is seed 000, below; `--scenario
//! two-site` is seed 003 (`lab/two_site.rs`: the shipped two-site examples,
//! DHCP, DNS, NAT, a VXLAN overlay inside WireGuard, a dynamic IP change).
//! Both share the helpers here: booting a box, provisioning it over its
//! serial socket, running doctor.
//!
//! Seed 000: two boxes run the real image in QEMU: "onprem" (captures the cloud's
//! address with proxy-ARP) and "cloud" (the provider hands it the on-prem
//! address: provider-secondary-ip). Their WAN ports meet in a small
//! underlay (`routerd-lab`: routing, the cloud VM's 1:1 NAT, optional
//! latency and loss); a simulated host sits on each LAN holding the
//! addresses the claims move. The lab makes both keys on the boxes,
//! provisions both over their serial sockets with the embedded shared
//! claim list, runs `doctor hybrid` on both, then sends traffic: ping and
//! a TCP transfer each way, with the clamped MSS shown.
//!
//! Mapping to a real deployment: the onprem box is a VM (or a small box)
//! beside the PVE host, `lan0` on the bridge of the shared subnet, `wan0`
//! behind the site router; the cloud box is the Azure VM with the
//! addresses as secondary IPs of its NIC; the underlay is the internet.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use routerd_lab::{Attachment, HostConfig, ListenMode, SimHost, SocketPair, Underlay, UnderlayConfig};
use routerd_provision::message::{Op, Reply, Status};
use routerd_qemu as qemu;

use crate::client::{Client, PortSpec};
use crate::doctor::{self, Verdict};
use crate::{Failure, EXIT_FAILED};

mod two_site;

#[derive(Args, Clone, Debug)]
pub struct LabArgs {
    /// Which seed's world to build
    #[arg(long, value_enum, default_value_t = Scenario::Hybrid)]
    pub scenario: Scenario,
    /// Run the scenario once and exit (what the lab always does; kept for
    /// scripts that pass it). The exit code is 0 only if every doctor check
    /// passed and the traffic arrived intact, 1 otherwise
    #[arg(long)]
    pub once: bool,
    /// Leave everything running afterwards and print how to attach routerctl
    #[arg(long, conflicts_with = "once")]
    pub keep: bool,
    /// The firmware image (default: $ROUTERD_IMAGE, else target/release/routerd next to this routerctl)
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// A broken variant, to see doctor name the problem (each belongs to one scenario)
    #[arg(long, value_enum, default_value_t = Variant::Healthy)]
    pub variant: Variant,
    /// One-way latency the underlay adds, in milliseconds
    #[arg(long, default_value_t = 0)]
    pub latency: u64,
    /// Loss the underlay adds, in percent
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Bytes per TCP transfer (default 1 MiB; 256 KiB when --latency or
    /// --loss impair the underlay, where TCP moves a few KiB/s)
    #[arg(long)]
    pub bytes: Option<u64>,
    /// Print one JSON document on stdout at the end (the progress report
    /// goes to stderr)
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Seed 000, same-subnet hybrid: an on-prem box and a cloud box (behind
    /// 1:1 NAT) share one subnet; each captures the other side's /32s
    /// (proxy-ARP, provider-secondary-ip) and delivers them over WireGuard,
    /// MSS clamped to 1380; the cloud box's public address moves mid-run
    Hybrid,
    /// Seed 003, two sites, one overlay: the shipped two-site-roz.toml and
    /// two-site-wro.toml (only the peers' keys filled in); roz static behind
    /// its ISP router, wro on DHCP behind NAT with a dynamic public IP
    /// published in DNS; VXLAN (VNI 100000) inside WireGuard joins the VM
    /// networks on lan1 (MTU 1370, MSS 1330); wro's public IP changes
    /// mid-run and the tunnel recovers without an apply
    TwoSite,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Variant {
    /// Everything right
    Healthy,
    /// (hybrid) The onprem box is given a wrong public key for the cloud box
    WrongPeerKey,
    /// (hybrid) A forgotten host on the on-prem LAN still holds the cloud's address
    ConflictingHost,
    /// (hybrid) A fixed MSS clamp above what the tunnel carries
    ClampAbovePath,
    /// (hybrid) The cloud box routes the address it owns back into the tunnel
    LoopProneClaim,
    /// (two-site) The DNS servers answer NXDOMAIN for both peers' names
    /// (dyndns not updated): neither box finds the other
    DnsNeverResolves,
}

impl Variant {
    /// The scenario the variant breaks (`None`: any).
    fn scenario(self) -> Option<Scenario> {
        match self {
            Variant::Healthy => None,
            Variant::WrongPeerKey | Variant::ConflictingHost | Variant::ClampAbovePath | Variant::LoopProneClaim => Some(Scenario::Hybrid),
            Variant::DnsNeverResolves => Some(Scenario::TwoSite),
        }
    }
}

const ONPREM_LAN_IP: &str = "10.20.0.2/24";
const CLOUD_LAN_IP: &str = "10.20.0.4/24";
const ONPREM_HOST: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 10);
const CLOUD_HOST: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 50);
const CLOUD_PUBLIC: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

/// The shared claim list: both boxes get it unchanged.
const CLAIMS: &str = r#"
# The shared claim list (identical on both boxes): each box captures the
# addresses the other side owns and delivers its own locally.
[[claims]]
address = "10.20.0.50/32"      # the cloud VM
owner = "cloud"
mss_clamp = {CLAMP}
capture = { method = "proxy-arp", port = "lan0" }
delivery = { tunnel = "wg0", peer = "cloud" }

[[claims]]
address = "10.20.0.10/32"      # the on-prem host
owner = "onprem"
capture = { method = "provider-secondary-ip", port = "lan0" }
delivery = { tunnel = "wg0", peer = "onprem" }
"#;

fn onprem_config(cloud_key: &str, clamp: &str) -> String {
    format!(
        r#"[device]
name = "lab-onprem"
side = "onprem"

[[ports]]
name = "lan0"
role = "lan"
address = "{ONPREM_LAN_IP}"

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
public_key = "{cloud_key}"
endpoint = "{CLOUD_PUBLIC}:51820"
persistent_keepalive = 25
allowed_ips = ["10.20.0.50/32"]
{}"#,
        CLAIMS.replace("{CLAMP}", clamp)
    )
}

fn cloud_config(onprem_key: &str, clamp: &str, loop_prone: bool) -> String {
    let allowed = if loop_prone { r#"["10.20.0.10/32", "10.20.0.50/32"]"# } else { r#"["10.20.0.10/32"]"# };
    format!(
        r#"[device]
name = "lab-cloud"
side = "cloud"

[[ports]]
name = "lan0"
role = "lan"
address = "{CLOUD_LAN_IP}"

[[ports]]
name = "wan0"
role = "wan"
address = "10.0.0.4/24"
gateway = "10.0.0.1"

[[wireguard]]
name = "wg0"
private_key = "device:wg0"

[[peers]]
name = "onprem"
tunnel = "wg0"
public_key = "{onprem_key}"
allowed_ips = {allowed}
{}"#,
        CLAIMS.replace("{CLAMP}", clamp)
    )
}

struct Clock(Instant);

impl Clock {
    fn say(&self, what: impl AsRef<str>) {
        eprintln!("[{:6.1} s] {}", self.0.elapsed().as_secs_f64(), what.as_ref());
    }

    fn secs(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

/// A TCP transfer through the boxes, its progress said every few seconds
/// (over a slow, lossy underlay it can take minutes).
fn transfer(
    clock: &Clock,
    from: &SimHost,
    name: &str,
    dst: Ipv4Addr,
    port: u16,
    bytes: u64,
    budget: Duration,
) -> routerd_lab::TransferReport {
    let t = routerd_lab::Transfer::new(dst, port, bytes).timeout(budget);
    from.transfer_watched(&t, Duration::from_secs(5), &mut |acked, elapsed| {
        let rate = acked as f64 / elapsed.as_secs_f64().max(0.001) / 1024.0;
        clock.say(format!("{name} → {dst}:{port}: {acked} of {bytes} bytes acknowledged ({rate:.1} KiB/s)"));
    })
}

impl LabArgs {
    fn impaired(&self) -> bool {
        self.latency > 0 || self.loss > 0.0
    }

    /// Bytes per transfer.
    fn transfer_bytes(&self) -> u64 {
        self.bytes.unwrap_or(if self.impaired() { 256 << 10 } else { 1 << 20 })
    }

    /// How long a transfer may take: long enough for an impaired underlay
    /// (progress is said meanwhile), short when not even a ping crossed
    /// (the broken variants).
    fn transfer_budget(&self, ping: &routerd_lab::PingReport) -> Duration {
        match (ping.received > 0, self.impaired()) {
            (false, _) => Duration::from_secs(5),
            (true, false) => Duration::from_secs(120),
            (true, true) => Duration::from_secs(600),
        }
    }
}

fn failed(m: impl Into<String>) -> Failure {
    Failure { code: EXIT_FAILED, message: m.into() }
}

fn find_image(arg: Option<&Path>) -> Result<PathBuf, Failure> {
    if let Some(p) = arg {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("ROUTERD_IMAGE") {
        return Ok(PathBuf::from(p));
    }
    // target/{debug,release}/routerctl → target/release/routerd
    let exe = std::env::current_exe().map_err(|e| failed(format!("cannot locate routerctl: {e}")))?;
    if let Some(target) = exe.parent().and_then(Path::parent) {
        let p = target.join("release").join("routerd");
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(failed("no firmware image: build it with `cargo xtask image` (or pass --image / set ROUTERD_IMAGE)"))
}

struct BoxVm {
    name: &'static str,
    vm: qemu::Vm,
    port: PortSpec,
    lan_mac: [u8; 6],
}

/// The lab's end of each NIC, in PCI order (`lan0`, `wan0`, `lan1`, …): the
/// socket it binds and the one QEMU binds.
type NicSockets = Vec<(PathBuf, PathBuf)>;

/// The lab's end of NIC `n`, facing QEMU.
fn facing(sockets: &NicSockets, n: usize) -> Result<SocketPair, Failure> {
    let (harness, guest) = sockets.get(n).ok_or_else(|| failed(format!("no NIC {n}")))?;
    Ok(SocketPair::facing_qemu(harness, guest))
}

/// Boots a box with `nics` virtio-net NICs (MACs 52:54:00:1a:`id`:`n`) and
/// a blank disk, and waits until it asks for a configuration.
fn boot(image: &Path, name: &'static str, id: u8, nics: u8, clock: &Clock) -> Result<(BoxVm, NicSockets), Failure> {
    let mut m = qemu::Machine::new(image).map_err(|e| failed(format!("{name}: {e}")))?;
    let mut sockets = Vec::new();
    for n in 0..nics {
        let guest = m.run_dir.join(format!("nic{n}.guest"));
        let harness = m.run_dir.join(format!("nic{n}.harness"));
        sockets.push((harness.clone(), guest.clone()));
        m.nics.push(qemu::Nic {
            model: qemu::NicModel::VirtioNet,
            mac: [0x52, 0x54, 0x00, 0x1a, id, n],
            backend: qemu::NetBackend::Dgram { guest, harness },
        });
    }
    let lan_mac = [0x52, 0x54, 0x00, 0x1a, id, 0];
    // A blank disk, as a box booted with -kernel has: the lab names it for
    // the box's store (`storage init`) before applying.
    let disk = m.run_dir.join("state.img");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(8 << 20))
        .map_err(|e| failed(format!("{name}: cannot make {}: {e}", disk.display())))?;
    m.disks.push(disk);
    let mut vm = m.spawn().map_err(|e| failed(format!("{name}: {e}")))?;
    vm.wait_for("not forwarding: no configuration yet", Duration::from_secs(90))
        .map_err(|e| failed(format!("{name} did not boot: {e}")))?;
    clock.say(format!("{name}: booted (QEMU, TCG), serial on unix:{}", vm.serial_path().display()));
    vm.release_serial();
    let port = PortSpec::Unix(vm.serial_path());
    Ok((BoxVm { name, vm, port, lan_mac }, sockets))
}

/// `--keep`: leaves the boxes up until Enter, saying how to reach them.
fn keep(boxes: &[&BoxVm]) {
    println!("\nthe lab stays up; attach routerctl to each box:");
    for b in boxes {
        println!("  routerctl status --port unix:{}     ({})", b.vm.serial_path().display(), b.name);
        println!("  routerctl doctor hybrid --port unix:{}", b.vm.serial_path().display());
    }
    println!("press Enter to stop");
    let mut s = String::new();
    let _ = std::io::stdin().read_line(&mut s);
}

/// A box's provisioning session that outlives the box's idle timeout: the
/// box ends a session after 20 s without a request, and the lab's waits
/// (traffic, the recovery) can be longer, so a session idle for
/// [`REOPEN_AFTER`] is reopened before the next request.
struct Session<'a> {
    vm: &'a BoxVm,
    client: Option<Client>,
    used: Instant,
}

const REOPEN_AFTER: Duration = Duration::from_secs(15);

impl<'a> Session<'a> {
    fn open(vm: &'a BoxVm) -> Result<Session<'a>, Failure> {
        Ok(Session { vm, client: Some(connect(vm)?), used: Instant::now() })
    }

    fn client(&mut self) -> Result<&mut Client, Failure> {
        if self.used.elapsed() >= REOPEN_AFTER {
            // The box may have ended it already: no bye.
            if let Some(old) = self.client.take() {
                old.forget();
            }
        }
        self.used = Instant::now();
        match &mut self.client {
            Some(c) => Ok(c),
            empty => Ok(empty.insert(connect(self.vm)?)),
        }
    }

    fn status(&mut self) -> Result<Box<Status>, Failure> {
        crate::box_cmd::get_status(self.client()?, false)
    }

    fn close(self) {
        if let Some(c) = self.client {
            let _ = c.close();
        }
    }
}

fn connect(b: &BoxVm) -> Result<Client, Failure> {
    Client::connect(&b.port, 115_200, Duration::from_secs(5)).map_err(|e| failed(format!("{}: {e}", b.name)))
}

fn apply(c: &mut Client, name: &str, toml: &str, clock: &Clock) -> Result<Option<String>, Failure> {
    let cfg = config_schema::human::from_toml(toml).map_err(|e| failed(format!("{name}: embedded config: {}", e.report)))?;
    match c.request_with(Op::Apply(Box::new(cfg)), Duration::from_secs(10)).map_err(|e| failed(e.to_string()))? {
        Reply::Applied(o) => {
            clock.say(format!("{name}: configuration applied ({} changes)", o.changes.len()));
            Ok(None)
        }
        Reply::Error(f) => {
            let mut s = format!("{name}: the box refused the configuration: {}", f.message);
            for p in &f.problems {
                s.push_str(&format!("\n    {}[{}] {}: {}", if p.error { "error" } else { "warning" }, p.code, p.path, p.message));
            }
            clock.say(&s);
            Ok(Some(s))
        }
        other => Err(failed(format!("{name}: unexpected answer {other:?}"))),
    }
}

/// `routerctl storage init --disk vda --yes`: the box keeps its state on
/// the lab's blank disk from now on.
fn storage_init(c: &mut Client, name: &str) -> Result<(), Failure> {
    let disk = config_schema::Name::new("vda").map_err(|e| failed(format!("{e:?}")))?;
    match c.request(Op::StorageInit { disk, force: false }).map_err(|e| failed(e.to_string()))? {
        Reply::Done => Ok(()),
        Reply::Error(f) => Err(failed(format!("{name}: storage init refused: {f}"))),
        other => Err(failed(format!("{name}: storage init: {other:?}"))),
    }
}

fn key(c: &mut Client, name: &str) -> Result<String, Failure> {
    let slot = config_schema::Name::new("wg0").map_err(|e| failed(format!("{e:?}")))?;
    match c.request(Op::KeyGenerate(slot)).map_err(|e| failed(e.to_string()))? {
        Reply::Keys(k) => k
            .iter()
            .find(|k| k.slot.as_str() == "wg0")
            .and_then(|k| k.public_key)
            .map(|k| crate::box_cmd::key_b64(&k))
            .ok_or_else(|| failed(format!("{name}: no key in slot wg0"))),
        other => Err(failed(format!("{name}: key generate: {other:?}"))),
    }
}

fn doctor_box(c: &mut Client, name: &str) -> Result<(Vec<doctor::Check>, String, serde_json::Value), Failure> {
    let (st, cfg) = doctor::fetch(c)?;
    let checks = doctor::hybrid(&st, cfg.as_deref());
    let text = doctor::text(&st, &checks);
    let json = doctor::json_doc(name, &st, &checks);
    Ok((checks, text, json))
}

pub fn run(args: &LabArgs) -> Result<u8, Failure> {
    if args.json {
        crate::out::text_to_stderr();
    }
    if let Some(s) = args.variant.scenario().filter(|s| *s != args.scenario) {
        fn name(v: impl ValueEnum) -> String {
            v.to_possible_value().map(|p| p.get_name().to_string()).unwrap_or_default()
        }
        return Err(Failure::usage(format!(
            "--variant {} breaks the {} scenario: add --scenario {}",
            name(args.variant),
            name(s),
            name(s)
        )));
    }
    match args.scenario {
        Scenario::Hybrid => hybrid(args),
        Scenario::TwoSite => two_site::run(args),
    }
}

/// Seed 000.
fn hybrid(args: &LabArgs) -> Result<u8, Failure> {
    let clock = Clock(Instant::now());
    let image = find_image(args.image.as_deref())?;
    clock.say(format!("lab: seed 000 (same-subnet hybrid), variant {:?}, image {}", args.variant, image.display()));

    let (onprem, on_sock) = boot(&image, "onprem", 1, 2, &clock)?;
    let (cloud, cl_sock) = boot(&image, "cloud", 2, 2, &clock)?;

    // The underlay: onprem behind its site router, cloud behind 1:1 NAT.
    let ip = |s: &str| s.parse::<routerd_lab::Cidr>().map_err(|e| failed(format!("{s}: {e:?}")));
    let underlay = Underlay::start(UnderlayConfig::new(vec![
        Attachment::new("onprem", facing(&on_sock, 1)?, ip("192.168.1.35/24")?, Ipv4Addr::new(192, 168, 1, 1)),
        Attachment::new("cloud", facing(&cl_sock, 1)?, ip("10.0.0.4/24")?, Ipv4Addr::new(10, 0, 0, 1)).with_public(CLOUD_PUBLIC),
    ]))
    .map_err(|e| failed(format!("underlay: {e}")))?;
    if args.latency > 0 {
        underlay.set_latency(Duration::from_millis(args.latency));
    }
    if args.loss > 0.0 {
        underlay.set_loss(args.loss);
    }
    let onprem_host =
        SimHost::start(HostConfig::new("onprem-host", facing(&on_sock, 0)?, [0x02, 0, 0, 0, 0x10, 0x10], vec![ip("10.20.0.10/24")?]))
            .map_err(|e| failed(format!("onprem-host: {e}")))?;
    // In the cloud the provider fabric delivers 10.20.0.10 to the box's
    // NIC (a secondary IP): the host's neighbour entry says so.
    let cloud_host = SimHost::start(
        HostConfig::new("cloud-host", facing(&cl_sock, 0)?, [0x02, 0, 0, 0, 0x20, 0x50], vec![ip("10.20.0.50/24")?])
            .with_static_neighbor(ONPREM_HOST, cloud.lan_mac),
    )
    .map_err(|e| failed(format!("cloud-host: {e}")))?;
    clock.say("underlay and LAN hosts up: onprem-host 10.20.0.10, cloud-host 10.20.0.50, cloud NAT 10.0.0.4 ↔ 203.0.113.10");

    // Keys are made on the boxes; only public halves come back.
    let mut on_c = Session::open(&onprem)?;
    let mut cl_c = Session::open(&cloud)?;
    storage_init(on_c.client()?, "onprem")?;
    storage_init(cl_c.client()?, "cloud")?;
    clock.say("state partitions made on both boxes' disks (routerctl storage init --disk vda)");
    let on_key = key(on_c.client()?, "onprem")?;
    let cl_key = key(cl_c.client()?, "cloud")?;
    clock.say(format!("keys generated on the boxes: onprem {on_key}, cloud {cl_key}"));
    let cloud_key_for_onprem =
        if args.variant == Variant::WrongPeerKey { "ca67+D0dVOzK/Bjvjlowc7W4uQ/zJ1jT9fh1LNCS51w=".to_string() } else { cl_key.clone() };
    let clamp = if args.variant == Variant::ClampAbovePath { "1460" } else { "\"auto\"" };
    let mut refusals = Vec::new();
    refusals.extend(apply(on_c.client()?, "onprem", &onprem_config(&cloud_key_for_onprem, clamp), &clock)?);
    refusals.extend(apply(cl_c.client()?, "cloud", &cloud_config(&on_key, clamp, args.variant == Variant::LoopProneClaim), &clock)?);

    if args.variant == Variant::ConflictingHost {
        onprem_host.announce_conflict(CLOUD_HOST);
        clock.say("variant: onprem-host now also answers for 10.20.0.50 (a forgotten VM)");
    }

    // Warm up: the first packet starts the handshake.
    let warm = onprem_host.ping(CLOUD_HOST, 3, Duration::from_secs(3));
    let _ = cloud_host.ping(ONPREM_HOST, 2, Duration::from_secs(2));
    clock.say(format!("warm-up: {warm}"));

    // Doctor on both.
    let mut all_pass = refusals.is_empty();
    let mut doctor_json = Vec::new();
    for (c, name) in [(&mut on_c, "onprem"), (&mut cl_c, "cloud")] {
        let (checks, text, json) = doctor_box(c.client()?, name)?;
        println!("\n== routerctl doctor hybrid ({name}) ==\n{text}");
        if doctor::worst(&checks) >= Verdict::Warn {
            all_pass = false;
        }
        doctor_json.push(json);
    }

    // Traffic both ways.
    println!("== traffic ==");
    let p1 = onprem_host.ping(CLOUD_HOST, 5, Duration::from_secs(5));
    let p2 = cloud_host.ping(ONPREM_HOST, 5, Duration::from_secs(5));
    println!("onprem-host → 10.20.0.50: {p1}");
    println!("cloud-host  → 10.20.0.10: {p2}");
    let _ = cloud_host.listen(5001, ListenMode::Sink);
    let _ = onprem_host.listen(5002, ListenMode::Sink);
    // A direction where not even a ping got through gets a short TCP
    // attempt (the broken variants), not the full two minutes.
    let t1 = transfer(&clock, &onprem_host, "onprem-host", CLOUD_HOST, 5001, args.transfer_bytes(), args.transfer_budget(&p1));
    let t2 = transfer(&clock, &cloud_host, "cloud-host", ONPREM_HOST, 5002, args.transfer_bytes(), args.transfer_budget(&p2));
    println!("onprem-host → 10.20.0.50:5001: {t1}");
    println!("cloud-host  → 10.20.0.10:5002: {t2}");
    for r in cloud_host.syn_log().iter().chain(onprem_host.syn_log().iter()) {
        println!("  {r}");
    }
    // Roaming: the cloud VM's public address changes (a new NAT mapping);
    // the on-prem box follows it from the peer's authenticated packets.
    let mut roamed = true;
    if args.variant == Variant::Healthy {
        let new_public = Ipv4Addr::new(203, 0, 113, 20);
        underlay.set_public_address(1, Some(new_public));
        clock.say(format!("roaming: the cloud box's public address moves to {new_public}"));
        let p3 = cloud_host.ping(ONPREM_HOST, 3, Duration::from_secs(3));
        let st = on_c.status()?;
        let seen = st.peers.first().and_then(|p| p.endpoint).map(|e| e.to_string());
        println!("after roaming: {p3}; onprem box now sends to the cloud peer at {}", seen.clone().unwrap_or("-".into()));
        roamed = p3.received > 0 && seen.as_deref() == Some("203.0.113.20:51820");
    }
    let traffic_ok = p1.received > 0 && p2.received > 0 && t1.intact && t2.intact && roamed;
    let ok = all_pass && traffic_ok;
    println!(
        "\nlab: doctor {}, traffic {} ({:.1} s)",
        if all_pass { "all pass" } else { "found problems" },
        if traffic_ok { "intact both ways" } else { "FAILED" },
        clock.0.elapsed().as_secs_f64()
    );
    if args.json {
        crate::out::document(&serde_json::json!({
            "variant": format!("{:?}", args.variant),
            "refused": refusals,
            "doctor": doctor_json,
            "traffic": { "ping_to_cloud": p1.received, "ping_to_onprem": p2.received, "tcp_to_cloud_intact": t1.intact, "tcp_to_onprem_intact": t2.intact },
            "ok": ok,
        }));
    }
    on_c.close();
    cl_c.close();

    if args.keep {
        keep(&[&onprem, &cloud]);
    }
    onprem_host.stop();
    cloud_host.stop();
    underlay.stop();
    drop(onprem);
    drop(cloud);
    Ok(if ok { 0 } else { EXIT_FAILED })
}
