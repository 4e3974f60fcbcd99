//! FRR in a namespace, configured as Proxmox VE configures an SDN EVPN
//! zone: its daemons started as the package's `frr` user with their own
//! sockets directory (see firmware/bgp/tests/frr.rs), queried with `vtysh`,
//! stopped by a Drop guard. Also the box-log and ping waits the EVPN tests
//! share.

use super::{prerequisites, run};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's `frr` puts its daemons.
pub const FRR: &str = "/usr/lib/frr";

/// What Proxmox VE writes for an EVPN zone on the node `router_id` (its
/// tunnel address) with the controller's other `peers`, plus `timers bgp 3 9`.
pub fn proxmox_evpn_config(asn: u32, router_id: &str, peers: &[&str]) -> String {
    let neighbors: String = peers.iter().map(|p| format!(" neighbor {p} peer-group VTEP\n")).collect();
    format!(
        "frr version 8.4.4
frr defaults datacenter
hostname pve
!
router bgp {asn}
 bgp router-id {router_id}
 no bgp default ipv4-unicast
 coalesce-time 1000
 timers bgp 3 9
 neighbor VTEP peer-group
 neighbor VTEP remote-as {asn}
 neighbor VTEP bfd
{neighbors} !
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

/// Why an FRR test cannot run here: one of `bins` (`install` says how to
/// get them) or root or /dev/net/tun missing ([`prerequisites`]), or one of
/// FRR's daemons.
pub fn frr_prerequisites(bins: &[&str], install: &str) -> Option<String> {
    if let Some(reason) = prerequisites(bins, install) {
        return Some(reason);
    }
    ["zebra", "bgpd", "bfdd"]
        .into_iter()
        .find(|d| !Path::new(&format!("{FRR}/{d}")).exists())
        .map(|d| format!("{FRR}/{d} missing ({install})"))
}

/// FRR's daemons in a namespace; dropping it stops them.
pub struct Frr {
    ns: String,
    pub dir: PathBuf,
    daemons: Vec<(&'static str, Child)>,
}

impl Frr {
    /// FRR with `config` (its frr.conf) in `ns`, its files in `dir`.
    pub fn new(ns: &str, dir: PathBuf, config: &str) -> Frr {
        fs::create_dir_all(&dir).unwrap();
        // The daemons drop to the `frr` user and write their sockets here.
        run(&["chmod", "0777", dir.to_str().expect("utf-8 path")]).unwrap();
        fs::write(dir.join("frr.conf"), config).unwrap();
        Frr { ns: ns.to_string(), dir, daemons: Vec::new() }
    }

    /// pve's FRR in `ns` (its files in `dir`): [`proxmox_evpn_config`]
    /// with router id `router_id` and the controller's `peers`, zebra, bfdd
    /// and bgpd started; zebra knows vxlan100 before bgpd asks for the VNI.
    pub fn proxmox(ns: &str, dir: PathBuf, asn: u32, router_id: &str, peers: &[&str]) -> Frr {
        let mut frr = Frr::new(ns, dir, &proxmox_evpn_config(asn, router_id, peers));
        frr.start("zebra");
        super::wait_for("zebra to see vxlan100", Duration::from_secs(10), || {
            frr.vtysh("zebra", "show interface vxlan100").unwrap_or_default().contains("VxLAN Id 100")
        });
        frr.start("bfdd");
        frr.start("bgpd");
        frr
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// Starts `daemon` (foreground, as `frr`); returns once its vty answers.
    pub fn start(&mut self, daemon: &'static str) {
        let mut args: Vec<String> = vec!["netns".into(), "exec".into(), self.ns.clone(), format!("{FRR}/{daemon}")];
        args.extend(["-u", "frr", "-g", "frr", "-P", "0"].map(String::from));
        args.extend(["-f".into(), self.path("frr.conf"), "-i".into(), self.path(&format!("{daemon}.pid"))]);
        args.extend(["-z".into(), self.path("zserv.api"), "--vty_socket".into(), self.path("")]);
        args.extend(["--log".into(), format!("file:{}", self.path(&format!("{daemon}.log")))]);
        if daemon == "bfdd" {
            args.extend(["--bfdctl".into(), self.path("bfdd.sock")]);
        }
        let out = File::create(self.path(&format!("{daemon}.out"))).unwrap();
        let err = out.try_clone().unwrap();
        let _ = fs::remove_file(self.path(&format!("{daemon}.vty")));
        let child = Command::new("ip").args(&args).stdin(Stdio::null()).stdout(out).stderr(err).spawn().expect("start an FRR daemon");
        self.daemons.push((daemon, child));
        let t0 = Instant::now();
        while !(Path::new(&self.path(&format!("{daemon}.vty"))).exists() && self.vtysh(daemon, "show version").is_ok()) {
            assert!(t0.elapsed() < Duration::from_secs(15), "{daemon} did not come up:{}", self.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends `sig` to `daemon`.
    pub fn signal(&self, daemon: &str, sig: libc::c_int) {
        for (_, c) in self.daemons.iter().filter(|(n, _)| *n == daemon) {
            // SAFETY: kill(2) on our own child's pid (`ip netns exec` execs the daemon).
            unsafe { libc::kill(c.id() as libc::pid_t, sig) };
        }
    }

    /// Stops `daemon` (SIGTERM, SIGKILL after 5 s).
    pub fn stop(&mut self, daemon: &str) {
        let (mut gone, keep): (Vec<_>, Vec<_>) = self.daemons.drain(..).partition(|(n, _)| *n == daemon);
        self.daemons = keep;
        for (_, c) in &mut gone {
            terminate(c);
        }
    }

    pub fn vtysh(&self, daemon: &str, cmd: &str) -> Result<String, String> {
        run(&["vtysh", "--vty_socket", &self.path(""), "-d", daemon, "-c", cmd])
    }

    pub fn logs(&self) -> String {
        frr_logs(&self.dir)
    }
}

/// The last lines of every FRR daemon's output and log in `dir`.
pub fn frr_logs(dir: &Path) -> String {
    let mut s = String::new();
    for name in ["zebra.out", "bgpd.out", "bfdd.out", "zebra.log", "bgpd.log", "bfdd.log"] {
        if let Ok(t) = fs::read_to_string(dir.join(name)) {
            let lines: Vec<&str> = t.lines().collect();
            s += &format!("\n--- {name} (last lines)\n{}\n", lines[lines.len().saturating_sub(30)..].join("\n"));
        }
    }
    s
}

/// SIGTERM, then SIGKILL after 5 s.
pub fn terminate(c: &mut Child) {
    // SAFETY: kill(2) on our own child's pid (`ip netns exec` execs the daemon).
    unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
    if super::wait_exit(c, Duration::from_secs(5)).is_none() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        for (_, c) in &mut self.daemons {
            terminate(c);
        }
    }
}

/// The state of FRR's session with `neighbor` (`show bgp summary json`).
pub fn session_state(frr: &Frr, neighbor: &str) -> String {
    let text = frr.vtysh("bgpd", "show bgp summary json").unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let peer = &v["l2VpnEvpn"]["peers"][neighbor];
    peer["state"].as_str().unwrap_or("none").to_string()
}

/// FRR's type-2 route for `mac` and its next hops, from `show bgp l2vpn
/// evpn route json` (every RD, every path).
pub fn type2_next_hops(frr: &Frr, mac: &str) -> Vec<String> {
    let text = frr.vtysh("bgpd", "show bgp l2vpn evpn route json").unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let key = format!("[2]:[0]:[48]:[{mac}]");
    let mut hops = Vec::new();
    for rd in v.as_object().into_iter().flat_map(|o| o.values()) {
        let Some(paths) = rd[&key]["paths"].as_array() else { continue };
        for path in paths.iter().flat_map(|p| p.as_array().cloned().unwrap_or_default()) {
            for nh in path["nexthops"].as_array().into_iter().flatten() {
                if let Some(ip) = nh["ip"].as_str() {
                    hops.push(ip.to_string());
                }
            }
        }
    }
    hops
}

/// Lines of the box's log (`[secs.millis] LEVEL text`) containing `what`,
/// with their time since the process started.
pub fn log_lines(log: &str, what: &str) -> Vec<(Duration, String)> {
    log.lines()
        .filter(|l| l.contains(what))
        .map(|l| {
            let secs = l.strip_prefix('[').and_then(|r| r.split(']').next()).and_then(|t| t.trim().parse::<f64>().ok());
            (Duration::from_secs_f64(secs.unwrap_or(0.0)), l.to_string())
        })
        .collect()
}

/// Pings once a while until a reply or `limit`: the time to the first reply.
pub fn until_ping(ns: &str, target: &str, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        let ok = Command::new("ip")
            .args(["netns", "exec", ns, "ping", "-n", "-c", "1", "-W", "1", target])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}
