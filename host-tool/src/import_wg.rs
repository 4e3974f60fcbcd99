//! `config import-wg`: a wg-quick `.conf` file becomes our TOML.
//!
//! `[Interface]` becomes a `[[wireguard]]` section and every `[Peer]` a
//! `[[peers]]` section. The private key is *not* copied: the box makes its
//! own key in the slot `device:NAME` (the file's key can be imported on
//! purpose with `routerctl key import`). What routerd cannot express
//! (IPv6 allowed IPs, DNS, PostUp scripts, Table, FwMark) is listed as a
//! note instead of being dropped silently. Peers are named from a comment
//! directly above `[Peer]` (`# cloud`), else `peer1`, `peer2`, ….

use std::fmt::Write;
use std::str::FromStr;

use config_schema::{Endpoint, Ipv4Cidr, PublicKey};

/// The TOML sections and the notes for the operator.
#[derive(Debug, Default)]
pub struct Imported {
    pub toml: String,
    pub notes: Vec<String>,
    pub had_private_key: bool,
}

#[derive(Default)]
struct Peer {
    name: Option<String>,
    public_key: Option<String>,
    endpoint: Option<String>,
    allowed: Vec<String>,
    keepalive: Option<u16>,
    psk: bool,
}

/// Converts wg-quick text; `tunnel` names the interface (the file's stem).
/// Errors name the line.
pub fn import(text: &str, tunnel: &str) -> Result<Imported, String> {
    let mut out = Imported::default();
    let mut section = "";
    let mut last_comment: Option<String> = None;
    let (mut listen_port, mut mtu, mut address): (Option<u16>, Option<u16>, Option<String>) = (None, None, None);
    let mut peers: Vec<Peer> = Vec::new();
    let mut interfaces = 0;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            let c = c.trim();
            // `# Name = cloud` or `# cloud`
            let c = c.strip_prefix("Name").map(|r| r.trim_start_matches([' ', '=', ':']).trim()).unwrap_or(c);
            last_comment = (!c.is_empty()).then(|| c.to_string());
            continue;
        }
        if line.eq_ignore_ascii_case("[interface]") {
            section = "interface";
            interfaces += 1;
            continue;
        }
        if line.eq_ignore_ascii_case("[peer]") {
            section = "peer";
            peers.push(Peer { name: last_comment.take(), ..Peer::default() });
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {line_no}: expected `Key = Value`, found {line:?}"));
        };
        let (key, value) = (key.trim(), value.trim());
        let bad = |what: &str| format!("line {line_no}: {key} = {value}: {what}");
        match (section, key.to_ascii_lowercase().as_str()) {
            ("interface", "privatekey") => out.had_private_key = true,
            ("interface", "listenport") => listen_port = Some(value.parse().map_err(|_| bad("not a port number"))?),
            ("interface", "mtu") => mtu = Some(value.parse().map_err(|_| bad("not a number"))?),
            ("interface", "address") => {
                for a in value.split(',').map(str::trim) {
                    if a.contains(':') {
                        out.notes.push(format!("line {line_no}: IPv6 address {a} skipped (routerd's dataplane is IPv4)"));
                    } else if address.is_none() {
                        Ipv4Cidr::from_str(a).map_err(|e| bad(&format!("{e:?}")))?;
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
                        PublicKey::from_str(value).map_err(|e| bad(&format!("not a WireGuard public key ({e:?})")))?;
                        p.public_key = Some(value.to_string());
                    }
                    "endpoint" => {
                        Endpoint::from_str(value).map_err(|e| bad(&format!("not host:port ({e:?})")))?;
                        p.endpoint = Some(value.to_string());
                    }
                    "allowedips" => {
                        for a in value.split(',').map(str::trim).filter(|a| !a.is_empty()) {
                            if a.contains(':') {
                                out.notes.push(format!("line {line_no}: IPv6 allowed IP {a} skipped (IPv4 only)"));
                            } else {
                                Ipv4Cidr::from_str(a).map_err(|e| bad(&format!("{a}: {e:?}")))?;
                                p.allowed.push(a.to_string());
                            }
                        }
                    }
                    "persistentkeepalive" => {
                        if value != "off" {
                            p.keepalive = Some(value.parse().map_err(|_| bad("not a number of seconds"))?);
                        }
                    }
                    "presharedkey" => p.psk = true,
                    other => out.notes.push(format!("line {line_no}: {other} has no routerd equivalent; skipped")),
                }
            }
            _ => return Err(bad("before any [Interface] or [Peer] section")),
        }
        last_comment = None;
    }
    if interfaces != 1 {
        return Err(format!("expected one [Interface] section, found {interfaces}"));
    }
    let t = &mut out.toml;
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
    let _ = writeln!(t, "private_key = \"device:{tunnel}\"   # made on the box: `routerctl key show`");
    for (i, p) in peers.iter().enumerate() {
        let name = p.name.clone().unwrap_or_else(|| format!("peer{}", i + 1));
        let Some(key) = &p.public_key else {
            return Err(format!("[Peer] {} has no PublicKey", i + 1));
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
            let _ = writeln!(
                t,
                "preshared_key = \"device:{name}-psk\"   # before apply: routerctl key psk import {name}-psk --from-file FILE --yes"
            );
            out.notes.push(format!(
                "peer {name}: the preshared key is not copied into the file; put this [Peer]'s PresharedKey in a file and \
                 `routerctl key psk import {name}-psk --from-file FILE --yes --port …` before you apply (else the box makes a \
                 new one the peer does not have)"
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn converts_interface_and_peers_and_lists_what_it_skipped() {
        let got = import(CONF, "wg0").unwrap();
        assert!(got.had_private_key);
        // The result is valid inside a configuration.
        let full = format!(
            "[device]\nname = \"x\"\nside = \"onprem\"\n[[ports]]\nname = \"lan0\"\nrole = \"lan\"\naddress = \"10.20.0.2/24\"\n\
             [[ports]]\nname = \"wan0\"\nrole = \"wan\"\naddress = \"192.168.1.2/24\"\n{}",
            got.toml
        );
        let cfg = config_schema::human::from_toml(&full).unwrap_or_else(|e| panic!("{}\n{full}", e.report));
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
        let full = format!(
            "[device]\nname = \"x\"\nside = \"onprem\"\n[[ports]]\nname = \"lan0\"\nrole = \"lan\"\naddress = \"10.20.0.2/24\"\n\
             [[ports]]\nname = \"wan0\"\nrole = \"wan\"\naddress = \"192.168.1.2/24\"\n{}",
            got.toml
        );
        let cfg = config_schema::human::from_toml(&full).unwrap_or_else(|e| panic!("{}\n{full}", e.report));
        assert_eq!(cfg.peers[0].preshared_key, Some("device:cloud-psk".parse().unwrap()));
        assert_eq!(cfg.peers[1].preshared_key, None);
        // Both platforms run it: nothing is said about the preshared key.
        for platform in config_schema::Platform::ALL {
            let r = config_schema::validate_for(&cfg, platform);
            assert!(r.problems.iter().all(|p| !p.path.contains("preshared_key")), "{platform}: {:?}", r.problems);
        }
    }

    #[test]
    fn errors_name_the_line() {
        let e = import("[Interface]\nListenPort = lots\n", "wg0").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
        let e = import("[Interface]\n[Peer]\nPublicKey = nope\n", "wg0").unwrap_err();
        assert!(e.contains("line 3") && e.contains("public key"), "{e}");
        assert!(import("[Peer]\n", "wg0").unwrap_err().contains("[Interface]"));
    }
}
