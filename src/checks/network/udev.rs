//! Checks: udev persistent network interface naming (`70-persistent-net.rules` and the generator rule that
//! writes it on older Debian/Ubuntu releases).

use crate::checks::{Check, CheckInfo, Ctx, Evidence, FileEdit, Finding, Fix, Severity, Validator};
use anyhow::Result;

pub const RULES_DIR: &str = "/etc/udev/rules.d";
pub const PERSISTENT: &str = "/etc/udev/rules.d/70-persistent-net.rules";
pub const GENERATOR_OVERRIDE: &str = "/etc/udev/rules.d/75-persistent-net-generator.rules";
const GENERATORS: &[&str] = &[
    "/lib/udev/rules.d/75-persistent-net-generator.rules",
    "/usr/lib/udev/rules.d/75-persistent-net-generator.rules",
];
const OVERRIDE_TEXT: &str =
    "# Disabled by cloudprep: the NIC's MAC address changes in the cloud, and a\n\
# persistent-net rule for the old MAC makes the new NIC eth1 (unconfigured).\n";

pub fn checks() -> Vec<Check> {
    vec![crate::check!(
        "network.udev-persistent-net",
        "udev pins interface names to the old MAC addresses",
        Network,
        Blocker,
        true,
        check_persistent_net
    )]
}

/// A rule pinning a name to a MAC: `(line, mac, name)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRule {
    pub line: usize,
    pub mac: String,
    pub name: String,
}

/// Value of `KEY=="v"`/`KEY="v"`/`KEY:="v"` in a udev rule line.
fn rule_value(line: &str, key: &str) -> Option<String> {
    let mut rest = line;
    while let Some(pos) = rest.find(key) {
        let before_ok = pos == 0 || {
            let c = rest[..pos].chars().last().unwrap_or(' ');
            c == ',' || c.is_whitespace()
        };
        let after = rest[pos + key.len()..].trim_start();
        if before_ok {
            for op in ["==", ":=", "="] {
                if let Some(v) = after.strip_prefix(op) {
                    let v = v.trim_start();
                    if let Some(v) = v.strip_prefix('"') {
                        if let Some(end) = v.find('"') {
                            return Some(v[..end].to_string());
                        }
                    }
                }
            }
        }
        rest = &rest[pos + key.len()..];
    }
    None
}

/// Rules of a 70-persistent-net.rules file that match a MAC address and set NAME; continuation lines
/// (`\`) are joined, comments skipped.
pub fn parse_pin_rules(text: &str) -> Vec<PinRule> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let first = i + 1;
        let mut joined = String::new();
        loop {
            let l = lines[i].trim_end_matches('\r');
            if let Some(s) = l.strip_suffix('\\') {
                joined.push_str(s);
                i += 1;
                if i < lines.len() {
                    continue;
                }
            } else {
                joined.push_str(l);
                i += 1;
            }
            break;
        }
        let t = joined.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let mac = rule_value(t, "ATTR{address}").or_else(|| rule_value(t, "SYSFS{address}"));
        let name = rule_value(t, "NAME");
        if let (Some(mac), Some(name)) = (mac, name) {
            out.push(PinRule {
                line: first,
                mac,
                name,
            });
        }
    }
    out
}

/// Comment out the rules that pin a name to a MAC (every physical line of each, continuations included),
/// keeping every other line byte-identical. Idempotent.
pub fn comment_pin_rules(text: &str) -> String {
    let pins: Vec<usize> = parse_pin_rules(text).iter().map(|r| r.line).collect();
    let mut out = String::with_capacity(text.len() + 64);
    let mut continuing = false;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let commented = continuing || pins.contains(&(i + 1));
        continuing = commented && line.trim_end_matches(['\n', '\r']).ends_with('\\');
        if commented {
            out.push_str("# cloudprep (old NIC's MAC): ");
        }
        out.push_str(line);
    }
    out
}

fn generator_active(ctx: &Ctx) -> Option<&'static str> {
    let gen = GENERATORS.iter().find(|g| ctx.root.exists(g))?;
    // Any file or symlink (Debian's `ln -s /dev/null`) at the override path disables it.
    if ctx
        .root
        .no_follow(GENERATOR_OVERRIDE)
        .is_ok_and(|p| std::fs::symlink_metadata(p).is_ok())
    {
        return None;
    }
    Some(gen)
}

