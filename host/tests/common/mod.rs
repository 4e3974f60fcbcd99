//! What the namespace tests of routerd-host share: prerequisites that skip
//! (or fail under `CI`), commands, bounded waits, the [`Lab`] guard that
//! removes everything a test created, threads inside a namespace, ping, and
//! a TCP transfer whose every byte is checked; for the control-socket tests
//! also routerd-host and `wireguard-go` started inside a namespace, the real
//! `routerctl` binary run with a time bound (and its `doctor hybrid --json`
//! read back), and ARP asked on a LAN link with a raw packet socket.
//!
//! Each test file includes this with `mod common;` and uses a part of it.
#![allow(dead_code)]

pub mod evpn;
pub mod frr;

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A missing prerequisite: "skipped: …" and pass, unless `CI` is set.
pub fn skip_or_fail(test: &str, reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{test} cannot run under CI: {reason}");
    }
    println!("skipped: {reason}");
}

pub fn have(bin: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {bin}")]).stdout(Stdio::null()).status().map(|s| s.success()).unwrap_or(false)
}

/// Why the test cannot run here: not root, one of `bins` missing (`install`
/// says how to get them), or no /dev/net/tun.
pub fn prerequisites(bins: &[&str], install: &str) -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (needs network namespaces and TAP devices)".into());
    }
    for b in bins {
        if !have(b) {
            return Some(format!("`{b}` not installed ({install})"));
        }
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun missing".into());
    }
    None
}

pub fn run(cmd: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Everything the lab created; dropping it removes all of it.
pub struct Lab {
    pub namespaces: Vec<String>,
    pub children: Vec<Child>,
    pub dir: PathBuf,
}

impl Lab {
    /// An empty lab with a fresh scratch directory `dir`.
    pub fn new(dir: PathBuf) -> Lab {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Lab { namespaces: Vec::new(), children: Vec::new(), dir }
    }

    /// Creates network namespace `ns` (removed on drop) with loopback up.
    pub fn netns(&mut self, ns: &str) {
        run(&["ip", "netns", "add", ns]).unwrap();
        self.namespaces.push(ns.to_string());
        run(&["ip", "-n", ns, "link", "set", "lo", "up"]).unwrap();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        }
        let t0 = Instant::now();
        for c in &mut self.children {
            while t0.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Run `f` on a thread that has entered network namespace `ns`.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).expect("open netns");
        // SAFETY: setns on a valid namespace fd; it only affects this thread.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

/// Pings `target` from namespace `ns`; prints ping's output, returns the replies.
pub fn ping(ns: &str, target: &str, count: u32, size: u32) -> u32 {
    let (c, s) = (count.to_string(), size.to_string());
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-n", "-c", &c, "-i", "0.3", "-W", "2", "-s", &s, target])
        .output()
        .expect("run ping");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{}", text.trim_end());
    text.lines()
        .find_map(|l| {
            let i = l.find(" received")?;
            l[..i].rsplit(' ').next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// The byte at offset `i` of the transfer: not periodic in any small power of two.
pub fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

/// The maximum segment size the kernel settled on for a connected socket:
/// the peer's SYN (or SYN-ACK) MSS, less the TCP options every segment carries.
pub fn tcp_maxseg(s: &TcpStream) -> u32 {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `v`, which lives across the call.
    let r = unsafe { libc::getsockopt(s.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_MAXSEG, (&mut v as *mut libc::c_int).cast(), &mut len) };
    assert_eq!(r, 0, "getsockopt(TCP_MAXSEG): {}", std::io::Error::last_os_error());
    v as u32
}

/// The receiving end of [`send_pattern`].
pub struct Received {
    pub bytes: u64,
    /// Bytes that differ from [`pattern`].
    pub wrong: u64,
    /// [`tcp_maxseg`] of the accepted socket: what the sender's SYN announced.
    pub mss: u32,
    /// From the accepted connection to the sender's close.
    pub took: Duration,
}

/// The sending end of [`send_pattern`].
pub struct Sent {
    pub bytes: u64,
    pub took: Duration,
    /// [`tcp_maxseg`] of the connecting socket: what the SYN-ACK announced.
    pub mss: u32,
}

/// In namespace `ns`: accepts one connection on `addr` (within 20 s) and
/// reads it to the end (at most 120 s), checking every byte against [`pattern`].
pub fn receive_pattern(ns: &str, addr: SocketAddr) -> std::thread::JoinHandle<Received> {
    in_netns(ns, move || {
        let l = TcpListener::bind(addr).expect("bind");
        l.set_nonblocking(true).unwrap();
        let t0 = Instant::now();
        let mut s = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(_) if t0.elapsed() < Duration::from_secs(20) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("no connection: {e}"),
            }
        };
        let accepted = Instant::now();
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mss = tcp_maxseg(&s);
        let (mut got, mut bad) = (0u64, 0u64);
        let mut buf = vec![0u8; 64 * 1024];
        while t0.elapsed() < Duration::from_secs(120) {
            let n = match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => panic!("read after {got} bytes: {e}"),
            };
            for &byte in &buf[..n] {
                if byte != pattern(got) {
                    bad += 1;
                }
                got += 1;
            }
        }
        Received { bytes: got, wrong: bad, mss, took: accepted.elapsed() }
    })
}

/// In namespace `ns`: connects to `to` (within 10 s) and sends `total`
/// bytes of [`pattern`] in 64 KiB writes, then closes its sending side.
pub fn send_pattern(ns: &str, to: SocketAddr, total: u64) -> std::thread::JoinHandle<Sent> {
    in_netns(ns, move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(10)).expect("connect");
        s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        let mss = tcp_maxseg(&s);
        let t0 = Instant::now();
        let mut sent = 0u64;
        let mut chunk = vec![0u8; 64 * 1024];
        while sent < total {
            for (i, b) in chunk.iter_mut().enumerate() {
                *b = pattern(sent + i as u64);
            }
            s.write_all(&chunk).expect("write");
            sent += chunk.len() as u64;
        }
        s.shutdown(std::net::Shutdown::Write).unwrap();
        Sent { bytes: sent, took: t0.elapsed(), mss }
    })
}

