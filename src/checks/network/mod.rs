//! Checks: network configuration (ifupdown, netplan, systemd-networkd, NetworkManager keyfiles).
//!
//! In the cloud the NIC is a new virtio device: new MAC address, new PCI slot (so a new predictable name),
//! and addresses handed out by DHCP. These checks find the guest's interface configurations, report what
//! pins the old NIC (MAC matches), static addressing and interface names, and plan line-preserving fixes.
//!
//! Policy (config `[network]`): `addressing = "dhcp"` converts static IPv4 to DHCP (static IPv6 of the same
//! interface becomes `inet6 auto` / is dropped: see `ifupdown`); `interface_naming = "eth0"` adds
//! `net.ifnames=0 biosdevname=0` to the kernel command line and renames configurations using predictable
//! names (ens192, enp0s3, ...) to ethN, the primary one to eth0.

mod addressing;
pub mod firewall;
mod ifnames;
pub mod ifupdown;
pub mod ini;
mod names;
pub mod netplan;
mod resolv;
pub mod sshd;
mod state;
pub mod udev;

pub use addressing::*;
pub use ifnames::*;
use names::*;
pub use resolv::*;
pub use state::*;

use crate::checks::{
    order, Check, CheckInfo, Ctx, Evidence, FileEdit, Finding, Fix, Phase, PlannedCommand,
    Severity, Validator,
};
use crate::config::{AddressPolicy, NamingPolicy};
use crate::guest::root::Root;
use anyhow::Result;
use std::collections::BTreeSet;

pub fn checks() -> Vec<Check> {
    vec![
        crate::check!(
            "network.mac-pinning",
            "Network configuration matches the old NIC by MAC address",
            Network,
            Blocker,
            true,
            check_mac_pinning
        ),
        crate::check!(
            "network.config-syntax",
            "Network configuration lines that cannot be parsed",
            Network,
            Warning,
            false,
            check_syntax
        ),
        crate::check!(
            "network.hwaddress-override",
            "Network configuration sets the old MAC address on the NIC",
            Network,
            Blocker,
            true,
            check_hwaddress
        ),
        crate::check!(
            "network.static-addressing",
            "Static IP addressing from the old network",
            Network,
            Blocker,
            true,
            check_static
        ),
        crate::check!(
            "network.interface-names",
            "Interface names will differ on the virtio NIC",
            Network,
            Blocker,
            true,
            check_names
        ),
        crate::check!(
            "network.no-primary-dhcp",
            "No interface would come up with DHCP",
            Network,
            Blocker,
            true,
            check_no_primary_dhcp
        ),
        crate::check!(
            "network.primary-nic-owner",
            "exactly one configuration brings the primary NIC up in the cloud",
            Network,
            Warning,
            true,
            check_primary_owner
        ),
        crate::check!(
            "network.old-routes",
            "no route goes through a gateway of the old network",
            Network,
            Warning,
            false,
            check_old_routes
        ),
        crate::check!(
            "network.resolv-conf-static",
            "Static /etc/resolv.conf will not follow DHCP",
            Network,
            Warning,
            true,
            check_resolv
        ),
    ]
}

pub const INTERFACES: &str = "/etc/network/interfaces";
/// What cloud-init's netplan renderer writes (for the instance it runs on).
pub const CLOUD_INIT_NETPLAN: &str = "/etc/netplan/50-cloud-init.yaml";
/// After the file edits, before update-grub (the order does not matter to grub).
const RESOLV_LINK_ORDER: u32 = 65;
const ENABLE_NETWORKING_ORDER: u32 = 66;
// ---------------------------------------------------------------------------------------------------
// Checks

fn check_syntax(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let st = gather(ctx)?;
    // Lines the parsers skipped.
    if st.garbage.is_empty() {
        return Ok(Vec::new());
    }
    Ok(vec![Finding::new(
        info,
        "some network configuration lines could not be parsed and were skipped by the network checks; \
         the tools that read them may reject the file",
    )
    .severity(Severity::Warning)
    .evidences(st.garbage.clone())
    .remediation("Correct or remove the lines shown, then run the audit again.")])
}

