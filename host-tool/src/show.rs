//! `routerctl show`: the box's WireGuard interface as `wg show` prints
//! one, and `show dump` as `wg show dump` does.
//!
//! wireguard-tools' show.c is the model: the same lines and words, peers
//! ordered by most recent handshake (dump keeps the box's order), durations
//! as "1 minute, 5 seconds" and sizes as "1.21 MiB". Where the box is not a
//! Linux interface: the private key is always `(hidden)` (it never leaves the
//! box), as is a preshared key; the box reports a handshake's age in
//! milliseconds, which `dump` turns into unix time with this machine's clock;
//! fwmark is always off. Each peer also gets a `name:` line under `peer:` —
//! the name the configuration, claims and doctor use, what wg-quick users keep
//! in a `# Name = …` comment — in wg's own `label: value` shape, on a line of
//! its own so the `peer: KEY` line stays exactly wg's for scripts.
//!
//! Rendering is a pure function of the status, which peers have a preshared
//! key and `now`, so tests compare exact text.

use std::time::{SystemTime, UNIX_EPOCH};

use clap::ValueEnum;
use config_schema::{Config, Name};
use routerd_provision::message::{Op, PeerStatus, Reply, Status, TunnelStatus};
use serde_json::json;

use crate::box_cmd::{self, key_b64, to_json, Conn};
use crate::{Failure, EXIT_FAILED};

/// What `routerctl show` prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum View {
    /// Like `wg show`
    #[default]
    #[value(skip)]
    Pretty,
    /// Tab-separated, like `wg show dump`
    Dump,
}

/// A duration like wg prints it: "1 year, 2 days, 1 minute, 5 seconds"
/// (units that are zero left out; nothing for 0).
pub fn duration(secs: u64) -> String {
    const UNITS: [(&str, u64); 5] = [("year", 365 * 24 * 3600), ("day", 24 * 3600), ("hour", 3600), ("minute", 60), ("second", 1)];
    let mut left = secs;
    let mut parts = Vec::new();
    for (unit, size) in UNITS {
        let n = left / size;
        left %= size;
        if n > 0 {
            parts.push(crate::plural(n as usize, unit));
        }
    }
    parts.join(", ")
}

/// A byte count like wg prints it: "512 B", "1.21 MiB".
pub fn bytes(b: u64) -> String {
    const KIB: f64 = 1024.0;
    match b {
        0..1024 => format!("{b} B"),
        1024..1_048_576 => format!("{:.2} KiB", b as f64 / KIB),
        1_048_576..1_073_741_824 => format!("{:.2} MiB", b as f64 / (KIB * KIB)),
        1_073_741_824..1_099_511_627_776 => format!("{:.2} GiB", b as f64 / (KIB * KIB * KIB)),
        _ => format!("{:.2} TiB", b as f64 / (KIB * KIB * KIB * KIB)),
    }
}

/// "1 minute, 5 seconds ago", or "Now" within the second (wg's words).
fn handshake_ago(ms_ago: u64) -> String {
    match ms_ago / 1000 {
        0 => "Now".to_string(),
        s => format!("{} ago", duration(s)),
    }
}

fn endpoint(p: &PeerStatus) -> Option<String> {
    p.endpoint.map(|e| e.to_string())
}

fn allowed_ips(p: &PeerStatus, sep: &str) -> String {
    if p.allowed_ips.is_empty() {
        return "(none)".to_string();
    }
    p.allowed_ips.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(sep)
}

