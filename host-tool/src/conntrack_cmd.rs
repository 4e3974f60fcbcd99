//! `routerctl conntrack list`: the box's tracked flows (SNAT and the
//! firewall), bounded and filtered on the box.

use std::net::Ipv4Addr;

use clap::Subcommand;
use routerd_provision::message::{ConntrackList, ConntrackQuery, Op, Reply, MAX_FLOW_LIST};
use serde_json::json;

use crate::box_cmd::{failed, print_json, refusal, unexpected, Conn};
use crate::Failure;

#[derive(Subcommand)]
pub enum ConntrackCommand {
    /// List tracked flows: protocol, original source and destination, the SNAT address and port, state, expiry, packets
    #[command(after_long_help = "Examples:\n  \
        routerctl conntrack list --port /dev/ttyUSB0\n  \
        routerctl conntrack list --proto udp --address 10.1.1.31 --json --port unix:/tmp/roz.sock\n\n\
        At most 128 flows per run (--limit); the header says how many matched.")]
    List {
        /// At most this many flows (1..=128)
        #[arg(long, default_value_t = 50)]
        limit: u16,
        /// Only tcp, udp or icmp
        #[arg(long)]
        proto: Option<String>,
        /// Only flows with this address on either end (translated or not)
        #[arg(long)]
        address: Option<Ipv4Addr>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

fn proto_name(p: u8) -> &'static str {
    match p {
        6 => "tcp",
        17 => "udp",
        1 => "icmp",
        _ => "?",
    }
}

pub fn run(cmd: ConntrackCommand, conn: &Conn) -> Result<u8, Failure> {
    let ConntrackCommand::List { limit, proto, address, json } = cmd;
    if limit == 0 || usize::from(limit) > MAX_FLOW_LIST {
        return Err(Failure::usage(format!("--limit {limit}: give 1..={MAX_FLOW_LIST}")));
    }
    let proto = match proto.as_deref() {
        None => None,
        Some("tcp") => Some(6),
        Some("udp") => Some(17),
        Some("icmp") => Some(1),
        Some(other) => return Err(Failure::usage(format!("--proto {other:?}: give tcp, udp or icmp"))),
    };
    let mut c = conn.connect()?;
    let list: Box<ConntrackList> =
        match c.request(Op::Conntrack(ConntrackQuery { limit, proto, address })).map_err(|e| failed(e.to_string()))? {
            Reply::Conntrack(l) => l,
            Reply::Error(f) => return Err(refusal(&f)),
            other => return Err(unexpected(&other)),
        };
    let _ = c.close();
    if json {
        let flows: Vec<_> = list
            .entries
            .iter()
            .map(|e| {
                json!({
                    "proto": proto_name(e.proto),
                    "src": e.src.to_string(), "sport": e.sport,
                    "dst": e.dst.to_string(), "dport": e.dport,
                    "nat": e.nat.map(|(a, p)| json!({ "address": a.to_string(), "port": p })),
                    "state": e.state.as_str(),
                    "expires_in_ms": e.expires_in_ms,
                    "packets": { "original": e.packets[0], "reply": e.packets[1] },
                })
            })
            .collect();
        return print_json(&json!({
            "schema": 1, "flows": list.flows, "capacity": list.capacity, "matched": list.matched, "listed": flows,
        }));
    }
    println!("{} of {} flows tracked; {} match, {} listed", list.flows, list.capacity, list.matched, list.entries.len());
    for e in &list.entries {
        let nat = e.nat.map_or(String::new(), |(a, p)| format!("  as {a}:{p}"));
        println!(
            "  {:<4} {}:{} -> {}:{}{nat}  {}  expires in {} s  packets {}/{}",
            proto_name(e.proto),
            e.src,
            e.sport,
            e.dst,
            e.dport,
            e.state.as_str(),
            e.expires_in_ms / 1000,
            e.packets[0],
            e.packets[1]
        );
    }
    Ok(0)
}
