//! BGP-4 message framing (RFC 4271 §4) and the messages other than UPDATE:
//! OPEN with capabilities (RFC 5492, RFC 4760, RFC 6793, RFC 2918, RFC 9072
//! extended optional parameters), KEEPALIVE, NOTIFICATION and ROUTE-REFRESH.
//!
//! ```text
//! header (19): marker[16] = ff.. | length u16 (19..=4096) | type u8
//! OPEN        : version=4 | my AS u16 | hold time u16 | BGP identifier [4]
//!               | opt param len u8 | params (type 2 = capabilities: code, len, value)*
//! NOTIFICATION: code u8 | subcode u8 | data*
//! ROUTE-REFRESH: AFI u16 | reserved u8 | SAFI u8
//! ```
//!
//! Decoding borrows the caller's bytes and never panics: every read goes
//! through [`Reader`], which returns `None` past the end, and every failure
//! is an [`Error`] that names the field and carries the NOTIFICATION
//! code/subcode it maps to ([`Error::notification`]). Encoding writes into
//! the caller's buffer through [`Writer`] and fails with
//! [`Error::BufferTooSmall`] instead of growing anything.

use core::net::Ipv4Addr;

/// Length of the message header.
pub const HEADER_LEN: usize = 19;
/// Largest message without the extended-message capability (which we never
/// advertise, so no peer may send more).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// AS number sent in OPEN's 2-octet field when ours does not fit (RFC 6793).
pub const AS_TRANS: u16 = 23456;

/// Message types.
pub mod msg {
    pub const OPEN: u8 = 1;
    pub const UPDATE: u8 = 2;
    pub const NOTIFICATION: u8 = 3;
    pub const KEEPALIVE: u8 = 4;
    pub const ROUTE_REFRESH: u8 = 5;
}

/// Address family numbers used here.
pub mod afi {
    pub const IPV4: u16 = 1;
    pub const IPV6: u16 = 2;
    /// L2VPN (RFC 4761).
    pub const L2VPN: u16 = 25;
}

/// Subsequent address family numbers used here.
pub mod safi {
    pub const UNICAST: u8 = 1;
    /// EVPN (RFC 7432).
    pub const EVPN: u8 = 70;
}

/// Capability codes we look at (everything else is skipped and counted).
pub mod cap {
    pub const MULTIPROTOCOL: u8 = 1;
    pub const ROUTE_REFRESH: u8 = 2;
    pub const EXTENDED_NEXTHOP: u8 = 5;
    pub const GRACEFUL_RESTART: u8 = 64;
    pub const FOUR_OCTET_AS: u8 = 65;
    pub const ADD_PATH: u8 = 69;
    pub const ENHANCED_ROUTE_REFRESH: u8 = 70;
    pub const FQDN: u8 = 73;
    /// The pre-standard (Cisco) route refresh code FRR also sends.
    pub const ROUTE_REFRESH_OLD: u8 = 128;
}

/// NOTIFICATION error codes (RFC 4271 §4.5, RFC 7313).
pub mod code {
    pub const MESSAGE_HEADER: u8 = 1;
    pub const OPEN: u8 = 2;
    pub const UPDATE: u8 = 3;
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM: u8 = 5;
    pub const CEASE: u8 = 6;
    pub const ROUTE_REFRESH: u8 = 7;
}

/// Cease subcodes (RFC 4486) we send.
pub mod cease {
    pub const ADMIN_SHUTDOWN: u8 = 2;
    pub const CONNECTION_REJECTED: u8 = 5;
    pub const COLLISION: u8 = 7;
    pub const OUT_OF_RESOURCES: u8 = 8;
}