// ------------------------------------------------------------ processes

/// Runs `cmd` to its end, at most `limit` (then it is killed and the test
/// fails): exit status, stdout, stderr.
pub fn output_within(cmd: &mut Command, limit: Duration) -> (ExitStatus, String, String) {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    // Readers on their own threads, so a full pipe cannot stall the child.
    fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            s
        })
    }
    let out = drain(child.stdout.take().expect("stdout"));
    let err = drain(child.stderr.take().expect("stderr"));
    let status = wait_exit(&mut child, limit);
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{cmd:?} still running after {limit:?}: killed");
    });
    (status, out.join().unwrap_or_default(), err.join().unwrap_or_default())
}

/// Waits up to `limit` for `child` to exit.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let t0 = Instant::now();
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if t0.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM to `child` (ours), then its exit status within 10 s.
pub fn stop(child: &mut Child) -> ExitStatus {
    // SAFETY: kill(2) on our own child's pid (`ip netns exec` execs the binary).
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    wait_exit(child, Duration::from_secs(10)).expect("the process stops within 10 s of SIGTERM")
}

/// `sysctl -w key=value` inside namespace `ns`, written to /proc/sys
/// directly (procps is not always installed).
pub fn sysctl(ns: &str, key: &str, value: &str) {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    run(&["ip", "netns", "exec", ns, "sh", "-c", &format!("echo {value} > {path}")]).unwrap();
}

/// A veth pair: `a` in `ns_a` with `addr_a`, `b` in `ns_b` with `addr_b`
/// (CIDR notation), both up.
pub fn veth(ns_a: &str, a: &str, addr_a: &str, ns_b: &str, b: &str, addr_b: &str) {
    run(&["ip", "-n", ns_a, "link", "add", a, "type", "veth", "peer", "name", b, "netns", ns_b]).unwrap();
    for (ns, dev, addr) in [(ns_a, a, addr_a), (ns_b, b, addr_b)] {
        run(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]).unwrap();
        run(&["ip", "-n", ns, "link", "set", dev, "up"]).unwrap();
    }
}

/// The MAC of `dev` in namespace `ns`.
pub fn link_mac(ns: &str, dev: &str) -> [u8; 6] {
    let text = run(&["ip", "-n", ns, "-o", "link", "show", "dev", dev]).unwrap();
    let word = text.split("link/ether ").nth(1).and_then(|r| r.split_whitespace().next()).expect("link/ether in ip link");
    let mut mac = [0u8; 6];
    for (m, hex) in mac.iter_mut().zip(word.split(':')) {
        *m = u8::from_str_radix(hex, 16).expect("hex MAC");
    }
    mac
}

