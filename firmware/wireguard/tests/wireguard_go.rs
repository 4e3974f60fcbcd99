//! Interoperability with the reference userspace implementation,
//! `wireguard-go`, configured by `wg(8)` — real ICMP from the Linux `ping`
//! through both implementations, both directions.
//!
//! The test builds, and always tears down (a Drop guard), this lab:
//!
//! ```text
//!  host                                         netns rdwg-<pid>-<n>
//!  ping ─▶ TUN rdwgt<pid><n> 10.213.X.1/24       wg0 10.213.X.2/24 (wireguard-go)
//!           │  our Device (this process,               ▲
//!           │  a bridge thread: TUN ⇄ UDP)             │
//!           └▶ UDP 172.30.X.1 ── veth pair ── 172.30.X.2:51820
//! ```
//!
//! Needs root, `/dev/net/tun`, `ip`, `ping`, `wg` and `wireguard-go`. When
//! something is missing the test fails if the environment variable `CI` is
//! set, and otherwise prints "skipped: <reason>" and passes.
//! All loops are bounded in count and time; traffic stays inside the veth
//! pair and the namespace this test created.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant as StdInstant, SystemTime, UNIX_EPOCH};

use rand_core::OsRng;
use routerd_wireguard::*;

fn skip_or_fail(reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("wireguard-go interop cannot run under CI: {reason}");
    }
    println!("skipped: {reason}");
}

fn have(bin: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {bin}")]).stdout(Stdio::null()).status().map(|s| s.success()).unwrap_or(false)
}

/// Missing prerequisites, if any.
fn prerequisites(need_root: bool) -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if need_root && unsafe { libc::geteuid() } != 0 {
        return Some("not root (needs network namespaces and a TUN device)".into());
    }
    let mut bins = vec!["wg"];
    if need_root {
        bins.extend(["wireguard-go", "ip", "ping"]);
    }
    for b in bins {
        if !have(b) {
            return Some(format!(
                "`{b}` not installed (apt-get install --no-install-recommends wireguard-tools wireguard-go iproute2 iputils-ping)"
            ));
        }
    }
    if need_root && !std::path::Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun missing".into());
    }
    None
}

