//! Configuration generations on a box: `config history`, `config get
//! --generation N`, `rollback`, `confirm` (after `apply --confirm`) and the
//! factory `reset`.
//!
//! The box keeps the generations (routerd-control's `history`); this module
//! only asks and shows. A generation's short hash is the CRC-32C of its
//! configuration's wire form, as the box computed it, in 8 hex digits; its
//! time is the box's wall clock, shown in UTC. Refusals exit 1 and say why:
//! a generation not kept (naming the kept ones), a configuration this
//! firmware refuses, nothing to confirm, the wrong box to reset.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use routerd_provision::message::{History, HistoryEntry, Op, Reply};
use serde_json::{json, Value};

use crate::box_cmd::{config_refusal, failed, get_status, outcome_text, print_json, progress, refused_as, to_json, unexpected, Conn};
use crate::client::Client;
use crate::{Failure, EXIT_FAILED};

/// `2026-12-01 06:27:27`: a wall-clock time in UTC, or `-` when the box had
/// no clock worth the name (before 2000: one that counts from boot).
pub fn utc(ms: Option<u64>) -> String {
    const Y2K_MS: u64 = 946_684_800_000;
    let Some(ms) = ms.filter(|&m| m >= Y2K_MS) else { return "-".to_string() };
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rem / 3600, rem / 60 % 60, rem % 60)
}

fn history_of(c: &mut Client) -> Result<Box<History>, Failure> {
    match c.request(Op::History).map_err(|e| failed(e.to_string()))? {
        Reply::History(h) => Ok(h),
        Reply::Error(f) => Err(config_refusal(&f)),
        other => Err(unexpected(&other)),
    }
}

fn kept(h: &History) -> String {
    if h.entries.is_empty() {
        return "none".to_string();
    }
    h.entries.iter().map(|e| e.generation.to_string()).collect::<Vec<_>>().join(", ")
}

fn entry_json(e: &HistoryEntry, h: &History) -> Value {
    json!({
        "generation": e.generation,
        "applied_unix_ms": e.applied_ms,
        "applied_utc": utc(e.applied_ms),
        "what": e.origin.to_string(),
        "origin": to_json(&e.origin),
        "size": e.size,
        "hash": format!("{:08x}", e.hash),
        "confirmed": e.confirmed,
        "running": h.running == Some(e.generation),
        "pending": h.pending.is_some_and(|p| p.generation == e.generation),
    })
}

/// The table `config history` prints (newest last).
pub fn history_text(h: &History, port: &str) -> String {
    let mut o = format!("generations kept on {port} (oldest first; * running):\n");
    o += &format!("  {:>5}  {:<19}  {:<44} {:>8}  {:<8}\n", "GEN", "APPLIED (UTC)", "WHAT", "SIZE", "HASH");
    for e in &h.entries {
        let running = h.running == Some(e.generation);
        let note = match h.pending {
            Some(p) if p.generation == e.generation => {
                format!("  pending confirmation: reverts to {} in {} s", p.reverts_to, p.left_ms.div_ceil(1000))
            }
            _ if !e.confirmed => "  unconfirmed".to_string(),
            _ => String::new(),
        };
        o += &format!(
            "{} {:>5}  {:<19}  {:<44} {:>6} B  {:08x}{note}\n",
            if running { '*' } else { ' ' },
            e.generation,
            utc(e.applied_ms),
            e.origin.to_string(),
            e.size,
            e.hash
        );
    }
    if h.entries.is_empty() {
        o += "  none: the box has run no configuration yet (routerctl apply FILE)\n";
    }
    o
}

/// `routerctl config history`.
pub fn history(conn: &Conn, json_out: bool) -> Result<u8, Failure> {
    let mut c = conn.connect()?;
    let h = history_of(&mut c)?;
    let _ = c.close();
    if json_out {
        let gens: Vec<Value> = h.entries.iter().map(|e| entry_json(e, &h)).collect();
        return print_json(&json!({
            "schema": 1,
            "port": conn.port(),
            "running": h.running,
            "pending_confirm": to_json(&h.pending),
            "generations": gens,
        }));
    }
    print!("{}", history_text(&h, conn.port()));
    Ok(0)
}

/// `routerctl config get --generation N`.
pub fn config_get_generation(conn: &Conn, generation: u64, json_out: bool) -> Result<u8, Failure> {
    let mut c = conn.connect()?;
    let r = c.request(Op::GetGeneration(generation)).map_err(|e| failed(e.to_string()))?;
    let _ = c.close();
    match r {
        Reply::Config(Some(cfg)) => {
            if json_out {
                return print_json(&json!({ "generation": generation, "config": *cfg }));
            }
            print!("{}", config_schema::human::to_toml(&cfg).map_err(|e| failed(format!("cannot format TOML: {e}")))?);
            Ok(0)
        }
        Reply::Config(None) => Err(failed(format!("generation {generation} holds no configuration"))),
        Reply::Error(f) => Err(Failure { code: EXIT_FAILED, message: f.message.to_string() }),
        other => Err(unexpected(&other)),
    }
}

