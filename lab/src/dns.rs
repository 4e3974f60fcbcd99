//! The DNS server of a site router: what a box asks for its peers' names.
//!
//! Every attachment with [`Attachment::with_dns_server`] answers UDP 53 at
//! its gateway address from one zone the whole underlay shares (the
//! internet's DNS, as each ISP router's forwarder sees it): `A` queries for
//! a name in the zone get its address and TTL, a name not in it gets
//! NXDOMAIN, another type for a known name gets an empty NOERROR answer.
//! The zone can change while the lab runs ([`Underlay::set_dns_record`]):
//! a dynamic address behind dyndns.
//!
//! Names compare case-insensitively (RFC 4343); the answer repeats the
//! question as asked and points its record at it. Header and question are
//! read with smoltcp's wire views (`DnsPacket`, `DnsQuestion`), the ones
//! the box's resolver parses with; smoltcp has no answer builder (nor an
//! rcode setter), so the few answer bytes are written here. Nothing panics
//! on input.
//!
//! [`Attachment::with_dns_server`]: crate::Attachment::with_dns_server
//! [`Underlay::set_dns_record`]: crate::Underlay::set_dns_record

use smoltcp::wire::{DnsFlags, DnsOpcode, DnsPacket, DnsQueryType, DnsQuestion};
use std::net::Ipv4Addr;

/// The DNS port.
pub(crate) const PORT: u16 = 53;
const HEADER: usize = 12;
const CLASS_IN: u16 = 1;
/// A compression pointer to the question's name, right after the header.
const NAME_POINTER: [u8; 2] = [0xc0, HEADER as u8];
/// RCODE values (RFC 1035 §4.1.1).
const NOERROR: u8 = 0;
const FORMERR: u8 = 1;
const NXDOMAIN: u8 = 3;
const NOTIMP: u8 = 4;

/// One name in the underlay's zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsRecord {
    /// `wro.example.net` (no trailing dot).
    pub name: String,
    pub address: Ipv4Addr,
    pub ttl_secs: u32,
}

impl DnsRecord {
    pub fn new(name: &str, address: Ipv4Addr, ttl_secs: u32) -> DnsRecord {
        DnsRecord { name: name.trim_end_matches('.').to_ascii_lowercase(), address, ttl_secs }
    }
}

/// Points `name` at `address` in `zone` (keeping its TTL, or `ttl_secs`
/// when new); `None` takes it out.
pub(crate) fn set_record(zone: &mut Vec<DnsRecord>, name: &str, address: Option<Ipv4Addr>, ttl_secs: u32) {
    let new = DnsRecord::new(name, address.unwrap_or(Ipv4Addr::UNSPECIFIED), ttl_secs);
    match (zone.iter_mut().find(|r| r.name == new.name), address) {
        (Some(r), Some(a)) => r.address = a,
        (None, Some(_)) => zone.push(new),
        (_, None) => zone.retain(|r| r.name != new.name),
    }
}

/// What the server answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// An address for the name.
    Address(String, Ipv4Addr),
    /// The name is not in the zone.
    NxDomain(String),
    /// The name is known but has no record of the type asked.
    NoData(String),
    /// Not a standard query with one question (FORMERR or NOTIMP sent).
    Refused,
}