/// Why a message (or a part of it) is refused. Each kind maps to one
/// NOTIFICATION code/subcode ([`Error::notification`]); whether the session
/// is actually reset for it is decided by RFC 7606 (see [`crate::update`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Header: the marker is not 16 bytes of 0xff (1/1).
    BadMarker,
    /// Header: the length field is outside 19..=4096 or wrong for the type (1/2).
    BadLength { len: u16 },
    /// Header: an unknown message type (1/3).
    BadType { ty: u8 },
    /// OPEN: version other than 4 (2/1).
    BadVersion { version: u8 },
    /// OPEN: the peer's AS is not the configured one (2/2).
    BadPeerAs { asn: u32 },
    /// OPEN: identifier zero or equal to ours (2/3).
    BadIdentifier { id: Ipv4Addr },
    /// OPEN: an optional parameter other than capabilities (2/4).
    BadOptionalParameter { ty: u8 },
    /// OPEN: hold time 1 or 2 seconds (2/6).
    BadHoldTime { hold: u16 },
    /// OPEN: the peer lacks a capability we require (L2VPN/EVPN) (2/7).
    MissingCapability { code: u8 },
    /// OPEN: the optional parameters or a capability overrun their length (2/0).
    MalformedOpen { field: &'static str },
    /// UPDATE: withdrawn-routes or attribute lengths overrun the message,
    /// or MP_REACH/MP_UNREACH appear twice (3/1).
    MalformedAttributeList { field: &'static str },
    /// UPDATE: a well-known attribute we do not know (3/2).
    UnrecognizedWellKnown { ty: u8 },
    /// UPDATE: a mandatory well-known attribute is missing (3/3).
    MissingWellKnown { ty: u8 },
    /// UPDATE: an attribute's optional/transitive flags are wrong (3/4).
    AttributeFlags { ty: u8, flags: u8 },
    /// UPDATE: an attribute's length is wrong for its type (3/5).
    AttributeLength { ty: u8, len: u16 },
    /// UPDATE: ORIGIN not 0, 1 or 2 (3/6).
    InvalidOrigin { value: u8 },
    /// UPDATE: a next hop that cannot be one (3/8).
    InvalidNextHop,
    /// UPDATE: an optional attribute (MP_REACH/MP_UNREACH, PMSI) whose
    /// inner framing is broken (3/9).
    OptionalAttribute { ty: u8, field: &'static str },
    /// UPDATE: an NLRI that cannot be parsed (3/10).
    InvalidNetworkField { route_type: u8, len: u8 },
    /// UPDATE: a malformed AS_PATH (3/11).
    MalformedAsPath,
    /// NOTIFICATION shorter than its 2 fixed bytes (1/2).
    MalformedNotification,
    /// ROUTE-REFRESH whose length is not 4 bytes (7/1).
    BadRouteRefreshLength { len: u16 },
    /// Encoding: the caller's buffer cannot hold the message (6/8 if it
    /// ever has to be reported to the peer).
    BufferTooSmall,
}

impl Error {
    /// The NOTIFICATION (code, subcode) this error maps to.
    pub const fn notification(&self) -> (u8, u8) {
        match self {
            Error::BadMarker => (code::MESSAGE_HEADER, 1),
            Error::BadLength { .. } | Error::MalformedNotification => (code::MESSAGE_HEADER, 2),
            Error::BadType { .. } => (code::MESSAGE_HEADER, 3),
            Error::BadVersion { .. } => (code::OPEN, 1),
            Error::BadPeerAs { .. } => (code::OPEN, 2),
            Error::BadIdentifier { .. } => (code::OPEN, 3),
            Error::BadOptionalParameter { .. } => (code::OPEN, 4),
            Error::BadHoldTime { .. } => (code::OPEN, 6),
            Error::MissingCapability { .. } => (code::OPEN, 7),
            Error::MalformedOpen { .. } => (code::OPEN, 0),
            Error::MalformedAttributeList { .. } => (code::UPDATE, 1),
            Error::UnrecognizedWellKnown { .. } => (code::UPDATE, 2),
            Error::MissingWellKnown { .. } => (code::UPDATE, 3),
            Error::AttributeFlags { .. } => (code::UPDATE, 4),
            Error::AttributeLength { .. } => (code::UPDATE, 5),
            Error::InvalidOrigin { .. } => (code::UPDATE, 6),
            Error::InvalidNextHop => (code::UPDATE, 8),
            Error::OptionalAttribute { .. } => (code::UPDATE, 9),
            Error::InvalidNetworkField { .. } => (code::UPDATE, 10),
            Error::MalformedAsPath => (code::UPDATE, 11),
            Error::BadRouteRefreshLength { .. } => (code::ROUTE_REFRESH, 1),
            Error::BufferTooSmall => (code::CEASE, cease::OUT_OF_RESOURCES),
        }
    }

    /// The data field RFC 4271 asks for with this error; returns the bytes
    /// written into `out` (at most 8).
    pub fn notification_data(&self, out: &mut [u8; 8]) -> usize {
        let data: &[u8] = match *self {
            Error::BadLength { len } => &len.to_be_bytes(),
            Error::BadType { ty } => &[ty],
            // The largest version we support.
            Error::BadVersion { .. } => &[0, 4],
            Error::BadHoldTime { hold } => &hold.to_be_bytes(),
            // The capability we need: MP, AFI L2VPN, SAFI EVPN.
            Error::MissingCapability { .. } => &[cap::MULTIPROTOCOL, 4, 0, 25, 0, safi::EVPN],
            Error::UnrecognizedWellKnown { ty } | Error::MissingWellKnown { ty } => &[ty],
            _ => &[],
        };
        let n = data.len().min(out.len());
        if let (Some(dst), Some(src)) = (out.get_mut(..n), data.get(..n)) {
            dst.copy_from_slice(src);
        }
        n
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let (c, s) = self.notification();
        match self {
            Error::BadMarker => write!(f, "header marker is not all ones"),
            Error::BadLength { len } => write!(f, "message length {len} is invalid"),
            Error::BadType { ty } => write!(f, "message type {ty} is unknown"),
            Error::BadVersion { version } => write!(f, "OPEN version {version} (only 4 is supported)"),
            Error::BadPeerAs { asn } => write!(f, "OPEN peer AS {asn} is not the configured one"),
            Error::BadIdentifier { id } => write!(f, "OPEN BGP identifier {id} is zero or ours"),
            Error::BadOptionalParameter { ty } => write!(f, "OPEN optional parameter type {ty} is unsupported"),
            Error::BadHoldTime { hold } => write!(f, "OPEN hold time {hold} s (must be 0 or at least 3)"),
            Error::MissingCapability { code } => write!(f, "peer lacks capability {code} (L2VPN/EVPN multiprotocol)"),
            Error::MalformedOpen { field } => write!(f, "OPEN field {field} overruns the message"),
            Error::MalformedAttributeList { field } => write!(f, "UPDATE attribute list malformed: {field}"),
            Error::UnrecognizedWellKnown { ty } => write!(f, "UPDATE unrecognized well-known attribute {ty}"),
            Error::MissingWellKnown { ty } => write!(f, "UPDATE missing well-known attribute {ty}"),
            Error::AttributeFlags { ty, flags } => write!(f, "UPDATE attribute {ty} has wrong flags {flags:#04x}"),
            Error::AttributeLength { ty, len } => write!(f, "UPDATE attribute {ty} has wrong length {len}"),
            Error::InvalidOrigin { value } => write!(f, "UPDATE ORIGIN value {value} is invalid"),
            Error::InvalidNextHop => write!(f, "UPDATE next hop is invalid"),
            Error::OptionalAttribute { ty, field } => write!(f, "UPDATE attribute {ty} field {field} is malformed"),
            Error::InvalidNetworkField { route_type, len } => {
                write!(f, "UPDATE EVPN NLRI of route type {route_type}, length {len} is malformed")
            }
            Error::MalformedAsPath => write!(f, "UPDATE AS_PATH is malformed"),
            Error::MalformedNotification => write!(f, "NOTIFICATION shorter than 2 bytes"),
            Error::BadRouteRefreshLength { len } => write!(f, "ROUTE-REFRESH length {len} is not 23"),
            Error::BufferTooSmall => write!(f, "output buffer too small"),
        }?;
        write!(f, " (NOTIFICATION {c}/{s})")
    }
}

/// A bounds-checked cursor over received bytes: every read is `None` past
/// the end, never a panic.
#[derive(Clone, Copy, Debug)]
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub const fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }
    /// Bytes not read yet.
    pub const fn rest(&self) -> &'a [u8] {
        self.data
    }
    pub const fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    pub const fn len(&self) -> usize {
        self.data.len()
    }
    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.data.len() {
            return None;
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Some(head)
    }
    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let s = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Some(out)
    }
    pub fn u8(&mut self) -> Option<u8> {
        let [b] = self.array::<1>()?;
        Some(b)
    }
    pub fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }
    /// A 3-byte big-endian integer (labels, VNIs).
    pub fn u24(&mut self) -> Option<u32> {
        let [a, b, c] = self.array::<3>()?;
        Some(u32::from_be_bytes([0, a, b, c]))
    }
    pub fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }
    pub fn ipv4(&mut self) -> Option<Ipv4Addr> {
        self.array::<4>().map(Ipv4Addr::from)
    }
}