fn run(cmd: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run_stdin(cmd: &[&str], input: &str) -> Result<String, String> {
    let mut child = Command::new(cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    child.stdin.take().unwrap().write_all(input.as_bytes()).map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn public_keys_match_wg_pubkey() {
    if let Some(reason) = prerequisites(false) {
        return skip_or_fail(&reason);
    }
    for _ in 0..8 {
        // Their key, our derivation.
        let secret = run(&["wg", "genkey"]).unwrap();
        let expected = run_stdin(&["wg", "pubkey"], &secret).unwrap();
        let ours = SecretKey::from_base64(&secret).unwrap();
        assert_eq!(ours.public_key().to_base64().as_str(), expected.trim());
        // Our key, their derivation.
        let k = SecretKey::generate(&mut OsRng);
        let theirs = run_stdin(&["wg", "pubkey"], k.to_base64().as_str()).unwrap();
        assert_eq!(theirs.trim(), k.public_key().to_base64().as_str());
    }
    // An unclamped key (what `wg pubkey` also accepts) derives the same way.
    let raw = "//////////////////////////////////////////8=";
    let expected = run_stdin(&["wg", "pubkey"], raw).unwrap();
    assert_eq!(SecretKey::from_base64(raw).unwrap().public_key().to_base64().as_str(), expected.trim());
}

/// Everything the lab created; dropping it removes all of it.
struct Lab {
    ns: String,
    veth_host: String,
    wg_go: Option<Child>,
    stop: Arc<AtomicBool>,
    bridge: Option<JoinHandle<Counters>>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(b) = self.bridge.take() {
            let _ = b.join();
        }
        if let Some(mut c) = self.wg_go.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Deleting the namespace removes wg0 and the namespace end of the
        // veth pair (which takes the host end with it).
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = Command::new("ip").args(["link", "del", &self.veth_host]).stderr(Stdio::null()).status();
    }
}

const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// Open a (non-persistent) TUN device named `name`, non-blocking.
fn open_tun(name: &str) -> Result<File, String> {
    // SAFETY: a NUL-terminated path literal; the result is checked.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(format!("open /dev/net/tun: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor we own; File closes it on drop.
    let file = unsafe { File::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes().take(libc::IFNAMSIZ - 1)) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = IFF_TUN | IFF_NO_PI;
    // SAFETY: TUNSETIFF takes a pointer to an ifreq that lives across the call.
    let r = unsafe { libc::ioctl(fd, TUNSETIFF as _, &mut ifr as *mut libc::ifreq) };
    if r < 0 {
        return Err(format!("TUNSETIFF: {}", std::io::Error::last_os_error()));
    }
    Ok(file)
}

fn wait_readable(fds: &[i32], timeout_ms: i32) {
    let mut p: Vec<libc::pollfd> = fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    // SAFETY: p is a valid array of pollfd of the given length.
    unsafe {
        libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms);
    }
}

/// The host side: our device bridging the TUN device and a UDP socket until
/// `stop` (or a hard 120 s limit).
fn bridge(mut dev: Device<4, 8>, tun: File, udp: UdpSocket, stop: Arc<AtomicBool>) -> Counters {
    let start = StdInstant::now();
    let now = || Instant::from_nanos(start.elapsed().as_nanos() as u64);
    dev.set_wall_clock(now(), SystemTime::now().duration_since(UNIX_EPOCH).unwrap());
    let mut tun = tun;
    let mut buf = vec![0u8; 2048];
    let mut rbuf = vec![0u8; 2048];
    let send = |udp: &UdpSocket, data: &[u8], to: SocketAddr| {
        let _ = udp.send_to(data, to);
    };
    while !stop.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(120) {
        wait_readable(&[tun.as_raw_fd(), udp.as_raw_fd()], 20);
        for _ in 0..64 {
            match tun.read(&mut buf[HEADROOM..HEADROOM + 1500]) {
                Ok(n) => {
                    if let Ok(Action::Send { to, len }) = dev.encapsulate_in_place(now(), &mut OsRng, &mut buf, n) {
                        send(&udp, &buf[..len], to);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
        for _ in 0..64 {
            match udp.recv_from(&mut rbuf) {
                Ok((n, from)) => {
                    let d = &mut rbuf[..n];
                    match dev.decapsulate_in_place(now(), &mut OsRng, from, d) {
                        Ok(Action::Send { to, len }) => send(&udp, &d[..len], to),
                        Ok(Action::Deliver { offset, len, .. }) => {
                            let _ = tun.write(&d[offset..offset + len]);
                        }
                        _ => {}
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
        for _ in 0..16 {
            match dev.poll(now(), &mut OsRng, &mut buf) {
                Action::Send { to, len } => send(&udp, &buf[..len], to),
                _ => break,
            }
        }
    }
    dev.counters().clone()
}

/// `ping` (optionally inside `ns`); returns how many of `count` came back.
fn ping(ns: Option<&str>, target: &str, count: u32, size: u32) -> u32 {
    let mut cmd = Vec::new();
    if let Some(ns) = ns {
        cmd.extend(["ip", "netns", "exec", ns]);
    }
    let (c, s) = (count.to_string(), size.to_string());
    cmd.extend(["ping", "-n", "-c", &c, "-i", "0.3", "-W", "2", "-s", &s, target]);
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().expect("run ping");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{}", text.trim_end());
    text.lines()
        .find_map(|l| {
            let l = l.trim();
            let i = l.find(" received")?;
            l[..i].rsplit(' ').next()?.parse().ok()
        })
        .unwrap_or(0)
}

#[derive(Clone, Copy, PartialEq)]
enum FirstPing {
    /// The namespace pings first: wireguard-go initiates the handshake.
    FromNamespace,
    /// The host pings first: our device initiates.
    FromHost,
}

fn interop(n: u32, first: FirstPing) {
    if let Some(reason) = prerequisites(true) {
        return skip_or_fail(&reason);
    }
    let pid = std::process::id();
    let x = (pid % 200 + 20 + n) % 250;
    let ns = format!("rdwg-{pid}-{n}");
    let veth_host = format!("rdwgh{pid}{n}");
    let veth_ns = format!("rdwgn{pid}{n}");
    let tun_name = format!("rdwgt{pid}{n}");
    // wg(8) finds wireguard-go through /var/run/wireguard/<name>.sock, which
    // namespaces do not separate: the name must be unique on the machine.
    let wg_if = format!("rdwgw{pid}{n}");
    let (host_ul, ns_ul) = (format!("172.30.{x}.1"), format!("172.30.{x}.2"));
    let (host_tun, ns_tun) = (format!("10.213.{x}.1"), format!("10.213.{x}.2"));
    let stop = Arc::new(AtomicBool::new(false));
    let mut lab = Lab { ns: ns.clone(), veth_host: veth_host.clone(), wg_go: None, stop: stop.clone(), bridge: None };

    run(&["ip", "netns", "add", &ns]).unwrap();
    run(&["ip", "link", "add", &veth_host, "type", "veth", "peer", "name", &veth_ns]).unwrap();
    run(&["ip", "link", "set", &veth_ns, "netns", &ns]).unwrap();
    run(&["ip", "addr", "add", &format!("{host_ul}/24"), "dev", &veth_host]).unwrap();
    run(&["ip", "link", "set", &veth_host, "up"]).unwrap();
    run(&["ip", "-n", &ns, "addr", "add", &format!("{ns_ul}/24"), "dev", &veth_ns]).unwrap();
    run(&["ip", "-n", &ns, "link", "set", &veth_ns, "up"]).unwrap();
    run(&["ip", "-n", &ns, "link", "set", "lo", "up"]).unwrap();

    // Keys: theirs from wg(8), ours from our generator, a shared psk.
    let their_secret = run(&["wg", "genkey"]).unwrap();
    let their_public = PublicKey::from_base64(&run_stdin(&["wg", "pubkey"], &their_secret).unwrap()).unwrap();
    let psk_text = run(&["wg", "genpsk"]).unwrap();
    let our_secret = SecretKey::generate(&mut OsRng);
    let dir = std::env::temp_dir().join(format!("rdwg-{pid}-{n}"));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("key");
    let psk_file = dir.join("psk");
    std::fs::write(&key_file, &their_secret).unwrap();
    std::fs::write(&psk_file, &psk_text).unwrap();

    // Our side: UDP socket on the host end of the veth, TUN device.
    let udp = UdpSocket::bind(format!("{host_ul}:0")).unwrap();
    udp.set_nonblocking(true).unwrap();
    let our_port = udp.local_addr().unwrap().port();
    let tun = open_tun(&tun_name).unwrap();
    run(&["ip", "addr", "add", &format!("{host_tun}/24"), "dev", &tun_name]).unwrap();
    run(&["ip", "link", "set", &tun_name, "mtu", "1420", "up"]).unwrap();

    // wireguard-go in the namespace, in the foreground as our child.
    let child = Command::new("ip")
        .args(["netns", "exec", &ns, "wireguard-go", "-f", &wg_if])
        .env("LOG_LEVEL", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wireguard-go");
    lab.wg_go = Some(child);
    let t0 = StdInstant::now();
    while run(&["ip", "-n", &ns, "link", "show", &wg_if]).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(10), "wireguard-go did not create its interface");
        std::thread::sleep(Duration::from_millis(50));
    }
    let endpoint = format!("{host_ul}:{our_port}");
    run(&[
        "ip",
        "netns",
        "exec",
        &ns,
        "wg",
        "set",
        &wg_if,
        "listen-port",
        "51820",
        "private-key",
        key_file.to_str().unwrap(),
        "peer",
        our_secret.public_key().to_base64().as_str(),
        "preshared-key",
        psk_file.to_str().unwrap(),
        "allowed-ips",
        &format!("{host_tun}/32"),
        "endpoint",
        &endpoint,
    ])
    .unwrap();
    run(&["ip", "-n", &ns, "addr", "add", &format!("{ns_tun}/24"), "dev", &wg_if]).unwrap();
    run(&["ip", "-n", &ns, "link", "set", &wg_if, "mtu", "1420", "up"]).unwrap();

    let mut dev = Device::<4, 8>::new(our_secret, Config::default());
    let mut peer = PeerConfig::new(their_public);
    peer.endpoint = Some(format!("{ns_ul}:51820").parse().unwrap());
    peer.preshared_key = Some(PresharedKey::from_base64(&psk_text).unwrap());
    let id = dev.add_peer(peer).unwrap();
    dev.add_allowed_ip(id, ns_tun.parse().unwrap(), 32).unwrap();
    lab.bridge = Some(std::thread::spawn(move || bridge(dev, tun, udp, stop)));

    // Without a queue on our side the packet that starts our handshake is
    // lost, so each direction sends 5 and needs at least 3 back.
    let (first_ns, first_target, second_ns, second_target) = match first {
        FirstPing::FromNamespace => (Some(ns.as_str()), host_tun.as_str(), None, ns_tun.as_str()),
        FirstPing::FromHost => (None, ns_tun.as_str(), Some(ns.as_str()), host_tun.as_str()),
    };
    let a = ping(first_ns, first_target, 5, 56);
    let b = ping(second_ns, second_target, 5, 56);
    // Near the tunnel MTU: 1392 + 8 ICMP + 20 IP = 1420.
    let c = ping(None, &ns_tun, 3, 1392);
    let d = ping(Some(&ns), &host_tun, 3, 1392);

    let wg_show = run(&["ip", "netns", "exec", &ns, "wg", "show", &wg_if]).unwrap_or_default();
    println!("{wg_show}");
    lab.stop.store(true, Ordering::SeqCst);
    let counters = lab.bridge.take().unwrap().join().unwrap();
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
    println!("our counters: handshakes {} drops {:?}", counters.handshakes, counters.iter().filter(|(_, v)| *v > 0).collect::<Vec<_>>());

    assert!(a >= 3, "first direction: {a}/5 replies");
    assert!(b >= 4, "second direction: {b}/5 replies");
    assert!(c >= 2 && d >= 2, "large pings: {c}/3, {d}/3");
    assert!(counters.handshakes >= 1);
    assert!(wg_show.contains("latest handshake"), "wireguard-go saw no handshake");
    // Nothing but the packet(s) before the session, and what the host sends
    // to addresses outside the tunnel (IPv6 link-local chatter on the TUN),
    // may be dropped.
    assert_eq!(counters.total_drops(), counters.get(Error::NoSession) + counters.get(Error::NoRoute));
}

#[test]
fn ping_through_wireguard_go_initiated_by_wireguard_go() {
    interop(0, FirstPing::FromNamespace);
}

#[test]
fn ping_through_wireguard_go_initiated_by_us() {
    interop(1, FirstPing::FromHost);
}
