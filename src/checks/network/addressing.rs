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

pub(super) fn static_fix(st: &NetState, c: &Cfg, map: &[(String, String)], hand_off: bool) -> Fix {
    let old = c.name.clone().unwrap_or_else(|| c.id.clone());
    let target = st.target(map, &old);
    let mut fix = Fix::default();
    match c.src {
        Src::Ifupdown if hand_off && target == "eth0" => {
            fix = fix.edit(hand_off_edit(&c.path, primary_names(st, map)));
        }
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
    let hand_off = cloud_init_owns_primary(ctx, &st)?;
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
            AddressPolicy::Dhcp if hand_off && c.src == Src::Ifupdown && target == "eth0" => f
                .remediation(format!(
                    "Leave {target} to cloud-init, which configures it with DHCP in the cloud (as Debian's \
                     cloud images do): the stanza is commented out, the old configuration kept above it."
                ))
                .fix(static_fix(&st, c, &map, true)),
            AddressPolicy::Dhcp => f
                .remediation(format!(
                    "Configure {target} with DHCP ({}); keep the old configuration above for reference.",
                    if v6 { "inet6 auto" } else { "inet dhcp / dhcp4: true" }
                ))
                .fix(static_fix(&st, c, &map, false)),
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

/// The gateway of a route added by an ifupdown hook command (`up ip route add NET via GW`,
/// `post-up route add -net NET gw GW`), when it has one.
pub fn hook_route_gateway(cmd: &str) -> Option<String> {
    let w: Vec<&str> = cmd
        .split_whitespace()
        .map(|w| w.rsplit('/').next().unwrap_or(w))
        .collect();
    let adds = w
        .windows(2)
        .any(|p| p[0] == "route" && (p[1] == "add" || p[1] == "replace"));
    if !adds {
        return None;
    }
    w.windows(2)
        .find(|p| p[0] == "via" || p[0] == "gw")
        .map(|p| p[1].trim_end_matches([';', '|', '&']).to_string())
}

/// network.old-routes: routes through the old network's gateways in ifupdown hooks. In the cloud that
/// gateway is gone: the route fails, and without `|| true` ifup reports the interface as failed. Not
/// rewritten (a cloud that recreates the old subnet may keep the gateway): the lines are reported.
pub(super) fn check_old_routes(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let st = gather(ctx)?;
    let mut out = Vec::new();
    for f in &st.ifupdown {
        for s in &f.parsed.stanzas {
            for (k, v, a, _) in &s.opts {
                if !matches!(k.as_str(), "up" | "post-up" | "pre-up") {
                    continue;
                }
                let Some(gw) = hook_route_gateway(v) else {
                    continue;
                };
                let tolerant = v.contains("|| true") || v.contains("||true") || v.contains("|| :");
                out.push(
                    Finding::new(
                        info,
                        format!(
                            "{} {} adds a route through {gw}, a gateway of the old network{}",
                            s.name,
                            k,
                            if tolerant {
                                ": in the cloud the route is not added"
                            } else {
                                ": in the cloud the command fails and ifup reports the interface as failed"
                            }
                        ),
                    )
                    .evidence(Evidence::line(&f.path, *a, &format!("{k} {v}")))
                    .remediation(
                        "Remove the route, or re-create it in the cloud (a Neutron router or subnet host route), \
                         or append `|| true` if the gateway may exist there.",
                    ),
                );
            }
        }
    }
    Ok(out)
}

/// Does this cloud-init version render network configuration (0.7.7 and later: Debian 9, Ubuntu 16.04)?
/// Debian 8's 0.7.6 has no renderer. `version` is a Debian version (`0.7.6-1+deb8u1`, `22.4-2`, `1:…`).
pub fn cloud_init_renders_network(version: &str) -> bool {
    let v = version.split_once(':').map_or(version, |(_, v)| v);
    let mut it = v
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u64>().unwrap_or(0));
    let (major, minor, patch) = (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    );
    (major, minor, patch) >= (0, 7, 7)
}

/// Is the check `id` neither skipped nor waived in the configuration (so that its fix is in the plan)?
fn fix_planned_by(ctx: &Ctx, id: &str) -> bool {
    !ctx.config.is_skipped(id) && !ctx.config.waivers.contains_key(id)
}

/// The cloud-init that runs in the cloud, when its version is known before it is installed: the installed
/// package, else the `.deb` configured in `[fix] cloud_init_deb` (`cloud-init_<version>_all.deb`, or the one
/// in that directory), else (cloud-init.installed plans `apt-get install cloud-init`) what the release ships.
fn cloud_init_version_in_cloud(ctx: &Ctx) -> Option<String> {
    if let Some(p) = ctx
        .facts
        .packages
        .get("cloud-init")
        .filter(|p| p.is_installed())
    {
        return Some(p.version.clone());
    }
    if ctx.facts.packages.is_empty() || !fix_planned_by(ctx, "cloud-init.installed") {
        return None;
    }
    let deb = ctx.config.fix.cloud_init_deb.trim();
    if !deb.is_empty() {
        let names: Vec<String> = if ctx.root.is_dir(deb) {
            ctx.root
                .files_in(deb, |n| n.starts_with("cloud-init_") && n.ends_with(".deb"))
                .ok()?
        } else {
            vec![deb.to_string()]
        };
        let name = names.first()?.rsplit('/').next()?.to_string();
        return name
            .strip_prefix("cloud-init_")
            .and_then(|r| r.split('_').next())
            .map(|v| v.replace("%3a", ":"));
    }
    // The release's own cloud-init: every supported release after Debian 8 / Ubuntu 14.04 renders.
    let os = ctx.facts.os.as_ref()?;
    let major: u64 = os.version_id.split('.').next()?.parse().ok()?;
    let renders = match os.id.as_str() {
        "debian" => major >= 9,
        "ubuntu" => major >= 16,
        _ => return None,
    };
    Some(if renders { "0.7.7" } else { "0.7.6" }.to_string())
}

/// In the cloud, cloud-init configures the primary NIC (eth0) itself, as in Debian's own cloud images: it
/// renders network configuration (version, not disabled) through ifupdown (`interfaces.d/50-cloud-init`),
/// under the eth0 naming policy. Then /etc/network/interfaces must leave eth0 alone, or two configurations
/// (and two DHCP clients) bring it up.
pub(super) fn cloud_init_owns_primary(ctx: &Ctx, st: &NetState) -> Result<bool> {
    if ctx.config.network.interface_naming != NamingPolicy::Eth0 || !st.ifupdown_active {
        return Ok(false);
    }
    // The cloud-init checks' fixes remove the disabled marker and every `network: {config: disabled}`
    // (installer leftovers): judge the state after the plan, so that a second fix plans nothing.
    if (ctx.root.exists(crate::checks::cloud_init::DISABLED_MARKER)
        && !fix_planned_by(ctx, "cloud-init.disabled"))
        || (cloud_init_network_disabled(ctx.root)?
            && !fix_planned_by(ctx, "cloud-init.installer-leftovers"))
    {
        return Ok(false);
    }
    Ok(cloud_init_version_in_cloud(ctx).is_some_and(|v| cloud_init_renders_network(&v)))
}

/// The old names of the primary NIC (those renamed to eth0, and eth0 itself).
pub(super) fn primary_names(st: &NetState, map: &[(String, String)]) -> Vec<String> {
    let mut v: Vec<String> = st
        .cfgs
        .iter()
        .filter_map(|c| c.name.clone())
        .filter(|n| st.target(map, n) == "eth0")
        .collect();
    v.push("eth0".to_string());
    v.sort();
    v.dedup();
    v
}

/// The edit that leaves the primary NIC to cloud-init in one ifupdown file.
pub(super) fn hand_off_edit(path: &str, names: Vec<String>) -> FileEdit {
    FileEdit::rewrite(path, Validator::Ifupdown, move |c| {
        Ok(ifupdown::hand_to_cloud_init(c, &names))
    })
}

/// network.primary-nic-owner: exactly one configuration brings the primary NIC up in the cloud.
pub(super) fn check_primary_owner(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let st = gather(ctx)?;
    if !cloud_init_owns_primary(ctx, &st)? {
        return Ok(Vec::new());
    }
    let map = st.rename_map(ctx.config.network.interface_naming);
    let names = primary_names(&st, &map);
    let mut out = Vec::new();
    for f in &st.ifupdown {
        if ifupdown::CLOUD_INIT_ENI.contains(&f.path.as_str()) {
            continue;
        }
        // Static stanzas are network.static-addressing's (its fix hands them over the same way).
        let dup: Vec<&ifupdown::Stanza> = f
            .parsed
            .stanzas
            .iter()
            .filter(|s| names.contains(&s.name) && s.method != "static" && s.method != "loopback")
            .collect();
        if dup.is_empty() {
            continue;
        }
        let ev: Vec<Evidence> = dup
            .iter()
            .map(|s| {
                Evidence::line(
                    &f.path,
                    s.line,
                    &format!("iface {} {} {}", s.name, s.family, s.method),
                )
            })
            .collect();
        out.push(
            Finding::new(
                info,
                format!(
                    "{} configures the primary NIC and so will cloud-init ({}): two configurations bring \
                     eth0 up, with two DHCP clients",
                    f.path,
                    ifupdown::CLOUD_INIT_ENI[0]
                ),
            )
            .evidences(ev)
            .remediation(
                "Leave eth0 to cloud-init, as Debian's cloud images do: remove its stanza and `auto` line                  (the loopback and `source` lines stay).",
            )
            .fix(Fix::default().edit(hand_off_edit(&f.path, names.clone()))),
        );
    }
    Ok(out)
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
        // When cloud-init configures eth0 in the cloud, /etc/network/interfaces only has to read its file.
        let owner = cloud_init_owns_primary(ctx, &st)?.then(|| primary_names(&st, &map));
        let edits_file = match &owner {
            Some(names) => ifupdown::hand_to_cloud_init(&current, names) != current,
            None => ensure_eth0_dhcp(&current, has_iface) != current,
        };
        if edits_file || !enabled {
            let mut fix = Fix::default();
            if let (true, Some(names)) = (edits_file, owner) {
                fix = fix.edit(hand_off_edit(INTERFACES, names));
            } else if edits_file {
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
    fn routes_through_a_gateway_in_hooks() {
        assert_eq!(
            hook_route_gateway("ip route add 10.9.0.0/16 via 10.1.2.254 dev eth0").as_deref(),
            Some("10.1.2.254")
        );
        assert_eq!(
            hook_route_gateway(
                "/sbin/route add -net 172.16.0.0 netmask 255.240.0.0 gw 10.1.2.1 || true"
            )
            .as_deref(),
            Some("10.1.2.1")
        );
        assert_eq!(
            hook_route_gateway("ip route add 10.9.0.0/16 dev eth0"),
            None
        );
        assert_eq!(
            hook_route_gateway("ip route del default via 10.1.2.1"),
            None
        );
        assert_eq!(hook_route_gateway("/sbin/ethtool -K eth0 tso off"), None);
    }

    #[test]
    fn cloud_init_versions_that_render_network() {
        assert!(!cloud_init_renders_network("0.7.6-1+deb8u1"));
        assert!(cloud_init_renders_network("0.7.7~bzr1256-0ubuntu1"));
        assert!(cloud_init_renders_network("0.7.9-2"));
        assert!(cloud_init_renders_network("20.4-2+deb11u1"));
        assert!(cloud_init_renders_network("22.4-2"));
        assert!(cloud_init_renders_network("1:25.1-1"));
        assert!(!cloud_init_renders_network(""));
    }

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