/// Appends to the caller's buffer; every write fails with
/// [`Error::BufferTooSmall`] rather than growing or panicking.
#[derive(Debug)]
pub struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Writer<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, len: 0 }
    }
    /// Bytes written so far.
    pub const fn len(&self) -> usize {
        self.len
    }
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Room left.
    pub const fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.len)
    }
    pub fn put(&mut self, data: &[u8]) -> Result<(), Error> {
        let end = self.len.checked_add(data.len()).ok_or(Error::BufferTooSmall)?;
        self.buf.get_mut(self.len..end).ok_or(Error::BufferTooSmall)?.copy_from_slice(data);
        self.len = end;
        Ok(())
    }
    pub fn u8(&mut self, v: u8) -> Result<(), Error> {
        self.put(&[v])
    }
    pub fn u16(&mut self, v: u16) -> Result<(), Error> {
        self.put(&v.to_be_bytes())
    }
    /// The low 24 bits of `v`.
    pub fn u24(&mut self, v: u32) -> Result<(), Error> {
        let [_, a, b, c] = v.to_be_bytes();
        self.put(&[a, b, c])
    }
    pub fn u32(&mut self, v: u32) -> Result<(), Error> {
        self.put(&v.to_be_bytes())
    }
    /// Drop everything written after the first `len` bytes (undo a partial write).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
    /// Overwrite two bytes written earlier (a length field).
    pub fn patch_u16(&mut self, at: usize, v: u16) -> Result<(), Error> {
        let end = at.checked_add(2).ok_or(Error::BufferTooSmall)?;
        if end > self.len {
            return Err(Error::BufferTooSmall);
        }
        self.buf.get_mut(at..end).ok_or(Error::BufferTooSmall)?.copy_from_slice(&v.to_be_bytes());
        Ok(())
    }
    /// Overwrite one byte written earlier.
    pub fn patch_u8(&mut self, at: usize, v: u8) -> Result<(), Error> {
        if at >= self.len {
            return Err(Error::BufferTooSmall);
        }
        *self.buf.get_mut(at).ok_or(Error::BufferTooSmall)? = v;
        Ok(())
    }
    /// Start a message of type `ty`; finish it with [`Writer::end_message`].
    pub fn begin_message(&mut self, ty: u8) -> Result<usize, Error> {
        let start = self.len;
        self.put(&[0xff; 16])?;
        self.u16(0)?;
        self.u8(ty)?;
        Ok(start)
    }
    /// Fill in the length of the message begun at `start`.
    pub fn end_message(&mut self, start: usize) -> Result<(), Error> {
        let len = self.len.checked_sub(start).ok_or(Error::BufferTooSmall)?;
        if len > MAX_MESSAGE_LEN {
            return Err(Error::BufferTooSmall);
        }
        self.patch_u16(start + 16, len as u16)
    }
}