/// Asks on a terminal; `Ok(false)`: declined.
fn ask(question: &str, yes: bool) -> Result<bool, Failure> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::usage(format!("not done: add --yes to {question} without asking (stdin is not a terminal)")));
    }
    eprint!("{question}? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// `routerctl rollback [GENERATION]`: the plan, then the apply.
pub fn rollback(conn: &Conn, generation: Option<u64>, yes: bool, json_out: bool) -> Result<u8, Failure> {
    let mut c = conn.connect()?;
    let h = history_of(&mut c)?;
    let Some(running) = h.running else {
        return Err(failed(format!("{} runs no configuration: nothing to roll back (routerctl apply FILE)", conn.port())));
    };
    let target = match generation {
        Some(n) => n,
        None => {
            let before = h.entries.iter().rev().map(|e| e.generation).find(|&n| n < running);
            before.ok_or_else(|| failed(format!("no generation before {running} is kept (kept: {})", kept(&h))))?
        }
    };
    let Some(entry) = h.entries.iter().find(|e| e.generation == target) else {
        return Err(failed(format!("generation {target} is not kept on {} (kept: {}); nothing was changed", conn.port(), kept(&h))));
    };
    if target == running {
        return Err(failed(format!("generation {target} is the one running; nothing to roll back to")));
    }
    let plan = match c.request(Op::Rollback { generation: target, dry_run: true }).map_err(|e| failed(e.to_string()))? {
        Reply::Plan(o) => o,
        Reply::Error(f) => return refused_as(config_refusal(&f), &f, json_out, "rolled_back"),
        other => return Err(unexpected(&other)),
    };
    if !json_out {
        println!(
            "rollback on {} from generation {running} to generation {target} ({}, applied {} UTC, {:08x}):",
            conn.port(),
            entry.origin,
            utc(entry.applied_ms),
            entry.hash
        );
        print!("{}", outcome_text(&plan, false));
    }
    if !ask("roll back", yes)? {
        println!("not rolled back");
        return Ok(EXIT_FAILED);
    }
    let timeout = Duration::from_millis(conn.timeout.max(50) * 3);
    let r = progress("rolling back", || c.request_with(Op::Rollback { generation: target, dry_run: false }, timeout))
        .map_err(|e| failed(e.to_string()))?;
    let now = match &r {
        Reply::Applied(_) => get_status(&mut c, false).ok().map(|st| st.generation),
        _ => None,
    };
    let _ = c.close();
    match r {
        Reply::Applied(o) => {
            if json_out {
                return print_json(&json!({ "schema": 1, "rolled_back": true, "to": target, "generation": now, "outcome": to_json(&*o) }));
            }
            match now {
                Some(g) => println!("rolled back: {} runs generation {target}'s configuration again, as generation {g}", conn.port()),
                None => println!("rolled back: {} runs generation {target}'s configuration again", conn.port()),
            }
            Ok(0)
        }
        Reply::Error(f) => refused_as(config_refusal(&f), &f, json_out, "rolled_back"),
        other => Err(unexpected(&other)),
    }
}

/// `routerctl confirm`: keep what a commit-confirm applied.
pub fn confirm(conn: &Conn, json_out: bool) -> Result<u8, Failure> {
    let mut c = conn.connect()?;
    let r = c.request(Op::Confirm).map_err(|e| failed(e.to_string()))?;
    let _ = c.close();
    match r {
        Reply::Confirmed { generation } => {
            if json_out {
                return print_json(&json!({ "schema": 1, "confirmed": true, "generation": generation }));
            }
            println!("confirmed: {} keeps generation {generation}", conn.port());
            Ok(0)
        }
        Reply::Error(f) => refused_as(config_refusal(&f), &f, json_out, "confirmed"),
        other => Err(unexpected(&other)),
    }
}

/// `routerctl reset --yes --device NAME`: the box's name is checked here
/// first (nothing is sent to the wrong box), and again by the box.
pub fn reset(conn: &Conn, device: &str, yes: bool, json_out: bool) -> Result<u8, Failure> {
    if !yes {
        return Err(Failure::usage(
            "reset erases the box's configuration, its history and every key (the other sites must be re-keyed); \
             add --yes --device NAME to proceed",
        ));
    }
    let mut c = conn.connect()?;
    let st = get_status(&mut c, false)?;
    let name = if st.configured { st.device.as_str() } else { "" };
    if name != device {
        let _ = c.close();
        let what = if st.configured { format!("is named {name:?}") } else { "is unconfigured (give --device \"\")".to_string() };
        return Err(failed(format!("{} {what}, not {device:?}: not reset, nothing was sent", conn.port())));
    }
    let r = c.request(Op::FactoryReset { device: routerd_provision::message::text(device) }).map_err(|e| failed(e.to_string()))?;
    let after = match r {
        Reply::Done => get_status(&mut c, false).ok(),
        Reply::Error(f) => {
            let _ = c.close();
            return refused_as(config_refusal(&f), &f, json_out, "reset");
        }
        other => return Err(unexpected(&other)),
    };
    let _ = c.close();
    let storage = after.as_ref().and_then(|s| s.storage.clone());
    if json_out {
        return print_json(&json!({ "schema": 1, "reset": true, "device": device, "storage": to_json(&storage) }));
    }
    let label = if device.is_empty() { conn.port().to_string() } else { device.to_string() };
    println!("{label}: factory reset: configuration, history and every key slot forgotten; not forwarding");
    match storage {
        Some(g) if !g.disk.is_empty() => println!("  store on {}: {}", g.disk, g.note),
        Some(_) => println!("  no store on the box: nothing was on a disk"),
        None => println!("  this box keeps its state outside the node (routerd-host: remove its --config and key files yourself)"),
    }
    println!("  the next apply makes NEW keys: give the other sites the new public key (routerctl key show)");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_is_the_civil_date() {
        assert_eq!(utc(Some(1_800_000_000_000)), "2027-01-15 08:00:00");
        assert_eq!(utc(Some(951_782_400_000)), "2000-02-29 00:00:00");
        assert_eq!(utc(Some(1_709_164_799_000)), "2024-02-28 23:59:59");
        assert_eq!(utc(Some(4_102_444_800_000)), "2100-01-01 00:00:00");
        assert_eq!(utc(Some(5_000)), "-", "a clock counting from boot");
        assert_eq!(utc(None), "-");
    }
}