/// `aa:bb:cc:dd:ee:ff`, as routerctl prints MACs.
pub fn mac_text(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

// ------------------------------------------------------------ WireGuard keys and wireguard-go

/// A new WireGuard key pair from wg(8): the private key's file in `dir`
/// and the public key.
pub fn wg_keypair(dir: &Path, name: &str) -> (PathBuf, String) {
    let secret = run(&["wg", "genkey"]).unwrap();
    let file = dir.join(name);
    std::fs::write(&file, &secret).unwrap();
    let mut wg = Command::new("wg").arg("pubkey").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("wg pubkey");
    wg.stdin.take().expect("stdin").write_all(secret.as_bytes()).unwrap();
    let out = wg.wait_with_output().unwrap();
    (file, String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A `wireguard-go` interface to start in a namespace.
pub struct WgGo<'a> {
    pub ns: &'a str,
    /// Unique on the machine: wg(8) finds the daemon through
    /// /var/run/wireguard/<name>.sock, which namespaces do not separate.
    pub ifname: &'a str,
    pub key_file: &'a Path,
    pub listen_port: u16,
    /// The one peer: routerd-host.
    pub peer_public: &'a str,
    pub allowed_ips: &'a str,
    pub endpoint: Option<&'a str>,
    /// Held on the interface (`a.b.c.d/32`).
    pub address: &'a str,
    /// Routed into the interface.
    pub routes: &'a [&'a str],
}

/// Starts `w` as a child of `lab` (stopped with it), MTU 1420.
pub fn wireguard_go(lab: &mut Lab, w: &WgGo<'_>) {
    let child = Command::new("ip")
        .args(["netns", "exec", w.ns, "wireguard-go", "-f", w.ifname])
        .env("LOG_LEVEL", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wireguard-go");
    lab.children.push(child);
    wait_for("wireguard-go's interface", Duration::from_secs(10), || run(&["ip", "-n", w.ns, "link", "show", w.ifname]).is_ok());
    let port = w.listen_port.to_string();
    let key = w.key_file.to_str().expect("utf-8 path");
    let mut set = vec!["ip", "netns", "exec", w.ns, "wg", "set", w.ifname, "listen-port", &port, "private-key", key];
    set.extend(["peer", w.peer_public, "allowed-ips", w.allowed_ips]);
    if let Some(e) = w.endpoint {
        set.extend(["endpoint", e]);
    }
    run(&set).unwrap();
    run(&["ip", "-n", w.ns, "addr", "add", w.address, "dev", w.ifname]).unwrap();
    run(&["ip", "-n", w.ns, "link", "set", w.ifname, "mtu", "1420", "up"]).unwrap();
    for r in w.routes {
        run(&["ip", "-n", w.ns, "route", "add", r, "dev", w.ifname]).unwrap();
    }
}

// ------------------------------------------------------------ routerd-host

/// A routerd-host the test started: its pid, stdout and log (stderr) files.
pub struct HostRun {
    pub pid: u32,
    pub out: PathBuf,
    pub log: PathBuf,
}

impl HostRun {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `public key …` line it printed on stdout.
    pub fn printed_key(&self) -> String {
        let out = std::fs::read_to_string(&self.out).unwrap_or_default();
        out.lines().find_map(|l| l.strip_prefix("public key ")).map(|k| k.trim().to_string()).unwrap_or_default()
    }

    /// SIGUSR1: routerd-host prints its status into the log.
    pub fn dump_status(&self) {
        // SAFETY: kill(2) on our own child's pid (`ip netns exec` execs routerd-host).
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGUSR1) };
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Starts `routerd-host ARGS` in namespace `ns` as a child of `lab`
/// (stdout in `<name>.out`, log in `<name>.log` of the lab's directory) and
/// waits until it runs; fails with its log if it exits first.
pub fn start_routerd_host(lab: &mut Lab, ns: &str, name: &str, args: &[&str]) -> HostRun {
    let (out, log) = (lab.dir.join(format!("{name}.out")), lab.dir.join(format!("{name}.log")));
    let child = Command::new("ip")
        .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_routerd-host")])
        .args(args)
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .expect("start routerd-host");
    let run = HostRun { pid: child.id(), out, log };
    lab.children.push(child);
    let i = lab.children.len() - 1;
    wait_for(&format!("routerd-host ({name}) to run"), Duration::from_secs(20), || {
        if let Ok(Some(status)) = lab.children[i].try_wait() {
            panic!("routerd-host ({name}) exited ({status}):\n{}", run.log());
        }
        run.log().contains(" running; ")
    });
    run
}

// ------------------------------------------------------------ routerctl

/// The `routerctl` binary: `ROUTERCTL` if set, else built once per test
/// process with `cargo build -p routerctl` (tests of this package only get
/// their own binary from cargo).
pub fn routerctl() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("ROUTERCTL") {
            return PathBuf::from(p);
        }
        // This crate's own path (a dependency's could be stale in a shared target dir).
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(&cargo)
            .current_dir(&root)
            .args(["build", "--package", "routerctl"])
            .status()
            .unwrap_or_else(|e| panic!("cannot run {cargo:?} in {} to build routerctl: {e}", root.display()));
        assert!(status.success(), "building routerctl failed ({status})");
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
        target.join("debug").join("routerctl")
    })
    .clone()
}