/// A validated message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Whole message length, header included.
    pub len: usize,
    pub ty: u8,
}

/// Decode the header at the start of `data`: `Ok(None)` if fewer than 19
/// bytes are there yet. Checks the marker, the length bounds and the type,
/// and the fixed lengths of KEEPALIVE/OPEN/NOTIFICATION/UPDATE (RFC 4271
/// §6.1); ROUTE-REFRESH length is checked later (it has its own code).
pub fn decode_header(data: &[u8]) -> Result<Option<Header>, Error> {
    let mut r = Reader::new(data);
    let (Some(marker), Some(len), Some(ty)) = (r.take(16), r.u16(), r.u8()) else {
        return Ok(None);
    };
    if marker.iter().any(|&b| b != 0xff) {
        return Err(Error::BadMarker);
    }
    let min = match ty {
        msg::OPEN => 29,
        msg::UPDATE => 23,
        msg::NOTIFICATION => 21,
        msg::KEEPALIVE => 19,
        msg::ROUTE_REFRESH => 19,
        _ => return Err(Error::BadType { ty }),
    };
    let l = len as usize;
    if l < min || l > MAX_MESSAGE_LEN || (ty == msg::KEEPALIVE && l != HEADER_LEN) {
        return Err(Error::BadLength { len });
    }
    Ok(Some(Header { len: l, ty }))
}

