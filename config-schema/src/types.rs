//! Value types of the configuration: names, addresses, keys, endpoints.
//!
//! Every type here has two serde shapes. In a human format (TOML, JSON) it is
//! the string an operator writes (`"10.0.0.9/32"`, `"wro.example.net:51820"`,
//! a base64 key); on the wire (postcard, not human readable) it is the compact
//! binary form. Parsing checks everything it can about the value itself and
//! names what is wrong; relations between values are `validate()`'s job.
//!
//! Contract: no constructor or deserializer panics on any input; capacities
//! are fixed (`crate::limits`), so the types work in the image without heap.

use core::fmt::{self, Write as _};
use core::net::{Ipv4Addr, Ipv6Addr};
use core::str::FromStr;

use base64::Engine as _;
use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use crate::limits::{MAX_HOST_LEN, MAX_NAME_LEN};

/// Writes `value`'s `Display` into a fixed buffer, so human serializers get a
/// `&str` without any allocation. Output longer than `N` is cut (never happens
/// for the types here: their longest form is below every `N` used).
pub(crate) fn display_buf<const N: usize>(value: &impl fmt::Display) -> heapless::String<N> {
    let mut out = heapless::String::new();
    let mut w = crate::validate::Truncating(&mut out);
    let _ = write!(w, "{value}");
    out
}

/// Deserializes a human string through `FromStr`, keeping the parse error's text.
pub(crate) struct ParseVisitor<T>(pub(crate) core::marker::PhantomData<T>, pub(crate) &'static str);

impl<T> Visitor<'_> for ParseVisitor<T>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.1)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse::<T>().map_err(E::custom)
    }
}

/// Implements serde for a type with a string form (human formats) and a
/// binary mirror type (postcard). `$wire` must be `From<&$ty>`, and
/// `$ty: TryFrom<$wire>` re-checks what the binary form cannot rule out.
macro_rules! human_or_wire {
    ($ty:ty, $wire:ty, $buf:literal, $expecting:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&display_buf::<$buf>(self))
                } else {
                    <$wire>::from(self).serialize(s)
                }
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    d.deserialize_str(ParseVisitor::<$ty>(core::marker::PhantomData, $expecting))
                } else {
                    let wire = <$wire>::deserialize(d)?;
                    <$ty>::try_from(wire).map_err(de::Error::custom)
                }
            }
        }
    };
}

pub(crate) use human_or_wire;

// ---------------------------------------------------------------------------
// Names

/// Why a name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong { len: usize, max: usize },
    BadChar { ch: char, at: usize },
    BadStart { ch: char },
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NameError::Empty => f.write_str("a name must not be empty"),
            NameError::TooLong { len, max } => {
                write!(f, "name is {len} bytes long; at most {max} are allowed")
            }
            NameError::BadChar { ch, at } => write!(
                f,
                "character {ch:?} at position {at} is not allowed in a name \
                 (use letters, digits, '-', '_' and '.')"
            ),
            NameError::BadStart { ch } => {
                write!(f, "a name must start with a letter or digit, not {ch:?}")
            }
        }
    }
}

/// The name of a port, tunnel, peer, segment, device or side: 1 to
/// `MAX_NAME_LEN` bytes of ASCII letters, digits, `-`, `_`, `.`, starting with
/// a letter or digit. Names are compared exactly (case matters).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Name(heapless::String<MAX_NAME_LEN>);

impl Name {
    pub fn new(s: &str) -> Result<Self, NameError> {
        let first = s.chars().next().ok_or(NameError::Empty)?;
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong { len: s.len(), max: MAX_NAME_LEN });
        }
        if !first.is_ascii_alphanumeric() {
            return Err(NameError::BadStart { ch: first });
        }
        if let Some((at, ch)) = s.char_indices().find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
            return Err(NameError::BadChar { ch, at });
        }
        let mut inner = heapless::String::new();
        inner.push_str(s).map_err(|_| NameError::TooLong { len: s.len(), max: MAX_NAME_LEN })?;
        Ok(Name(inner))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Name::new(s)
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The same check in both formats: a wire config is as untrusted as a file.
        d.deserialize_str(ParseVisitor::<Name>(core::marker::PhantomData, "a name like \"lan0\""))
    }
}

// ---------------------------------------------------------------------------
// DNS names

