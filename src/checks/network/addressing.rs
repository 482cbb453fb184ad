//! Checks: static addressing (converted to DHCP) and that the primary NIC comes up with DHCP.

use super::*;

pub(super) fn describe_old(c: &Cfg) -> String {
    let mut s = format!(
        "{} {} in {} line {}: address {}",
        c.name.as_deref().unwrap_or(&c.id),
        c.family,
        c.path,
        c.line,
        if c.addresses.is_empty() {
            "-".to_string()
        } else {
            c.addresses
                .iter()
                .map(|a| a.1.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    if let Some((_, g)) = &c.gateway {
        s.push_str(&format!(", gateway {g}"));
    }
    if !c.dns.is_empty() {
        s.push_str(&format!(", dns {}", c.dns.join(" ")));
    }
    s
}

pub(super) fn static_fix(st: &NetState, c: &Cfg, map: &[(String, String)]) -> Fix {
    let old = c.name.clone().unwrap_or_else(|| c.id.clone());
    let target = st.target(map, &old);
    let mut fix = Fix::default();
    match c.src {
        Src::Ifupdown => {
            let names = vec![old.clone(), target.clone()];
            let t = target.clone();
            fix = fix.edit(FileEdit::rewrite(&c.path, Validator::Ifupdown, move |s| {
                Ok(ifupdown::to_dhcp(s, &names, &t))
            }));
        }
        Src::Netplan => {
            let ids = vec![c.id.clone(), target.clone(), old.clone()];
            fix = fix.edit(FileEdit::rewrite(&c.path, Validator::Netplan, move |s| {
                Ok(netplan::to_dhcp(s, &ids))
            }));
        }
        Src::Networkd => {
            fix = fix.edit(FileEdit::rewrite(&c.path, Validator::None, |s| {
                let ini = ini::parse(s);
                let cur = ini
                    .get("Network", "DHCP")
                    .map(|e| e.value.to_ascii_lowercase())
                    .unwrap_or_default();
                let want = if cur == "ipv6" { "yes" } else { "ipv4" };
                let keep = matches!(cur.as_str(), "yes" | "true" | "ipv4" | "both" | "1" | "on");
                let mut ops = vec![
                    ini::Op::Remove {
                        section: "Network".into(),
                        key: "Address".into(),
                    },
                    ini::Op::Remove {
                        section: "Network".into(),
                        key: "Gateway".into(),
                    },
                    ini::Op::Remove {
                        section: "Network".into(),
                        key: "DNS".into(),
                    },
                    ini::Op::DropSection {
                        section: "Address".into(),
                        with_key: None,
                    },
                    ini::Op::DropSection {
                        section: "Route".into(),
                        with_key: Some("Gateway".into()),
                    },
                ];
                if !keep {
                    ops.push(ini::Op::Set {
                        section: "Network".into(),
                        key: "DHCP".into(),
                        value: want.into(),
                    });
                }
                Ok(ini::edit(s, &ops))
            }));
        }
        Src::Nm => {
            fix = fix.edit(FileEdit::rewrite(&c.path, Validator::None, |s| {
                let ini = ini::parse(s);
                let mut ops: Vec<ini::Op> = ini
                    .in_section("ipv4")
                    .filter(|e| {
                        e.key.starts_with("address")
                            || e.key.starts_with("route")
                            || e.key == "gateway"
                            || e.key == "dns"
                            || e.key == "dns-search"
                    })
                    .map(|e| ini::Op::Remove {
                        section: "ipv4".into(),
                        key: e.key.clone(),
                    })
                    .collect();
                ops.push(ini::Op::Set {
                    section: "ipv4".into(),
                    key: "method".into(),
                    value: "auto".into(),
                });
                Ok(ini::edit(s, &ops))
            }));
        }
    }
    for e in rename_edits(st, map) {
        fix = fix.edit(e);
    }
    fix
}

/// A VLAN interface not named `parent.vid`: an ifupdown stanza with `vlan-raw-device` (`iface vlan10 ...`),
/// or a netplan `vlans:` entry.
pub(super) fn is_vlan(st: &NetState, c: &Cfg) -> bool {
    match c.src {
        Src::Ifupdown => st
            .ifupdown
            .iter()
            .filter(|f| f.path == c.path)
            .flat_map(|f| &f.parsed.stanzas)
            .any(|s| {
                s.line == c.line
                    && s.opts
                        .iter()
                        .any(|o| o.0 == "vlan-raw-device" || o.0 == "vlan_raw_device")
            }),
        Src::Netplan => st
            .netplan
            .iter()
            .filter(|f| f.path == c.path)
            .flat_map(|f| &f.parsed.ifaces)
            .any(|i| i.line == c.line && i.kind == "vlans"),
        _ => false,
    }
}

pub(super) fn check_static(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let st = gather(ctx)?;
    let policy = ctx.config.network.addressing;
    let map = st.rename_map(ctx.config.network.interface_naming);
    let resolv_ns: Vec<String> = ctx
        .root
        .read_text("/etc/resolv.conf")
        .ok()
        .flatten()
        .map(|t| resolv_nameservers(&t).into_iter().map(|x| x.1).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for c in &st.cfgs {
        if c.method != Method::Static || c.name.as_deref() == Some("lo") {
            continue;
        }
        // IPv6-only static stanzas ride along with their interface's IPv4 conversion (ifupdown), or are
        // reported on their own.
        let v6 = c.family == "inet6";
        let mut ev = vec![Evidence::line(
            &c.path,
            c.line,
            &format!("{} {} static", c.name.as_deref().unwrap_or(&c.id), c.family),
        )];
        for (l, a) in &c.addresses {
            ev.push(Evidence::line(&c.path, *l, &format!("address {a}")));
        }
        if let Some((l, g)) = &c.gateway {
            ev.push(Evidence::line(&c.path, *l, &format!("gateway {g}")));
        }
        ev.dedup_by(|a, b| a.line == b.line && a.text == b.text);
        let mut old = describe_old(c);
        if c.dns.is_empty() && c.family == "inet" && !resolv_ns.is_empty() {
            old.push_str(&format!(", dns (/etc/resolv.conf) {}", resolv_ns.join(" ")));
        }
        let target = st.target(&map, c.name.as_deref().unwrap_or(&c.id));
        let name = c.name.as_deref().unwrap_or("");
        if name.contains([':', '.']) || is_vlan(&st, c) {
            // An alias (eth0:1) or VLAN (eth0.100, vlan10 with vlan-raw-device, netplan `vlans:`): no DHCP
            // equivalent; the cloud needs an extra port or an allowed address pair.
            out.push(
                Finding::new(
                    info,
                    format!(
                        "static secondary address or VLAN interface (old configuration: {old}); the cloud delivers \
                         neither the old subnet nor VLAN tags, and DHCP cannot replace it"
                    ),
                )
                .severity(Severity::Warning)
                .evidences(ev)
                .remediation(format!(
                    "Remove the {name} stanza, or ask for an additional port / allowed address pair in the cloud \
                     and configure it from there."
                )),
            );
            continue;
        }
        let f = Finding::new(
            info,
            format!(
                "static addressing (old configuration: {old}); in the cloud the network service assigns the \
                 address by DHCP and the old subnet and gateway do not exist, so the guest would be unreachable"
            ),
        )
        .evidences(ev);
        // A netplan entry in flow style (`eth0: {addresses: [...]}`) is not rewritten automatically.
        let editable = c.src != Src::Netplan
            || st
                .netplan
                .iter()
                .filter(|f| f.path == c.path)
                .any(|f| netplan::to_dhcp(&f.text, std::slice::from_ref(&c.id)) != f.text);
        let f = match policy {
            AddressPolicy::Dhcp if !editable => f.remediation(format!(
                "Configure {target} with DHCP by hand in {} (the entry is written in YAML flow style, which \
                 cloudprep does not rewrite): `dhcp4: true` without addresses, gateway4, routes and nameservers.",
                c.path
            )),
            AddressPolicy::Dhcp => f
                .remediation(format!(
                    "Configure {target} with DHCP ({}); keep the old configuration above for reference.",
                    if v6 { "inet6 auto" } else { "inet dhcp / dhcp4: true" }
                ))
                .fix(static_fix(&st, c, &map)),
            AddressPolicy::Keep => f.severity(Severity::Warning).remediation(
                "The configuration keeps static addressing ([network] addressing = \"keep\"): make sure the \
                 cloud port has this fixed IP and the same subnet and gateway.",
            ),
        };
        out.push(f);
    }
    Ok(out)
}

/// Is networking brought up at boot by ifupdown? Under systemd only the unit's `*.wants` links count
/// (sysvinit links of a native unit are ignored); otherwise sysvinit rc links or upstart jobs.
pub(super) fn networking_enabled(root: &Root) -> Result<bool> {
    let systemd = root
        .resolve("/sbin/init")
        .map(|r| r.guest.ends_with("/systemd"))
        .unwrap_or(false);
    // Without a native networking.service (ifupdown before 0.8: Debian 8), systemd's sysv generator runs
    // /etc/init.d/networking from its rc links; with one, the rc links are ignored.
    let native = [
        "/etc/systemd/system/networking.service",
        "/lib/systemd/system/networking.service",
        "/usr/lib/systemd/system/networking.service",
    ]
    .iter()
    .any(|p| root.exists(p));
    if systemd && native {
        for t in root.list_dir("/etc/systemd/system")? {
            if !t.ends_with(".wants") {
                continue;
            }
            let d = format!("/etc/systemd/system/{t}");
            if root
                .list_dir(&d)?
                .iter()
                .any(|n| n == "networking.service" || n.starts_with("ifup@"))
            {
                return Ok(true);
            }
        }
        return Ok(false);
    }
    for d in ["/etc/rcS.d", "/etc/rc2.d"] {
        if root
            .list_dir(d)?
            .iter()
            .any(|n| n.starts_with('S') && n.ends_with("networking"))
        {
            return Ok(true);
        }
    }
    // Upstart (Ubuntu 14.04 and older) brings interfaces up through its own jobs.
    if root.exists("/etc/init/networking.conf") || root.exists("/etc/init/network-interface.conf") {
        return Ok(true);
    }
    // No init links at all: cannot tell; assume enabled.
    Ok(!root.exists("/etc/rcS.d") && !root.exists("/etc/rc2.d"))
}

pub(super) fn has_dhcp_client(ctx: &Ctx) -> bool {
    ctx.facts.packages.is_empty()
        || [
            "isc-dhcp-client",
            "dhcpcd5",
            "dhcpcd",
            "dhcpcd-base",
            "udhcpc",
            "pump",
            "dhcp3-client",
        ]
        .iter()
        .any(|p| ctx.facts.installed(p))
}

/// Would cloud-init's fallback configuration be read: netplan, or ifupdown sourcing interfaces.d?
pub(super) fn ifup_ok_or_netplan(ctx: &Ctx, st: &NetState, ifup_ok: bool) -> bool {
    let sources_d = st.ifupdown.iter().any(|f| {
        f.path == INTERFACES
            && f.parsed
                .sources()
                .iter()
                .any(|(_, a, _)| a.contains("interfaces.d"))
    });
    (ifup_ok && sources_d) || ctx.facts.installed("netplan.io") || ctx.facts.installed("nplan")
}

/// cloud-init is installed, its network configuration is on, and its output is read.
pub(super) fn cloud_init_covers(ctx: &Ctx, st: &NetState) -> Result<bool> {
    if !ctx.facts.installed("cloud-init") || cloud_init_network_disabled(ctx.root)? {
        return Ok(false);
    }
    let ifup_ok = st.ifupdown_active && networking_enabled(ctx.root)? && has_dhcp_client(ctx);
    Ok(ifup_ok_or_netplan(ctx, st, ifup_ok))
}

/// Is cloud-init's network configuration switched off in /etc/cloud?
pub(super) fn cloud_init_network_disabled(root: &Root) -> Result<bool> {
    let mut files = vec!["/etc/cloud/cloud.cfg".to_string()];
    files.extend(root.files_in("/etc/cloud/cloud.cfg.d", |n| n.ends_with(".cfg"))?);
    for f in files {
        if let Some(t) = root.read_text(&f)? {
            let mut in_network = false;
            for l in t.lines() {
                let s = l.split('#').next().unwrap_or("").trim_end();
                if s.trim().is_empty() {
                    continue;
                }
                if !s.starts_with([' ', '\t']) {
                    in_network = s.starts_with("network:");
                    if s.replace(' ', "").contains("network:{config:disabled}") {
                        return Ok(true);
                    }
                } else if in_network && s.trim().replace(' ', "") == "config:disabled" {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

pub(super) fn check_no_primary_dhcp(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let st = gather(ctx)?;
    let naming = ctx.config.network.interface_naming;
    let map = st.rename_map(naming);
    let ifup_ok = st.ifupdown_active && networking_enabled(ctx.root)? && has_dhcp_client(ctx);
    let mut notes = Vec::new();
    if st.ifupdown_active && !networking_enabled(ctx.root)? {
        notes.push("the ifupdown `networking` service is not enabled".to_string());
    }
    if st.ifupdown_active && !has_dhcp_client(ctx) {
        notes.push(
            "no DHCP client package (isc-dhcp-client, dhcpcd, udhcpc) is installed".to_string(),
        );
    }
    let up = st.cfgs.iter().any(|c| {
        if c.family != "inet" || !c.auto {
            return false;
        }
        // Static addressing is converted (addressing = "dhcp") or kept on purpose ("keep"): either way the
        // interface comes up.
        let dhcp_after = c.method == Method::Dhcp || c.method == Method::Static;
        if !dhcp_after {
            return false;
        }
        if c.src == Src::Ifupdown && !ifup_ok {
            return false;
        }
        // A bridge or bond over the NIC (`bridge_ports eth0`) brings it up with the bridge's addressing.
        match (&c.name, naming) {
            (None, _) => true,
            (Some(n), NamingPolicy::Eth0) => std::iter::once(n)
                .chain(&c.members)
                .any(|n| st.target(&map, n) == "eth0"),
            (Some(n), NamingPolicy::Predictable) => {
                std::iter::once(n).chain(&c.members).any(|n| is_physical(n))
            }
        }
    });
    if up {
        return Ok(Vec::new());
    }
    // NetworkManager brings up unconfigured wired NICs with DHCP by itself, unless told not to.
    let nm_installed = ctx.facts.installed("network-manager");
    if nm_installed {
        let mut auto_default = true;
        for f in std::iter::once("/etc/NetworkManager/NetworkManager.conf".to_string()).chain(
            ctx.root
                .files_in("/etc/NetworkManager/conf.d", |n| n.ends_with(".conf"))?,
        ) {
            if let Some(t) = ctx.root.read_text(&f)? {
                let ini = ini::parse(&t);
                if ini
                    .get("main", "no-auto-default")
                    .is_some_and(|e| e.value.contains('*'))
                {
                    auto_default = false;
                }
            }
        }
        if auto_default {
            return Ok(Vec::new());
        }
    }
    // cloud-init (installed by the cloud-init checks' fix) writes a DHCP fallback configuration on the first
    // boot of the new instance, when its output is read.
    if ifup_ok_or_netplan(ctx, &st, ifup_ok) && !cloud_init_network_disabled(ctx.root)? {
        return Ok(Vec::new());
    }
    let mut msg = "after the planned fixes no interface would be configured with DHCP and brought up at boot \
                   (no `auto`/`allow-hotplug` DHCP stanza for the primary NIC"
        .to_string();
    if naming == NamingPolicy::Eth0 {
        msg.push_str(", eth0");
    }
    msg.push(')');
    if !notes.is_empty() {
        msg.push_str(&format!("; {}", notes.join("; ")));
    }
    msg.push_str(": the instance would boot without network and be unreachable");
    let mut ev: Vec<Evidence> = st
        .cfgs
        .iter()
        .map(|c| {
            Evidence::line(
                &c.path,
                c.line,
                &format!(
                    "{} {} {:?}{}",
                    c.name.as_deref().unwrap_or(&c.id),
                    c.family,
                    c.method,
                    if c.auto {
                        ""
                    } else {
                        " (not brought up at boot)"
                    }
                ),
            )
        })
        .collect();
    if ev.is_empty() {
        ev.push(Evidence::file(
            INTERFACES,
            "no interface configuration found",
        ));
    }
    let mut f = Finding::new(info, msg).evidences(ev).remediation(
        "Add `auto eth0` and `iface eth0 inet dhcp` to /etc/network/interfaces (or the equivalent for the \
         guest's network tool), and make sure a DHCP client is installed.",
    );
    // Fixable for ifupdown with the eth0 policy when a DHCP client is there: the eth0 stanza (the file is
    // created when missing), the networking service enabled, and kernel names.
    if naming == NamingPolicy::Eth0 && st.ifupdown_active && has_dhcp_client(ctx) {
        let has_iface = st.ifupdown.iter().any(|f| {
            f.parsed
                .stanzas
                .iter()
                .any(|s| s.family == "inet" && st.target(&map, &s.name) == "eth0")
        });
        let enabled = networking_enabled(ctx.root)?;
        let current = ctx.root.read_text(INTERFACES)?.unwrap_or_default();
        let edits_file = ensure_eth0_dhcp(&current, has_iface) != current;
        if edits_file || !enabled {
            let mut fix = Fix::default();
            if edits_file {
                fix = fix.edit(FileEdit::rewrite(
                    INTERFACES,
                    Validator::Ifupdown,
                    move |c| Ok(ensure_eth0_dhcp(c, has_iface)),
                ));
                if predictable_capable(ctx) && !ifnames_disabled(ctx.root)? {
                    let g = grub_fix(ctx.root);
                    fix.edits.extend(g.edits);
                    fix.commands.extend(g.commands);
                }
            }
            if !enabled {
                let systemd = ctx
                    .root
                    .resolve("/sbin/init")
                    .map(|r| r.guest.ends_with("/systemd"))
                    .unwrap_or(false);
                let argv: &[&str] = if systemd {
                    &["systemctl", "enable", "networking.service"]
                } else {
                    &["update-rc.d", "networking", "defaults"]
                };
                fix = fix.command(PlannedCommand::new(
                    Phase::Post,
                    ENABLE_NETWORKING_ORDER,
                    argv,
                    "bring interfaces up at boot (ifupdown networking service)",
                ));
            }
            f = f.fix(fix);
        }
    }
    Ok(vec![f])
}

/// Make eth0 come up at boot with DHCP: `auto eth0` unless an auto/allow-hotplug line exists, and
/// `iface eth0 inet dhcp` unless an eth0 IPv4 stanza exists (here or, per `has_iface`, in an included file).
pub fn ensure_eth0_dhcp(content: &str, has_iface: bool) -> String {
    let p = ifupdown::parse(content);
    let mut add = Vec::new();
    if !p
        .autos()
        .iter()
        .any(|(k, n, _)| n == "eth0" && (k == "auto" || k == "allow-hotplug"))
    {
        add.push("auto eth0".to_string());
    }
    if !has_iface
        && !p
            .stanzas
            .iter()
            .any(|s| s.name == "eth0" && s.family == "inet")
    {
        add.push("iface eth0 inet dhcp".to_string());
    }
    // A missing or blank file gets the loopback stanza too, as the Debian installer writes it.
    if content.trim().is_empty() && !add.is_empty() {
        add.splice(
            0..0,
            ["auto lo", "iface lo inet loopback", ""].map(str::to_string),
        );
    }
    if add.is_empty() {
        content.to_string()
    } else {
        ifupdown::append_lines(content, &add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensure_eth0_dhcp_appends_once() {
        let t = "auto lo\niface lo inet loopback";
        let out = ensure_eth0_dhcp(t, false);
        assert_eq!(
            out,
            "auto lo\niface lo inet loopback\nauto eth0\niface eth0 inet dhcp\n"
        );
        assert_eq!(ensure_eth0_dhcp(&out, false), out);
        // A stanza elsewhere (included file): only the auto line.
        assert_eq!(ensure_eth0_dhcp("# x\r\n", true), "# x\r\nauto eth0\r\n");
        // A missing file is created with the loopback.
        assert_eq!(
            ensure_eth0_dhcp("", false),
            "auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n"
        );
        let hot = "allow-hotplug eth0\niface eth0 inet manual\n";
        assert_eq!(ensure_eth0_dhcp(hot, false), hot);
    }
}