fn check_mac_pinning(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let st = gather(ctx)?;
    let mut out = Vec::new();
    let map = st.rename_map(ctx.config.network.interface_naming);
    let why = "the virtio NIC in the cloud has a new MAC address, so a configuration matching the old MAC \
               never applies and the interface stays unconfigured";
    // cloud-init's own netplan rendering matches the MAC of the instance it was rendered on and is rendered
    // again for every new instance: not a pin to the old hardware.
    let ci_renders = udev::cloud_init_manages_network(ctx)?;
    for f in &st.netplan {
        if ci_renders && f.path == CLOUD_INIT_NETPLAN {
            continue;
        }
        for i in &f.parsed.ifaces {
            let Some((line, mac)) = &i.match_mac else {
                continue;
            };
            let old_name = i.name().map(str::to_string).unwrap_or_else(|| i.id.clone());
            let target = st.target(&map, &old_name);
            let ids = vec![i.id.clone(), target.clone(), old_name.clone()];
            let mut ev = vec![Evidence::line(
                &f.path,
                *line,
                &format!("macaddress: {mac}"),
            )];
            if let Some((l, n)) = &i.set_name {
                ev.push(Evidence::line(&f.path, *l, &format!("set-name: {n}")));
            }
            let t2 = target.clone();
            out.push(
                Finding::new(info, format!("netplan entry `{}` matches MAC {mac}: {why}", i.id))
                    .evidences(ev)
                    .remediation("Remove the `match: macaddress:` (and `set-name`) and name the interface instead.")
                    .fix(Fix::default().edit(FileEdit::rewrite(&f.path, Validator::Netplan, move |c| {
                        Ok(netplan::unpin_mac(c, &ids, &t2))
                    }))),
            );
        }
    }
    let mut k = 0;
    for f in &st.links {
        let macs: Vec<&ini::Entry> = f
            .parsed
            .all("Match", "MACAddress")
            .chain(f.parsed.all("Match", "PermanentMACAddress"))
            .collect();
        if macs.is_empty() {
            continue;
        }
        let only_mac = f
            .parsed
            .in_section("Match")
            .all(|e| e.key == "MACAddress" || e.key == "PermanentMACAddress");
        let orig = format!("eth{k}");
        k += 1;
        let ev: Vec<Evidence> = macs
            .iter()
            .map(|e| Evidence::line(&f.path, e.line, &format!("{}={}", e.key, e.value)))
            .collect();
        out.push(
            Finding::new(info, format!("{} matches the old MAC address: {why} (and it is not renamed)", f.path))
                .evidences(ev)
                .remediation(format!("Replace MACAddress= in [Match] by OriginalName={orig} (the kernel name of the virtio NIC)."))
                .fix(Fix::default().edit(FileEdit::rewrite(&f.path, Validator::None, move |c| {
                    let mut ops = vec![
                        ini::Op::Remove { section: "Match".into(), key: "MACAddress".into() },
                        ini::Op::Remove { section: "Match".into(), key: "PermanentMACAddress".into() },
                    ];
                    if only_mac {
                        ops.push(ini::Op::AddIfMissing { section: "Match".into(), key: "OriginalName".into(), value: orig.clone() });
                    }
                    Ok(ini::edit(c, &ops))
                }))),
        );
    }
    let mut k = 0;
    for f in &st.networkd {
        let macs: Vec<&ini::Entry> = f
            .parsed
            .all("Match", "MACAddress")
            .chain(f.parsed.all("Match", "PermanentMACAddress"))
            .collect();
        if macs.is_empty() {
            continue;
        }
        let has_other = f
            .parsed
            .in_section("Match")
            .any(|e| e.key != "MACAddress" && e.key != "PermanentMACAddress");
        let name = match ctx.config.network.interface_naming {
            NamingPolicy::Eth0 => format!("eth{k}"),
            NamingPolicy::Predictable => "en* eth*".to_string(),
        };
        k += 1;
        let ev: Vec<Evidence> = macs
            .iter()
            .map(|e| Evidence::line(&f.path, e.line, &format!("{}={}", e.key, e.value)))
            .collect();
        out.push(
            Finding::new(
                info,
                format!(
                    "systemd-networkd {} matches the old MAC address: {why}",
                    f.path
                ),
            )
            .evidences(ev)
            .remediation(format!("Replace MACAddress= in [Match] by Name={name}."))
            .fix(Fix::default().edit(FileEdit::rewrite(
                &f.path,
                Validator::None,
                move |c| {
                    let mut ops = vec![
                        ini::Op::Remove {
                            section: "Match".into(),
                            key: "MACAddress".into(),
                        },
                        ini::Op::Remove {
                            section: "Match".into(),
                            key: "PermanentMACAddress".into(),
                        },
                    ];
                    if !has_other {
                        ops.push(ini::Op::AddIfMissing {
                            section: "Match".into(),
                            key: "Name".into(),
                            value: name.clone(),
                        });
                    }
                    Ok(ini::edit(c, &ops))
                },
            ))),
        );
    }
    for f in &st.nm {
        let macs: Vec<&ini::Entry> = f
            .parsed
            .all("ethernet", "mac-address")
            .chain(f.parsed.all("802-3-ethernet", "mac-address"))
            .collect();
        if macs.is_empty() {
            continue;
        }
        let ev: Vec<Evidence> = macs
            .iter()
            .map(|e| Evidence::line(&f.path, e.line, &format!("mac-address={}", e.value)))
            .collect();
        out.push(
            Finding::new(info, format!("NetworkManager connection {} is bound to the old MAC address: {why}", f.path))
                .evidences(ev)
                .remediation("Remove mac-address= from [ethernet] (the connection then applies by interface-name, or to any wired NIC).")
                .fix(Fix::default().edit(FileEdit::rewrite(&f.path, Validator::None, |c| {
                    Ok(ini::edit(c, &[
                        ini::Op::Remove { section: "ethernet".into(), key: "mac-address".into() },
                        ini::Op::Remove { section: "802-3-ethernet".into(), key: "mac-address".into() },
                    ]))
                }))),
        );
    }
    Ok(out)
}