/// Whether a rules file is exactly what cloud-init's ENI renderer writes (no comments; every line
/// `[SUBSYSTEM=="net", ]ACTION=="add", DRIVERS=="?*", ATTR{address}=="MAC", NAME="IF"`). cloud-init
/// rewrites that file from the datasource's network configuration for every new instance, so in a guest
/// where cloud-init manages the network its MAC pins follow the NIC.
pub fn is_cloud_init_rendering(text: &str) -> bool {
    let mut rules = 0;
    for l in text.lines() {
        let l = l.trim_end_matches('\r').trim();
        if l.is_empty() {
            continue;
        }
        let parts: Vec<&str> = l.split(", ").map(str::trim).collect();
        let parts = match parts.first() {
            Some(&"SUBSYSTEM==\"net\"") => &parts[1..],
            _ => &parts[..],
        };
        let ok = parts.len() == 4
            && parts[0] == "ACTION==\"add\""
            && parts[1] == "DRIVERS==\"?*\""
            && parts[2].starts_with("ATTR{address}==\"")
            && parts[3].starts_with("NAME=\"");
        if !ok {
            return false;
        }
        rules += 1;
    }
    rules > 0
}

/// cloud-init is installed and allowed to configure the network (no `network: {config: disabled}`).
pub(crate) fn cloud_init_manages_network(ctx: &Ctx) -> Result<bool> {
    if !ctx.facts.installed("cloud-init")
        || ctx.root.exists(crate::checks::cloud_init::DISABLED_MARKER)
    {
        return Ok(false);
    }
    let files = crate::checks::cloud_init::load_config(ctx)?;
    let disabled = crate::checks::cloud_init::effective_value(&files, &["network", "config"])
        .and_then(|(_, v)| v.as_str().map(|s| s.eq_ignore_ascii_case("disabled")))
        .unwrap_or(false);
    Ok(!disabled)
}