/// A DNS host name for a peer endpoint: 1..=253 bytes, dot-separated labels of
/// 1..=63 letters, digits and `-` (not at either end of a label). One trailing
/// dot is accepted and kept. The box re-resolves it; it is never an address.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DnsName(heapless::String<MAX_HOST_LEN>);

/// Why a host name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsNameError {
    Empty,
    TooLong { len: usize },
    EmptyLabel,
    LabelTooLong { len: usize },
    BadChar { ch: char, at: usize },
    HyphenAtLabelEdge,
    AllNumeric,
}

impl fmt::Display for DnsNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DnsNameError::Empty => f.write_str("the host name is empty"),
            DnsNameError::TooLong { len } => {
                write!(f, "host name is {len} bytes long; DNS allows at most {MAX_HOST_LEN}")
            }
            DnsNameError::EmptyLabel => f.write_str("host name has an empty label (\"..\")"),
            DnsNameError::LabelTooLong { len } => {
                write!(f, "a host name label is {len} bytes long; DNS allows at most 63")
            }
            DnsNameError::BadChar { ch, at } => write!(
                f,
                "character {ch:?} at position {at} is not allowed in a host name \
                 (letters, digits, '-' and '.')"
            ),
            DnsNameError::HyphenAtLabelEdge => f.write_str("a host name label must not start or end with '-'"),
            DnsNameError::AllNumeric => f.write_str("looks like an IPv4 address but is not a valid one (four numbers 0-255)"),
        }
    }
}

impl DnsName {
    pub fn new(s: &str) -> Result<Self, DnsNameError> {
        if s.is_empty() {
            return Err(DnsNameError::Empty);
        }
        if s.len() > MAX_HOST_LEN {
            return Err(DnsNameError::TooLong { len: s.len() });
        }
        if let Some((at, ch)) = s.char_indices().find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '-' || c == '.')) {
            return Err(DnsNameError::BadChar { ch, at });
        }
        let body = s.strip_suffix('.').unwrap_or(s);
        let mut all_numeric = true;
        for label in body.split('.') {
            if label.is_empty() {
                return Err(DnsNameError::EmptyLabel);
            }
            if label.len() > 63 {
                return Err(DnsNameError::LabelTooLong { len: label.len() });
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(DnsNameError::HyphenAtLabelEdge);
            }
            all_numeric &= label.bytes().all(|b| b.is_ascii_digit());
        }
        // "300.1.2.3" is a typo'd address, not a name to resolve.
        if all_numeric {
            return Err(DnsNameError::AllNumeric);
        }
        let mut inner = heapless::String::new();
        inner.push_str(s).map_err(|_| DnsNameError::TooLong { len: s.len() })?;
        Ok(DnsName(inner))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl FromStr for DnsName {
    type Err = DnsNameError;
    fn from_str(s: &str) -> Result<Self, DnsNameError> {
        DnsName::new(s)
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for DnsName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DnsName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(ParseVisitor::<DnsName>(core::marker::PhantomData, "a DNS host name"))
    }
}

// ---------------------------------------------------------------------------
// IPv4 prefixes

/// An IPv4 address with a prefix length, written `a.b.c.d/len`. A bare
/// address means `/32`. Host bits may be set (a port address `10.0.0.1/24`
/// says both the address and its subnet); `network()` masks them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    len: u8,
}

/// Why an IPv4 prefix was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CidrError {
    BadAddress,
    BadLength,
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CidrError::BadAddress => f.write_str("expected an IPv4 address with an optional prefix length, like 10.0.0.9/32"),
            CidrError::BadLength => f.write_str("the prefix length must be a number from 0 to 32"),
        }
    }
}

impl Ipv4Cidr {
    pub const fn new(addr: Ipv4Addr, len: u8) -> Result<Self, CidrError> {
        if len > 32 {
            return Err(CidrError::BadLength);
        }
        Ok(Ipv4Cidr { addr, len })
    }

    /// A single address (`/32`).
    pub const fn host(addr: Ipv4Addr) -> Self {
        Ipv4Cidr { addr, len: 32 }
    }

    pub const fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub const fn prefix_len(&self) -> u8 {
        self.len
    }

    pub const fn mask(&self) -> u32 {
        // len is at most 32 by construction; checked_shl covers len == 0.
        match u32::MAX.checked_shl(32u32.saturating_sub(self.len as u32)) {
            Some(m) => m,
            None => 0,
        }
    }