/// The `wg show` view; `has_psk` says which peers (by name) have a
/// preshared key.
pub fn pretty(t: &TunnelStatus, peers: &[PeerStatus], has_psk: &dyn Fn(&Name) -> bool) -> String {
    let mut o = format!("interface: {}\n  public key: {}\n  private key: (hidden)\n", t.name, key_b64(&t.public_key));
    if t.listen_port != 0 {
        o += &format!("  listening port: {}\n", t.listen_port);
    }
    // Most recent handshake first, never last (wg's sort_peers).
    let mut order: Vec<&PeerStatus> = peers.iter().collect();
    order.sort_by_key(|p| p.last_handshake_ms_ago.unwrap_or(u64::MAX));
    for p in order {
        o += &format!("\npeer: {}\n  name: {}\n", key_b64(&p.public_key), p.name);
        if has_psk(&p.name) {
            o += "  preshared key: (hidden)\n";
        }
        if let Some(e) = endpoint(p) {
            o += &format!("  endpoint: {e}\n");
        }
        o += &format!("  allowed ips: {}\n", allowed_ips(p, ", "));
        if let Some(ms) = p.last_handshake_ms_ago {
            o += &format!("  latest handshake: {}\n", handshake_ago(ms));
        }
        if p.rx_bytes > 0 || p.tx_bytes > 0 {
            o += &format!("  transfer: {} received, {} sent\n", bytes(p.rx_bytes), bytes(p.tx_bytes));
        }
        if let Some(k) = p.persistent_keepalive.filter(|&k| k > 0) {
            o += &format!("  persistent keepalive: every {}\n", duration(u64::from(k)));
        }
    }
    o
}

/// The `wg show dump` view at `now_unix_ms` (this machine's clock).
pub fn dump(t: &TunnelStatus, peers: &[PeerStatus], has_psk: &dyn Fn(&Name) -> bool, now_unix_ms: u64) -> String {
    let mut o = format!("(hidden)\t{}\t{}\toff\n", key_b64(&t.public_key), t.listen_port);
    for p in peers {
        let handshake = p.last_handshake_ms_ago.map_or(0, |ago| now_unix_ms.saturating_sub(ago) / 1000);
        o += &format!(
            "{}\t{}\t{}\t{}\t{handshake}\t{}\t{}\t{}\n",
            key_b64(&p.public_key),
            if has_psk(&p.name) { "(hidden)" } else { "(none)" },
            endpoint(p).unwrap_or_else(|| "(none)".to_string()),
            allowed_ips(p, ","),
            p.rx_bytes,
            p.tx_bytes,
            p.persistent_keepalive.filter(|&k| k > 0).map_or("off".to_string(), |k| k.to_string()),
        );
    }
    o
}

/// The JSON document: the interface, and the peers exactly as
/// `routerctl status --json` has them.
pub fn json_doc(port: &str, st: &Status) -> serde_json::Value {
    json!({ "schema": 1, "port": port, "interface": to_json(&st.tunnel), "peers": to_json(&st.peers) })
}

