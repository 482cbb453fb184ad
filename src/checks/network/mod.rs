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

pub mod firewall;
pub mod ifupdown;
pub mod ini;
pub mod netplan;
pub mod sshd;
pub mod udev;

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
/// After the file edits, before update-grub (the order does not matter to grub).
const RESOLV_LINK_ORDER: u32 = 65;
const ENABLE_NETWORKING_ORDER: u32 = 66;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Src {
    Ifupdown,
    Netplan,
    Networkd,
    Nm,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Dhcp,
    Static,
    Other(String),
}

/// One interface configuration, whatever tool it belongs to.
#[derive(Debug, Clone)]
pub struct Cfg {
    pub src: Src,
    pub path: String,
    /// Line of the stanza/entry (1 for whole-file formats).
    pub line: usize,
    /// Interface name it configures (None: matched by MAC only, or a glob).
    pub name: Option<String>,
    /// netplan id (the key), otherwise the name.
    pub id: String,
    /// `inet`, `inet6` (ifupdown) or `inet` for the others.
    pub family: String,
    pub method: Method,
    pub addresses: Vec<(usize, String)>,
    pub gateway: Option<(usize, String)>,
    pub dns: Vec<String>,
    /// Brought up at boot.
    pub auto: bool,
    /// Ports of a bridge / slaves of a bond (`bridge_ports`, `bond-slaves`, `bond-master` of the members,
    /// netplan `interfaces:`): the bridge or bond carries their traffic and addressing.
    pub members: Vec<String>,
}

pub struct TextFile<T> {
    pub path: String,
    pub text: String,
    pub parsed: T,
}

/// Everything the network checks look at, gathered once per check run.
pub struct NetState {
    pub ifupdown_active: bool,
    pub ifupdown: Vec<TextFile<ifupdown::Parsed>>,
    pub netplan: Vec<TextFile<netplan::Netplan>>,
    pub networkd: Vec<TextFile<ini::Ini>>,
    pub links: Vec<TextFile<ini::Ini>>,
    pub nm: Vec<TextFile<ini::Ini>>,
    pub cfgs: Vec<Cfg>,
    /// Unparseable lines and include problems (reported as evidence, skipped).
    pub garbage: Vec<Evidence>,
}

/// Read a configuration file; an unreadable one (binary, invalid UTF-8, permissions) is reported as
/// evidence and skipped rather than failing every network check.
fn read(root: &Root, path: &str, garbage: &mut Vec<Evidence>) -> Option<String> {
    match root.read_text(path) {
        Ok(t) => t,
        Err(e) => {
            garbage.push(Evidence::file(path, format!("{e:#}")));
            None
        }
    }
}

/// Follow `source`/`source-directory` from /etc/network/interfaces (globs; relative paths from
/// /etc/network), depth-limited and cycle-safe.
fn gather_ifupdown(root: &Root, st: &mut NetState) -> Result<()> {
    let mut todo: Vec<(String, usize)> = vec![(INTERFACES.to_string(), 0)];
    let mut seen = BTreeSet::new();
    while let Some((path, depth)) = todo.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let Some(text) = read(root, &path, &mut st.garbage) else {
            continue;
        };
        let parsed = ifupdown::parse(&text);
        for (l, why) in parsed.garbage() {
            st.garbage.push(Evidence::line(
                &path,
                l.first,
                &format!("{} ({why})", l.text.trim()),
            ));
        }
        let mut includes = Vec::new();
        for (dir, arg, line) in parsed.sources() {
            if depth >= 8 {
                st.garbage.push(Evidence::line(
                    &path,
                    line,
                    "source nesting too deep; not followed",
                ));
                continue;
            }
            let abs = if arg.starts_with('/') {
                arg.clone()
            } else {
                format!("/etc/network/{arg}")
            };
            if dir {
                for f in root.files_in(&abs, ifupdown::run_parts_name)? {
                    includes.push(f);
                }
            } else {
                includes.extend(expand_glob(root, &abs)?);
            }
        }
        st.ifupdown.push(TextFile {
            path: path.clone(),
            text,
            parsed,
        });
        // Depth-first in file order: push reversed.
        for f in includes.into_iter().rev() {
            todo.push((f, depth + 1));
        }
    }
    Ok(())
}

/// Expand a glob path (wildcards in any component) to existing regular files, sorted.
pub fn expand_glob(root: &Root, pattern: &str) -> Result<Vec<String>> {
    let mut cur = vec![String::new()];
    let comps: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    for (i, c) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let mut next = Vec::new();
        for base in &cur {
            if c.contains(['*', '?', '[']) {
                let dir = if base.is_empty() { "/" } else { base.as_str() };
                for n in root.list_dir(dir)? {
                    if n.starts_with('.') && !c.starts_with('.') {
                        continue;
                    }
                    if ifupdown::glob_match(c, &n) {
                        next.push(format!("{base}/{n}"));
                    }
                }
            } else {
                next.push(format!("{base}/{c}"));
            }
        }
        cur = next;
        if !last {
            cur.retain(|p| root.is_dir(p));
        }
    }
    let mut out: Vec<String> = cur
        .into_iter()
        .filter(|p| root.resolve(p).map(|r| r.host.is_file()).unwrap_or(false))
        .collect();
    out.sort();
    Ok(out)
}

fn is_ifupdown_installed(ctx: &Ctx) -> bool {
    ctx.facts.packages.is_empty()
        || ["ifupdown", "ifupdown2", "ifupdown-ng", "netscript-2.4"]
            .iter()
            .any(|p| ctx.facts.installed(p))
}

