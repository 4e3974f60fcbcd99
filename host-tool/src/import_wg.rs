//! `config import-wg`: a wg-quick `.conf` file becomes a routerd
//! configuration.
//!
//! The file is read as wg(8) and wg-quick(8) read it: a UTF-8 BOM is
//! skipped, `#` starts a comment anywhere on a line, keys are
//! case-insensitive, `PersistentKeepalive = 0` (or `off`) means off.
//! `[Interface]` becomes a `[[wireguard]]` section and every `[Peer]` a
//! `[[peers]]` section. The private key is *not* copied: the box makes its
//! own key in the slot `device:NAME` (the file's key can be imported on
//! purpose with `routerctl key import`); a preshared key becomes a slot to
//! import. What routerd cannot express (IPv6, DNS, PostUp scripts, Table,
//! FwMark) is listed as a note instead of being dropped silently.
//!
//! Peers are named from a `# Name = roz` (or `# Name: roz`) comment, the
//! convention of wg-quick users and wireguard-ui, inside the `[Peer]`
//! section or in the comment block directly above it; else from a comment
//! above `[Peer]` that is a name by itself (`# roz`); else `peer1`, `peer2`,
//! …. Prose comments are never names.
//!
//! The result is a whole configuration: `[device]` and a DHCP `wan0` are
//! written with valid placeholders, marked `FILL IN`, and listed in
//! [`Imported::fill_in`]; what the wg-quick file said makes a file that
//! `routerctl config validate` accepts as it is.

use std::fmt::Write;
use std::str::FromStr;

use config_schema::{Endpoint, Ipv4Cidr, Name, PublicKey};

/// The configuration and what the operator must know about it.
#[derive(Debug, Default)]
pub struct Imported {
    /// The whole configuration, with the placeholders marked `FILL IN`.
    pub toml: String,
    /// Only the `[[wireguard]]` and `[[peers]]` sections (to append to a
    /// file that has its `[device]` and ports).
    pub sections: String,
    /// What the wg-quick file cannot say: `(path, what to put there)`.
    pub fill_in: Vec<(&'static str, &'static str)>,
    /// What was skipped or changed, each naming its line.
    pub notes: Vec<String>,
    pub had_private_key: bool,
}

/// The placeholders of the skeleton and what to put there.
const FILL_IN: [(&str, &str); 3] = [
    ("device.name", "this box's name (shown by status, logs and doctor)"),
    ("device.side", "this box's side (onprem, cloud or a site name; claims' owner is compared with it)"),
    ("ports", "the box's ports: wan0 takes its address by DHCP here; give it a static address and gateway instead if it has them, and add the LAN ports you use"),
];

#[derive(Default)]
struct Peer {
    /// From `# Name = …` inside the section (wins), and from the comments above `[Peer]`.
    named: Option<String>,
    above: Option<String>,
    line: usize,
    public_key: Option<String>,
    endpoint: Option<String>,
    allowed: Vec<String>,
    keepalive: Option<u16>,
    psk: bool,
}

/// `Name = roz`, `Name: roz` (any case): the name.
fn name_comment(comment: &str) -> Option<&str> {
    let c = comment.trim();
    let rest = c.get(..4).filter(|k| k.eq_ignore_ascii_case("name")).map(|_| &c[4..])?;
    let rest = rest.trim_start();
    let value = rest.strip_prefix('=').or_else(|| rest.strip_prefix(':'))?.trim();
    (!value.is_empty()).then_some(value)
}

/// A name the configuration accepts, made from a `# Name =` value: other
/// characters become `-`, cut to the length a name may have.
fn as_name(value: &str) -> Option<String> {
    let mut s: String = value.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '-' }).collect();
    s = s.trim_start_matches(|c: char| !c.is_ascii_alphanumeric()).to_string();
    s.truncate(config_schema::limits::MAX_NAME_LEN);
    Name::new(&s).ok().map(|_| s)
}

/// `name`, or `name-2`, `name-3`, … when taken.
fn unique(name: &str, taken: &[String]) -> String {
    if !taken.iter().any(|t| t == name) {
        return name.to_string();
    }
    (2..)
        .map(|n| {
            let suffix = format!("-{n}");
            let mut base = name.to_string();
            base.truncate(config_schema::limits::MAX_NAME_LEN - suffix.len());
            base + &suffix
        })
        .find(|c| !taken.iter().any(|t| t == c))
        .unwrap_or_default()
}

