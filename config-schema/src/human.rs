//! The human form: TOML files (host only, feature `toml`).
//!
//! `from_toml` parses a file into a `Config`; its errors name the line,
//! column and field, with the offending text. Parsing only checks each
//! value; run `validate()` afterwards for the relations between values.
//! `to_toml` writes the normalized form (defaults filled in).

use std::string::{String, ToString};

use crate::Config;

/// Largest TOML file accepted. A full configuration is far below this; the
/// bound keeps a hostile file from costing more than a moment.
pub const MAX_TOML_LEN: usize = 1024 * 1024;

/// Why a TOML file could not be read as a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TomlError {
    /// 1-based line and column of the offending text, when known.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// What is wrong, without position.
    pub message: String,
    /// The full report with the source line and a marker under the value.
    pub report: String,
}

impl std::fmt::Display for TomlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.report.trim_end())
    }
}

impl std::error::Error for TomlError {}

fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Parses a configuration file.
pub fn from_toml(text: &str) -> Result<Config, TomlError> {
    if text.len() > MAX_TOML_LEN {
        let message = std::format!("the file is {} bytes; a configuration file is at most {MAX_TOML_LEN} bytes", text.len());
        return Err(TomlError { line: None, column: None, report: message.clone(), message });
    }
    let de = toml::Deserializer::parse(text).map_err(|e| toml_error(text, &e, None))?;
    serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| {
        let path = e.path().to_string();
        // The root path "." says nothing; a missing field is already named.
        let path = (path != "." && !path.is_empty()).then_some(path);
        toml_error(text, e.inner(), path.as_deref())
    })
}

/// The values a numeric field accepts, for the fields whose range is
/// narrower than their type's (the same bounds `validate` checks).
fn field_range(field: &str) -> Option<(u64, u64)> {
    use crate::validate::{CONFLICT_HOLD_MIN, GRATUITOUS_ARP_MAX, MSS_MAX, MSS_MIN, MTU_MAX, MTU_MIN, VNI_MAX};
    Some(match field {
        "mtu" => (MTU_MIN.into(), MTU_MAX.into()),
        "listen_port" | "udp_port" | "persistent_keepalive" => (1, u16::MAX.into()),
        "vni" => (1, VNI_MAX.into()),
        "gratuitous_arp" => (0, GRATUITOUS_ARP_MAX.into()),
        "conflict_hold" => (CONFLICT_HOLD_MIN.into(), u16::MAX.into()),
        "mss_clamp" => (MSS_MIN.into(), MSS_MAX.into()),
        _ => return None,
    })
}

/// serde's "invalid value: integer `70000`, expected u16" in the operator's
/// words: the value, and the range the field at `path` accepts.
fn out_of_range(message: &str, path: Option<&str>) -> Option<String> {
    let (value, ty) = message.strip_prefix("invalid value: integer `")?.split_once("`, expected ")?;
    let type_range: (u64, u64) = match ty.trim() {
        "u8" => (0, u8::MAX.into()),
        "u16" => (0, u16::MAX.into()),
        "u32" => (0, u32::MAX.into()),
        "u64" => (0, u64::MAX),
        _ => return None,
    };
    // `segments[0].mtu` → `mtu`.
    let field = path.and_then(|p| p.rsplit('.').next()).map(|f| f.split('[').next().unwrap_or(f));
    let (lo, hi) = field.and_then(field_range).unwrap_or(type_range);
    Some(std::format!("{value} is out of range: give a whole number from {lo} to {hi}"))
}

fn toml_error(text: &str, e: &toml::de::Error, path: Option<&str>) -> TomlError {
    let (line, column) = match e.span() {
        Some(span) => {
            let (l, c) = position(text, span.start);
            (Some(l), Some(c))
        }
        None => (None, None),
    };
    let serde_says = e.message().trim_end();
    let said = out_of_range(serde_says, path);
    let what = said.as_deref().unwrap_or(serde_says);
    let message = match path {
        Some(p) => std::format!("{p}: {what}"),
        None => what.to_string(),
    };
    let full = e.to_string().replace(serde_says, what);
    let report = match path {
        Some(p) => std::format!("{}\nfield: {p}", full.trim_end()),
        None => full,
    };
    TomlError { line, column, message, report }
}