/// What a peer's OPEN said about its capabilities.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Multiprotocol L2VPN/EVPN.
    pub evpn: bool,
    /// Multiprotocol IPv4 unicast (we do not use it).
    pub ipv4_unicast: bool,
    /// The 4-octet AS number, if the peer supports RFC 6793.
    pub as4: Option<u32>,
    /// Route refresh (code 2 or the old 128).
    pub route_refresh: bool,
    pub enhanced_route_refresh: bool,
    /// Graceful restart advertised (we do not implement it: helper mode off).
    pub graceful_restart: bool,
    /// ADD-PATH advertised (we never advertise it, so it is never used).
    pub add_path: bool,
    /// Other multiprotocol AFI/SAFIs offered.
    pub other_families: u8,
    /// Capabilities of codes we do not interpret (skipped).
    pub unknown: u8,
}

/// A decoded OPEN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Open {
    pub version: u8,
    /// The 2-octet "My Autonomous System" field (AS_TRANS for 4-octet ASes).
    pub my_as: u16,
    pub hold_time: u16,
    pub identifier: Ipv4Addr,
    pub caps: Capabilities,
}

impl Open {
    /// The peer's AS: the 4-octet capability if present, else the 2-octet field.
    pub fn peer_as(&self) -> u32 {
        self.caps.as4.unwrap_or(self.my_as as u32)
    }
}

fn open_err(field: &'static str) -> Error {
    Error::MalformedOpen { field }
}

/// Decode an OPEN body (after the header). Checks the version (2/1) and the
/// framing of the optional parameters and capabilities; the semantic checks
/// against our configuration are the session's.
pub fn decode_open(body: &[u8]) -> Result<Open, Error> {
    let mut r = Reader::new(body);
    let version = r.u8().ok_or(open_err("version"))?;
    if version != 4 {
        return Err(Error::BadVersion { version });
    }
    let my_as = r.u16().ok_or(open_err("my AS"))?;
    let hold_time = r.u16().ok_or(open_err("hold time"))?;
    let identifier = r.ipv4().ok_or(open_err("BGP identifier"))?;
    let mut opt_len = r.u8().ok_or(open_err("optional parameters length"))? as usize;
    // RFC 9072: length 255 with a first parameter type of 255 announces the
    // extended format (2-octet lengths).
    let extended = opt_len == 255 && r.rest().first() == Some(&255);
    if extended {
        let _ = r.u8();
        opt_len = r.u16().ok_or(open_err("extended optional parameters length"))? as usize;
    }
    let params = r.take(opt_len).ok_or(open_err("optional parameters length"))?;
    if !r.is_empty() {
        return Err(open_err("bytes after the optional parameters"));
    }
    let mut caps = Capabilities::default();
    let mut p = Reader::new(params);
    while !p.is_empty() {
        let ty = p.u8().ok_or(open_err("parameter type"))?;
        let len = if extended { p.u16() } else { p.u8().map(u16::from) };
        let len = len.ok_or(open_err("parameter length"))? as usize;
        let value = p.take(len).ok_or(open_err("parameter length"))?;
        if ty != 2 {
            return Err(Error::BadOptionalParameter { ty });
        }
        decode_capabilities(value, &mut caps)?;
    }
    Ok(Open { version, my_as, hold_time, identifier, caps })
}