/// Converts wg-quick text; `tunnel` names the interface (the file's stem).
/// Errors name the line.
pub fn import(text: &str, tunnel: &str) -> Result<Imported, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Imported::default();
    let mut section = "";
    // Comments since the last key or section line: the block above the next `[Peer]`.
    let mut block: Vec<String> = Vec::new();
    let (mut listen_port, mut mtu, mut address): (Option<u16>, Option<u16>, Option<String>) = (None, None, None);
    let mut peers: Vec<Peer> = Vec::new();
    let mut interfaces = 0;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let (content, comment) = match raw.split_once('#') {
            Some((c, comment)) => (c.trim(), Some(comment)),
            None => (raw.trim(), None),
        };
        if content.is_empty() {
            if let Some(c) = comment.map(str::trim).filter(|c| !c.is_empty()) {
                block.push(c.to_string());
            }
            continue;
        }
        if content.eq_ignore_ascii_case("[interface]") {
            section = "interface";
            interfaces += 1;
            block.clear();
            continue;
        }
        if content.eq_ignore_ascii_case("[peer]") {
            section = "peer";
            let above = block.iter().find_map(|c| name_comment(c)).map(str::to_string).or_else(|| match block.as_slice() {
                // A comment that is a name by itself; prose is not.
                [only] if Name::new(only).is_ok() => Some(only.clone()),
                _ => None,
            });
            peers.push(Peer { above, line: line_no, ..Peer::default() });
            block.clear();
            continue;
        }
        if content.starts_with('[') {
            return Err(format!("line {line_no}: unknown section {content} (wg-quick has [Interface] and [Peer])"));
        }
        // `# Name = …` lines inside a [Peer], before this key, name it.
        if section == "peer" {
            if let (Some(p), Some(n)) = (peers.last_mut(), block.iter().find_map(|c| name_comment(c))) {
                p.named.get_or_insert_with(|| n.to_string());
            }
        }
        block.clear();
        let Some((key, value)) = content.split_once('=') else {
            return Err(format!("line {line_no}: expected `Key = Value`, found {content:?}"));
        };
        let (key, value) = (key.trim(), value.trim());
        let bad = |what: &str| format!("line {line_no}: {key} = {value}: {what}");
        match (section, key.to_ascii_lowercase().as_str()) {
            ("interface", "privatekey") => out.had_private_key = true,
            ("interface", "listenport") => match value.parse::<u16>().map_err(|_| bad("not a port number (1 to 65535)"))? {
                0 => out.notes.push(format!("line {line_no}: ListenPort = 0 (any port) became routerd's default, 51820")),
                p => listen_port = Some(p),
            },
            ("interface", "mtu") => mtu = Some(value.parse().map_err(|_| bad("not a number"))?),
            ("interface", "address") => {
                for a in value.split(',').map(str::trim).filter(|a| !a.is_empty()) {
                    if a.contains(':') {
                        out.notes.push(format!("line {line_no}: IPv6 address {a} skipped (routerd's dataplane is IPv4)"));
                    } else if address.is_none() {
                        Ipv4Cidr::from_str(a).map_err(|e| bad(&format!("{a}: {e}")))?;
                        address = Some(a.to_string());
                    } else {
                        out.notes.push(format!("line {line_no}: extra address {a} skipped (one tunnel address)"));
                    }
                }
            }
            ("interface", k) => out.notes.push(format!("line {line_no}: {k} has no routerd equivalent; skipped")),
            ("peer", k) => {
                let Some(p) = peers.last_mut() else { return Err(bad("outside a [Peer]")) };
                match k {
                    "publickey" => {
                        PublicKey::from_str(value).map_err(|e| bad(&format!("not a WireGuard public key: {e}")))?;
                        p.public_key = Some(value.to_string());
                    }
                    "endpoint" => {
                        Endpoint::from_str(value).map_err(|e| bad(&format!("not host:port: {e}")))?;
                        p.endpoint = Some(value.to_string());
                    }
                    "allowedips" => {
                        for a in value.split(',').map(str::trim).filter(|a| !a.is_empty()) {
                            if a.contains(':') {
                                out.notes.push(format!("line {line_no}: IPv6 allowed IP {a} skipped (IPv4 only)"));
                            } else {
                                Ipv4Cidr::from_str(a).map_err(|e| bad(&format!("{a}: {e}")))?;
                                p.allowed.push(a.to_string());
                            }
                        }
                    }
                    "persistentkeepalive" => {
                        // wg(8): "off" or 0 turns it off; routerd writes off by leaving it out.
                        p.keepalive = match value {
                            "off" => None,
                            v => Some(v.parse::<u16>().map_err(|_| bad("not a number of seconds (0 to 65535) or off"))?).filter(|&k| k > 0),
                        };
                    }
                    "presharedkey" => p.psk = true,
                    other => out.notes.push(format!("line {line_no}: {other} has no routerd equivalent; skipped")),
                }
            }
            _ => return Err(bad("before any [Interface] or [Peer] section")),
        }
    }
    // A `# Name =` after the last key of the last [Peer] can only be its own.
    if let (Some(p), Some(n)) = (peers.last_mut(), block.iter().find_map(|c| name_comment(c))) {
        p.named.get_or_insert_with(|| n.to_string());
    }
    if interfaces != 1 {
        return Err(format!("expected one [Interface] section, found {interfaces}"));
    }

    let t = &mut out.sections;
    let _ = writeln!(t, "[[wireguard]]\nname = \"{tunnel}\"");
    if let Some(p) = listen_port {
        let _ = writeln!(t, "listen_port = {p}");
    }
    if let Some(m) = mtu {
        let _ = writeln!(t, "mtu = {m}");
    }
    if let Some(a) = &address {
        let _ = writeln!(t, "address = \"{a}\"");
    }
    let _ = writeln!(t, "private_key = \"device:{tunnel}\"   # made on the box: `routerctl key show` prints the public key for the peers");
    let mut names: Vec<String> = Vec::new();
    // Key slots in use: the tunnel's private key, then each preshared key.
    let mut slots: Vec<String> = vec![tunnel.to_string()];
    for (i, p) in peers.iter().enumerate() {
        let fallback = format!("peer{}", i + 1);
        let wanted = p.named.as_ref().or(p.above.as_ref());
        let name = match wanted.map(|w| (w, as_name(w))) {
            Some((w, Some(n))) => {
                if n != *w {
                    out.notes.push(format!("line {}: peer name {w:?} became {n} (a name is letters, digits, - _ .)", p.line));
                }
                n
            }
            Some((w, None)) => {
                out.notes.push(format!("line {}: peer name {w:?} cannot be a name; called it {fallback}", p.line));
                fallback
            }
            None => fallback,
        };
        let name = unique(&name, &names);
        names.push(name.clone());
        let Some(key) = &p.public_key else {
            return Err(format!("line {}: [Peer] {} has no PublicKey", p.line, i + 1));
        };
        let _ = writeln!(t, "\n[[peers]]\nname = \"{name}\"\ntunnel = \"{tunnel}\"\npublic_key = \"{key}\"");
        if let Some(e) = &p.endpoint {
            let _ = writeln!(t, "endpoint = \"{e}\"");
        }
        let list: Vec<String> = p.allowed.iter().map(|a| format!("\"{a}\"")).collect();
        let _ = writeln!(t, "allowed_ips = [{}]", list.join(", "));
        if let Some(k) = p.keepalive {
            let _ = writeln!(t, "persistent_keepalive = {k}");
        }
        if p.psk {
            let mut base = name.clone();
            base.truncate(config_schema::limits::MAX_NAME_LEN - "-psk".len());
            let slot = unique(&format!("{base}-psk"), &slots);
            slots.push(slot.clone());
            let _ =
                writeln!(t, "preshared_key = \"device:{slot}\"   # before apply: routerctl key psk import {slot} --from-file FILE --yes");
            out.notes.push(format!(
                "peer {name}: the preshared key is not copied into the file; put this [Peer]'s PresharedKey in a file and \
                 `routerctl key psk import {slot} --from-file FILE --yes --port …` before you apply (else the box makes a \
                 new one the peer does not have)"
            ));
        }
    }

    out.fill_in = FILL_IN.to_vec();
    let t = &mut out.toml;
    let _ = writeln!(t, "# Fill in what a wg-quick file does not say, marked FILL IN below:");
    for (path, what) in FILL_IN {
        let _ = writeln!(t, "#   {path}: {what}");
    }
    let _ = writeln!(t, "# then check the file with `routerctl config validate FILE`.");
    let _ = writeln!(
        t,
        "\n[device]\nname = \"fill-in-name\"   # FILL IN: this box's name\nside = \"fill-in-side\"   # FILL IN: onprem, cloud or a site name"
    );
    let _ = writeln!(
        t,
        "\n# FILL IN: the box's ports (the first NIC is lan0, the second wan0, unless `mac` names one)\n\
         [[ports]]\nname = \"wan0\"\nrole = \"wan\"\naddress = \"dhcp\"   # FILL IN: or \"a.b.c.d/len\" and gateway = \"a.b.c.d\"\n\
         \n# A LAN port, if the box has one:\n# [[ports]]\n# name = \"lan0\"\n# role = \"lan\"\n# address = \"192.168.10.2/24\"\n"
    );
    t.push_str(&out.sections);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use config_schema::{human, validate_for, Config, Platform};

    const CONF: &str = "\
[Interface]
PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=
Address = 10.99.0.1/30, fd00::1/64
ListenPort = 51820
MTU = 1420
DNS = 1.1.1.1
PostUp = iptables -A FORWARD -i %i -j ACCEPT

