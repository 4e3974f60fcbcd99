//! `routerctl bgp summary|routes`: the box's BGP EVPN service, laid out
//! like FRR's `show bgp summary` and `show bgp l2vpn evpn route`.
//!
//! The summary reads `Status::bgp` (one request); the routes come from
//! `Op::BgpRoutes` a page at a time until the box's count is reached (the
//! table may change between pages: a route can then be listed twice or
//! missed, as with any paged listing). Rendering is a pure function of what
//! the box answered, so tests compare exact text.

use clap::Subcommand;
use routerd_provision::message::{BgpRoute, BgpRoutes, BgpState, BgpStatus, Op, Reply, MAX_BGP_ROUTE_ROWS};
use serde_json::json;

use crate::box_cmd::{failed, get_status, mac_text, print_json, refusal, to_json, unexpected, Conn};
use crate::Failure;

/// Pages fetched at most (the box's tables hold 9216 routes: 72 pages).
const MAX_PAGES: u32 = 128;

#[derive(Subcommand)]
pub enum BgpCommand {
    /// Sessions (neighbor, AS, messages, up time, state or routes received) and each EVPN VNI with its VTEPs
    #[command(
        long_about = "The box's BGP EVPN sessions, like FRR's `show bgp summary`: per neighbor its address, \
            name, AS, BGP messages received and sent, how long the session has been up, and its state — or, \
            once Established, the routes received from it. Then one line per EVPN VNI (segments with \
            control = \"evpn\"): its segment, the VTEPs learned from the peers' type-3 routes (BUM traffic \
            is flooded to them), the MACs learned from type-2 routes and the local MACs advertised. A session \
            that is down says why it last went down.",
        after_long_help = "Examples:\n  \
            routerctl bgp summary --port /dev/ttyUSB0\n  \
            routerctl bgp summary --json --port unix:/run/routerd.sock | jq '.bgp.peers[] | {name, state}'\n\n\
            JSON: {schema, port, bgp: {asn, router_id, hold_time, vtep, peers: [{address, name, state, uptime_ms, \
            prefixes_received, established, downs, last_down, messages_in, messages_out, \
            treat_as_withdraw, attributes_discarded, withdraw_nlri_errors}], vnis: [{vni, segment, \
            flood_list, flood_list_total, remote_macs, local_macs}], counters}}.\n\
            Exit codes: 0 shown, 1 the box is unreachable or runs no BGP (no [bgp] section; see CONFIG.md)."
    )]
    Summary {
        /// Print one JSON document {schema, port, bgp}
        #[arg(long)]
        json: bool,
    },
    /// EVPN routes: type 2 (MAC) and type 3 (VTEP), received and the box's own
    #[command(
        long_about = "The EVPN routes the box holds, like FRR's `show bgp l2vpn evpn route`: every route \
            received from a peer (each peer's, not only the best) and every route the box originates (a type 3 \
            per VNI: its VTEP joins the VNI; a type 2 per MAC learned on the segment's port). Per route: type, \
            VNI, route distinguisher, MAC and IP (type 2), next hop (the VTEP), who sent it (a peer's name and \
            address, or local) and the MAC-mobility sequence number. Sorted by VNI, type, MAC and next hop.",
        after_long_help = "Examples:\n  \
            routerctl bgp routes --port /dev/ttyUSB0\n  \
            routerctl bgp routes --vni 100 --json --port unix:/run/routerd.sock | jq '.routes[] | select(.type == 2)'\n\n\
            The box sends 128 routes per answer; a full table (9216 routes) takes about a minute over a 115200 baud \
            serial line: --vni narrows it on the box.\n\
            JSON: {schema, port, vni, total, routes: [{type, vni, rd, mac, ip, next_hop, from, peer, seq}]} \
            (from: the peer's name or \"local\"; peer: its address or null).\n\
            Exit codes: 0 listed, 1 the box is unreachable or runs no BGP (no [bgp] section; see CONFIG.md)."
    )]
    Routes {
        /// Only this VNI's routes
        #[arg(long, value_name = "VNI")]
        vni: Option<u32>,
        /// Print one JSON document {schema, port, vni, total, routes}
        #[arg(long)]
        json: bool,
    },
}