fn decode_capabilities(data: &[u8], caps: &mut Capabilities) -> Result<(), Error> {
    let mut r = Reader::new(data);
    while !r.is_empty() {
        let code = r.u8().ok_or(open_err("capability code"))?;
        let len = r.u8().ok_or(open_err("capability length"))? as usize;
        let value = r.take(len).ok_or(open_err("capability length"))?;
        let mut v = Reader::new(value);
        match code {
            cap::MULTIPROTOCOL => {
                let (Some(a), Some(_), Some(s)) = (v.u16(), v.u8(), v.u8()) else {
                    return Err(open_err("multiprotocol capability"));
                };
                match (a, s) {
                    (afi::L2VPN, safi::EVPN) => caps.evpn = true,
                    (afi::IPV4, safi::UNICAST) => caps.ipv4_unicast = true,
                    _ => caps.other_families = caps.other_families.saturating_add(1),
                }
            }
            cap::FOUR_OCTET_AS => caps.as4 = Some(v.u32().ok_or(open_err("4-octet AS capability"))?),
            cap::ROUTE_REFRESH | cap::ROUTE_REFRESH_OLD => caps.route_refresh = true,
            cap::ENHANCED_ROUTE_REFRESH => caps.enhanced_route_refresh = true,
            cap::GRACEFUL_RESTART => caps.graceful_restart = true,
            cap::ADD_PATH => caps.add_path = true,
            _ => caps.unknown = caps.unknown.saturating_add(1),
        }
    }
    Ok(())
}

/// Encode our OPEN: version 4, `asn` (AS_TRANS in the 2-octet field when it
/// does not fit), `hold_time`, `id`, and the capabilities multiprotocol
/// L2VPN/EVPN, route refresh and 4-octet AS — one capability per optional
/// parameter, as FRR does.
pub fn encode_open(w: &mut Writer<'_>, asn: u32, hold_time: u16, id: Ipv4Addr) -> Result<(), Error> {
    let start = w.begin_message(msg::OPEN)?;
    w.u8(4)?;
    w.u16(u16::try_from(asn).unwrap_or(AS_TRANS))?;
    w.u16(hold_time)?;
    w.put(&id.octets())?;
    let caps: [&[u8]; 3] =
        [&[cap::MULTIPROTOCOL, 4, 0, afi::L2VPN as u8, 0, safi::EVPN], &[cap::ROUTE_REFRESH, 0], &[cap::FOUR_OCTET_AS, 4]];
    let opt_len_at = w.len();
    w.u8(0)?;
    for c in caps {
        w.u8(2)?;
        let is_as4 = c.first() == Some(&cap::FOUR_OCTET_AS);
        w.u8(c.len() as u8 + if is_as4 { 4 } else { 0 })?;
        w.put(c)?;
        if is_as4 {
            w.u32(asn)?;
        }
    }
    let opt_len = w.len() - opt_len_at - 1;
    w.patch_u8(opt_len_at, opt_len as u8)?;
    w.end_message(start)
}

/// Encode a KEEPALIVE.
pub fn encode_keepalive(w: &mut Writer<'_>) -> Result<(), Error> {
    let start = w.begin_message(msg::KEEPALIVE)?;
    w.end_message(start)
}

/// A decoded NOTIFICATION.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notification<'a> {
    pub code: u8,
    pub subcode: u8,
    pub data: &'a [u8],
}