/// What one `routerctl` run did.
pub struct Ctl {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ctl {
    /// Its stdout as JSON (fails the test with the output otherwise).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("routerctl printed no JSON ({e}):\n{}{}", self.stdout, self.stderr))
    }
}

/// `routerctl ARGS --port PORT`, at most 30 s; the command and its output
/// are printed (the test's log shows the conversation).
pub fn ctl(port: &str, args: &[&str]) -> Ctl {
    let (status, stdout, stderr) = output_within(Command::new(routerctl()).args(args).args(["--port", port]), Duration::from_secs(30));
    println!("$ routerctl {} --port {port}\n{stdout}{stderr}-> {status}", args.join(" "));
    Ctl { code: status.code(), stdout, stderr }
}

/// `routerctl doctor hybrid --json` against `port`: the document.
pub fn doctor(port: &str) -> Value {
    let out = ctl(port, &["doctor", "hybrid", "--json"]);
    assert!(matches!(out.code, Some(0 | 1)), "doctor hybrid exits 0 or 1: {:?}\n{}", out.code, out.stderr);
    out.json()
}

/// The result (`pass`, `warn`, …) of check `id` for `subject` in a doctor
/// document, or `missing`.
pub fn verdict(doc: &Value, id: &str, subject: &str) -> String {
    checks(doc)
        .iter()
        .find(|c| c["id"] == id && c["subject"] == subject)
        .and_then(|c| c["result"].as_str())
        .unwrap_or("missing")
        .to_string()
}

/// The checks of a doctor document.
pub fn checks(doc: &Value) -> Vec<Value> {
    doc["checks"].as_array().cloned().unwrap_or_default()
}

/// The checks whose id starts with one of `prefixes` and did not pass, as
/// `id subject: result (reason)` lines.
pub fn not_passed(doc: &Value, prefixes: &[&str]) -> Vec<String> {
    checks(doc)
        .iter()
        .filter(|c| c["id"].as_str().is_some_and(|id| prefixes.iter().any(|p| id.starts_with(p))))
        .filter(|c| c["result"] != "pass")
        .map(|c| format!("{} {}: {} ({})", c["id"], c["subject"], c["result"], c["reason"]))
        .collect()
}

// ------------------------------------------------------------ ARP on a LAN link

/// Asks who has `target` on `dev` (namespace `ns`) from `sender` with a raw
/// packet socket, again every 300 ms; the MAC of the first answer within
/// `wait`, or `None`. The kernel's neighbour cache plays no part.
pub fn arp_ask(ns: &str, dev: &str, sender: Ipv4Addr, target: Ipv4Addr, wait: Duration) -> Option<[u8; 6]> {
    let (mac, dev) = (link_mac(ns, dev), dev.to_string());
    in_netns(ns, move || {
        let fd = packet_socket(&dev, libc::ETH_P_ARP as u16);
        let mut request = Vec::with_capacity(42);
        request.extend_from_slice(&[0xff; 6]);
        request.extend_from_slice(&mac);
        request.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
        request.extend_from_slice(&mac);
        request.extend_from_slice(&sender.octets());
        request.extend_from_slice(&[0; 6]);
        request.extend_from_slice(&target.octets());
        let t0 = Instant::now();
        let mut last_ask: Option<Instant> = None;
        let mut buf = [0u8; 1600];
        while t0.elapsed() < wait {
            if last_ask.is_none_or(|t| t.elapsed() >= Duration::from_millis(300)) {
                // SAFETY: `request` lives across the call; the socket is bound to the link.
                let n = unsafe { libc::send(fd.as_raw_fd(), request.as_ptr().cast(), request.len(), 0) };
                assert_eq!(n, request.len() as isize, "send: {}", std::io::Error::last_os_error());
                last_ask = Some(Instant::now());
            }
            // SAFETY: `buf` has `buf.len()` writable bytes.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            let Some(f) = usize::try_from(n).ok().and_then(|n| buf.get(..n)) else { continue };
            // An ARP reply (opcode 2) from `target` to `sender`.
            if f.len() >= 42
                && f[12..14] == [0x08, 0x06]
                && f[20..22] == [0, 2]
                && f[28..32] == target.octets()
                && f[38..42] == sender.octets()
            {
                let mut who = [0u8; 6];
                who.copy_from_slice(&f[22..28]);
                return Some(who);
            }
        }
        None
    })
    .join()
    .expect("ARP thread")
}