    pub const fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from_bits(self.addr.to_bits() & self.mask())
    }

    /// The last address of the prefix (the broadcast address of a subnet).
    pub const fn last(&self) -> Ipv4Addr {
        Ipv4Addr::from_bits(self.addr.to_bits() | !self.mask())
    }

    pub const fn has_host_bits(&self) -> bool {
        self.addr.to_bits() & !self.mask() != 0
    }

    pub const fn contains(&self, ip: Ipv4Addr) -> bool {
        ip.to_bits() & self.mask() == self.addr.to_bits() & self.mask()
    }

    /// True when the two prefixes share at least one address.
    pub const fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }

    /// True when every address of `other` is inside `self`.
    pub const fn covers(&self, other: &Ipv4Cidr) -> bool {
        self.len <= other.len && self.contains(other.addr)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, CidrError> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => {
                // u8::from_str accepts "+8"; a prefix length is digits only.
                if l.is_empty() || l.len() > 2 || !l.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(CidrError::BadLength);
                }
                (a, l.parse::<u8>().map_err(|_| CidrError::BadLength)?)
            }
            None => (s, 32),
        };
        let addr = addr.parse::<Ipv4Addr>().map_err(|_| CidrError::BadAddress)?;
        Ipv4Cidr::new(addr, len)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl fmt::Debug for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Serialize, Deserialize)]
struct CidrWire([u8; 4], u8);

impl From<&Ipv4Cidr> for CidrWire {
    fn from(c: &Ipv4Cidr) -> Self {
        CidrWire(c.addr.octets(), c.len)
    }
}

impl TryFrom<CidrWire> for Ipv4Cidr {
    type Error = CidrError;
    fn try_from(w: CidrWire) -> Result<Self, CidrError> {
        Ipv4Cidr::new(Ipv4Addr::from(w.0), w.1)
    }
}

human_or_wire!(Ipv4Cidr, CidrWire, 24, "an IPv4 prefix like \"10.0.0.9/32\"");

// ---------------------------------------------------------------------------
// MAC addresses

/// An Ethernet address, written `aa:bb:cc:dd:ee:ff` (`-` also accepted).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

/// Why a MAC address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacError;

impl fmt::Display for MacError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected a MAC address of six hex pairs, like 52:54:00:12:34:56")
    }
}

impl FromStr for Mac {
    type Err = MacError;
    fn from_str(s: &str) -> Result<Self, MacError> {
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in out.iter_mut() {
            let part = parts.next().ok_or(MacError)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(MacError);
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| MacError)?;
        }
        if parts.next().is_some() {
            return Err(MacError);
        }
        Ok(Mac(out))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Serialize, Deserialize)]
struct MacWire([u8; 6]);

impl From<&Mac> for MacWire {
    fn from(m: &Mac) -> Self {
        MacWire(m.0)
    }
}

impl TryFrom<MacWire> for Mac {
    type Error = MacError;
    fn try_from(w: MacWire) -> Result<Self, MacError> {
        Ok(Mac(w.0))
    }
}

human_or_wire!(Mac, MacWire, 24, "a MAC address like \"52:54:00:12:34:56\"");

// ---------------------------------------------------------------------------
// Keys

/// A WireGuard public key (Curve25519), written in base64 as `wg pubkey`
/// prints it (44 characters ending in `=`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

/// Why a key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    Length { len: usize },
    Base64,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            KeyError::Length { len } => write!(f, "a WireGuard key is 44 base64 characters (32 bytes), this one has {len} characters"),
            KeyError::Base64 => f.write_str("the key is not valid base64 (as printed by `wg pubkey`)"),
        }
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        if s.len() != 44 {
            return Err(KeyError::Length { len: s.chars().count() });
        }
        let mut buf = [0u8; 33];
        let n = base64::engine::general_purpose::STANDARD.decode_slice(s, &mut buf).map_err(|_| KeyError::Base64)?;
        let bytes = buf.get(..n).ok_or(KeyError::Base64)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Base64)?;
        Ok(PublicKey(key))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 44];
        let n = base64::engine::general_purpose::STANDARD.encode_slice(self.0, &mut buf).map_err(|_| fmt::Error)?;
        let text = buf.get(..n).and_then(|b| core::str::from_utf8(b).ok()).ok_or(fmt::Error)?;
        f.write_str(text)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Serialize, Deserialize)]
struct KeyWire([u8; 32]);

impl From<&PublicKey> for KeyWire {
    fn from(k: &PublicKey) -> Self {
        KeyWire(k.0)
    }
}

