//! The guest's network configuration, gathered from every system it may use (ifupdown with its
//! source/source-directory includes, netplan, systemd-networkd, NetworkManager) into one [NetState]:
//! one [Cfg] per configured interface, with where it came from.

use super::*;

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
pub(super) fn read(root: &Root, path: &str, garbage: &mut Vec<Evidence>) -> Option<String> {
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
pub(super) fn gather_ifupdown(root: &Root, st: &mut NetState) -> Result<()> {
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

pub(super) fn is_ifupdown_installed(ctx: &Ctx) -> bool {
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
pub(super) fn ifupdown_members(st: &NetState, name: &str, s: &ifupdown::Stanza) -> Vec<String> {
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

pub(super) fn collect_cfgs(st: &NetState) -> Vec<Cfg> {
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
pub(super) fn rename_edits(st: &NetState, map: &[(String, String)]) -> Vec<FileEdit> {
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

pub(super) fn rename_keys(content: &str, map: &[(String, String)], keys: &[&str]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
