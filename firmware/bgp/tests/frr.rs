//! Interop with FRR as Proxmox VE configures it for an SDN EVPN zone.
//!
//! Three network namespaces, unique per run: "box" (10.99.0.1, our
//! `Session` over a `std::net::TcpStream`, entered with setns(2) from the
//! test's own thread), "pve" (10.99.0.2: FRR's zebra, bfdd and bgpd with a
//! private config and runtime directory; a bridge `vmbr100` with
//! `vxlan100` — id 100, local 10.99.0.2, dstport 4789, nolearning, learning
//! off on the port — as a PVE VNet is), and "vm" (a veth behind the bridge
//! with the VM's MAC, a static FDB entry so FRR advertises a type 2).
//! FRR's configuration is exactly what Proxmox generates, plus `timers bgp
//! 3 9` so the test is fast.
//!
//! Checked: Established; FRR's type 3 and type 2 in our RIB (flood list of
//! VNI 100 = [10.99.0.2], the VM MAC → 10.99.0.2); our type 3 and type 2 in
//! FRR's table (`show bgp l2vpn evpn route json`) *and* imported into
//! its VNI (the kernel FDB of vxlan100 points our MAC and the flood entry
//! at 10.99.0.1); the session stays up for four keepalive intervals while
//! FRR's `neighbor VTEP bfd` never sees a BFD peer; bgpd stopped → our
//! session goes down within the hold time and the routes are withdrawn;
//! bgpd restarted → the session and the routes come back.
//!
//! The daemons run as the package's `frr` user (`-u frr -g frr`, root
//! starts them): with `-u root -g root` FRR 8.4 refuses to start because
//! root is not in the `frrvty` group. Each has its own pid file, zserv
//! socket (`-z`), vty socket directory (`--vty_socket`) and log in the run's
//! directory, and no vty TCP port (`-P 0`); `vtysh --vty_socket DIR -d
//! DAEMON` talks to them.
//!
//! Needs root and FRR (`/usr/lib/frr/bgpd`, Debian package `frr`); skipped
//! with a message otherwise. Namespaces, processes and files are removed by
//! a Drop guard, also on failure.

use routerd_bgp::{Config, DownReason, Event, Instant, LocalRoutes, Mac, PeerId, Rib, Session, State};
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant as Clock};

const ASN: u32 = 65000;
const BOX: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const PVE: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
const VNI: u32 = 100;
const VM_MAC: Mac = Mac([0x02, 0, 0, 0, 0xaa, 0x01]);
const OUR_MAC: Mac = Mac([0x02, 0, 0, 0, 0x01, 0x01]);
const FRR: &str = "/usr/lib/frr";

/// The configuration Proxmox VE writes for an EVPN zone (ASN 65000, one
/// peer), plus `timers bgp 3 9`.
fn frr_conf() -> String {
    format!(
        "frr version 8.4.4
frr defaults datacenter
hostname pve
!
router bgp {ASN}
 bgp router-id {PVE}
 no bgp default ipv4-unicast
 coalesce-time 1000
 timers bgp 3 9
 neighbor VTEP peer-group
 neighbor VTEP remote-as {ASN}
 neighbor VTEP bfd
 neighbor {BOX} peer-group VTEP
 !
 address-family l2vpn evpn
  neighbor VTEP route-map MAP_VTEP_IN in
  neighbor VTEP route-map MAP_VTEP_OUT out
  neighbor VTEP activate
  advertise-all-vni
 exit-address-family
exit
!
route-map MAP_VTEP_IN permit 1
exit
!
route-map MAP_VTEP_OUT permit 1
exit
!
line vty
!
"
    )
}

fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Namespaces, FRR processes and the runtime directory of one test run.
struct Lab {
    box_ns: String,
    pve_ns: String,
    vm_ns: String,
    dir: PathBuf,
    daemons: Vec<(&'static str, Child)>,
}

impl Lab {
    fn new() -> Result<Lab, String> {
        let id = std::process::id();
        let lab = Lab {
            box_ns: format!("rbgpbox{id}"),
            pve_ns: format!("rbgppve{id}"),
            vm_ns: format!("rbgpvm{id}"),
            dir: std::env::temp_dir().join(format!("routerd-bgp-frr-{id}")),
            daemons: Vec::new(),
        };
        fs::create_dir_all(&lab.dir).map_err(|e| format!("{}: {e}", lab.dir.display()))?;
        // The daemons drop to the `frr` user and write their sockets here.
        run(&["chmod", "0777", lab.dir.to_str().unwrap_or("/nonexistent")])?;
        fs::write(lab.dir.join("frr.conf"), frr_conf()).map_err(|e| e.to_string())?;
        let (b, p, v) = (&lab.box_ns, &lab.pve_ns, &lab.vm_ns);
        let (vb, vp, vv, vt) = (format!("vb{id}"), format!("vp{id}"), format!("vv{id}"), format!("vt{id}"));
        for ns in [b, p, v] {
            run(&["ip", "netns", "add", ns])?;
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        run(&["ip", "link", "add", &vb, "netns", b, "type", "veth", "peer", "name", &vp, "netns", p])?;
        run(&["ip", "-n", b, "addr", "add", "10.99.0.1/24", "dev", &vb])?;
        run(&["ip", "-n", b, "link", "set", &vb, "up"])?;
        run(&["ip", "-n", p, "addr", "add", "10.99.0.2/24", "dev", &vp])?;
        run(&["ip", "-n", p, "link", "set", &vp, "up"])?;
        // The VNet: a bridge with the VXLAN port as Proxmox makes it.
        run(&["ip", "-n", p, "link", "add", "vmbr100", "type", "bridge"])?;
        run(&["ip", "-n", p, "link", "set", "vmbr100", "up"])?;
        run(&[
            "ip",
            "-n",
            p,
            "link",
            "add",
            "vxlan100",
            "type",
            "vxlan",
            "id",
            "100",
            "local",
            "10.99.0.2",
            "dstport",
            "4789",
            "nolearning",
        ])?;
        run(&["ip", "-n", p, "link", "set", "vxlan100", "master", "vmbr100"])?;
        run(&["ip", "-n", p, "link", "set", "vxlan100", "up"])?;
        run(&["ip", "netns", "exec", p, "bridge", "link", "set", "dev", "vxlan100", "learning", "off"])?;
        // The VM behind the bridge.
        run(&["ip", "link", "add", &vv, "netns", v, "type", "veth", "peer", "name", &vt, "netns", p])?;
        run(&["ip", "-n", v, "link", "set", &vv, "address", &VM_MAC.to_string()])?;
        run(&["ip", "-n", v, "link", "set", &vv, "up"])?;
        run(&["ip", "-n", p, "link", "set", &vt, "master", "vmbr100"])?;
        run(&["ip", "-n", p, "link", "set", &vt, "up"])?;
        run(&["ip", "netns", "exec", p, "bridge", "fdb", "replace", &VM_MAC.to_string(), "dev", &vt, "master", "static"])?;
        Ok(lab)
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// Start one FRR daemon in the pve namespace (foreground, as `frr`).
    fn start(&mut self, daemon: &'static str) -> Result<(), String> {
        let mut args = vec![
            "netns".to_string(),
            "exec".into(),
            self.pve_ns.clone(),
            format!("{FRR}/{daemon}"),
            "-u".into(),
            "frr".into(),
            "-g".into(),
            "frr".into(),
            "-f".into(),
            self.path("frr.conf"),
            "-i".into(),
            self.path(&format!("{daemon}.pid")),
            "-z".into(),
            self.path("zserv.api"),
            "--vty_socket".into(),
            self.path(""),
            "-P".into(),
            "0".into(),
            "--log".into(),
            format!("file:{}", self.path(&format!("{daemon}.log"))),
        ];
        if daemon == "bfdd" {
            args.extend(["--bfdctl".to_string(), self.path("bfdd.sock")]);
        }
        let out = fs::File::create(self.path(&format!("{daemon}.out"))).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let _ = fs::remove_file(self.path(&format!("{daemon}.vty")));
        let child =
            Command::new("ip").args(&args).stdin(Stdio::null()).stdout(out).stderr(err).spawn().map_err(|e| format!("{daemon}: {e}"))?;
        self.daemons.push((daemon, child));
        // Ready when its vty socket answers.
        let until = Clock::now() + Duration::from_secs(15);
        while Clock::now() < until {
            if Path::new(&self.path(&format!("{daemon}.vty"))).exists() && self.vtysh(daemon, "show version").is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("{daemon} did not come up: {}", self.logs()))
    }

    /// Stop one daemon (SIGTERM, then SIGKILL after 5 s).
    fn stop(&mut self, daemon: &str) {
        let mut keep = Vec::new();
        for (name, mut child) in self.daemons.drain(..) {
            if name == daemon {
                terminate(&mut child);
            } else {
                keep.push((name, child));
            }
        }
        self.daemons = keep;
    }

    /// Send `sig` to a running daemon.
    fn signal(&self, daemon: &str, sig: libc::c_int) {
        for (name, child) in &self.daemons {
            if *name == daemon {
                // SAFETY: signalling our own child by its pid.
                unsafe { libc::kill(child.id() as libc::pid_t, sig) };
            }
        }
    }

    fn vtysh(&self, daemon: &str, cmd: &str) -> Result<String, String> {
        run(&["vtysh", "--vty_socket", &self.path(""), "-d", daemon, "-c", cmd])
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for name in ["zebra.out", "bgpd.out", "bfdd.out", "zebra.log", "bgpd.log", "bfdd.log"] {
            if let Ok(t) = fs::read_to_string(self.dir.join(name)) {
                let tail: Vec<&str> = t.lines().rev().take(40).collect();
                s += &format!("\n--- {name} (last lines)\n");
                for l in tail.into_iter().rev() {
                    s += l;
                    s.push('\n');
                }
            }
        }
        s
    }
}

fn terminate(child: &mut Child) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let until = Clock::now() + Duration::from_secs(5);
    while Clock::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, mut c) in self.daemons.drain(..) {
            terminate(&mut c);
        }
        for ns in [&self.box_ns, &self.pve_ns, &self.vm_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Move the calling thread into network namespace `ns`.
fn enter_netns(ns: &str) -> Result<(), String> {
    let f = fs::File::open(format!("/run/netns/{ns}")).map_err(|e| format!("/run/netns/{ns}: {e}"))?;
    // SAFETY: setns(2) on a valid namespace file descriptor for this thread only.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        return Err(format!("setns {ns}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The box side: our session over a TcpStream, driven sans-I/O.
struct Speaker {
    clock: Clock,
    session: Box<Session>,
    rib: Box<Rib>,
    local: Box<LocalRoutes>,
    stream: Option<TcpStream>,
    connect_started: Option<Clock>,
    setup_times: Vec<Duration>,
    downs: Vec<(Clock, DownReason)>,
    established_at: Option<Clock>,
}

impl Speaker {
    fn new() -> Speaker {
        let mut cfg = Config::ibgp(ASN, BOX);
        cfg.connect_retry_ms = 2_000;
        cfg.idle_hold_ms = 500;
        cfg.idle_hold_max_ms = 4_000;
        let mut local = Box::new(LocalRoutes::new(ASN, BOX, BOX));
        local.add_vni(VNI).expect("VNI");
        local.add_mac(VNI, OUR_MAC, 0).expect("MAC");
        Speaker {
            clock: Clock::now(),
            session: Box::new(Session::new(cfg)),
            rib: Box::new(Rib::new(ASN)),
            local,
            stream: None,
            connect_started: None,
            setup_times: Vec::new(),
            downs: Vec::new(),
            established_at: None,
        }
    }

    fn now(&self) -> Instant {
        Instant(self.clock.elapsed().as_millis() as u64)
    }

    fn flush(&mut self) {
        let Some(s) = self.stream.as_mut() else { return };
        let data = self.session.transmit().to_vec();
        if data.is_empty() {
            return;
        }
        match s.write_all(&data) {
            Ok(()) => self.session.consume(data.len()),
            Err(_) => {
                self.stream = None;
                let now = self.now();
                self.session.connection_closed(now);
            }
        }
    }

    /// One round: events, receive (≤ 50 ms), timers, advertise, send, events.
    fn step(&mut self) {
        self.events();
        self.io();
        self.events();
    }

    fn events(&mut self) {
        while let Some(e) = self.session.next_event() {
            match e {
                Event::Connect => {
                    self.stream = None;
                    self.connect_started = Some(Clock::now());
                    let addr = SocketAddr::from((PVE, 179));
                    match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
                            self.stream = Some(s);
                            let now = self.now();
                            self.session.connected(now);
                        }
                        Err(_) => {
                            let now = self.now();
                            self.session.connection_closed(now);
                        }
                    }
                }
                Event::Disconnect => {
                    self.flush();
                    if let Some(s) = self.stream.take() {
                        let _ = s.shutdown(Shutdown::Both);
                    }
                }
                Event::Established => {
                    if let Some(t) = self.connect_started {
                        self.setup_times.push(t.elapsed());
                    }
                    self.established_at = Some(Clock::now());
                }
                Event::Down(r) => {
                    self.rib.withdraw_peer(PeerId(0));
                    self.downs.push((Clock::now(), r));
                    self.established_at = None;
                }
                Event::EndOfRib => {}
            }
        }
    }

    fn io(&mut self) {
        let mut buf = [0u8; 65536];
        if let Some(s) = self.stream.as_mut() {
            match s.read(&mut buf) {
                Ok(0) => {
                    self.stream = None;
                    let now = self.now();
                    self.session.connection_closed(now);
                }
                Ok(n) => {
                    let now = self.now();
                    self.session.on_bytes(now, &buf[..n], &mut self.rib.sink(PeerId(0)));
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                Err(_) => {
                    self.stream = None;
                    let now = self.now();
                    self.session.connection_closed(now);
                }
            }
        } else {
            std::thread::sleep(Duration::from_millis(50));
        }
        let now = self.now();
        self.session.poll(now);
        self.session.advertise(&self.local);
        self.flush();
    }

    /// Step until `cond` holds; false on timeout.
    fn run_until(&mut self, timeout: Duration, mut cond: impl FnMut(&Speaker) -> bool) -> bool {
        let until = Clock::now() + timeout;
        while Clock::now() < until {
            self.step();
            if cond(self) {
                return true;
            }
        }
        false
    }

    fn routes_ok(&self) -> bool {
        self.rib.flood_list(VNI).collect::<Vec<_>>() == [PVE] && self.rib.remote_mac(VNI, VM_MAC).is_some_and(|m| m.vtep == PVE)
    }
}

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (network namespaces are needed)".into());
    }
    for tool in [format!("{FRR}/bgpd"), format!("{FRR}/zebra"), format!("{FRR}/bfdd"), "/usr/bin/vtysh".into()] {
        if !Path::new(&tool).exists() {
            return Some(format!("{tool} missing (install the Debian package frr: cargo xtask deps)"));
        }
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("`ip` (iproute2) missing".into());
    }
    None
}

#[test]
fn frr_evpn_interop() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED frr_evpn_interop: {why}");
        return;
    }
    let mut lab = Lab::new().expect("lab set-up");
    let result = std::thread::scope(|s| s.spawn(|| scenario(&mut lab)).join());
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{e}\nFRR logs:{}", lab.logs()),
        Err(p) => {
            eprintln!("FRR logs:{}", lab.logs());
            std::panic::resume_unwind(p)
        }
    }
}