impl TryFrom<KeyWire> for PublicKey {
    type Error = KeyError;
    fn try_from(w: KeyWire) -> Result<Self, KeyError> {
        Ok(PublicKey(w.0))
    }
}

human_or_wire!(PublicKey, KeyWire, 48, "a base64 WireGuard public key");

/// Where a secret key lives. Secrets never appear in a configuration: the
/// box generates them from its entropy source and keeps them in its own
/// key store; the configuration only names the slot, written `device:NAME`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum KeyRef {
    /// A key held in the box's key store under this name.
    Device(Name),
}

/// Why a key reference was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefError {
    Scheme,
    Name(NameError),
}

impl fmt::Display for KeyRefError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRefError::Scheme => f.write_str(
                "a key reference is written \"device:NAME\" (the secret itself never goes \
                 into the configuration)",
            ),
            KeyRefError::Name(e) => write!(f, "key reference name: {e}"),
        }
    }
}

impl FromStr for KeyRef {
    type Err = KeyRefError;
    fn from_str(s: &str) -> Result<Self, KeyRefError> {
        let name = s.strip_prefix("device:").ok_or(KeyRefError::Scheme)?;
        Ok(KeyRef::Device(Name::new(name).map_err(KeyRefError::Name)?))
    }
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRef::Device(n) => write!(f, "device:{n}"),
        }
    }
}

impl fmt::Debug for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Serialize, Deserialize)]
enum KeyRefWire {
    Device(Name),
}

impl From<&KeyRef> for KeyRefWire {
    fn from(k: &KeyRef) -> Self {
        match k {
            KeyRef::Device(n) => KeyRefWire::Device(n.clone()),
        }
    }
}

impl TryFrom<KeyRefWire> for KeyRef {
    type Error = KeyRefError;
    fn try_from(w: KeyRefWire) -> Result<Self, KeyRefError> {
        match w {
            KeyRefWire::Device(n) => Ok(KeyRef::Device(n)),
        }
    }
}

human_or_wire!(KeyRef, KeyRefWire, 48, "a key reference like \"device:wg0\"");

// ---------------------------------------------------------------------------
// Endpoints

/// The host part of a peer endpoint.
// Sized for the longest DNS name on purpose: no heap in the image to box it.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// Resolved by the box (and re-resolved, for peers with dynamic addresses).
    Dns(DnsName),
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Dns(n) => fmt::Display::fmt(n, f),
            Host::V4(a) => fmt::Display::fmt(a, f),
            Host::V6(a) => fmt::Display::fmt(a, f),
        }
    }
}

/// Where a peer is reached: `host:port`, the host a DNS name, an IPv4
/// address, or an IPv6 address in brackets (`[2001:db8::1]:51820`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub host: Host,
    pub port: u16,
}

/// Why an endpoint was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointError {
    MissingPort,
    BadPort,
    BadIpv6,
    Host(DnsNameError),
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointError::MissingPort => f.write_str(
                "an endpoint is written host:port, e.g. \"vpn.example.net:51820\", \
                 \"203.0.113.7:51820\" or \"[2001:db8::7]:51820\"",
            ),
            EndpointError::BadPort => f.write_str("the endpoint port must be a number from 1 to 65535"),
            EndpointError::BadIpv6 => f.write_str("the bracketed IPv6 address is not valid"),
            EndpointError::Host(e) => write!(f, "endpoint host: {e}"),
        }
    }
}

impl FromStr for Endpoint {
    type Err = EndpointError;
    fn from_str(s: &str) -> Result<Self, EndpointError> {
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (v6, port) = rest.split_once("]:").ok_or(EndpointError::MissingPort)?;
            (Host::V6(v6.parse().map_err(|_| EndpointError::BadIpv6)?), port)
        } else {
            let (host, port) = s.rsplit_once(':').ok_or(EndpointError::MissingPort)?;
            if host.contains(':') {
                // An unbracketed IPv6 address: the port would be ambiguous.
                return Err(EndpointError::MissingPort);
            }
            let host = match host.parse::<Ipv4Addr>() {
                Ok(a) => Host::V4(a),
                Err(_) => Host::Dns(DnsName::new(host).map_err(EndpointError::Host)?),
            };
            (host, port)
        };
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(EndpointError::BadPort);
        }
        let port = port.parse::<u16>().map_err(|_| EndpointError::BadPort)?;
        if port == 0 {
            return Err(EndpointError::BadPort);
        }
        Ok(Endpoint { host, port })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::V6(a) => write!(f, "[{a}]:{}", self.port),
            h => write!(f, "{h}:{}", self.port),
        }
    }
}