/// Decode a NOTIFICATION body.
pub fn decode_notification(body: &[u8]) -> Result<Notification<'_>, Error> {
    let mut r = Reader::new(body);
    let (Some(code), Some(subcode)) = (r.u8(), r.u8()) else {
        return Err(Error::MalformedNotification);
    };
    Ok(Notification { code, subcode, data: r.rest() })
}

/// Encode a NOTIFICATION.
pub fn encode_notification(w: &mut Writer<'_>, code: u8, subcode: u8, data: &[u8]) -> Result<(), Error> {
    let start = w.begin_message(msg::NOTIFICATION)?;
    w.u8(code)?;
    w.u8(subcode)?;
    w.put(data)?;
    w.end_message(start)
}

/// Decode a ROUTE-REFRESH body: (AFI, SAFI). The reserved byte (the
/// enhanced route refresh subtype) is returned too.
pub fn decode_route_refresh(body: &[u8]) -> Result<(u16, u8, u8), Error> {
    if body.len() != 4 {
        return Err(Error::BadRouteRefreshLength { len: (body.len() + HEADER_LEN).min(u16::MAX as usize) as u16 });
    }
    let mut r = Reader::new(body);
    let (Some(a), Some(sub), Some(s)) = (r.u16(), r.u8(), r.u8()) else {
        return Err(Error::BadRouteRefreshLength { len: 0 });
    };
    Ok((a, sub, s))
}