/// Why there is nothing to show.
fn no_bgp(port: &str) -> Failure {
    failed(format!(
        "{port} runs no BGP: add a [bgp] section (asn, peers) and set control = \"evpn\" on the segments it should \
         carry; see CONFIG.md, \"[bgp] (optional): BGP EVPN\""
    ))
}

pub fn run(cmd: BgpCommand, conn: &Conn) -> Result<u8, Failure> {
    match cmd {
        BgpCommand::Summary { json } => summary(conn, json),
        BgpCommand::Routes { vni, json } => routes(conn, vni, json),
    }
}

fn summary(conn: &Conn, json_out: bool) -> Result<u8, Failure> {
    let mut c = conn.connect()?;
    let st = get_status(&mut c, false)?;
    let _ = c.close();
    let Some(b) = &st.bgp else { return Err(no_bgp(conn.port())) };
    if json_out {
        return print_json(&json!({ "schema": 1, "port": conn.port(), "bgp": to_json(b) }));
    }
    print!("{}", summary_text(b));
    Ok(0)
}

fn routes(conn: &Conn, vni: Option<u32>, json_out: bool) -> Result<u8, Failure> {
    let mut c = conn.connect()?;
    let mut rows: Vec<BgpRoute> = Vec::new();
    let mut offset = 0u32;
    for _ in 0..MAX_PAGES {
        let page: Box<BgpRoutes> = match c.request(Op::BgpRoutes { vni, offset }).map_err(|e| failed(e.to_string()))? {
            Reply::BgpRoutes(p) => p,
            Reply::Error(f) if f.kind == routerd_provision::message::FailureKind::NotConfigured => {
                let _ = c.close();
                return Err(no_bgp(conn.port()));
            }
            Reply::Error(f) => return Err(refusal(&f)),
            other => return Err(unexpected(&other)),
        };
        // A page shorter than a full one is the last.
        let last = page.routes.len() < MAX_BGP_ROUTE_ROWS;
        offset = offset.saturating_add(u32::try_from(page.routes.len()).unwrap_or(u32::MAX));
        rows.extend(page.routes);
        if last || offset >= page.total {
            break;
        }
    }
    let _ = c.close();
    sort(&mut rows);
    if json_out {
        let list: Vec<_> = rows.iter().map(route_json).collect();
        return print_json(&json!({ "schema": 1, "port": conn.port(), "vni": vni, "total": rows.len(), "routes": list }));
    }
    print!("{}", routes_text(&rows));
    Ok(0)
}

/// By VNI, type, MAC, next hop; ours before a peer's.
fn sort(rows: &mut [BgpRoute]) {
    rows.sort_by_key(|r| (r.vni, r.route_type, r.mac, r.next_hop, r.peer.as_ref().map(|p| p.address)));
}

fn route_json(r: &BgpRoute) -> serde_json::Value {
    json!({
        "type": r.route_type,
        "vni": r.vni,
        "rd": r.rd.as_str(),
        "mac": r.mac.map(|m| mac_text(&m)),
        "ip": r.ip.map(|i| i.to_string()),
        "next_hop": r.next_hop.to_string(),
        "from": r.peer.as_ref().map_or("local", |p| p.name.as_str()),
        "peer": r.peer.as_ref().map(|p| p.address.to_string()),
        "seq": r.seq,
    })
}

