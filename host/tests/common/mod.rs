//! What the namespace tests of routerd-host share: prerequisites that skip
//! (or fail under `CI`), commands, bounded waits, the [`Lab`] guard that
//! removes everything a test created, threads inside a namespace, ping, and
//! a TCP transfer whose every byte is checked.
//!
//! Each test file includes this with `mod common;` and uses a part of it.
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A missing prerequisite: "skipped: …" and pass, unless `CI` is set.
pub fn skip_or_fail(test: &str, reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{test} cannot run under CI: {reason}");
    }
    println!("skipped: {reason}");
}

pub fn have(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
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
    let r = unsafe {
        libc::getsockopt(s.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_MAXSEG, (&mut v as *mut libc::c_int).cast(), &mut len)
    };
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