/// ifupdown `hwaddress`, netplan `macaddress:` (outside `match`), networkd `[Link] MACAddress=` and NM
/// `cloned-mac-address=` make the guest send with the old MAC: the cloud's port security drops every frame
/// whose source MAC is not the port's, DHCP included.
fn check_hwaddress(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let st = gather(ctx)?;
    let map = st.rename_map(ctx.config.network.interface_naming);
    let mut out = Vec::new();
    let why = "the cloud's port security (anti-spoofing) drops every frame whose source MAC is not the port's, \
               DHCP included, so the interface would get no address and no traffic";
    for f in &st.ifupdown {
        let ev: Vec<Evidence> = f
            .parsed
            .stanzas
            .iter()
            .filter(|s| s.name != "lo")
            .flat_map(|s| s.opts.iter().filter(|o| o.0 == "hwaddress"))
            .map(|o| Evidence::line(&f.path, o.2, &format!("hwaddress {}", o.1)))
            .collect();
        if ev.is_empty() {
            continue;
        }
        out.push(
            Finding::new(
                info,
                format!(
                    "{} sets the NIC's MAC address with `hwaddress`: {why}",
                    f.path
                ),
            )
            .evidences(ev)
            .remediation("Remove the `hwaddress` lines: the NIC keeps the MAC the cloud assigned.")
            .fix(Fix::default().edit(FileEdit::rewrite(
                &f.path,
                Validator::Ifupdown,
                |c| Ok(ifupdown::drop_option(c, "hwaddress")),
            ))),
        );
    }
    for f in &st.netplan {
        for i in &f.parsed.ifaces {
            let Some((line, mac)) = &i.set_mac else {
                continue;
            };
            // The id may be renamed by another fix applied before this one (MAC match, names).
            let old = i.name().unwrap_or(&i.id).to_string();
            let ids = vec![i.id.clone(), st.target(&map, &old), old];
            out.push(
                Finding::new(
                    info,
                    format!("netplan entry `{}` sets MAC {mac}: {why}", i.id),
                )
                .evidence(Evidence::line(
                    &f.path,
                    *line,
                    &format!("macaddress: {mac}"),
                ))
                .remediation("Remove the entry's `macaddress:` (the one outside `match:`).")
                .fix(Fix::default().edit(FileEdit::rewrite(
                    &f.path,
                    Validator::Netplan,
                    move |c| Ok(netplan::drop_entry_key(c, &ids, "macaddress")),
                ))),
            );
        }
    }
    for (f, section, key) in st
        .networkd
        .iter()
        .map(|f| (f, "Link", "MACAddress"))
        .chain(st.links.iter().map(|f| (f, "Link", "MACAddress")))
        .chain(st.nm.iter().map(|f| (f, "ethernet", "cloned-mac-address")))
    {
        let ev: Vec<Evidence> = f
            .parsed
            .all(section, key)
            .filter(|e| {
                !matches!(
                    e.value.as_str(),
                    "preserve" | "permanent" | "random" | "stable"
                )
            })
            .map(|e| Evidence::line(&f.path, e.line, &format!("{key}={}", e.value)))
            .collect();
        if ev.is_empty() {
            continue;
        }
        let (sec, k) = (section.to_string(), key.to_string());
        out.push(
            Finding::new(
                info,
                format!(
                    "{} sets the NIC's MAC address ([{section}] {key}=): {why}",
                    f.path
                ),
            )
            .evidences(ev)
            .remediation(format!("Remove {key}= from [{section}]."))
            .fix(Fix::default().edit(FileEdit::rewrite(
                &f.path,
                Validator::None,
                move |c| {
                    Ok(ini::edit(
                        c,
                        &[ini::Op::Remove {
                            section: sec.clone(),
                            key: k.clone(),
                        }],
                    ))
                },
            ))),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod fuzz {
    //! Deterministic garbage: the parsers and rewriters never panic, and the rewriters are idempotent.
    use super::*;

    const TOKENS: &[&str] = &[
        "iface",
        " ",
        "\t",
        "eth0",
        "ens192",
        "inet",
        "inet6",
        "static",
        "dhcp",
        "\n",
        "\r\n",
        "\\\n",
        "#",
        "address",
        "192.0.2.1",
        "auto",
        "allow-hotplug",
        "source",
        "*",
        "mapping",
        "network:",
        "  ",
        "ethernets:",
        "    ens192:",
        "      match:",
        "        macaddress: x",
        "- ",
        "[",
        "]",
        "\"",
        "'",
        ":",
        "dhcp4: no",
        "addresses: [192.0.2.9/24]",
        "set-name: ens192",
        "[Match]",
        "MACAddress=",
        "=",
        "é",
        "GRUB_CMDLINE_LINUX=",
        "net.ifnames=1",
        "{",
        "}",
        "gateway4: 192.0.2.1",
        "\u{feff}",
    ];

    fn gen(seed: &mut u64, n: usize) -> String {
        let mut s = String::new();
        for _ in 0..n {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            s.push_str(TOKENS[(*seed % TOKENS.len() as u64) as usize]);
        }
        s
    }

    #[test]
    fn never_panics_and_rewrites_are_idempotent() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let names = vec!["ens192".to_string(), "eth0".to_string()];
        let map = vec![("ens192".to_string(), "eth0".to_string())];
        for i in 0..3000 {
            let t = gen(&mut seed, 1 + i % 60);
            let _ = ifupdown::parse(&t);
            let a = ifupdown::to_dhcp(&t, &names, "eth0");
            assert_eq!(ifupdown::to_dhcp(&a, &names, "eth0"), a, "input {t:?}");
            let r = ifupdown::rename(&t, &map);
            assert_eq!(ifupdown::rename(&r, &map), r, "input {t:?}");
            let d = ifupdown::drop_option(&t, "address");
            assert_eq!(ifupdown::drop_option(&d, "address"), d, "input {t:?}");
            let _ = netplan::parse(&t);
            let n = netplan::to_dhcp(&netplan::unpin_mac(&t, &names, "eth0"), &names);
            let n2 = netplan::to_dhcp(&netplan::unpin_mac(&n, &names, "eth0"), &names);
            assert_eq!(n2, n, "input {t:?}");
            let _ = netplan::rename(&t, &map);
            let _ = ini::parse(&t);
            let ops = [
                ini::Op::Remove {
                    section: "Match".into(),
                    key: "MACAddress".into(),
                },
                ini::Op::Set {
                    section: "Network".into(),
                    key: "DHCP".into(),
                    value: "ipv4".into(),
                },
            ];
            let e = ini::edit(&t, &ops);
            assert_eq!(ini::edit(&e, &ops), e, "input {t:?}");
            if let Ok(g) = grub_set_ifnames(&t) {
                assert_eq!(grub_set_ifnames(&g).unwrap(), g, "input {t:?}");
            }
            let _ = crate::checks::network::udev::parse_pin_rules(&t);
            let _ = ensure_eth0_dhcp(&t, false);
        }
    }
}