/// FRR's up/down time: `00:01:05` within a day, `1d02h03m` within a week,
/// `02w3d04h` beyond.
pub fn up_time(ms: u64) -> String {
    let s = ms / 1000;
    let (w, d, h, m, sec) = (s / 604_800, s / 86_400 % 7, s / 3600 % 24, s / 60 % 60, s % 60);
    if s < 86_400 {
        format!("{h:02}:{m:02}:{sec:02}")
    } else if s < 604_800 {
        format!("{d}d{h:02}h{m:02}m")
    } else {
        format!("{w:02}w{d}d{h:02}h")
    }
}

/// `routerctl bgp summary`.
pub fn summary_text(b: &BgpStatus) -> String {
    let mut o =
        format!("BGP router identifier {}, local AS number {}, hold time {} s, VTEP {}\n\n", b.router_id, b.asn, b.hold_time, b.vtep);
    let w = b.peers.iter().map(|p| p.name.as_str().len()).max().unwrap_or(4).max(4);
    o += &format!("{:<15} {:<w$} {:>10} {:>8} {:>8} {:>9}  State/PfxRcd\n", "Neighbor", "Name", "AS", "MsgRcvd", "MsgSent", "Up/Down");
    for p in &b.peers {
        let state = match p.state {
            BgpState::Established => p.prefixes_received.to_string(),
            s => s.name().to_string(),
        };
        o += &format!(
            "{:<15} {:<w$} {:>10} {:>8} {:>8} {:>9}  {state}\n",
            p.address.to_string(),
            p.name.as_str(),
            b.asn,
            p.messages_in,
            p.messages_out,
            p.uptime_ms.map_or_else(|| "never".to_string(), up_time),
        );
    }
    let up = b.peers.iter().filter(|p| p.state == BgpState::Established).count();
    o += &format!("\nTotal number of neighbors {}, {up} established\n", b.peers.len());
    for p in b.peers.iter().filter(|p| p.state != BgpState::Established && !p.last_down.is_empty()) {
        o += &format!("  {} ({}) last down: {} ({} times)\n", p.name, p.address, p.last_down, p.downs);
    }
    for p in b.peers.iter().filter(|p| p.treat_as_withdraw + p.attributes_discarded + p.withdraw_nlri_errors > 0) {
        o += &format!(
            "  {} ({}) sent malformed UPDATEs (RFC 7606): {} treated as withdraw, {} attributes discarded, {} unreadable withdrawals\n",
            p.name, p.address, p.treat_as_withdraw, p.attributes_discarded, p.withdraw_nlri_errors
        );
    }
    if !b.vnis.is_empty() {
        o += &format!(
            "\n{:<9} {:<24} {:>5} {:>11} {:>10}  Flood list (learned VTEPs)\n",
            "VNI", "Segment", "VTEPs", "Remote MACs", "Local MACs"
        );
        for v in &b.vnis {
            let mut flood: Vec<String> = v.flood_list.iter().map(|a| a.to_string()).collect();
            let more = usize::from(v.flood_list_total).saturating_sub(flood.len());
            if more > 0 {
                flood.push(format!("and {more} more"));
            }
            o += &format!(
                "{:<9} {:<24} {:>5} {:>11} {:>10}  {}\n",
                v.vni,
                v.segment.as_ref().map_or("(none)", |s| s.as_str()),
                v.flood_list_total,
                v.remote_macs,
                v.local_macs,
                if flood.is_empty() { "-".to_string() } else { flood.join(", ") }
            );
        }
    }
    if !b.counters.is_empty() {
        let c: Vec<String> = b.counters.iter().map(|c| format!("{} {}", c.name, c.value)).collect();
        o += &format!("\ncounters: {}\n", c.join(", "));
    }
    o
}