#[allow(clippy::large_enum_variant)]
#[derive(Serialize, Deserialize)]
enum HostWire {
    Dns(DnsName),
    V4([u8; 4]),
    V6([u8; 16]),
}

#[derive(Serialize, Deserialize)]
struct EndpointWire {
    host: HostWire,
    port: u16,
}

impl From<&Endpoint> for EndpointWire {
    fn from(e: &Endpoint) -> Self {
        let host = match &e.host {
            Host::Dns(n) => HostWire::Dns(n.clone()),
            Host::V4(a) => HostWire::V4(a.octets()),
            Host::V6(a) => HostWire::V6(a.octets()),
        };
        EndpointWire { host, port: e.port }
    }
}

impl TryFrom<EndpointWire> for Endpoint {
    type Error = EndpointError;
    fn try_from(w: EndpointWire) -> Result<Self, EndpointError> {
        if w.port == 0 {
            return Err(EndpointError::BadPort);
        }
        let host = match w.host {
            HostWire::Dns(n) => Host::Dns(n),
            HostWire::V4(a) => Host::V4(Ipv4Addr::from(a)),
            HostWire::V6(a) => Host::V6(Ipv6Addr::from(a)),
        };
        Ok(Endpoint { host, port: w.port })
    }
}

// "[" + 39 + "]:" + 5, or a 253-byte name + ":" + 5
human_or_wire!(Endpoint, EndpointWire, 264, "an endpoint like \"vpn.example.net:51820\"");

// ---------------------------------------------------------------------------
// Small enums written as words or numbers

/// A port's address: a static `a.b.c.d/len` or `dhcp` (WAN ports only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortAddress {
    Dhcp,
    Static(Ipv4Cidr),
}

impl FromStr for PortAddress {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, CidrError> {
        if s == "dhcp" {
            return Ok(PortAddress::Dhcp);
        }
        s.parse().map(PortAddress::Static)
    }
}

impl fmt::Display for PortAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortAddress::Dhcp => f.write_str("dhcp"),
            PortAddress::Static(c) => fmt::Display::fmt(c, f),
        }
    }
}

#[derive(Serialize, Deserialize)]
enum PortAddressWire {
    Dhcp,
    Static(Ipv4Cidr),
}

impl From<&PortAddress> for PortAddressWire {
    fn from(a: &PortAddress) -> Self {
        match *a {
            PortAddress::Dhcp => PortAddressWire::Dhcp,
            PortAddress::Static(c) => PortAddressWire::Static(c),
        }
    }
}

impl TryFrom<PortAddressWire> for PortAddress {
    type Error = CidrError;
    fn try_from(w: PortAddressWire) -> Result<Self, CidrError> {
        Ok(match w {
            PortAddressWire::Dhcp => PortAddress::Dhcp,
            PortAddressWire::Static(c) => PortAddress::Static(c),
        })
    }
}

human_or_wire!(PortAddress, PortAddressWire, 24, "\"dhcp\" or an address like \"192.168.1.35/24\"");

/// The TCP MSS clamp: `"auto"` (derived from the path MTU, see
/// `crate::budget`) or a fixed value in bytes. The clamp only ever lowers an
/// MSS option, never raises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(remote = "MssClamp")]
pub enum MssClamp {
    #[default]
    Auto,
    Value(u16),
}

impl fmt::Display for MssClamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MssClamp::Auto => f.write_str("auto"),
            MssClamp::Value(v) => write!(f, "{v}"),
        }
    }
}

impl Serialize for MssClamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (s.is_human_readable(), self) {
            (true, MssClamp::Auto) => s.serialize_str("auto"),
            (true, MssClamp::Value(v)) => s.serialize_u16(*v),
            (false, _) => MssClamp::serialize(self, s),
        }
    }
}

struct MssVisitor;