pub fn gather(ctx: &Ctx) -> Result<NetState> {
    let root = ctx.root;
    let mut st = NetState {
        ifupdown_active: is_ifupdown_installed(ctx),
        ifupdown: Vec::new(),
        netplan: Vec::new(),
        networkd: Vec::new(),
        links: Vec::new(),
        nm: Vec::new(),
        cfgs: Vec::new(),
        garbage: Vec::new(),
    };
    if st.ifupdown_active {
        gather_ifupdown(root, &mut st)?;
    }
    for p in root.files_in("/etc/netplan", |n| {
        n.ends_with(".yaml") || n.ends_with(".yml")
    })? {
        if let Some(text) = read(root, &p, &mut st.garbage) {
            let parsed = netplan::parse(&text);
            for (l, why) in &parsed.bad {
                st.garbage.push(Evidence::line(&p, *l, why));
            }
            st.netplan.push(TextFile {
                path: p,
                text,
                parsed,
            });
        }
    }
    for p in root.files_in("/etc/systemd/network", |n| {
        n.ends_with(".network") || n.ends_with(".link")
    })? {
        if let Some(text) = read(root, &p, &mut st.garbage) {
            let parsed = ini::parse(&text);
            for (l, t) in &parsed.garbage {
                st.garbage
                    .push(Evidence::line(&p, *l, &format!("{t} (not `key=value`)")));
            }
            let tf = TextFile {
                path: p.clone(),
                text,
                parsed,
            };
            if p.ends_with(".link") {
                st.links.push(tf);
            } else {
                st.networkd.push(tf);
            }
        }
    }
    for p in root.files_in("/etc/NetworkManager/system-connections", |n| {
        !n.starts_with('.') && !n.ends_with('~')
    })? {
        if let Some(text) = read(root, &p, &mut st.garbage) {
            let parsed = ini::parse(&text);
            st.nm.push(TextFile {
                path: p,
                text,
                parsed,
            });
        }
    }
    st.cfgs = collect_cfgs(&st);
    Ok(st)
}

/// Member interfaces of an ifupdown bridge or bond stanza: its `bridge_ports`/`bond-slaves` (ifupdown's
/// bridge-utils and ifenslave spellings) and the stanzas naming it as their `bond-master`.
fn ifupdown_members(st: &NetState, name: &str, s: &ifupdown::Stanza) -> Vec<String> {
    let mut out: Vec<String> = s
        .opts
        .iter()
        .filter(|o| {
            matches!(
                o.0.as_str(),
                "bridge_ports" | "bridge-ports" | "bond-slaves" | "bond_slaves" | "slaves"
            )
        })
        .flat_map(|o| o.1.split_whitespace().map(str::to_string))
        .filter(|m| m != "none" && m != "all")
        .collect();
    for f in &st.ifupdown {
        for m in &f.parsed.stanzas {
            if m.opts
                .iter()
                .any(|o| (o.0 == "bond-master" || o.0 == "bond_master") && o.1.trim() == name)
                && !out.contains(&m.name)
            {
                out.push(m.name.clone());
            }
        }
    }
    out
}