/// `routerctl bgp routes` (rows already sorted).
pub fn routes_text(rows: &[BgpRoute]) -> String {
    let mut o = format!("{:<4} {:<9} {:<21} {:<17} {:<15} {:<15} {:<30} {}\n", "Type", "VNI", "RD", "MAC", "IP", "Next hop", "From", "Seq");
    for r in rows {
        let from = r.peer.as_ref().map_or_else(|| "local".to_string(), |p| format!("{} {}", p.name, p.address));
        o += &format!(
            "{:<4} {:<9} {:<21} {:<17} {:<15} {:<15} {:<30} {}\n",
            r.route_type,
            r.vni,
            r.rd.as_str(),
            r.mac.map_or_else(|| "-".to_string(), |m| mac_text(&m)),
            r.ip.map_or_else(|| "-".to_string(), |i| i.to_string()),
            r.next_hop.to_string(),
            from,
            if r.route_type == 2 { r.seq.to_string() } else { "-".to_string() },
        );
    }
    let local = rows.iter().filter(|r| r.peer.is_none()).count();
    o += &format!("\n{} ({} received, {local} local)\n", crate::plural(rows.len(), "route"), rows.len() - local);
    o
}

/// The BGP block of `routerctl status`: sessions up of all, the peers that
/// are not up with why, each VNI's VTEPs and MACs.
pub fn status_block(b: &BgpStatus) -> String {
    let up = b.peers.iter().filter(|p| p.state == BgpState::Established).count();
    let mut o = format!("\nbgp (AS {}, router id {}): {up} of {} sessions established\n", b.asn, b.router_id, b.peers.len());
    for p in b.peers.iter().filter(|p| p.state != BgpState::Established) {
        let why = if p.last_down.is_empty() { String::new() } else { format!(", last down: {}", p.last_down) };
        o += &format!("  peer {} {}: {}{why}\n", p.name, p.address, p.state);
    }
    for v in &b.vnis {
        o += &format!(
            "  vni {} ({}): {} VTEPs learned, {} remote MACs, {} local MACs advertised\n",
            v.vni,
            v.segment.as_ref().map_or("no segment", |s| s.as_str()),
            v.flood_list_total,
            v.remote_macs,
            v.local_macs
        );
    }
    o
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use config_schema::Name;
    use routerd_provision::message::{text, BgpPeerStatus, BgpRoutePeer, BgpVniStatus, Count};
    use std::net::Ipv4Addr;

    /// Two peers: pve1 up with two routes, pve2 down after a hold-timer
    /// expiry; one VNI with one learned VTEP.
    pub fn fixture() -> BgpStatus {
        let peer = |name: &str, last: u8| BgpPeerStatus {
            address: Ipv4Addr::new(10, 1, 0, last),
            name: Name::new(name).unwrap(),
            state: BgpState::Established,
            uptime_ms: Some(65_000),
            prefixes_received: 2,
            established: 1,
            downs: 0,
            last_down: text(""),
            messages_in: 12,
            messages_out: 11,
            treat_as_withdraw: 0,
            attributes_discarded: 0,
            withdraw_nlri_errors: 0,
        };
        let down = BgpPeerStatus {
            state: BgpState::Active,
            uptime_ms: None,
            prefixes_received: 0,
            downs: 3,
            last_down: text("sent NOTIFICATION 4/0 (hold timer expired)"),
            messages_in: 40,
            messages_out: 41,
            treat_as_withdraw: 2,
            ..peer("pve2", 3)
        };
        BgpStatus {
            asn: 65000,
            router_id: Ipv4Addr::new(10, 1, 0, 1),
            hold_time: 90,
            vtep: Ipv4Addr::new(10, 1, 0, 1),
            peers: [peer("pve1", 2), down].into_iter().collect(),
            vnis: [BgpVniStatus {
                vni: 100,
                segment: Some(Name::new("zone").unwrap()),
                flood_list: [Ipv4Addr::new(10, 1, 0, 2)].into_iter().collect(),
                flood_list_total: 1,
                remote_macs: 1,
                local_macs: 0,
            }]
            .into_iter()
            .collect(),
            counters: [Count { name: text("collisions"), value: 1 }].into_iter().collect(),
        }
    }

    #[test]
    fn summary_reads_like_frrs() {
        assert_eq!(
            summary_text(&fixture()),
            "BGP router identifier 10.1.0.1, local AS number 65000, hold time 90 s, VTEP 10.1.0.1

Neighbor        Name         AS  MsgRcvd  MsgSent   Up/Down  State/PfxRcd
10.1.0.2        pve1      65000       12       11  00:01:05  2
10.1.0.3        pve2      65000       40       41     never  Active

Total number of neighbors 2, 1 established
  pve2 (10.1.0.3) last down: sent NOTIFICATION 4/0 (hold timer expired) (3 times)
  pve2 (10.1.0.3) sent malformed UPDATEs (RFC 7606): 2 treated as withdraw, 0 attributes discarded, 0 unreadable withdrawals

VNI       Segment                  VTEPs Remote MACs Local MACs  Flood list (learned VTEPs)
100       zone                         1           1          0  10.1.0.2

counters: collisions 1
"
        );
    }

    #[test]
    fn routes_are_sorted_and_name_their_peer() {
        let pve1 = Some(BgpRoutePeer { address: Ipv4Addr::new(10, 1, 0, 2), name: Name::new("pve1").unwrap() });
        let mut rows = vec![
            BgpRoute {
                route_type: 2,
                vni: 100,
                rd: text("10.1.0.2:2"),
                mac: Some([2, 0, 0, 0, 0xbb, 1]),
                ip: Some("10.50.0.1".parse().unwrap()),
                next_hop: Ipv4Addr::new(10, 1, 0, 2),
                peer: pve1.clone(),
                seq: 1,
            },
            BgpRoute {
                route_type: 3,
                vni: 100,
                rd: text("10.1.0.2:2"),
                mac: None,
                ip: None,
                next_hop: Ipv4Addr::new(10, 1, 0, 2),
                peer: pve1,
                seq: 0,
            },
            BgpRoute {
                route_type: 3,
                vni: 100,
                rd: text("10.1.0.1:1"),
                mac: None,
                ip: None,
                next_hop: Ipv4Addr::new(10, 1, 0, 1),
                peer: None,
                seq: 0,
            },
        ];
        sort(&mut rows);
        let got = routes_text(&rows);
        let want = "\
Type VNI       RD                    MAC               IP              Next hop        From                           Seq
2    100       10.1.0.2:2            02:00:00:00:bb:01 10.50.0.1       10.1.0.2        pve1 10.1.0.2                  1
3    100       10.1.0.1:1            -                 -               10.1.0.1        local                          -
3    100       10.1.0.2:2            -                 -               10.1.0.2        pve1 10.1.0.2                  -

3 routes (2 received, 1 local)
";
        assert_eq!(got, want);
        let j = route_json(&rows[0]);
        assert_eq!(
            (j["type"].as_u64(), j["mac"].as_str(), j["from"].as_str(), j["peer"].as_str()),
            (Some(2), Some("02:00:00:00:bb:01"), Some("pve1"), Some("10.1.0.2"))
        );
        assert_eq!(route_json(&rows[1])["from"], "local");
    }

    #[test]
    fn status_block_and_up_times() {
        assert_eq!(
            status_block(&fixture()),
            "\nbgp (AS 65000, router id 10.1.0.1): 1 of 2 sessions established
  peer pve2 10.1.0.3: Active, last down: sent NOTIFICATION 4/0 (hold timer expired)
  vni 100 (zone): 1 VTEPs learned, 1 remote MACs, 0 local MACs advertised
"
        );
        assert_eq!(up_time(0), "00:00:00");
        assert_eq!(up_time(86_399_000), "23:59:59");
        assert_eq!(up_time(86_400_000 + 2 * 3_600_000 + 3 * 60_000), "1d02h03m");
        assert_eq!(up_time(15 * 86_400_000 + 4 * 3_600_000), "02w1d04h");
        // JSON: the state by name.
        assert_eq!(to_json(&fixture())["peers"][1]["state"], "Active");
    }
}