// ------------------------------------------------------------ ARP frames on a LAN link: announce, collect, capture

/// One ARP frame as seen on a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpFrame {
    /// When the capture (or the asking helper) received it.
    pub at: Instant,
    pub eth_src: [u8; 6],
    pub eth_dst: [u8; 6],
    /// 1 request, 2 reply.
    pub op: u16,
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_mac: [u8; 6],
    pub target_ip: Ipv4Addr,
}

impl ArpFrame {
    /// An Ethernet/IPv4 ARP frame, or `None`.
    pub fn parse(f: &[u8], at: Instant) -> Option<ArpFrame> {
        if f.len() < 42 || f[12..14] != [0x08, 0x06] || f[14..20] != [0, 1, 0x08, 0x00, 6, 4] {
            return None;
        }
        let mac = |i: usize| <[u8; 6]>::try_from(&f[i..i + 6]).unwrap();
        let ip = |i: usize| Ipv4Addr::new(f[i], f[i + 1], f[i + 2], f[i + 3]);
        Some(ArpFrame {
            at,
            eth_dst: mac(0),
            eth_src: mac(6),
            op: u16::from_be_bytes([f[20], f[21]]),
            sender_mac: mac(22),
            sender_ip: ip(28),
            target_mac: mac(32),
            target_ip: ip(38),
        })
    }

    /// An ARP probe (RFC 5227: request, sender IP 0.0.0.0).
    pub fn is_probe(&self) -> bool {
        self.op == 1 && self.sender_ip.is_unspecified()
    }

    /// A gratuitous ARP / announcement (sender IP = target IP).
    pub fn is_gratuitous(&self) -> bool {
        self.sender_ip == self.target_ip && !self.sender_ip.is_unspecified()
    }

    /// `op sender-MAC sender-IP → target-IP` for logs.
    pub fn describe(&self, t0: Instant) -> String {
        let kind = if self.is_probe() {
            "probe"
        } else if self.is_gratuitous() {
            "gratuitous"
        } else if self.op == 1 {
            "request"
        } else if self.op == 2 {
            "reply"
        } else {
            "op?"
        };
        format!(
            "{:>8.3} s  {kind:<10} eth {} → {}  {} {} asks/tells {} ({})",
            self.at.saturating_duration_since(t0).as_secs_f64(),
            mac_text(self.eth_src),
            mac_text(self.eth_dst),
            mac_text(self.sender_mac),
            self.sender_ip,
            self.target_ip,
            mac_text(self.target_mac),
        )
    }
}

/// An Ethernet/IPv4 ARP frame.
#[allow(clippy::too_many_arguments)]
pub fn arp_frame(eth_src: [u8; 6], eth_dst: [u8; 6], op: u16, sha: [u8; 6], spa: Ipv4Addr, tha: [u8; 6], tpa: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&eth_dst);
    f.extend_from_slice(&eth_src);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa.octets());
    f
}

/// A packet socket for ARP bound to `dev` of the calling thread's
/// namespace, receiving with a 50 ms timeout.
fn arp_packet_socket(dev: &str) -> OwnedFd {
    packet_socket(dev, libc::ETH_P_ARP as u16)
}

/// A packet socket for EtherType `ethertype` (`ETH_P_ALL`: every frame in
/// both directions, also on a bridge port, whose frames protocol-specific
/// sockets never see) bound to `dev` of the calling thread's namespace,
/// receiving with a 50 ms timeout.
fn packet_socket(dev: &str, ethertype: u16) -> OwnedFd {
    let name = CString::new(dev).unwrap();
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert_ne!(index, 0, "no such interface {dev}");
    let proto = ethertype.to_be();
    // SAFETY: plain socket(2); the fd is owned below.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    assert!(raw >= 0, "packet socket: {}", std::io::Error::last_os_error());
    // SAFETY: `raw` is a new fd nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = index as i32;
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `sll` is a sockaddr_ll of `len` bytes that lives across the call.
    let r = unsafe { libc::bind(fd.as_raw_fd(), (&sll as *const libc::sockaddr_ll).cast(), len) };
    assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
    let tv = libc::timeval { tv_sec: 0, tv_usec: 50_000 };
    // SAFETY: SO_RCVTIMEO takes a timeval that lives across the call.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    fd
}