/// The answer to `query` (a DNS message), or `None` when it gets none
/// (a response, or too short to carry an id).
pub(crate) fn answer(zone: &[DnsRecord], query: &[u8]) -> Option<(Vec<u8>, Outcome)> {
    let packet = DnsPacket::new_checked(query).ok()?;
    if packet.flags().contains(DnsFlags::RESPONSE) {
        return None;
    }
    let rd = packet.flags() & DnsFlags::RECURSION_DESIRED;
    let header = |rcode: u8, questions: u16, answers: u16| -> Vec<u8> {
        let mut buf = vec![0u8; HEADER];
        let mut p = DnsPacket::new_unchecked(&mut buf[..]);
        p.set_transaction_id(packet.transaction_id());
        p.set_flags(DnsFlags::RESPONSE | DnsFlags::RECURSION_AVAILABLE | rd);
        p.set_opcode(DnsOpcode::Query);
        p.set_question_count(questions);
        p.set_answer_record_count(answers);
        p.set_authority_record_count(0);
        p.set_additional_record_count(0);
        if let Some(b) = buf.get_mut(3) {
            *b = (*b & 0xf0) | rcode;
        }
        buf
    };
    if packet.opcode() != DnsOpcode::Query {
        return Some((header(NOTIMP, 0, 0), Outcome::Refused));
    }
    if packet.question_count() != 1 {
        return Some((header(FORMERR, 0, 0), Outcome::Refused));
    }
    let Ok((_, question)) = DnsQuestion::parse(packet.payload()) else {
        return Some((header(FORMERR, 0, 0), Outcome::Refused));
    };
    let Some(name) = dotted(&packet, question.name) else {
        return Some((header(FORMERR, 0, 0), Outcome::Refused));
    };
    let found = zone.iter().find(|r| r.name == name);
    let (rcode, record, outcome) = match (found, question.type_) {
        (Some(r), DnsQueryType::A) => (NOERROR, Some(r), Outcome::Address(name, r.address)),
        (Some(_), _) => (NOERROR, None, Outcome::NoData(name)),
        (None, _) => (NXDOMAIN, None, Outcome::NxDomain(name)),
    };
    let mut out = header(rcode, 1, u16::from(record.is_some()));
    out.extend_from_slice(question.name);
    out.extend_from_slice(&u16::from(question.type_).to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    if let Some(r) = record {
        out.extend_from_slice(&NAME_POINTER);
        out.extend_from_slice(&u16::from(DnsQueryType::A).to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&r.ttl_secs.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&r.address.octets());
    }
    Some((out, outcome))
}

/// The question's name as `wro.example.net`, lower case; `None` when it is
/// not a plain sequence of labels (a question's name has no pointer to
/// follow, and the answer points back at it).
fn dotted(packet: &DnsPacket<&[u8]>, name: &[u8]) -> Option<String> {
    let mut labels = Vec::new();
    for label in packet.parse_name(name) {
        let label = label.ok()?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
    }
    // With a pointer in it the raw bytes are shorter than the labels they
    // stand for (a label is at least 2 bytes, the pointer 2, the root 1).
    let plain_len: usize = labels.iter().map(|l| l.len() + 1).sum::<usize>() + 1;
    (plain_len == name.len()).then(|| labels.join("."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{DnsRcode, DnsRecord as Rr, DnsRecordData, DnsRepr};

    fn zone() -> Vec<DnsRecord> {
        vec![
            DnsRecord::new("roz.example.net", Ipv4Addr::new(198, 51, 100, 10), 10),
            DnsRecord::new("WRO.example.net.", Ipv4Addr::new(203, 0, 113, 20), 10),
        ]
    }

    /// A query as the box's resolver makes it (smoltcp's emitter).
    fn query(name: &str, type_: DnsQueryType, id: u16) -> Vec<u8> {
        let mut wire = Vec::new();
        for label in name.split('.') {
            wire.push(label.len() as u8);
            wire.extend_from_slice(label.as_bytes());
        }
        wire.push(0);
        let repr = DnsRepr {
            transaction_id: id,
            opcode: DnsOpcode::Query,
            flags: DnsFlags::RECURSION_DESIRED,
            question: DnsQuestion { name: &wire, type_ },
        };
        let mut buf = vec![0xa5u8; repr.buffer_len()];
        repr.emit(&mut DnsPacket::new_unchecked(&mut buf[..]));
        buf
    }

    /// (id, rcode, addresses and TTLs) of an answer, read with smoltcp.
    fn read(answer: &[u8]) -> (u16, DnsRcode, Vec<(Ipv4Addr, u32)>) {
        let p = DnsPacket::new_checked(answer).unwrap();
        assert!(p.flags().contains(DnsFlags::RESPONSE | DnsFlags::RECURSION_DESIRED));
        let mut rest = p.payload();
        for _ in 0..p.question_count() {
            rest = DnsQuestion::parse(rest).unwrap().0;
        }
        let mut out = Vec::new();
        for _ in 0..p.answer_record_count() {
            let (r, rr) = Rr::parse(rest).unwrap();
            rest = r;
            let name: Vec<&[u8]> = p.parse_name(rr.name).map(|l| l.unwrap()).collect();
            assert!(name.len() == 3, "the record names the question");
            if let DnsRecordData::A(a) = rr.data {
                out.push((a, rr.ttl));
            }
        }
        assert!(rest.is_empty());
        (p.transaction_id(), p.rcode(), out)
    }

    #[test]
    fn known_names_resolve_with_their_ttl_any_case() {
        let (a, outcome) = answer(&zone(), &query("wro.example.net", DnsQueryType::A, 7)).unwrap();
        assert_eq!(outcome, Outcome::Address("wro.example.net".into(), Ipv4Addr::new(203, 0, 113, 20)));
        assert_eq!(read(&a), (7, DnsRcode::NoError, vec![(Ipv4Addr::new(203, 0, 113, 20), 10)]));
        let (a, _) = answer(&zone(), &query("Roz.Example.NET", DnsQueryType::A, 8)).unwrap();
        assert_eq!(read(&a).2, vec![(Ipv4Addr::new(198, 51, 100, 10), 10)]);
    }

    #[test]
    fn unknown_names_are_nxdomain_and_other_types_nodata() {
        let (a, outcome) = answer(&zone(), &query("waw.example.net", DnsQueryType::A, 9)).unwrap();
        assert_eq!(outcome, Outcome::NxDomain("waw.example.net".into()));
        assert_eq!(read(&a), (9, DnsRcode::NXDomain, vec![]));
        let (a, outcome) = answer(&zone(), &query("roz.example.net", DnsQueryType::Aaaa, 10)).unwrap();
        assert_eq!(outcome, Outcome::NoData("roz.example.net".into()));
        assert_eq!(read(&a), (10, DnsRcode::NoError, vec![]));
    }

    #[test]
    fn responses_are_ignored_and_odd_queries_refused() {
        let mut q = query("roz.example.net", DnsQueryType::A, 11);
        let (a, _) = answer(&zone(), &q).unwrap();
        assert_eq!(answer(&zone(), &a), None, "a response is not answered");
        q[5] = 2; // two questions
        let (a, outcome) = answer(&zone(), &q).unwrap();
        assert_eq!((outcome, read(&a).1), (Outcome::Refused, DnsRcode::FormErr));
        assert_eq!(answer(&zone(), &[0; 5]), None);
    }

    #[test]
    fn records_move_appear_and_go() {
        let mut z = zone();
        set_record(&mut z, "wro.example.net", Some(Ipv4Addr::new(203, 0, 113, 77)), 300);
        assert_eq!(z[1], DnsRecord::new("wro.example.net", Ipv4Addr::new(203, 0, 113, 77), 10), "moved, TTL kept");
        set_record(&mut z, "waw.example.net.", Some(Ipv4Addr::new(192, 0, 2, 1)), 60);
        assert_eq!(z[2], DnsRecord::new("waw.example.net", Ipv4Addr::new(192, 0, 2, 1), 60));
        set_record(&mut z, "ROZ.example.net", None, 0);
        assert_eq!(z.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["wro.example.net", "waw.example.net"]);
        let (_, outcome) = answer(&z, &query("roz.example.net", DnsQueryType::A, 1)).unwrap();
        assert_eq!(outcome, Outcome::NxDomain("roz.example.net".into()));
    }

    #[test]
    fn garbage_never_panics() {
        let q = query("wro.example.net", DnsQueryType::A, 12);
        for cut in 0..q.len() {
            let _ = answer(&zone(), &q[..cut]);
        }
        let mut junk = q.clone();
        for i in 0..junk.len() {
            for bit in 0..8 {
                junk[i] ^= 1 << bit;
                let _ = answer(&zone(), &junk);
                junk[i] ^= 1 << bit;
            }
        }
        // A name made of a pointer loop.
        let mut looped = q[..12].to_vec();
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(answer(&zone(), &looped).map(|a| a.1), Some(Outcome::Refused));
    }
}