fn collect_cfgs(st: &NetState) -> Vec<Cfg> {
    let mut out = Vec::new();
    let mut autos = BTreeSet::new();
    for f in &st.ifupdown {
        for (kind, name, _) in f.parsed.autos() {
            if kind == "auto" || kind == "allow-hotplug" || kind == "allow-auto" {
                autos.insert(name);
            }
        }
    }
    for f in &st.ifupdown {
        for s in &f.parsed.stanzas {
            if !matches!(s.family.as_str(), "inet" | "inet6") {
                continue;
            }
            let method = match s.method.as_str() {
                "dhcp" => Method::Dhcp,
                "auto" if s.family == "inet6" => Method::Dhcp,
                "static" => Method::Static,
                m => Method::Other(m.to_string()),
            };
            let addresses = s
                .opts
                .iter()
                .filter(|o| o.0 == "address")
                .map(|o| (o.2, o.1.clone()))
                .collect();
            let gateway = s
                .opts
                .iter()
                .find(|o| o.0 == "gateway")
                .map(|o| (o.2, o.1.clone()));
            let dns = s
                .opts_with_prefix("dns-nameservers")
                .flat_map(|v| v.split_whitespace().map(str::to_string))
                .collect();
            out.push(Cfg {
                src: Src::Ifupdown,
                path: f.path.clone(),
                line: s.line,
                name: Some(s.name.clone()),
                id: s.name.clone(),
                family: s.family.clone(),
                method,
                addresses,
                gateway,
                dns,
                auto: autos.contains(&s.name),
                members: ifupdown_members(st, &s.name, s),
            });
        }
    }
    for f in &st.netplan {
        for i in &f.parsed.ifaces {
            out.push(Cfg {
                src: Src::Netplan,
                path: f.path.clone(),
                line: i.line,
                name: i.name().map(str::to_string),
                id: i.id.clone(),
                family: "inet".into(),
                method: if i.dhcp4 {
                    Method::Dhcp
                } else if i.is_static() {
                    Method::Static
                } else {
                    Method::Other("none".into())
                },
                addresses: i.addresses.clone(),
                gateway: i
                    .gateway4
                    .clone()
                    .or_else(|| i.routes_via.first().cloned())
                    .map(|g| (i.line, g)),
                dns: i.nameservers.clone(),
                auto: true,
                members: i.members.clone(),
            });
        }
    }
    for f in &st.networkd {
        let ini = &f.parsed;
        let name = ini
            .get("Match", "Name")
            .map(|e| e.value.clone())
            .filter(|v| !v.contains(['*', '?', '[', ' ']));
        let dhcp = ini
            .get("Network", "DHCP")
            .map(|e| e.value.to_ascii_lowercase())
            .unwrap_or_default();
        let mut addresses: Vec<(usize, String)> = ini
            .all("Network", "Address")
            .chain(ini.all("Address", "Address"))
            .map(|e| (e.line, e.value.clone()))
            .collect();
        addresses.retain(|(_, a)| a.contains('.'));
        let dhcp4 = matches!(dhcp.as_str(), "yes" | "true" | "ipv4" | "both" | "1" | "on");
        let method = if dhcp4 {
            Method::Dhcp
        } else if !addresses.is_empty() {
            Method::Static
        } else {
            Method::Other(format!("DHCP={dhcp}"))
        };
        out.push(Cfg {
            src: Src::Networkd,
            path: f.path.clone(),
            line: ini.sections.first().map(|s| s.1).unwrap_or(1),
            name: name.clone(),
            id: name.unwrap_or_else(|| f.path.rsplit('/').next().unwrap_or("").to_string()),
            family: "inet".into(),
            method,
            addresses,
            gateway: ini
                .get("Network", "Gateway")
                .or_else(|| ini.get("Route", "Gateway"))
                .map(|e| (e.line, e.value.clone())),
            dns: ini
                .all("Network", "DNS")
                .flat_map(|e| {
                    e.value
                        .split_whitespace()
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .collect(),
            auto: true,
            members: Vec::new(),
        });
    }
    for f in &st.nm {
        let ini = &f.parsed;
        let ty = ini
            .get("connection", "type")
            .map(|e| e.value.as_str())
            .unwrap_or("");
        if !matches!(
            ty,
            "ethernet" | "802-3-ethernet" | "bridge" | "bond" | "vlan"
        ) {
            continue;
        }
        let method = ini
            .get("ipv4", "method")
            .map(|e| e.value.as_str())
            .unwrap_or("auto");
        let mut addresses = Vec::new();
        let mut gateway = ini
            .get("ipv4", "gateway")
            .map(|e| (e.line, e.value.clone()));
        for e in ini.in_section("ipv4") {
            if e.key.starts_with("address") {
                for a in e.value.split(';').filter(|a| !a.trim().is_empty()) {
                    let mut parts = a.split(',');
                    addresses.push((e.line, parts.next().unwrap_or("").trim().to_string()));
                    if let Some(g) = parts.next() {
                        if gateway.is_none() && !g.trim().is_empty() {
                            gateway = Some((e.line, g.trim().to_string()));
                        }
                    }
                }
            }
        }
        out.push(Cfg {
            src: Src::Nm,
            path: f.path.clone(),
            line: ini.get("ipv4", "method").map(|e| e.line).unwrap_or(1),
            name: ini
                .get("connection", "interface-name")
                .map(|e| e.value.clone()),
            id: ini
                .get("connection", "id")
                .map(|e| e.value.clone())
                .unwrap_or_default(),
            family: "inet".into(),
            method: match method {
                "auto" => Method::Dhcp,
                "manual" => Method::Static,
                m => Method::Other(m.to_string()),
            },
            addresses,
            gateway,
            dns: ini
                .get("ipv4", "dns")
                .map(|e| {
                    e.value
                        .split(';')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            auto: ini
                .get("connection", "autoconnect")
                .is_none_or(|e| e.value != "false"),
            members: Vec::new(),
        });
    }
    out
}

/// A physical NIC name (not loopback, bridge, bond, VLAN, alias, tunnel, wireless).
pub fn is_physical(name: &str) -> bool {
    if name == "lo" || name.contains(['.', ':', '*', '?']) {
        return false;
    }
    const VIRT: &[&str] = &[
        "br", "bond", "vlan", "team", "virbr", "docker", "veth", "tun", "tap", "wl", "ww", "ppp",
        "vmnet", "lxc", "vnet", "wg", "dummy", "ib",
    ];
    !VIRT.iter().any(|p| name.starts_with(p))
}

/// Predictable (systemd/biosdevname) names: en*, em1, p2p1, ...
pub fn is_predictable(name: &str) -> bool {
    let eth = name
        .strip_prefix("eth")
        .is_some_and(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_digit()));
    !eth && is_physical(name)
        && (name.starts_with("en")
            || name.starts_with("em")
            || (name.starts_with('p') && name[1..].contains('p')))
}

impl NetState {
    /// The primary interface: the first (IPv4) config with a gateway, else the first brought up at boot,
    /// else the first configured physical interface.
    pub fn primary(&self) -> Option<&Cfg> {
        let phys: Vec<&Cfg> = self
            .cfgs
            .iter()
            .filter(|c| c.family == "inet" && c.name.as_deref().is_none_or(|n| n != "lo"))
            .collect();
        phys.iter()
            .find(|c| c.gateway.is_some())
            .or_else(|| phys.iter().find(|c| c.auto))
            .or_else(|| phys.first())
            .copied()
    }

    /// Old name → new name under the eth0 policy: predictable names become the lowest free ethN, the
    /// primary interface first. Existing ethN names are kept.
    pub fn rename_map(&self, policy: NamingPolicy) -> Vec<(String, String)> {
        if policy != NamingPolicy::Eth0 {
            return Vec::new();
        }
        let mut names: Vec<String> = Vec::new();
        if let Some(n) = self.primary().and_then(|p| p.name.clone()) {
            names.push(n);
        }
        for c in &self.cfgs {
            if let Some(n) = &c.name {
                if !names.contains(n) {
                    names.push(n.clone());
                }
            }
        }
        let mut used: BTreeSet<String> = names
            .iter()
            .filter(|n| !is_predictable(n))
            .cloned()
            .collect();
        let mut map = Vec::new();
        for n in names.iter().filter(|n| is_predictable(n)) {
            let mut k = 0;
            while used.contains(&format!("eth{k}")) {
                k += 1;
            }
            let new = format!("eth{k}");
            used.insert(new.clone());
            map.push((n.clone(), new));
        }
        map
    }

    pub fn target(&self, map: &[(String, String)], name: &str) -> String {
        map.iter()
            .find(|(o, _)| o == name)
            .map(|(_, n)| n.clone())
            .unwrap_or_else(|| name.to_string())
    }
}

/// Edits renaming interfaces in every configuration file where the rename changes something.
fn rename_edits(st: &NetState, map: &[(String, String)]) -> Vec<FileEdit> {
    let mut out = Vec::new();
    if map.is_empty() {
        return out;
    }
    for f in &st.ifupdown {
        if ifupdown::rename(&f.text, map) != f.text {
            let m = map.to_vec();
            out.push(FileEdit::rewrite(&f.path, Validator::Ifupdown, move |c| {
                Ok(ifupdown::rename(c, &m))
            }));
        }
    }
    for f in &st.netplan {
        if netplan::rename(&f.text, map) != f.text {
            let m = map.to_vec();
            out.push(FileEdit::rewrite(&f.path, Validator::Netplan, move |c| {
                Ok(netplan::rename(c, &m))
            }));
        }
    }
    for f in st.networkd.iter().chain(st.links.iter()) {
        if ini_rename(&f.text, map) != f.text {
            let m = map.to_vec();
            out.push(FileEdit::rewrite(&f.path, Validator::None, move |c| {
                Ok(ini_rename(c, &m))
            }));
        }
    }
    for f in &st.nm {
        if nm_rename(&f.text, map) != f.text {
            let m = map.to_vec();
            out.push(FileEdit::rewrite(&f.path, Validator::None, move |c| {
                Ok(nm_rename(c, &m))
            }));
        }
    }
    out
}

/// Rename in `Name=` (networkd `[Match]`, `.link` `[Link]`) values only.
pub fn ini_rename(content: &str, map: &[(String, String)]) -> String {
    rename_keys(content, map, &["Name", "OriginalName"])
}

pub fn nm_rename(content: &str, map: &[(String, String)]) -> String {
    rename_keys(content, map, &["interface-name", "parent"])
}

fn rename_keys(content: &str, map: &[(String, String)], keys: &[&str]) -> String {
    let mut out = String::with_capacity(content.len());
    for line in content.split_inclusive('\n') {
        let t = line.trim_start();
        let hit = keys.iter().any(|k| {
            t.strip_prefix(k)
                .is_some_and(|r| r.trim_start().starts_with('='))
        });
        if hit {
            let (k, v) = line.split_once('=').unwrap_or((line, ""));
            let mut v = v.to_string();
            for (o, n) in map {
                if o != n {
                    v = ifupdown::replace_word(&v, o, n);
                }
            }
            out.push_str(k);
            out.push('=');
            out.push_str(&v);
        } else {
            out.push_str(line);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------
// /etc/default/grub: net.ifnames=0 biosdevname=0

pub const DEFAULT_GRUB: &str = "/etc/default/grub";
const IFNAMES_WORDS: &[(&str, &str)] = &[("net.ifnames", "0"), ("biosdevname", "0")];

fn grub_assignment(line: &str, var: &str) -> bool {
    let t = line.trim_start();
    let t = t.strip_prefix("export ").unwrap_or(t);
    t.strip_prefix(var).is_some_and(|r| r.starts_with('='))
}

/// Does any GRUB_CMDLINE_LINUX / _DEFAULT assignment already carry `net.ifnames=0`?
pub fn grub_has_ifnames0(content: &str) -> bool {
    content.lines().any(|l| {
        (grub_assignment(l, "GRUB_CMDLINE_LINUX")
            || grub_assignment(l, "GRUB_CMDLINE_LINUX_DEFAULT"))
            && l.split(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '=')
                .collect::<Vec<_>>()
                .windows(2)
                .any(|w| w[0] == "net.ifnames" && w[1] == "0")
    })
}

/// Does the kernel command line grub-mkconfig builds from these default files (sourced in order, as
/// `GRUB_CMDLINE_LINUX GRUB_CMDLINE_LINUX_DEFAULT`) end up with `net.ifnames=0` (the last `net.ifnames=`
/// wins)? A later assignment (e.g. Ubuntu's grub.d/50-cloudimg-settings.cfg setting
/// GRUB_CMDLINE_LINUX_DEFAULT) replaces what an earlier file set.
pub fn defaults_ifnames0(files: &[(String, String)]) -> bool {
    let (_, env) = crate::checks::boot::grub::parse_defaults(files);
    let get = |k: &str| env.get(k).map(String::as_str).unwrap_or("");
    format!(
        "{} {}",
        get("GRUB_CMDLINE_LINUX"),
        get("GRUB_CMDLINE_LINUX_DEFAULT")
    )
    .split_whitespace()
    .filter_map(|w| w.strip_prefix("net.ifnames="))
    .next_back()
        == Some("0")
}

/// Add (or correct) `net.ifnames=0 biosdevname=0` in the last `GRUB_CMDLINE_LINUX=` assignment, keeping its
/// quoting; other words and lines are untouched. Appends an assignment when there is none. Idempotent.
pub fn grub_set_ifnames(content: &str) -> Result<String> {
    // An unterminated quote runs to the end of the file in sh: whatever is edited or appended after it is
    // part of that string.
    let parsed = crate::checks::boot::grub::shell::parse(content, &mut Default::default());
    crate::checks::boot::grub::refuse_unterminated(
        &parsed,
        "correct it and add net.ifnames=0 biosdevname=0 by hand",
    )
    .map_err(|e| anyhow::anyhow!("{DEFAULT_GRUB} {e}"))?;
    let lines: Vec<&str> = content.split_inclusive('\n').collect();
    let idx = lines
        .iter()
        .rposition(|l| grub_assignment(l, "GRUB_CMDLINE_LINUX"));
    let Some(idx) = idx else {
        let mut out = content.to_string();
        crate::checks::boot::grub::push_assignment(
            &mut out,
            "GRUB_CMDLINE_LINUX",
            "net.ifnames=0 biosdevname=0",
        );
        return Ok(out);
    };
    let line = lines[idx];
    let body = line.trim_end_matches('\n').trim_end_matches('\r');
    let eol = &line[body.len()..];
    let eq = body.find('=').unwrap_or(0);
    let (head, val) = body.split_at(eq + 1);
    // Split the value into (open quote, inner, close quote + rest).
    let (open, inner, rest): (&str, String, String) = if let Some(q) =
        val.chars().next().filter(|c| *c == '"' || *c == '\'')
    {
        let Some(end) = val[1..].find(q) else {
            anyhow::bail!(
                "{DEFAULT_GRUB} line {}: GRUB_CMDLINE_LINUX value continues over several lines; add net.ifnames=0 biosdevname=0 by hand",
                idx + 1
            );
        };
        (
            if q == '"' { "\"" } else { "'" },
            val[1..1 + end].to_string(),
            val[1 + end..].to_string(),
        )
    } else {
        let end = val.find(|c: char| c.is_whitespace()).unwrap_or(val.len());
        if val[..end].contains(['"', '\'', '\\', '$', '`']) {
            anyhow::bail!(
                "{DEFAULT_GRUB} line {}: GRUB_CMDLINE_LINUX value uses shell quoting cloudprep does not edit; add net.ifnames=0 biosdevname=0 by hand",
                idx + 1
            );
        }
        ("", val[..end].to_string(), val[end..].to_string())
    };
    let mut words: Vec<String> = inner.split_whitespace().map(str::to_string).collect();
    let mut changed = false;
    for (k, v) in IFNAMES_WORDS {
        let want = format!("{k}={v}");
        let mut found = false;
        for w in words.iter_mut() {
            if w == k || w.starts_with(&format!("{k}=")) {
                found = true;
                if *w != want {
                    *w = want.clone();
                    changed = true;
                }
            }
        }
        if !found {
            words.push(want);
            changed = true;
        }
    }
    if !changed {
        return Ok(content.to_string());
    }
    // Keep the original spacing: append new words to the inner text, replace changed words in place.
    let mut new_inner = inner.clone();
    for (k, v) in IFNAMES_WORDS {
        let want = format!("{k}={v}");
        let toks: Vec<&str> = new_inner.split_whitespace().collect();
        if let Some(old) = toks
            .iter()
            .find(|w| **w == *k || w.starts_with(&format!("{k}=")))
        {
            if *old != want {
                new_inner = ifupdown::replace_word(&new_inner, old, &want);
            }
        } else {
            if !new_inner.trim().is_empty() && !new_inner.ends_with([' ', '\t']) {
                new_inner.push(' ');
            }
            new_inner.push_str(&want);
        }
    }
    let (open, close) = if open.is_empty() {
        ("\"", "\"")
    } else {
        (open, "")
    };
    let rest = if close.is_empty() {
        rest
    } else {
        format!("{close}{rest}")
    };
    let mut out = String::with_capacity(content.len() + 32);
    for (i, l) in lines.iter().enumerate() {
        if i == idx {
            out.push_str(&format!("{head}{open}{new_inner}{rest}{eol}"));
        } else {
            out.push_str(l);
        }
    }
    Ok(out)
}

/// Does udev of this guest rename NICs to predictable names? Debian before 9 (stretch) and Ubuntu before
/// 15.10 kept kernel names by default even where the udev rule exists.
fn predictable_capable(ctx: &Ctx) -> bool {
    if let Some(os) = &ctx.facts.os {
        let major: u32 = os
            .version_id
            .split('.')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let old = match os.id.as_str() {
            "debian" => major > 0 && major < 9,
            "ubuntu" => {
                major > 0 && (major < 15 || (major == 15 && os.version_id.as_str() < "15.10"))
            }
            _ => false,
        };
        if old {
            return false;
        }
    }
    let root = ctx.root;
    [
        "/lib/udev/rules.d/80-net-setup-link.rules",
        "/usr/lib/udev/rules.d/80-net-setup-link.rules",
        "/lib/udev/rules.d/80-net-name-slot.rules",
        "/usr/lib/udev/rules.d/80-net-name-slot.rules",
    ]
    .iter()
    .any(|p| root.exists(p))
}

/// Is predictable naming switched off (kernel command line in /etc/default/grub, or the udev rule
/// masked in /etc)?
fn ifnames_disabled(root: &Root) -> Result<bool> {
    let mut paths = vec![DEFAULT_GRUB.to_string()];
    paths.extend(root.files_in("/etc/default/grub.d", |n| n.ends_with(".cfg"))?);
    let mut files = Vec::new();
    for f in paths {
        if let Some(t) = root.read_text(&f)? {
            files.push((f, t));
        }
    }
    if defaults_ifnames0(&files) {
        return Ok(true);
    }
    for p in [
        "/etc/udev/rules.d/80-net-setup-link.rules",
        "/etc/udev/rules.d/80-net-name-slot.rules",
    ] {
        if std::fs::symlink_metadata(root.lexical(p)).is_ok() {
            return Ok(true);
        }
    }
    // The default naming policy masked (`ln -s /dev/null /etc/systemd/network/99-default.link`, udev's
    // README.Debian since buster): no .link names the NIC, it keeps its kernel name.
    let link = root.lexical("/etc/systemd/network/99-default.link");
    if let Ok(m) = std::fs::symlink_metadata(&link) {
        let masked = if m.file_type().is_symlink() {
            std::fs::read_link(&link).is_ok_and(|t| t == std::path::Path::new("/dev/null"))
        } else {
            m.is_file() && m.len() == 0
        };
        if masked {
            return Ok(true);
        }
    }
    Ok(false)
}

fn grub_fix(root: &Root) -> Fix {
    let mut fix = Fix::default();
    if root.exists(DEFAULT_GRUB) {
        fix = fix
            .edit(FileEdit::rewrite(
                DEFAULT_GRUB,
                Validator::ShellVars,
                grub_set_ifnames,
            ))
            .command(PlannedCommand::new(
                Phase::Post,
                order::UPDATE_GRUB,
                &["update-grub"],
                "regenerate grub.cfg with net.ifnames=0 biosdevname=0",
            ));
    }
    fix
}

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
    for f in &st.netplan {
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

fn describe_old(c: &Cfg) -> String {
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

fn static_fix(st: &NetState, c: &Cfg, map: &[(String, String)]) -> Fix {
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
fn is_vlan(st: &NetState, c: &Cfg) -> bool {
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

fn check_static(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
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

fn check_names(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
    let st = gather(ctx)?;
    let naming = ctx.config.network.interface_naming;
    let named: Vec<&Cfg> = st
        .cfgs
        .iter()
        .filter(|c| c.name.as_deref().is_some_and(is_physical))
        .collect();
    if named.is_empty() {
        return Ok(Vec::new());
    }
    let ev: Vec<Evidence> = named
        .iter()
        .map(|c| {
            Evidence::line(
                &c.path,
                c.line,
                &format!(
                    "{} ({} {})",
                    c.name.as_deref().unwrap_or(""),
                    c.family,
                    match &c.method {
                        Method::Dhcp => "dhcp",
                        Method::Static => "static",
                        Method::Other(m) => m,
                    }
                ),
            )
        })
        .collect();
    let mut out = Vec::new();
    match naming {
        NamingPolicy::Eth0 => {
            let map = st.rename_map(naming);
            let disabled = ifnames_disabled(ctx.root)?;
            let capable = predictable_capable(ctx);
            if map.is_empty() && (disabled || !capable) {
                return Ok(out);
            }
            let mut msg = String::new();
            if !map.is_empty() {
                msg.push_str(&format!(
                    "the configuration names interfaces by their predictable names ({}), which depend on the \
                     PCI slot: on the cloud's virtio NIC they change (ens192 on VMware becomes ens3 or enp0s3 on KVM)",
                    map.iter().map(|m| m.0.as_str()).collect::<Vec<_>>().join(", ")
                ));
            }
            if capable && !disabled {
                if !msg.is_empty() {
                    msg.push_str("; ");
                }
                msg.push_str(
                    "udev renames NICs to predictable names (no net.ifnames=0 on the kernel command line), so \
                     a configuration for eth0 never matches",
                );
            }
            let mut fix = Fix::default();
            if capable && !disabled {
                fix = grub_fix(ctx.root);
            }
            for e in rename_edits(&st, &map) {
                fix = fix.edit(e);
            }
            let rem = format!(
                "Use kernel names: add `net.ifnames=0 biosdevname=0` to GRUB_CMDLINE_LINUX in {DEFAULT_GRUB}, run \
                 update-grub{}.",
                if map.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", and rename {} in the network configuration",
                        map.iter()
                            .map(|(o, n)| format!("{o} to {n}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            );
            let mut f = Finding::new(info, msg).evidences(ev).remediation(rem);
            // cloud-init's DHCP fallback (written for whatever the NIC is called) still brings the
            // instance up when its output is read: then the dead configuration is a warning.
            if cloud_init_covers(ctx, &st)? {
                f = f.severity(Severity::Warning);
                f.message.push_str(
                    "; cloud-init's fallback configuration still brings the NIC up with DHCP, but this \
                     configuration (and its static settings) would never apply",
                );
            }
            if !fix.edits.is_empty() {
                f = f.fix(fix);
            }
            out.push(f);
        }
        NamingPolicy::Predictable => {
            // Predictable names change with the PCI slot; kernel names (eth0) never appear when udev renames.
            let renames = predictable_capable(ctx) && !ifnames_disabled(ctx.root)?;
            let mut pred: Vec<&str> = named
                .iter()
                .filter_map(|c| c.name.as_deref())
                .filter(|n| is_predictable(n) || renames)
                .collect();
            pred.dedup();
            if pred.is_empty() {
                return Ok(out);
            }
            out.push(
                Finding::new(
                    info,
                    format!(
                        "the configuration names {}, but the name of the cloud's virtio NIC will differ: \
                         predictable names depend on the PCI slot, and kernel names (eth0) are replaced by \
                         predictable ones unless net.ifnames=0 is set ([network] interface_naming = \
                         \"predictable\": not fixed automatically)",
                        pred.join(", ")
                    ),
                )
                .evidences(ev)
                .remediation(
                    "Match the interface by a name pattern (netplan `match: name: \"en*\"`, networkd Name=en*) or \
                     switch to interface_naming = \"eth0\".",
                ),
            );
        }
    }
    Ok(out)
}

/// Is networking brought up at boot by ifupdown? Under systemd only the unit's `*.wants` links count
/// (sysvinit links of a native unit are ignored); otherwise sysvinit rc links or upstart jobs.
fn networking_enabled(root: &Root) -> Result<bool> {
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

fn has_dhcp_client(ctx: &Ctx) -> bool {
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
fn ifup_ok_or_netplan(ctx: &Ctx, st: &NetState, ifup_ok: bool) -> bool {
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
fn cloud_init_covers(ctx: &Ctx, st: &NetState) -> Result<bool> {
    if !ctx.facts.installed("cloud-init") || cloud_init_network_disabled(ctx.root)? {
        return Ok(false);
    }
    let ifup_ok = st.ifupdown_active && networking_enabled(ctx.root)? && has_dhcp_client(ctx);
    Ok(ifup_ok_or_netplan(ctx, st, ifup_ok))
}

/// Is cloud-init's network configuration switched off in /etc/cloud?
fn cloud_init_network_disabled(root: &Root) -> Result<bool> {
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

fn check_no_primary_dhcp(ctx: &Ctx, info: &CheckInfo) -> Result<Vec<Finding>> {
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

/// `nameserver` lines of a resolv.conf: (line, address).
pub fn resolv_nameservers(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| (i + 1, w.next().unwrap_or("").to_string()))
        })
        .collect()
}

fn check_resolv(ctx: &Ctx, _info: &CheckInfo) -> Result<Vec<Finding>> {
    let info = _info;
    let path = "/etc/resolv.conf";
    let lex = ctx.root.lexical(path);
    let Ok(meta) = std::fs::symlink_metadata(&lex) else {
        return Ok(Vec::new());
    };
    if meta.file_type().is_symlink() {
        return Ok(Vec::new());
    }
    let Some(text) = ctx.root.read_text(path)? else {
        return Ok(Vec::new());
    };
    let ns = resolv_nameservers(&text);
    if ns.is_empty() {
        return Ok(Vec::new());
    }
    let st = gather(ctx)?;
    let mut why = Vec::new();
    if ctx.facts.installed("resolvconf") {
        why.push("resolvconf is installed but /etc/resolv.conf is not its symlink (../run/resolvconf/resolv.conf), so the DNS servers DHCP hands out never reach it".to_string());
    }
    let networkd_only = !st.networkd.is_empty()
        || st.netplan.iter().any(|f| {
            f.parsed.renderer.as_deref().unwrap_or("networkd") == "networkd"
                && !f.parsed.ifaces.is_empty()
        });
    if networkd_only && !ctx.facts.installed("resolvconf") {
        why.push("systemd-networkd never writes /etc/resolv.conf (it needs the systemd-resolved stub symlink)".to_string());
    }
    let mut ev: Vec<Evidence> = ns
        .iter()
        .map(|(l, n)| Evidence::line(path, *l, &format!("nameserver {n}")))
        .collect();
    for f in ["/etc/dhcp/dhclient.conf", "/etc/dhcp3/dhclient.conf"] {
        if let Some(t) = ctx.root.read_text(f)? {
            for (i, l) in t.lines().enumerate() {
                let s = l.trim_start();
                if !s.starts_with('#')
                    && (s.starts_with("supersede domain-name-servers")
                        || s.starts_with("prepend domain-name-servers"))
                {
                    why.push(format!("{f} overrides the DHCP-provided DNS servers"));
                    ev.push(Evidence::line(f, i + 1, l));
                }
            }
        }
    }
    if why.is_empty() {
        return Ok(Vec::new());
    }
    let mut f = Finding::new(
        info,
        format!(
            "/etc/resolv.conf is a static file naming the old network's DNS servers ({}), and {}: name resolution \
             in the cloud would use unreachable servers",
            ns.iter().map(|n| n.1.as_str()).collect::<Vec<_>>().join(", "),
            why.join("; ")
        ),
    )
    .evidences(ev)
    .remediation(
        "Let DHCP manage DNS: with resolvconf run `dpkg-reconfigure resolvconf` (or `ln -sf ../run/resolvconf/resolv.conf \
         /etc/resolv.conf`); with systemd-networkd enable systemd-resolved and link /etc/resolv.conf to \
         /run/systemd/resolve/stub-resolv.conf; remove `supersede domain-name-servers` from dhclient.conf.",
    );
    // With resolvconf, hand /etc/resolv.conf back to it (the static file goes to the backup area).
    if ctx.facts.installed("resolvconf") {
        f = f.fix(
            Fix::default()
                .edit(FileEdit::remove(path))
                .command(PlannedCommand::new(
                    Phase::Post,
                    RESOLV_LINK_ORDER,
                    &["ln", "-sfn", "../run/resolvconf/resolv.conf", path],
                    "let resolvconf manage /etc/resolv.conf (DNS servers from DHCP)",
                )),
        );
    }
    Ok(vec![f])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_ifnames_quotes_and_idempotence() {
        let t =
            "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"\"\n# end";
        let out = grub_set_ifnames(t).unwrap();
        assert_eq!(out, "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"net.ifnames=0 biosdevname=0\"\n# end");
        assert_eq!(grub_set_ifnames(&out).unwrap(), out);
        assert!(grub_has_ifnames0(&out));
        let t = "GRUB_CMDLINE_LINUX='console=ttyS0,115200  net.ifnames=1' # keep\r\n";
        let out = grub_set_ifnames(t).unwrap();
        assert_eq!(
            out,
            "GRUB_CMDLINE_LINUX='console=ttyS0,115200  net.ifnames=0 biosdevname=0' # keep\r\n"
        );
        let out = grub_set_ifnames("GRUB_CMDLINE_LINUX=quiet\n").unwrap();
        assert_eq!(
            out,
            "GRUB_CMDLINE_LINUX=\"quiet net.ifnames=0 biosdevname=0\"\n"
        );
        assert_eq!(grub_set_ifnames(&out).unwrap(), out);
        let out = grub_set_ifnames("GRUB_TIMEOUT=5").unwrap();
        assert_eq!(
            out,
            "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=\"net.ifnames=0 biosdevname=0\"\n"
        );
        assert!(grub_set_ifnames("GRUB_CMDLINE_LINUX=\"a\nb\"\n").is_err());
        // After an unterminated quote sh reads everything as one string: refused, not appended into it.
        assert!(grub_set_ifnames("GRUB_TIMEOUT=5\nGRUB_DISTRIBUTOR=\"Debian\n").is_err());
        // A dangling continuation on the last line is ended before the appended assignment.
        assert_eq!(
            grub_set_ifnames("GRUB_TIMEOUT=5 \\\n").unwrap(),
            "GRUB_TIMEOUT=5 \\\n\nGRUB_CMDLINE_LINUX=\"net.ifnames=0 biosdevname=0\"\n"
        );
        // Composes with another rewriter adding its own words.
        let other = |s: &str| {
            s.replace(
                "GRUB_CMDLINE_LINUX=\"",
                "GRUB_CMDLINE_LINUX=\"console=tty0 ",
            )
        };
        let a = grub_set_ifnames(&other("GRUB_CMDLINE_LINUX=\"\"\n")).unwrap();
        assert_eq!(
            a,
            "GRUB_CMDLINE_LINUX=\"console=tty0 net.ifnames=0 biosdevname=0\"\n"
        );
        assert!(!grub_has_ifnames0(
            "#GRUB_CMDLINE_LINUX=\"net.ifnames=0\"\nGRUB_CMDLINE_LINUX=\"net.ifnames=1\""
        ));
    }

    #[test]
    fn ifnames0_is_what_the_sourced_defaults_end_with() {
        let f = |v: &[(&str, &str)]| {
            defaults_ifnames0(
                &v.iter()
                    .map(|(p, t)| (p.to_string(), t.to_string()))
                    .collect::<Vec<_>>(),
            )
        };
        let grub = "/etc/default/grub";
        let cloudimg = "/etc/default/grub.d/50-cloudimg-settings.cfg";
        assert!(f(&[(
            grub,
            "GRUB_CMDLINE_LINUX=\"net.ifnames=0 biosdevname=0\"\n"
        )]));
        assert!(f(&[(
            grub,
            "GRUB_CMDLINE_LINUX_DEFAULT='quiet net.ifnames=0'\n"
        )]));
        assert!(f(&[
            (grub, "GRUB_CMDLINE_LINUX=\"net.ifnames=0\"\n"),
            (
                cloudimg,
                "GRUB_CMDLINE_LINUX_DEFAULT=\"console=tty1 console=ttyS0\"\n"
            )
        ]));
        // Ubuntu cloud image: the grub.d file replaces the _DEFAULT that carried net.ifnames=0 (the line-based
        // check saw it in /etc/default/grub and took predictable naming for disabled).
        assert!(!f(&[
            (grub, "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet net.ifnames=0\"\n"),
            (
                cloudimg,
                "GRUB_CMDLINE_LINUX_DEFAULT=\"console=tty1 console=ttyS0\"\n"
            )
        ]));
        // A later assignment of the same file wins too; the last net.ifnames= word wins.
        assert!(!f(&[(
            grub,
            "GRUB_CMDLINE_LINUX=\"net.ifnames=0\"\nGRUB_CMDLINE_LINUX=\"quiet\"\n"
        )]));
        assert!(!f(&[(
            grub,
            "GRUB_CMDLINE_LINUX=\"net.ifnames=0\"\nGRUB_CMDLINE_LINUX_DEFAULT=\"net.ifnames=1\"\n"
        )]));
        assert!(f(&[(grub, "GRUB_CMDLINE_LINUX=\"net.ifnames=0\"\nGRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX quiet\"\n")]));
        assert!(!f(&[(grub, "#GRUB_CMDLINE_LINUX=\"net.ifnames=0\"\n")]));
        assert!(!f(&[(grub, "GRUB_CMDLINE_LINUX=\"xnet.ifnames=0\"\n")]));
        assert!(!f(&[]));
    }

    #[test]
    fn glob_includes_through_root() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path()).unwrap();
        std::fs::create_dir_all(d.path().join("etc/network/interfaces.d")).unwrap();
        for n in ["eth0", "eth1.cfg", ".hidden", "b~"] {
            std::fs::write(d.path().join("etc/network/interfaces.d").join(n), "").unwrap();
        }
        std::fs::create_dir_all(d.path().join("etc/network/interfaces.d/sub")).unwrap();
        assert_eq!(
            expand_glob(&root, "/etc/network/interfaces.d/*").unwrap(),
            vec![
                "/etc/network/interfaces.d/b~",
                "/etc/network/interfaces.d/eth0",
                "/etc/network/interfaces.d/eth1.cfg"
            ]
        );
        assert_eq!(
            expand_glob(&root, "/etc/*/interfaces.d/*.cfg").unwrap(),
            vec!["/etc/network/interfaces.d/eth1.cfg"]
        );
        assert!(expand_glob(&root, "/etc/nothing/*").unwrap().is_empty());
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

    #[test]
    fn names() {
        assert!(is_predictable("ens192"));
        assert!(is_predictable("enp0s3"));
        assert!(is_predictable("em1"));
        assert!(is_predictable("p2p1"));
        assert!(!is_predictable("eth0"));
        assert!(!is_predictable("br0"));
        assert!(!is_predictable("ens192.10"));
        assert!(is_physical("eth0"));
        assert!(!is_physical("lo"));
    }

    #[test]
    fn ini_and_nm_rename() {
        assert_eq!(
            ini_rename(
                "[Match]\nName=ens192\n# Name=ens192\n",
                &[("ens192".into(), "eth0".into())]
            ),
            "[Match]\nName=eth0\n# Name=ens192\n"
        );
        assert_eq!(
            nm_rename(
                "[connection]\ninterface-name=ens192\r\nid=ens192\r\n",
                &[("ens192".into(), "eth0".into())]
            ),
            "[connection]\ninterface-name=eth0\r\nid=ens192\r\n"
        );
    }
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