impl Visitor<'_> for MssVisitor {
    type Value = MssClamp;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"auto\" or an MSS in bytes (a number like 1380)")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<MssClamp, E> {
        if v == "auto" {
            Ok(MssClamp::Auto)
        } else {
            Err(E::invalid_value(de::Unexpected::Str(v), &self))
        }
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<MssClamp, E> {
        u16::try_from(v).map(MssClamp::Value).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<MssClamp, E> {
        u16::try_from(v).map(MssClamp::Value).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }
}

impl<'de> Deserialize<'de> for MssClamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            d.deserialize_any(MssVisitor)
        } else {
            MssClamp::deserialize(d)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip<T>(v: &T) -> T
    where
        T: Serialize + for<'de> Deserialize<'de>,
    {
        let mut buf = [0xa5u8; 512];
        let bytes = postcard::to_slice(v, &mut buf).unwrap();
        postcard::from_bytes(bytes).unwrap()
    }

    #[test]
    fn names() {
        assert_eq!(Name::new("lan0").unwrap().as_str(), "lan0");
        assert_eq!(Name::new(""), Err(NameError::Empty));
        assert_eq!(Name::new("-x"), Err(NameError::BadStart { ch: '-' }));
        assert_eq!(Name::new("a b"), Err(NameError::BadChar { ch: ' ', at: 1 }));
        assert_eq!(Name::new("añ"), Err(NameError::BadChar { ch: 'ñ', at: 1 }));
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert_eq!(Name::new(&long), Err(NameError::TooLong { len: MAX_NAME_LEN + 1, max: MAX_NAME_LEN }));
        assert!(Name::new(&long[1..]).is_ok());
    }

    #[test]
    fn dns_names() {
        assert!(DnsName::new("wro.example.net").is_ok());
        assert!(DnsName::new("wro.example.net.").is_ok());
        assert!(DnsName::new("a").is_ok());
        assert_eq!(DnsName::new("a..b"), Err(DnsNameError::EmptyLabel));
        assert_eq!(DnsName::new("-a.b"), Err(DnsNameError::HyphenAtLabelEdge));
        assert_eq!(DnsName::new("300.1.2.3"), Err(DnsNameError::AllNumeric));
        assert_eq!(DnsName::new("a_b"), Err(DnsNameError::BadChar { ch: '_', at: 1 }));
        let label = "a".repeat(64);
        assert_eq!(DnsName::new(&label), Err(DnsNameError::LabelTooLong { len: 64 }));
        let long = ["a".repeat(63).as_str(); 5].join(".");
        assert_eq!(DnsName::new(&long), Err(DnsNameError::TooLong { len: 319 }));
    }

    #[test]
    fn cidrs() {
        let c: Ipv4Cidr = "10.0.0.9/24".parse().unwrap();
        assert_eq!(c.addr(), Ipv4Addr::new(10, 0, 0, 9));
        assert_eq!(c.prefix_len(), 24);
        assert_eq!(c.network(), Ipv4Addr::new(10, 0, 0, 0));
        assert_eq!(c.last(), Ipv4Addr::new(10, 0, 0, 255));
        assert!(c.has_host_bits());
        assert!(c.contains(Ipv4Addr::new(10, 0, 0, 200)));
        assert!(!c.contains(Ipv4Addr::new(10, 0, 1, 0)));
        let bare: Ipv4Cidr = "10.0.0.9".parse().unwrap();
        assert_eq!(bare.prefix_len(), 32);
        let all: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        assert_eq!(all.mask(), 0);
        assert!(all.contains(Ipv4Addr::new(1, 2, 3, 4)));
        assert!(all.covers(&c) && !c.covers(&all) && c.overlaps(&all));
        assert_eq!("10.0.0.9/33".parse::<Ipv4Cidr>(), Err(CidrError::BadLength));
        assert_eq!("10.0.0.9/+8".parse::<Ipv4Cidr>(), Err(CidrError::BadLength));
        assert_eq!("10.0.0.9/".parse::<Ipv4Cidr>(), Err(CidrError::BadLength));
        assert_eq!("10.0.0/8".parse::<Ipv4Cidr>(), Err(CidrError::BadAddress));
        assert_eq!(roundtrip(&c), c);
        // A hostile wire value with length 40 is refused, not stored.
        assert!(postcard::from_bytes::<Ipv4Cidr>(&[10, 0, 0, 9, 40]).is_err());
    }

    #[test]
    fn cidr_wire_layout() {
        let c: Ipv4Cidr = "10.0.0.9/24".parse().unwrap();
        let mut buf = [0xa5u8; 8];
        let n = postcard::to_slice(&c, &mut buf).unwrap().len();
        assert_eq!(&buf[..n], &[10, 0, 0, 9, 24]);
        assert_eq!(buf[n], 0xa5);
    }

    #[test]
    fn macs() {
        let m: Mac = "52:54:00:AB:cd:0f".parse().unwrap();
        assert_eq!(m.0, [0x52, 0x54, 0, 0xab, 0xcd, 0x0f]);
        assert_eq!(m.to_string_buf().as_str(), "52:54:00:ab:cd:0f");
        assert!("52-54-00-ab-cd-0f".parse::<Mac>().is_ok());
        assert!("52:54:00:ab:cd".parse::<Mac>().is_err());
        assert!("52:54:00:ab:cd:0f:11".parse::<Mac>().is_err());
        assert!("52:54:00:ab:cd:0".parse::<Mac>().is_err());
        assert!("52:54:00:ab:cd:+f".parse::<Mac>().is_err());
        assert_eq!(roundtrip(&m), m);
    }

    #[test]
    fn keys() {
        let text = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";
        let k: PublicKey = text.parse().unwrap();
        assert_eq!(k.to_string_buf().as_str(), text);
        assert_eq!(roundtrip(&k), k);
        assert_eq!("abc".parse::<PublicKey>(), Err(KeyError::Length { len: 3 }));
        assert_eq!("HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8yk!=".parse::<PublicKey>(), Err(KeyError::Base64));
        assert!("HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw".parse::<PublicKey>().is_err());
    }

    #[test]
    fn key_refs() {
        let r: KeyRef = "device:wg0".parse().unwrap();
        assert_eq!(r, KeyRef::Device(Name::new("wg0").unwrap()));
        assert_eq!(r.to_string_buf().as_str(), "device:wg0");
        assert_eq!("file:/etc/key".parse::<KeyRef>(), Err(KeyRefError::Scheme));
        assert_eq!("HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=".parse::<KeyRef>(), Err(KeyRefError::Scheme));
        assert_eq!("device:".parse::<KeyRef>(), Err(KeyRefError::Name(NameError::Empty)));
        assert_eq!(roundtrip(&r), r);
    }

    #[test]
    fn endpoints() {
        let e: Endpoint = "wro.example.net:51820".parse().unwrap();
        assert_eq!(e.host, Host::Dns(DnsName::new("wro.example.net").unwrap()));
        assert_eq!(e.port, 51820);
        let e4: Endpoint = "203.0.113.7:51820".parse().unwrap();
        assert_eq!(e4.host, Host::V4(Ipv4Addr::new(203, 0, 113, 7)));
        let e6: Endpoint = "[2001:db8::7]:51820".parse().unwrap();
        assert_eq!(e6.to_string_buf().as_str(), "[2001:db8::7]:51820");
        assert_eq!("wro.example.net".parse::<Endpoint>(), Err(EndpointError::MissingPort));
        assert_eq!("2001:db8::7:51820".parse::<Endpoint>(), Err(EndpointError::MissingPort));
        assert_eq!("host:0".parse::<Endpoint>(), Err(EndpointError::BadPort));
        assert_eq!("host:70000".parse::<Endpoint>(), Err(EndpointError::BadPort));
        assert_eq!("host:".parse::<Endpoint>(), Err(EndpointError::BadPort));
        assert_eq!("[zz::1]:5".parse::<Endpoint>(), Err(EndpointError::BadIpv6));
        assert_eq!("300.0.113.7:51820".parse::<Endpoint>(), Err(EndpointError::Host(DnsNameError::AllNumeric)));
        for e in [e, e4, e6] {
            assert_eq!(roundtrip(&e), e);
        }
    }

    #[test]
    fn port_address_and_mss() {
        assert_eq!("dhcp".parse::<PortAddress>(), Ok(PortAddress::Dhcp));
        assert!(matches!("192.168.1.35/24".parse::<PortAddress>(), Ok(PortAddress::Static(_))));
        assert!("DHCP".parse::<PortAddress>().is_err());
        for a in [PortAddress::Dhcp, "10.1.2.3/8".parse().unwrap()] {
            assert_eq!(roundtrip(&a), a);
        }
        for m in [MssClamp::Auto, MssClamp::Value(1330)] {
            assert_eq!(roundtrip(&m), m);
        }
    }

    trait ToBuf {
        fn to_string_buf(&self) -> heapless::String<300>;
    }
    impl<T: fmt::Display> ToBuf for T {
        fn to_string_buf(&self) -> heapless::String<300> {
            display_buf(self)
        }
    }
}