fn send_frame(fd: &OwnedFd, frame: &[u8]) {
    // SAFETY: `frame` lives across the call; the socket is bound to the link.
    let n = unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
    assert_eq!(n, frame.len() as isize, "send: {}", std::io::Error::last_os_error());
}

/// The next ARP frame on `fd` within its receive timeout, or `None`.
fn recv_arp(fd: &OwnedFd, buf: &mut [u8]) -> Option<ArpFrame> {
    // SAFETY: `buf` has `buf.len()` writable bytes.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    let f = usize::try_from(n).ok().and_then(|n| buf.get(..n))?;
    ArpFrame::parse(f, Instant::now())
}

/// Announces `addr` on `dev` (namespace `ns`) the way a host taking an
/// address does: `count` gratuitous ARP requests (sender IP = target IP =
/// `addr`, from the link's MAC, to broadcast), 100 ms apart.
pub fn announce(ns: &str, dev: &str, addr: Ipv4Addr, count: u32) {
    let (mac, dev) = (link_mac(ns, dev), dev.to_string());
    in_netns(ns, move || {
        let fd = arp_packet_socket(&dev);
        let garp = arp_frame(mac, [0xff; 6], 1, mac, addr, [0; 6], addr);
        for i in 0..count {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
            send_frame(&fd, &garp);
        }
    })
    .join()
    .expect("announce thread");
}

/// Asks who has `target` on `dev` (namespace `ns`) from `sender` with a raw
/// packet socket `asks` times, `every` apart, and collects every answer
/// (ARP reply from `target` to `sender`) until `window` has passed since
/// the first ask: one sender MAC per reply, in arrival order. Unlike
/// [`arp_ask`] it sees all repliers, not just the first.
pub fn arp_replies(ns: &str, dev: &str, sender: Ipv4Addr, target: Ipv4Addr, asks: u32, every: Duration, window: Duration) -> Vec<[u8; 6]> {
    let (mac, dev) = (link_mac(ns, dev), dev.to_string());
    in_netns(ns, move || {
        let fd = arp_packet_socket(&dev);
        let request = arp_frame(mac, [0xff; 6], 1, mac, sender, [0; 6], target);
        let t0 = Instant::now();
        let (mut sent, mut got) = (0u32, Vec::new());
        let mut buf = [0u8; 1600];
        while t0.elapsed() < window || sent < asks {
            if sent < asks && t0.elapsed() >= every * sent {
                send_frame(&fd, &request);
                sent += 1;
            }
            if let Some(a) = recv_arp(&fd, &mut buf) {
                if a.op == 2 && a.sender_ip == target && a.target_ip == sender && a.eth_dst == mac {
                    got.push(a.sender_mac);
                }
            }
        }
        got
    })
    .join()
    .expect("ARP thread")
}

/// Every ARP frame seen on a link (both directions; the link may be a
/// bridge port) from [`ArpCapture::start`]
/// until it is dropped, with the time each arrived.
pub struct ArpCapture {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    frames: std::sync::Arc<std::sync::Mutex<Vec<ArpFrame>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ArpCapture {
    /// Starts capturing on `dev` in namespace `ns`; returns once the socket is bound.
    pub fn start(ns: &str, dev: &str) -> ArpCapture {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let stop = Arc::new(AtomicBool::new(false));
        let frames = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (s, f, dev) = (Arc::clone(&stop), Arc::clone(&frames), dev.to_string());
        let thread = in_netns(ns, move || {
            let fd = packet_socket(&dev, libc::ETH_P_ALL as u16);
            let _ = ready_tx.send(());
            let mut buf = [0u8; 1600];
            while !s.load(Ordering::Relaxed) {
                if let Some(a) = recv_arp(&fd, &mut buf) {
                    f.lock().unwrap().push(a);
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).expect("the capture socket is bound");
        ArpCapture { stop, frames, thread: Some(thread) }
    }

    /// The frames captured so far.
    pub fn frames(&self) -> Vec<ArpFrame> {
        self.frames.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// The frames captured at or after `t`.
    pub fn since(&self, t: Instant) -> Vec<ArpFrame> {
        self.frames().into_iter().filter(|a| a.at >= t).collect()
    }
}

impl Drop for ArpCapture {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