/// `routerctl show [dump]`.
pub fn run(conn: &Conn, view: View, json_out: bool) -> Result<u8, Failure> {
    let (mut c, st) = match box_cmd::status_or_json_error(conn, false, json_out, json!({ "interface": null, "peers": [] }))? {
        Ok(got) => got,
        Err(code) => return Ok(code),
    };
    // Only for which peers have a preshared key; a box that does not say
    // shows none.
    let cfg: Option<Box<Config>> = match c.request(Op::GetConfig) {
        Ok(Reply::Config(cfg)) => cfg,
        _ => None,
    };
    let _ = c.close();
    let has_psk = |name: &Name| cfg.as_ref().is_some_and(|cfg| cfg.peers.iter().any(|p| p.name == *name && p.preshared_key.is_some()));
    if json_out {
        println!("{}", serde_json::to_string_pretty(&json_doc(conn.port(), &st)).unwrap_or_default());
        return Ok(if st.tunnel.is_some() { 0 } else { EXIT_FAILED });
    }
    let Some(t) = &st.tunnel else {
        return Err(Failure {
            code: EXIT_FAILED,
            message: format!("{} runs no WireGuard interface (apply a configuration with a [[wireguard]] section)", conn.port()),
        });
    };
    match view {
        View::Pretty => print!("{}", pretty(t, &st.peers, &has_psk)),
        View::Dump => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            print!("{}", dump(t, &st.peers, &has_psk, now));
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use routerd_provision::message::text;

    fn key(s: &str) -> [u8; 32] {
        crate::keys::parse_key(s).unwrap()
    }

    fn peer(name: &str, public: &str, endpoint: Option<([u8; 4], u16)>, allowed: &[&str]) -> PeerStatus {
        PeerStatus {
            name: Name::new(name).unwrap(),
            public_key: key(public),
            endpoint_configured: text(""),
            endpoint: endpoint.map(|(a, p)| std::net::SocketAddr::from((a, p))),
            allowed_ips: allowed.iter().map(|a| a.parse().unwrap()).collect(),
            last_handshake_ms_ago: None,
            has_session: false,
            rx_bytes: 0,
            tx_bytes: 0,
            persistent_keepalive: None,
        }
    }

    /// Two peers: roz with a session and traffic, wro never heard from.
    fn fixture() -> (TunnelStatus, Vec<PeerStatus>) {
        let t = TunnelStatus {
            name: Name::new("wg0").unwrap(),
            listen_port: 51820,
            mtu: 1420,
            public_key: key("hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="),
            underlay_mtu: 1500,
        };
        let wro = PeerStatus { persistent_keepalive: Some(0), ..peer("wro", "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=", None, &[]) };
        let roz = PeerStatus {
            last_handshake_ms_ago: Some(65_400),
            has_session: true,
            rx_bytes: 1_268_777,
            tx_bytes: 3_565_158,
            persistent_keepalive: Some(25),
            ..peer(
                "roz",
                "ca67+D0dVOzK/Bjvjlowc7W4uQ/zJ1jT9fh1LNCS51w=",
                Some(([203, 0, 113, 10], 51820)),
                &["10.2.0.0/16", "10.20.0.50/32"],
            )
        };
        // The box's order: wro first; `show` puts the recent handshake first.
        (t, vec![wro, roz])
    }

    #[test]
    fn show_is_wg_shows_layout() {
        let (t, peers) = fixture();
        let got = pretty(&t, &peers, &|n| n.as_str() == "roz");
        assert_eq!(
            got,
            "interface: wg0
  public key: hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=
  private key: (hidden)
  listening port: 51820

peer: ca67+D0dVOzK/Bjvjlowc7W4uQ/zJ1jT9fh1LNCS51w=
  name: roz
  preshared key: (hidden)
  endpoint: 203.0.113.10:51820
  allowed ips: 10.2.0.0/16, 10.20.0.50/32
  latest handshake: 1 minute, 5 seconds ago
  transfer: 1.21 MiB received, 3.40 MiB sent
  persistent keepalive: every 25 seconds

peer: xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=
  name: wro
  allowed ips: (none)
"
        );
    }

    #[test]
    fn dump_is_wg_show_dump() {
        let (t, peers) = fixture();
        let now = 1_700_000_100_000;
        let got = dump(&t, &peers, &|n| n.as_str() == "roz", now);
        assert_eq!(
            got,
            "(hidden)\thSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=\t51820\toff\n\
             xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\t(none)\t(none)\t(none)\t0\t0\t0\toff\n\
             ca67+D0dVOzK/Bjvjlowc7W4uQ/zJ1jT9fh1LNCS51w=\t(hidden)\t203.0.113.10:51820\t10.2.0.0/16,10.20.0.50/32\t1700000034\t1268777\t3565158\t25\n"
        );
        // Eight tab-separated columns per peer, four for the interface, as wg's.
        for (i, line) in got.lines().enumerate() {
            assert_eq!(line.split('\t').count(), if i == 0 { 4 } else { 8 }, "{line}");
        }
    }

    #[test]
    fn an_ipv6_endpoint_is_bracketed_as_wg_writes_it() {
        let (t, mut peers) = fixture();
        peers[1].endpoint = Some("[2001:db8::10]:51820".parse().unwrap());
        let shown = pretty(&t, &peers, &|_| false);
        assert!(shown.contains("  endpoint: [2001:db8::10]:51820\n"), "{shown}");
        let dumped = dump(&t, &peers, &|_| false, 1_700_000_100_000);
        assert!(dumped.contains("\t[2001:db8::10]:51820\t"), "{dumped}");
    }

    #[test]
    fn durations_and_sizes_read_like_wgs() {
        assert_eq!(duration(1), "1 second");
        assert_eq!(duration(60), "1 minute");
        assert_eq!(duration(3 * 3600 + 2), "3 hours, 2 seconds");
        assert_eq!(duration(365 * 86400 + 86400 + 61), "1 year, 1 day, 1 minute, 1 second");
        assert_eq!(handshake_ago(999), "Now");
        assert_eq!(handshake_ago(7_200_000), "2 hours ago");
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.00 KiB");
        assert_eq!(bytes(1536), "1.50 KiB");
        assert_eq!(bytes(5 << 30), "5.00 GiB");
        assert_eq!(bytes(3 << 40), "3.00 TiB");
    }
}