# cloud
[Peer]
PublicKey = ca67+D0dVOzK/Bjvjlowc7W4uQ/zJ1jT9fh1LNCS51w=
Endpoint = 203.0.113.10:51820
AllowedIPs = 10.99.0.2/32, 10.20.0.50/32, ::/0
PersistentKeepalive = 25

[Peer]
PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=
AllowedIPs = 10.30.0.0/24
";

    /// The whole output parses, and validates on both platforms.
    fn config_of(got: &Imported) -> Config {
        let cfg = human::from_toml(&got.toml).unwrap_or_else(|e| panic!("{}\n{}", e.report, got.toml));
        for platform in Platform::ALL {
            let r = validate_for(&cfg, platform);
            assert!(r.is_valid(), "{platform}: {:?}\n{}", r.problems, got.toml);
        }
        cfg
    }

    #[test]
    fn converts_interface_and_peers_and_lists_what_it_skipped() {
        let got = import(CONF, "wg0").unwrap();
        assert!(got.had_private_key);
        let cfg = config_of(&got);
        assert_eq!(cfg.wireguard[0].mtu, 1420);
        assert_eq!(cfg.peers.len(), 2);
        assert_eq!(cfg.peers[0].name.as_str(), "cloud");
        assert_eq!(cfg.peers[0].allowed_ips.len(), 2);
        assert_eq!(cfg.peers[0].persistent_keepalive, Some(25));
        assert_eq!(cfg.peers[1].name.as_str(), "peer2");
        assert!(!got.toml.contains("yAnz5TF"), "the private key must not be copied");
        for skipped in ["fd00::1/64", "::/0", "dns", "postup"] {
            assert!(got.notes.iter().any(|n| n.contains(skipped)), "{skipped} not noted: {:?}", got.notes);
        }
        // The sections alone still append to a file that has [device] and ports.
        let full = format!(
            "[device]\nname = \"x\"\nside = \"onprem\"\n[[ports]]\nname = \"wan0\"\nrole = \"wan\"\naddress = \"dhcp\"\n{}",
            got.sections
        );
        assert_eq!(human::from_toml(&full).unwrap().peers, cfg.peers);
    }

    #[test]
    fn a_preshared_key_becomes_a_slot_and_is_not_copied() {
        let conf = CONF.replace(
            "PersistentKeepalive = 25\n",
            "PersistentKeepalive = 25\nPresharedKey = FpCyhws9cxwWoV4xELtfJvjJN+zQVRPISllRWgeopVE=\n",
        );
        let got = import(&conf, "wg0").unwrap();
        assert!(!got.toml.contains("FpCyhws9"), "the preshared key must not be copied");
        assert!(got.notes.iter().any(|n| n.contains("routerctl key psk import cloud-psk --from-file")), "{:?}", got.notes);
        // Both platforms run it: config_of validates.
        let cfg = config_of(&got);
        assert_eq!(cfg.peers[0].preshared_key, Some("device:cloud-psk".parse().unwrap()));
        assert_eq!(cfg.peers[1].preshared_key, None);
    }

    #[test]
    fn errors_name_the_line() {
        let e = import("[Interface]\nListenPort = lots\n", "wg0").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
        let e = import("[Interface]\n[Peer]\nPublicKey = nope\n", "wg0").unwrap_err();
        assert!(e.contains("line 3") && e.contains("public key"), "{e}");
        assert!(import("[Peer]\n", "wg0").unwrap_err().contains("[Interface]"));
        let e = import("[Interface]\nAddress = 10.0.0.1/40\n", "wg0").unwrap_err();
        assert!(e.contains("line 2") && e.contains("prefix length"), "{e}");
    }

    /// A prose comment above [Peer] was the peer's name: invalid, exit 0.
    #[test]
    fn a_prose_comment_above_a_peer_is_not_its_name() {
        let conf = CONF.replace("# cloud\n", "# This is the cloud peer, see ticket #123\n");
        let got = import(&conf, "wg0").unwrap();
        let cfg = config_of(&got);
        assert_eq!(cfg.peers[0].name.as_str(), "peer1");
        assert!(!got.toml.contains("ticket"), "{}", got.toml);
    }

    /// `Key = Value # comment` is valid wg-quick: was "BadLength".
    #[test]
    fn inline_comments_are_comments() {
        let conf = CONF
            .replace("ListenPort = 51820\n", "ListenPort = 51820 # the port the cloud dials\n")
            .replace("Address = 10.99.0.1/30, fd00::1/64\n", "Address = 10.99.0.1/30#tunnel\n")
            .replace("AllowedIPs = 10.30.0.0/24\n", "AllowedIPs = 10.30.0.0/24   # the lab\n")
            .replace("[Peer]\nPublicKey = ca67", "[Peer] # the cloud\nPublicKey = ca67");
        let got = import(&conf, "wg0").unwrap_or_else(|e| panic!("{e}"));
        let cfg = config_of(&got);
        assert_eq!(cfg.wireguard[0].listen_port, 51820);
        assert_eq!(cfg.wireguard[0].address, Some("10.99.0.1/30".parse().unwrap()));
        assert_eq!(cfg.peers[1].allowed_ips.as_slice(), &["10.30.0.0/24".parse().unwrap()]);
    }

    /// Windows editors write a byte-order mark: was "expected `Key = Value`".
    #[test]
    fn a_byte_order_mark_is_skipped() {
        let got = import(&format!("\u{feff}{CONF}"), "wg0").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config_of(&got).peers.len(), 2);
    }

    /// wg(8): 0 is off. Was `persistent_keepalive = 0`, which validate refuses.
    #[test]
    fn persistent_keepalive_0_is_off() {
        for off in ["0", "off"] {
            let got = import(&CONF.replace("PersistentKeepalive = 25", &format!("PersistentKeepalive = {off}")), "wg0").unwrap();
            assert!(!got.toml.contains("persistent_keepalive"), "{}", got.toml);
            assert_eq!(config_of(&got).peers[0].persistent_keepalive, None);
        }
        assert!(import(&CONF.replace("PersistentKeepalive = 25", "PersistentKeepalive = 70000"), "wg0").is_err());
    }

    /// `# Name = roz` after `[Peer]` (wg-quick users, wireguard-ui) was lost.
    #[test]
    fn a_name_comment_in_or_above_a_peer_names_it() {
        let conf = CONF
            .replace("# cloud\n[Peer]\n", "# The cloud box, see ticket #123\n[Peer]\n# Name = roz\n")
            .replace("[Peer]\nPublicKey = xTIB", "# ID: 42\n# Name: wro office\n# Email: ops@example.net\n[Peer]\nPublicKey = xTIB");
        let got = import(&conf, "wg0").unwrap();
        let cfg = config_of(&got);
        assert_eq!(cfg.peers[0].name.as_str(), "roz");
        // wireguard-ui's block above [Peer]; the space cannot be in a name.
        assert_eq!(cfg.peers[1].name.as_str(), "wro-office");
        assert!(got.notes.iter().any(|n| n.contains("\"wro office\" became wro-office")), "{:?}", got.notes);
        // The same name twice stays two peers.
        let twice = conf.replace("# Name: wro office", "# Name: roz");
        let cfg = config_of(&import(&twice, "wg0").unwrap());
        assert_eq!((cfg.peers[0].name.as_str(), cfg.peers[1].name.as_str()), ("roz", "roz-2"));
        // A name after the last key of a peer names it (nothing follows).
        let late = "[Interface]\n[Peer]\nPublicKey = ca67+D0dVOzK/Bjvjlowc7W4uQ/zJ1jT9fh1LNCS51w=\n# Name = late\n";
        assert_eq!(config_of(&import(late, "wg0").unwrap()).peers[0].name.as_str(), "late");
    }

    /// The output is a whole configuration; what to fill in is marked and listed.
    #[test]
    fn the_output_is_a_whole_configuration_with_what_to_fill_in_marked() {
        let got = import(CONF, "wg0").unwrap();
        let cfg = config_of(&got);
        assert_eq!(cfg.device.name.as_str(), "fill-in-name");
        assert_eq!(cfg.ports.len(), 1);
        let paths: Vec<&str> = got.fill_in.iter().map(|(p, _)| *p).collect();
        assert_eq!(paths, ["device.name", "device.side", "ports"]);
        for (path, _) in &got.fill_in {
            assert!(got.toml.contains(&format!("#   {path}: ")), "{path} not explained:\n{}", got.toml);
        }
        assert_eq!(got.toml.matches("FILL IN").count(), 5, "{}", got.toml);
    }
}
