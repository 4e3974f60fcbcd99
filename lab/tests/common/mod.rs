//! Helpers shared by the lab's tests.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// A fresh directory for one test's sockets (short: unix socket paths are
/// limited to 108 bytes).
pub fn run_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rl-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Calls `read` until it returns the same value twice 300 ms apart (traffic
/// has settled), at most 10 s; returns the last value.
pub fn settled<T: PartialEq>(mut read: impl FnMut() -> T) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = read();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = read();
        if now == last || Instant::now() >= deadline {
            return now;
        }
        last = now;
    }
}

/// Calls `read` until it returns `Some`, at most `timeout`.
pub fn wait_for<T>(timeout: Duration, mut read: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = read() {
            return Some(t);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