fn check_persistent_net(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    // 70-persistent-net.rules, and a MAC pin in any other rules file (written by hand, by a template tool,
    // or by the old platform's customisation).
    let mut pinned: Vec<(String, Vec<PinRule>)> = Vec::new();
    let mut paths = vec![PERSISTENT.to_string()];
    paths.extend(
        ctx.root
            .files_in(RULES_DIR, |n| n.ends_with(".rules"))?
            .into_iter()
            .filter(|p| p != PERSISTENT),
    );
    for path in paths {
        let Some(t) = ctx.root.read_text(&path)? else {
            continue;
        };
        // cloud-init's own rendering, rewritten for each new instance: not a pin to old hardware.
        if path == PERSISTENT && is_cloud_init_rendering(&t) && cloud_init_manages_network(ctx)? {
            continue;
        }
        let r = parse_pin_rules(&t);
        if !r.is_empty() {
            pinned.push((path, r));
        }
    }
    let rules: Vec<PinRule> = pinned.iter().flat_map(|(_, r)| r.clone()).collect();
    let gen = generator_active(ctx);
    if rules.is_empty() && gen.is_none() {
        return Ok(Vec::new());
    }
    let mut ev: Vec<Evidence> = pinned
        .iter()
        .flat_map(|(p, rs)| {
            rs.iter().map(move |r| {
                Evidence::line(
                    p,
                    r.line,
                    &format!("ATTR{{address}}==\"{}\" NAME=\"{}\"", r.mac, r.name),
                )
            })
        })
        .collect();
    let mut fix = Fix::default();
    let mut msg = String::new();
    if !rules.is_empty() {
        msg.push_str(&format!(
            "udev pins interface names to the old NICs' MAC addresses ({}): the cloud's virtio NIC has a new MAC, \
             so it gets the next free name (eth{}) and the configuration for {} never applies",
            rules
                .iter()
                .map(|r| format!("{} = {}", r.mac, r.name))
                .collect::<Vec<_>>()
                .join(", "),
            rules.len(),
            rules[0].name
        ));
        for (p, _) in &pinned {
            fix = fix.edit(if p == PERSISTENT {
                FileEdit::remove(PERSISTENT)
            } else {
                FileEdit::rewrite(p, Validator::None, |t| Ok(comment_pin_rules(t)))
            });
        }
    }
    if let Some(g) = gen {
        ev.push(Evidence::file(
            g,
            "persistent-net generator active (no override in /etc/udev/rules.d)",
        ));
        if !msg.is_empty() {
            msg.push_str("; ");
        }
        msg.push_str(&format!(
            "{g} writes a new pinning rule for every NIC it sees, so the next MAC change (e.g. an instance \
             started from a snapshot) breaks naming again"
        ));
        fix = fix.edit(FileEdit::create(
            GENERATOR_OVERRIDE,
            0o644,
            Validator::None,
            |c| {
                Ok(if c.is_empty() {
                    OVERRIDE_TEXT.to_string()
                } else {
                    c.to_string()
                })
            },
        ));
    }
    let sev = if rules.is_empty() {
        Severity::Warning
    } else {
        Severity::Blocker
    };
    Ok(vec![Finding::new(info, msg)
        .severity(sev)
        .evidences(ev)
        .remediation(format!(
            "Remove {PERSISTENT} (and comment out MAC-matching NAME rules in other files of {RULES_DIR}), and \
             disable the generator with an empty {GENERATOR_OVERRIDE}."
        ))
        .fix(fix)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_in_other_rules_files_are_commented_out() {
        let t = "# site rules\nSUBSYSTEM==\"net\", ACTION==\"add\", ATTR{address}==\"00:50:56:aa:bb:cc\", \\\n  NAME=\"lan0\"\nSUBSYSTEM==\"block\", KERNEL==\"sd*\", OPTIONS+=\"x\"\n";
        let out = comment_pin_rules(t);
        assert_eq!(
            out,
            "# site rules\n# cloudprep (old NIC's MAC): SUBSYSTEM==\"net\", ACTION==\"add\", ATTR{address}==\"00:50:56:aa:bb:cc\", \\\n# cloudprep (old NIC's MAC):   NAME=\"lan0\"\nSUBSYSTEM==\"block\", KERNEL==\"sd*\", OPTIONS+=\"x\"\n"
        );
        assert!(parse_pin_rules(&out).is_empty());
        assert_eq!(comment_pin_rules(&out), out);
    }

    #[test]
    fn recognises_cloud_init_rendering_only() {
        let ci = "SUBSYSTEM==\"net\", ACTION==\"add\", DRIVERS==\"?*\", ATTR{address}==\"fa:16:3e:5c:21:07\", NAME=\"eth0\"\n";
        assert!(is_cloud_init_rendering(ci));
        // Older cloud-init: no SUBSYSTEM; two NICs; CRLF.
        assert!(is_cloud_init_rendering(
            "ACTION==\"add\", DRIVERS==\"?*\", ATTR{address}==\"fa:16:3e:00:00:01\", NAME=\"eth0\"\r\n\
             ACTION==\"add\", DRIVERS==\"?*\", ATTR{address}==\"fa:16:3e:00:00:02\", NAME=\"eth1\"\n"
        ));
        // udev's write_net_rules (comments, dev_id/type/KERNEL keys), an admin's edit, an empty file.
        assert!(!is_cloud_init_rendering(
            "# This file was automatically generated by the /lib/udev/write_net_rules\n\
             SUBSYSTEM==\"net\", ACTION==\"add\", DRIVERS==\"?*\", ATTR{address}==\"00:0c:29:4a:5b:6c\", ATTR{dev_id}==\"0x0\", ATTR{type}==\"1\", KERNEL==\"eth*\", NAME=\"eth0\"\n"
        ));
        assert!(!is_cloud_init_rendering(&format!("{ci}# pinned by hand\n")));
        assert!(!is_cloud_init_rendering(
            "SUBSYSTEM==\"net\", ACTION==\"add\", DRIVERS==\"?*\", ATTR{address}==\"00:50:56:aa:bb:cc\", KERNEL==\"eth*\", NAME=\"eth0\"\n"
        ));
        assert!(!is_cloud_init_rendering(""));
        assert!(!is_cloud_init_rendering("\n\n"));
    }

    #[test]
    fn parses_vmware_rules() {
        let t = "# This file was automatically generated by the /lib/udev/write_net_rules\n\
# program, run by the persistent-net-generator.rules rules file.\n\
\n\
# PCI device 0x15ad:0x07b0 (vmxnet3)\n\
SUBSYSTEM==\"net\", ACTION==\"add\", DRIVERS==\"?*\", ATTR{address}==\"00:0c:29:4a:5b:6c\", ATTR{dev_id}==\"0x0\", ATTR{type}==\"1\", KERNEL==\"eth*\", NAME=\"eth0\"\r\n\
# continued\n\
SUBSYSTEM==\"net\", ACTION==\"add\", \\\n  ATTR{address}==\"00:50:56:aa:bb:cc\", NAME=\"eth1\"\n\
SUBSYSTEM==\"net\", KERNEL==\"eth*\", NAME=\"eth9\"\n\
garbage line";
        let r = parse_pin_rules(t);
        assert_eq!(
            r,
            vec![
                PinRule {
                    line: 5,
                    mac: "00:0c:29:4a:5b:6c".into(),
                    name: "eth0".into()
                },
                PinRule {
                    line: 7,
                    mac: "00:50:56:aa:bb:cc".into(),
                    name: "eth1".into()
                }
            ]
        );
        assert!(parse_pin_rules("").is_empty());
        assert!(parse_pin_rules("\n\n").is_empty());
    }
}