/// Encode a ROUTE-REFRESH for `afi`/`safi`.
pub fn encode_route_refresh(w: &mut Writer<'_>, afi: u16, safi: u8) -> Result<(), Error> {
    let start = w.begin_message(msg::ROUTE_REFRESH)?;
    w.u16(afi)?;
    w.u8(0)?;
    w.u8(safi)?;
    w.end_message(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    fn open_bytes() -> ([u8; 128], usize) {
        let mut buf = [0u8; 128];
        let mut w = Writer::new(&mut buf);
        encode_open(&mut w, 65000, 90, Ipv4Addr::new(10, 0, 0, 1)).unwrap();
        let n = w.len();
        (buf, n)
    }

    #[test]
    fn open_roundtrip() {
        let (buf, n) = open_bytes();
        let h = decode_header(&buf[..n]).unwrap().unwrap();
        assert_eq!(h, Header { len: n, ty: msg::OPEN });
        let o = decode_open(&buf[HEADER_LEN..n]).unwrap();
        assert_eq!(o.my_as, 65000);
        assert_eq!(o.peer_as(), 65000);
        assert_eq!(o.hold_time, 90);
        assert_eq!(o.identifier, Ipv4Addr::new(10, 0, 0, 1));
        assert!(o.caps.evpn && o.caps.route_refresh && !o.caps.ipv4_unicast);
    }

    #[test]
    fn four_octet_as_uses_as_trans() {
        let mut buf = [0u8; 128];
        let mut w = Writer::new(&mut buf);
        encode_open(&mut w, 4_200_000_000, 9, Ipv4Addr::new(1, 2, 3, 4)).unwrap();
        let n = w.len();
        let o = decode_open(&buf[HEADER_LEN..n]).unwrap();
        assert_eq!(o.my_as, AS_TRANS);
        assert_eq!(o.peer_as(), 4_200_000_000);
    }

    /// An OPEN as FRR 8.4 sends it for an EVPN-only iBGP peer (captured
    /// field by field from its encoder's layout): each capability in its
    /// own parameter, plus ones we do not interpret.
    #[test]
    fn frr_like_open_with_unknown_capabilities() {
        let mut body = vec![4, 0xfd, 0xe8, 0, 9, 10, 99, 0, 2, 0];
        let params: &[&[u8]] = &[
            &[1, 4, 0, 25, 0, 70],
            &[128, 0],
            &[2, 0],
            &[70, 0],
            &[65, 4, 0, 0, 0xfd, 0xe8],
            &[69, 4, 0, 25, 70, 1],
            &[73, 7, 3, b'p', b'v', b'e', 1, b'x', 0],
            &[64, 2, 0x40, 0x78],
            &[71, 0],
            &[6, 0],
        ];
        for p in params {
            body.push(2);
            body.push(p.len() as u8);
            body.extend_from_slice(p);
        }
        body[9] = (body.len() - 10) as u8;
        let o = decode_open(&body).unwrap();
        assert!(o.caps.evpn && o.caps.route_refresh && o.caps.enhanced_route_refresh && o.caps.add_path && o.caps.graceful_restart);
        assert_eq!(o.caps.as4, Some(65000));
        assert_eq!(o.caps.unknown, 3);
    }

    #[test]
    fn open_errors_carry_their_codes() {
        let (mut buf, n) = open_bytes();
        buf[HEADER_LEN] = 3;
        let e = decode_open(&buf[HEADER_LEN..n]).unwrap_err();
        assert_eq!(e, Error::BadVersion { version: 3 });
        assert_eq!(e.notification(), (2, 1));
        let (buf, n) = open_bytes();
        // Truncated parameters.
        let e = decode_open(&buf[HEADER_LEN..n - 1]).unwrap_err();
        assert_eq!(e.notification(), (2, 0));
        // A non-capability optional parameter.
        let body = [4, 0, 1, 0, 90, 1, 1, 1, 1, 3, 1, 1, 0];
        assert_eq!(decode_open(&body), Err(Error::BadOptionalParameter { ty: 1 }));
    }

    #[test]
    fn extended_optional_parameters() {
        let mut body = vec![4, 0, 1, 0, 90, 1, 1, 1, 1, 255, 255, 0, 9, 2, 0, 6, 1, 4, 0, 25, 0, 70];
        let o = decode_open(&body).unwrap();
        assert!(o.caps.evpn);
        body.pop();
        assert!(decode_open(&body).is_err());
    }

    #[test]
    fn header_checks() {
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf);
        encode_keepalive(&mut w).unwrap();
        let n = w.len();
        assert_eq!(n, 19);
        assert_eq!(decode_header(&buf[..18]), Ok(None));
        assert_eq!(decode_header(&buf[..n]), Ok(Some(Header { len: 19, ty: msg::KEEPALIVE })));
        let mut b = buf;
        b[3] = 0;
        assert_eq!(decode_header(&b[..n]).unwrap_err().notification(), (1, 1));
        let mut b = buf;
        b[17] = 20;
        assert_eq!(decode_header(&b[..n]), Err(Error::BadLength { len: 20 }));
        let mut b = buf;
        b[18] = 9;
        assert_eq!(decode_header(&b[..n]), Err(Error::BadType { ty: 9 }));
        let mut b = buf;
        b[16] = 0x10;
        b[17] = 1;
        b[18] = msg::UPDATE;
        assert_eq!(decode_header(&b[..n]).unwrap_err().notification(), (1, 2));
    }

    #[test]
    fn notification_and_route_refresh() {
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf);
        encode_notification(&mut w, 6, 2, &[1, 2]).unwrap();
        let n = w.len();
        let no = decode_notification(&buf[HEADER_LEN..n]).unwrap();
        assert_eq!((no.code, no.subcode, no.data), (6, 2, &[1u8, 2][..]));
        assert_eq!(decode_notification(&[6]), Err(Error::MalformedNotification));
        let mut w = Writer::new(&mut buf);
        encode_route_refresh(&mut w, afi::L2VPN, safi::EVPN).unwrap();
        assert_eq!(w.len(), 23);
        assert_eq!(decode_route_refresh(&buf[HEADER_LEN..23]), Ok((25, 0, 70)));
        assert_eq!(decode_route_refresh(&buf[HEADER_LEN..22]).unwrap_err().notification(), (7, 1));
    }

    #[test]
    fn writer_never_overruns() {
        let mut buf = [0u8; 20];
        let mut w = Writer::new(&mut buf);
        assert_eq!(encode_open(&mut w, 1, 90, Ipv4Addr::new(1, 1, 1, 1)), Err(Error::BufferTooSmall));
        assert_eq!(w.patch_u16(100, 1), Err(Error::BufferTooSmall));
    }
}