fn ensure(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

fn scenario(lab: &mut Lab) -> Result<(), String> {
    lab.start("zebra")?;
    // zebra must know the VNI before bgpd asks for it.
    let until = Clock::now() + Duration::from_secs(10);
    while !lab.vtysh("zebra", "show interface vxlan100").unwrap_or_default().contains("VxLAN Id 100") {
        ensure(Clock::now() < until, || "zebra never saw vxlan100".into())?;
        std::thread::sleep(Duration::from_millis(100));
    }
    lab.start("bfdd")?;
    lab.start("bgpd")?;
    enter_netns(&lab.box_ns)?;

    let mut sp = Speaker::new();
    sp.session.start(sp.now());
    ensure(sp.run_until(Duration::from_secs(30), |s| s.session.state() == State::Established), || {
        format!("no Established within 30 s (state {:?}, counters {:?})", sp.session.state(), sp.session.counters())
    })?;
    let setup = sp.setup_times.first().copied().unwrap_or_default();
    println!("session set-up (TCP connect → Established): {:.1} ms", setup.as_secs_f64() * 1e3);
    println!("negotiated hold time: {} ms", sp.session.hold_time_ms());
    ensure(sp.session.hold_time_ms() == 9_000, || format!("hold time {} ms, expected FRR's 9 s", sp.session.hold_time_ms()))?;

    // FRR's routes in our RIB.
    ensure(sp.run_until(Duration::from_secs(20), Speaker::routes_ok), || {
        format!(
            "FRR's routes did not arrive: flood list {:?}, VM MAC {:?}, counters {:?} {:?}",
            sp.rib.flood_list(VNI).collect::<Vec<_>>(),
            sp.rib.remote_mac(VNI, VM_MAC),
            sp.session.counters(),
            sp.rib.counters()
        )
    })?;
    println!(
        "our RIB: flood list VNI {VNI} = {:?}, {VM_MAC} → {:?}",
        sp.rib.flood_list(VNI).collect::<Vec<_>>(),
        sp.rib.remote_mac(VNI, VM_MAC)
    );

    // Our routes in FRR's table, and imported into its VNI (kernel FDB).
    let mut table = String::new();
    let mut fdb = String::new();
    let ok = sp.run_until(Duration::from_secs(20), |_| {
        table = lab.vtysh("bgpd", "show bgp l2vpn evpn route json").unwrap_or_default();
        fdb = run(&["ip", "netns", "exec", &lab.pve_ns, "bridge", "fdb", "show", "dev", "vxlan100"]).unwrap_or_default();
        table.contains(&format!("[2]:[0]:[48]:[{OUR_MAC}]"))
            && table.contains(&format!("[3]:[0]:[32]:[{BOX}]"))
            && fdb.contains(&format!("{OUR_MAC} dst {BOX}"))
            && fdb.contains(&format!("00:00:00:00:00:00 dst {BOX}"))
    });
    ensure(ok, || format!("FRR did not take our routes:\n{table}\nFDB of vxlan100:\n{fdb}"))?;
    println!("FRR's table has our type 2 and type 3 (RD {BOX}:1); vxlan100 FDB:\n{}", fdb.trim_end());

    // Up for four keepalive intervals with `neighbor VTEP bfd` and no BFD here.
    let downs = sp.downs.len();
    sp.run_until(Duration::from_secs(12), |_| false);
    ensure(sp.session.state() == State::Established && sp.downs.len() == downs, || format!("session dropped: {:?}", sp.downs))?;
    let summary = lab.vtysh("bgpd", "show bgp summary json")?;
    ensure(summary.contains(&format!("\"{BOX}\"")) && summary.contains("\"state\":\"Established\""), || {
        format!("FRR does not show the peer Established:\n{summary}")
    })?;
    let bfd = lab.vtysh("bfdd", "show bfd peers json").unwrap_or_default();
    let neighbor = lab.vtysh("bgpd", &format!("show bgp neighbors {BOX} json")).unwrap_or_default();
    ensure(!bfd.contains("\"status\":\"up\""), || format!("a BFD session came up?\n{bfd}"))?;
    let bfd_info = neighbor.find("peerBfdInfo").map(|i| &neighbor[i..(i + 200).min(neighbor.len())]).unwrap_or("(no BFD info)");
    println!(
        "stayed Established 12 s (4 keepalive intervals) with `neighbor VTEP bfd`; FRR BFD peers: {}; neighbor BFD: {bfd_info}",
        bfd.trim()
    );
    println!("keepalives received: {}", sp.session.counters().keepalives_in);

    // bgpd freezes (SIGSTOP): our hold timer (9 s) takes the session down
    // with NOTIFICATION 4/0, and FRR's routes are withdrawn.
    let frozen = Clock::now();
    lab.signal("bgpd", libc::SIGSTOP);
    let went_down = sp.run_until(Duration::from_secs(15), |s| s.session.state() != State::Established);
    let down_after = frozen.elapsed();
    lab.signal("bgpd", libc::SIGCONT);
    ensure(went_down, || "still Established 15 s after bgpd froze".into())?;
    let reason = sp.downs.last().map(|d| d.1);
    println!("bgpd frozen: session down after {:.0} ms ({reason:?})", down_after.as_secs_f64() * 1e3);
    ensure(reason == Some(DownReason::NotificationSent { code: 4, subcode: 0 }), || format!("down for {reason:?}, not our hold timer"))?;
    // Hold time 9 s from the last keepalive before the freeze, plus slack for a loaded machine.
    ensure(down_after <= Duration::from_secs(10), || format!("down only after {down_after:?} (hold time 9 s)"))?;
    ensure(sp.rib.flood_list(VNI).count() == 0 && sp.rib.remote_mac(VNI, VM_MAC).is_none() && sp.rib.is_empty(), || {
        "FRR's routes were not withdrawn".into()
    })?;

    // bgpd stops (SIGTERM): it says Cease; whatever session we had goes down.
    let stopped = Clock::now();
    lab.stop("bgpd");
    ensure(sp.run_until(Duration::from_secs(12), |s| s.session.state() != State::Established), || {
        "still Established 12 s after bgpd stopped".into()
    })?;
    println!("bgpd stopped: not Established after {:.0} ms (last down: {:?})", stopped.elapsed().as_secs_f64() * 1e3, sp.downs.last());
    ensure(sp.rib.is_empty(), || "routes left after bgpd stopped".into())?;

    // bgpd back: the session and the routes return.
    lab.start("bgpd")?;
    let restarted = Clock::now();
    ensure(sp.run_until(Duration::from_secs(40), |s| s.session.state() == State::Established && s.routes_ok()), || {
        format!("no comeback within 40 s: state {:?}, downs {:?}", sp.session.state(), sp.downs)
    })?;
    println!(
        "bgpd restarted: Established and routes back after {:.0} ms (set-up {:.1} ms)",
        restarted.elapsed().as_secs_f64() * 1e3,
        sp.setup_times.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    let ok = sp.run_until(Duration::from_secs(20), |_| {
        table = lab.vtysh("bgpd", "show bgp l2vpn evpn route json").unwrap_or_default();
        table.contains(&format!("[2]:[0]:[48]:[{OUR_MAC}]")) && table.contains(&format!("[3]:[0]:[32]:[{BOX}]"))
    });
    ensure(ok, || format!("FRR did not get our routes again:\n{table}"))?;
    let c = sp.session.counters();
    println!(
        "counters: in {} msgs ({} updates, {} keepalives), out {}, routes +{} -{}, treat-as-withdraw {}, other family {}",
        c.messages_in,
        c.updates_in,
        c.keepalives_in,
        c.messages_out,
        c.routes_announced,
        c.routes_withdrawn,
        c.treat_as_withdraw,
        c.other_family
    );
    ensure(c.treat_as_withdraw == 0 && c.unknown_attributes == 0, || format!("FRR's updates were not all understood: {c:?}"))?;
    sp.session.stop(sp.now());
    sp.step();
    Ok(())
}