/// Writes the normalized TOML form of a configuration.
pub fn to_toml(config: &Config) -> Result<String, toml::ser::Error> {
    // Drop empty lists (`segments = []`, `[dns] servers = []`) and the
    // sections they leave empty (`[dns]`): absent means empty.
    let empty_list = |v: &toml::Value| matches!(v, toml::Value::Array(a) if a.is_empty());
    let mut table = toml::Table::try_from(config)?;
    for (_, v) in table.iter_mut() {
        if let toml::Value::Table(section) = v {
            section.retain(|_, v| !empty_list(v));
        }
    }
    table.retain(|_, v| !empty_list(v) && !matches!(v, toml::Value::Table(t) if t.is_empty()));
    toml::to_string_pretty(&table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use std::format;

    #[test]
    fn every_example_round_trips_through_toml() {
        for (name, text) in EXAMPLES {
            let c = from_toml(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            let again = to_toml(&c).unwrap();
            assert_eq!(from_toml(&again).unwrap(), c, "{name}:\n{again}");
            // Field order is kept (name first), empty lists are left out.
            assert!(again.contains("[device]\nname = "), "{again}");
            assert!(!again.contains("= []"), "{again}");
        }
        let max = maximal_config();
        let text = to_toml(&max).unwrap();
        assert_eq!(from_toml(&text).unwrap(), max);
    }

    #[test]
    fn random_configs_round_trip_through_toml() {
        for seed in 0..200u64 {
            let c = random_config(seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
            let text = to_toml(&c).unwrap();
            assert_eq!(from_toml(&text).unwrap(), c, "seed {seed}:\n{text}");
        }
    }

    fn err(text: &str) -> TomlError {
        from_toml(text).expect_err("should fail")
    }

    const HEAD: &str = "[device]\nname = \"b\"\nside = \"onprem\"\n";

    #[test]
    fn wrong_types_name_line_and_field() {
        let e = err(&format!("{HEAD}[[ports]]\nname = \"lan0\"\nrole = \"lan\"\nmtu = \"big\"\n"));
        assert_eq!(e.line, Some(7), "{e}");
        assert!(e.message.starts_with("ports[0].mtu: "), "{e}");
        let e = err(&format!("{HEAD}[[ports]]\nname = \"lan0\"\nrole = \"router\"\n"));
        assert_eq!(e.line, Some(6), "{e}");
        assert!(e.message.contains("lan") && e.message.contains("wan"), "{e}");
        let e = err(&format!("{HEAD}[[ports]]\nname = 7\nrole = \"lan\"\n"));
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.message.starts_with("ports[0].name: "), "{e}");
    }

    #[test]
    fn bad_values_say_what_is_expected() {
        let e = err(&format!("{HEAD}[[ports]]\nname = \"lan 0\"\nrole = \"lan\"\n"));
        assert!(e.message.contains("' '") || e.message.contains("\" \""), "{e}");
        let e = err(&format!(
            "{HEAD}[[claims]]\naddress = \"10.0.0.300\"\nowner = \"cloud\"\n\
             capture = {{ method = \"proxy-arp\", port = \"lan0\" }}\n\
             delivery = {{ tunnel = \"wg0\", peer = \"cloud\" }}\n"
        ));
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.message.contains("10.0.0.9/32"), "{e}");
        let e = err(&format!(
            "{HEAD}[[claims]]\naddress = \"10.0.0.3\"\nowner = \"cloud\"\n\
             capture = {{ method = \"arp\", port = \"lan0\" }}\n\
             delivery = {{ tunnel = \"wg0\", peer = \"cloud\" }}\n"
        ));
        assert!(e.message.contains("proxy-arp") && e.message.contains("provider-secondary-ip"), "{e}");
        let e = err(&format!("{HEAD}[[wireguard]]\nname = \"wg0\"\nprivate_key = \"yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\"\n"));
        assert!(e.message.contains("device:NAME"), "{e}");
    }

    /// Was "invalid value: integer `70000`, expected u16".
    #[test]
    fn out_of_range_numbers_name_the_field_and_its_range() {
        let tunnel = |v: &str| format!("{HEAD}[[wireguard]]\nname = \"wg0\"\nprivate_key = \"device:wg0\"\nlisten_port = {v}\n");
        let e = err(&tunnel("70000"));
        assert_eq!(e.line, Some(7), "{e}");
        assert_eq!(e.message, "wireguard[0].listen_port: 70000 is out of range: give a whole number from 1 to 65535");
        assert!(e.report.contains("70000 is out of range") && !e.report.contains("expected u16"), "{}", e.report);
        let e = err(&tunnel("-1"));
        assert!(e.message.ends_with("-1 is out of range: give a whole number from 1 to 65535"), "{e}");
        // A field with a narrower range than its type says that range.
        let e = err(&format!("{HEAD}[[ports]]\nname = \"lan0\"\nrole = \"lan\"\nmtu = 100000\n"));
        assert_eq!(e.message, "ports[0].mtu: 100000 is out of range: give a whole number from 576 to 9216");
        let e = err(&format!(
            "{HEAD}[[segments]]\nname = \"s\"\nvni = 99999999999\nport = \"lan1\"\nlocal_vtep = \"10.0.0.1\"\nremote_vteps = []\n"
        ));
        assert!(e.message.starts_with("segments[0].vni: 99999999999 is out of range: give a whole number from 1 to 16777215"), "{e}");
        // Wrong types keep serde's words.
        let e = err(&tunnel("\"51820\""));
        assert!(e.message.contains("invalid type"), "{e}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = err(&format!("{HEAD}[[ports]]\nname = \"lan0\"\nrole = \"lan\"\nmut = 1500\n"));
        assert_eq!(e.line, Some(7), "{e}");
        assert!(e.message.contains("mut"), "{e}");
    }

    #[test]
    fn dns_section_is_optional_and_checked_as_read() {
        let c = from_toml(HEAD).unwrap();
        assert!(c.dns.servers.is_empty());
        assert!(!to_toml(&c).unwrap().contains("dns"), "an empty [dns] is left out");
        let c = from_toml(&format!("{HEAD}[dns]\nservers = [\"192.168.1.1\", \"9.9.9.9\"]\n")).unwrap();
        assert_eq!(c.dns.servers.as_slice(), &[core::net::Ipv4Addr::new(192, 168, 1, 1), core::net::Ipv4Addr::new(9, 9, 9, 9)]);
        assert_eq!(from_toml(&to_toml(&c).unwrap()).unwrap(), c);
        let e = err(&format!("{HEAD}[dns]\nserver = [\"9.9.9.9\"]\n"));
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.message.contains("server"), "{e}");
        let e = err(&format!("{HEAD}[dns]\nservers = [\"1.1.1.1\", \"8.8.8.8\", \"9.9.9.9\", \"1.0.0.1\"]\n"));
        assert!(e.message.starts_with("dns.servers: ") && e.message.contains("at most 3"), "{e}");
        let e = err(&format!("{HEAD}[dns]\nservers = [\"dns.example.net\"]\n"));
        assert!(e.message.starts_with("dns.servers[0]: "), "{e}");
    }

    #[test]
    fn missing_fields_are_named() {
        let e = err("[device]\nname = \"b\"\n");
        assert!(e.message.contains("side"), "{e}");
    }

    #[test]
    fn huge_strings_are_refused_clearly() {
        let long = "x".repeat(100_000);
        let e = err(&format!("[device]\nname = \"{long}\"\nside = \"a\"\n"));
        assert!(e.message.contains("at most 24"), "{}", e.message);
        assert_eq!(e.line, Some(2));
        let e = err(&format!(
            "{HEAD}[[wireguard]]\nname = \"wg0\"\nprivate_key = \"device:wg0\"\n\
             [[peers]]\nname = \"p\"\ntunnel = \"wg0\"\n\
             public_key = \"HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=\"\nendpoint = \"{}.net:1\"\n",
            "a.".repeat(200)
        ));
        assert!(e.message.contains("253"), "{}", e.message);
    }

    #[test]
    fn too_many_entries_are_refused_clearly() {
        let mut text = std::string::String::from(HEAD);
        for i in 0..=crate::limits::MAX_PORTS {
            text.push_str(&format!("[[ports]]\nname = \"lan{i}\"\nrole = \"lan\"\n"));
        }
        let e = err(&text);
        assert!(e.message.contains("at most 8"), "{e}");
        let ips: std::vec::Vec<std::string::String> = (0..=crate::limits::MAX_ALLOWED_IPS).map(|i| format!("\"10.0.{i}.0/24\"")).collect();
        let e = err(&format!(
            "{HEAD}[[peers]]\nname = \"p\"\ntunnel = \"wg0\"\n\
             public_key = \"HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=\"\nallowed_ips = [{}]\n",
            ips.join(", ")
        ));
        assert!(e.message.contains("at most 16"), "{e}");
        assert!(e.message.starts_with("peers[0].allowed_ips: "), "{e}");
        assert_eq!(e.line, Some(8));
    }

    #[test]
    fn oversized_files_and_garbage_never_panic() {
        let e = err(&"#".repeat(MAX_TOML_LEN + 1));
        assert!(e.message.contains("at most"));
        for junk in [
            "",
            "\0",
            "[[[",
            "device = 5",
            "[device]\nname = \"a\"\nside = \"b\"\n[device]\n",
            "a = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
            "x = { y = { z = { w = 1 } } }",
            "\u{feff}[device]",
            "[ports]\nname=1",
            "mtu = 99999999999999999999999",
        ] {
            let _ = from_toml(junk);
        }
        let deep = format!("x = {}{}", "[".repeat(10_000), "]".repeat(10_000));
        let _ = from_toml(&deep);
        let deep = format!("x = {}1{}", "{a=".repeat(10_000), "}".repeat(10_000));
        let _ = from_toml(&deep);
    }

    #[test]
    fn values_out_of_range_for_their_type() {
        let e = err(&format!("{HEAD}[[ports]]\nname = \"lan0\"\nrole = \"lan\"\nmtu = 70000\n"));
        assert_eq!(e.line, Some(7), "{e}");
        let e = err(&format!("{HEAD}[[ports]]\nname = \"lan0\"\nrole = \"lan\"\nmtu = -1\n"));
        assert_eq!(e.line, Some(7), "{e}");
    }
}
