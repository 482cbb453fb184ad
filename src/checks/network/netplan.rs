//! Netplan YAML (`/etc/netplan/*.yaml`), read and edited line by line so that comments and every untouched
//! line stay byte-identical. Handles block mappings/sequences (any indentation, tabs reported), flow
//! sequences (`[a, b]`), quoted scalars and trailing comments — the shapes netplan files take in practice.
//! Anything else (anchors, multi-document files, flow mappings over several lines) is reported as
//! unsupported rather than guessed.

#[derive(Debug, Clone)]
struct Ln {
    /// 0-based index into the physical lines.
    idx: usize,
    indent: usize,
    /// `Some(key)` for `key:` / `key: value` lines (key unquoted); `None` for `- item` lines.
    key: Option<String>,
    /// The inline value after `key:` or `- ` (comment stripped, trimmed); may itself be `k: v` for items.
    value: String,
    item: bool,
}

fn strip_eol(s: &str) -> &str {
    s.trim_end_matches('\n').trim_end_matches('\r')
}

/// Strip a trailing ` # comment` outside quotes.
fn strip_comment(s: &str) -> &str {
    let mut q: Option<char> = None;
    let mut prev_ws = true;
    for (i, c) in s.char_indices() {
        match q {
            Some(qc) if c == qc => q = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => q = Some(c),
            None if c == '#' && prev_ws => return &s[..i],
            None => {}
        }
        prev_ws = c.is_whitespace();
    }
    s
}

pub fn unquote(s: &str) -> String {
    let s = s.trim();
    if s.len() >= 2
        && ((s.starts_with('"') && s.ends_with('"')) || (s.starts_with('\'') && s.ends_with('\'')))
    {
        s[1..s.len() - 1].to_string()
    } else {
        s.to_string()
    }
}

/// Split `key: value` (key possibly quoted).
fn split_key(s: &str) -> Option<(String, String)> {
    let s = s.trim();
    let (k, rest) = if s.starts_with('"') || s.starts_with('\'') {
        let q = s.chars().next()?;
        let end = s[1..].find(q)? + 1;
        let rest = s[end + 1..].trim_start();
        (s[1..end].to_string(), rest.strip_prefix(':')?)
    } else {
        let pos = s
            .find(": ")
            .or_else(|| s.strip_suffix(':').map(|x| x.len()))?;
        if s[..pos].contains('[') || s[..pos].contains('{') {
            return None;
        }
        (s[..pos].to_string(), &s[pos + 1..])
    };
    Some((k, rest.trim().to_string()))
}

fn lex(content: &str) -> (Vec<Ln>, Vec<(usize, String)>) {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in content.split_inclusive('\n').enumerate() {
        let body = strip_eol(line);
        let t = body.trim_start();
        if t.is_empty() || t.starts_with('#') || t == "---" {
            continue;
        }
        if body.starts_with('\t') || body[..body.len() - t.len()].contains('\t') {
            bad.push((
                i + 1,
                "tab in indentation (not allowed in YAML)".to_string(),
            ));
            continue;
        }
        let indent = body.len() - t.len();
        let t = strip_comment(t).trim_end();
        if let Some(rest) = t
            .strip_prefix("- ")
            .or(if t == "-" { Some("") } else { None })
        {
            out.push(Ln {
                idx: i,
                indent,
                key: None,
                value: rest.trim().to_string(),
                item: true,
            });
        } else if let Some((k, v)) = split_key(t) {
            out.push(Ln {
                idx: i,
                indent,
                key: Some(k),
                value: v,
                item: false,
            });
        } else {
            bad.push((i + 1, format!("not a `key: value` line: {t}")));
        }
    }
    (out, bad)
}

/// Index (into `lns`) of the lines forming the block under `lns[i]`: following lines more indented, plus
/// `- ` items at the same indent directly under a key with no inline value.
fn block_end(lns: &[Ln], i: usize) -> usize {
    let base = lns[i].indent;
    let mut j = i + 1;
    while j < lns.len() {
        let l = &lns[j];
        if l.indent > base
            || (l.indent == base && l.item && !lns[i].item && lns[i].value.is_empty())
        {
            j += 1;
        } else {
            break;
        }
    }
    j
}

/// Direct children (key lines) of `lns[i]`.
fn children(lns: &[Ln], i: usize) -> Vec<usize> {
    let end = block_end(lns, i);
    if end == i + 1 {
        return Vec::new();
    }
    let ind = lns[i + 1].indent;
    (i + 1..end)
        .filter(|&j| lns[j].indent == ind && lns[j].key.is_some())
        .collect()
}

fn child(lns: &[Ln], i: usize, key: &str) -> Option<usize> {
    children(lns, i)
        .into_iter()
        .find(|&j| lns[j].key.as_deref() == Some(key))
}

/// Scalar list of a key: inline flow `[a, b]`, inline scalar, or block `- a` items.
fn list(lns: &[Ln], i: usize) -> Vec<(usize, String)> {
    let v = lns[i].value.trim();
    if let Some(inner) = v.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        return inner
            .split(',')
            .map(unquote)
            .filter(|s| !s.is_empty())
            .map(|s| (lns[i].idx + 1, s))
            .collect();
    }
    if !v.is_empty() {
        return vec![(lns[i].idx + 1, unquote(v))];
    }
    let end = block_end(lns, i);
    (i + 1..end)
        .filter(|&j| lns[j].item && lns[j].indent == lns[i + 1].indent)
        .map(|j| (lns[j].idx + 1, unquote(&lns[j].value)))
        .collect()
}

#[derive(Debug, Clone, Default)]
pub struct NpIface {
    /// `ethernets`, `bonds`, `bridges`, `vlans`, `wifis`.
    pub kind: String,
    pub id: String,
    /// 1-based line of the id key.
    pub line: usize,
    pub match_mac: Option<(usize, String)>,
    pub match_name: Option<String>,
    pub set_name: Option<(usize, String)>,
    /// `macaddress:` directly under the entry: sets (spoofs) the MAC.
    pub set_mac: Option<(usize, String)>,
    pub dhcp4: bool,
    pub addresses: Vec<(usize, String)>,
    pub gateway4: Option<String>,
    pub routes_via: Vec<String>,
    pub nameservers: Vec<String>,
    /// `interfaces:` of a bridge or bond.
    pub members: Vec<String>,
}

impl NpIface {
    /// The name the interface gets: `set-name`, else the id when there is no `match`.
    pub fn name(&self) -> Option<&str> {
        if let Some((_, n)) = &self.set_name {
            return Some(n);
        }
        if self.match_mac.is_none() && self.match_name.is_none() {
            return Some(&self.id);
        }
        self.match_name
            .as_deref()
            .filter(|n| !n.contains(['*', '?', '[']))
    }
    pub fn is_static(&self) -> bool {
        !self.dhcp4
            && self
                .addresses
                .iter()
                .any(|(_, a)| a.contains('.') && !a.starts_with("127."))
    }
}

#[derive(Debug, Clone, Default)]
pub struct Netplan {
    pub ifaces: Vec<NpIface>,
    pub renderer: Option<String>,
    pub bad: Vec<(usize, String)>,
}

fn truthy(v: &str) -> bool {
    matches!(
        unquote(v).to_ascii_lowercase().as_str(),
        "true" | "yes" | "on" | "y"
    )
}

pub fn parse(content: &str) -> Netplan {
    let (lns, bad) = lex(content);
    let mut np = Netplan {
        bad,
        ..Default::default()
    };
    let Some(net) = lns
        .iter()
        .position(|l| l.indent == 0 && l.key.as_deref() == Some("network"))
    else {
        return np;
    };
    if let Some(r) = child(&lns, net, "renderer") {
        np.renderer = Some(unquote(&lns[r].value));
    }
    for kind in ["ethernets", "bonds", "bridges", "vlans", "wifis"] {
        let Some(k) = child(&lns, net, kind) else {
            continue;
        };
        for e in children(&lns, k) {
            if lns[e].value.starts_with('{') {
                // A flow-style entry: read from the document (add_flow_entries).
                continue;
            }
            let mut f = NpIface {
                kind: kind.to_string(),
                id: lns[e].key.clone().unwrap_or_default(),
                line: lns[e].idx + 1,
                ..Default::default()
            };
            if let Some(m) = child(&lns, e, "match") {
                if let Some(mac) = child(&lns, m, "macaddress") {
                    f.match_mac = Some((lns[mac].idx + 1, unquote(&lns[mac].value)));
                }
                if let Some(n) = child(&lns, m, "name") {
                    f.match_name = Some(unquote(&lns[n].value));
                }
                // `match: {macaddress: ...}` in flow style.
                let v = &lns[m].value;
                if v.starts_with('{') {
                    np.bad.push((
                        lns[m].idx + 1,
                        "flow-style `match: {...}` is not edited by cloudprep".into(),
                    ));
                }
            }
            if let Some(s) = child(&lns, e, "macaddress") {
                f.set_mac = Some((lns[s].idx + 1, unquote(&lns[s].value)));
            }
            if let Some(s) = child(&lns, e, "set-name") {
                f.set_name = Some((lns[s].idx + 1, unquote(&lns[s].value)));
            }
            if let Some(d) = child(&lns, e, "dhcp4") {
                f.dhcp4 = truthy(&lns[d].value);
            }
            if let Some(a) = child(&lns, e, "addresses") {
                f.addresses = list(&lns, a);
            }
            if let Some(g) = child(&lns, e, "gateway4") {
                f.gateway4 = Some(unquote(&lns[g].value));
            }
            if let Some(r) = child(&lns, e, "routes") {
                let end = block_end(&lns, r);
                for l in &lns[r + 1..end] {
                    let v = &l.value;
                    let kv = if l.item { split_key(v) } else { None };
                    let (k, val) = match (&l.key, kv) {
                        (Some(k), _) => (k.clone(), v.clone()),
                        (None, Some((k, val))) => (k, val),
                        _ => continue,
                    };
                    if k == "via" {
                        f.routes_via.push(unquote(&val));
                    }
                }
            }
            if let Some(a) = child(&lns, e, "interfaces") {
                f.members = list(&lns, a).into_iter().map(|x| x.1).collect();
            }
            if let Some(ns) = child(&lns, e, "nameservers") {
                if let Some(a) = child(&lns, ns, "addresses") {
                    f.nameservers = list(&lns, a).into_iter().map(|x| x.1).collect();
                }
            }
            np.ifaces.push(f);
        }
    }
    add_flow_entries(content, &mut np);
    np
}

/// Entries written in YAML flow style (`ethernets: {eth0: {dhcp4: true}}`, `network: {version: 2, ...}`),
/// which the line reader does not see: read from the parsed document so that they count like block-style
/// ones (a flow-style DHCP interface is not "no DHCP interface", a flow-style static one is reported).
/// The line of such an entry is the first line naming its id. The editors leave flow style alone.
fn add_flow_entries(content: &str, np: &mut Netplan) {
    use serde_yaml::Value;
    let Ok(doc) = serde_yaml::from_str::<Value>(content) else {
        return;
    };
    let get = |v: &Value, k: &str| -> Option<Value> {
        v.as_mapping()?
            .iter()
            .find(|(kk, _)| kk.as_str() == Some(k))
            .map(|(_, v)| v.clone())
    };
    let scalar = |v: &Value| -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let scalars = |v: Option<Value>| -> Vec<String> {
        match v {
            Some(Value::Sequence(items)) => items.iter().filter_map(scalar).collect(),
            Some(v) => scalar(&v).into_iter().collect(),
            None => Vec::new(),
        }
    };
    let Some(net) = get(&doc, "network") else {
        return;
    };
    if np.renderer.is_none() {
        np.renderer = get(&net, "renderer").as_ref().and_then(scalar);
    }
    let line_of = |id: &str| -> usize {
        content
            .lines()
            .position(|l| {
                let code = strip_comment(l);
                [format!("{id}:"), format!("\"{id}\""), format!("'{id}'")]
                    .iter()
                    .any(|k| code.contains(k.as_str()))
            })
            .or_else(|| content.lines().position(|l| l.contains("network")))
            .map_or(1, |i| i + 1)
    };
    for kind in ["ethernets", "bonds", "bridges", "vlans", "wifis"] {
        let Some(Value::Mapping(entries)) = get(&net, kind) else {
            continue;
        };
        for (id, cfg) in &entries {
            let Some(id) = scalar(id) else {
                continue;
            };
            let m = get(cfg, "match");
            if let Some(f) = np.ifaces.iter_mut().find(|f| f.kind == kind && f.id == id) {
                // A block-style entry with a flow-style `match: {macaddress: ...}`.
                if f.match_mac.is_none() {
                    let mac = m.as_ref().and_then(|m| get(m, "macaddress"));
                    f.match_mac = mac.as_ref().and_then(scalar).map(|v| (f.line, v));
                }
                if f.match_name.is_none() {
                    f.match_name = m
                        .as_ref()
                        .and_then(|m| get(m, "name"))
                        .as_ref()
                        .and_then(scalar);
                }
                continue;
            }
            let line = line_of(&id);
            let at = |v: Option<String>| v.map(|v| (line, v));
            let mut f = NpIface {
                kind: kind.to_string(),
                id: id.clone(),
                line,
                match_mac: at(m
                    .as_ref()
                    .and_then(|m| get(m, "macaddress"))
                    .as_ref()
                    .and_then(scalar)),
                match_name: m
                    .as_ref()
                    .and_then(|m| get(m, "name"))
                    .as_ref()
                    .and_then(scalar),
                set_name: at(get(cfg, "set-name").as_ref().and_then(scalar)),
                set_mac: at(get(cfg, "macaddress").as_ref().and_then(scalar)),
                dhcp4: get(cfg, "dhcp4")
                    .as_ref()
                    .and_then(scalar)
                    .is_some_and(|v| truthy(&v)),
                gateway4: get(cfg, "gateway4").as_ref().and_then(scalar),
                ..Default::default()
            };
            f.addresses = scalars(get(cfg, "addresses"))
                .into_iter()
                .map(|a| (line, a))
                .collect();
            if let Some(Value::Sequence(routes)) = get(cfg, "routes") {
                f.routes_via = routes
                    .iter()
                    .filter_map(|r| get(r, "via").as_ref().and_then(scalar))
                    .collect();
            }
            f.nameservers = scalars(get(cfg, "nameservers").and_then(|n| get(&n, "addresses")));
            f.members = scalars(get(cfg, "interfaces"));
            np.ifaces.push(f);
        }
    }
}

/// Lines to drop / replace, then reassemble.
struct Editor<'a> {
    lines: Vec<&'a str>,
    drop: std::collections::BTreeSet<usize>,
    replace: std::collections::BTreeMap<usize, String>,
    insert_after: std::collections::BTreeMap<usize, Vec<String>>,
}

impl<'a> Editor<'a> {
    fn new(content: &'a str) -> Self {
        Editor {
            lines: content.split_inclusive('\n').collect(),
            drop: Default::default(),
            replace: Default::default(),
            insert_after: Default::default(),
        }
    }
    fn eol(&self) -> &'static str {
        if self.lines.iter().any(|l| l.ends_with("\r\n")) {
            "\r\n"
        } else {
            "\n"
        }
    }
    /// Drop the block of `lns[i]` (all physical lines from it to the last line of its block).
    fn drop_block(&mut self, lns: &[Ln], i: usize) {
        let end = block_end(lns, i);
        let last = lns[end - 1].idx;
        for l in lns[i].idx..=last {
            self.drop.insert(l);
        }
    }
    /// Replace the value of a `key: value` line, keeping indentation and a trailing comment.
    fn set_value(&mut self, ln: &Ln, value: &str) {
        let orig = self.lines[ln.idx];
        let body = strip_eol(orig);
        let eol = &orig[body.len()..];
        let t = body.trim_start();
        let comment = &strip_comment(t).len();
        let tail = &t[*comment..];
        let key = ln.key.as_deref().unwrap_or_default();
        let keytext = match t.find(':') {
            Some(p) if t[..p].trim_matches(['"', '\'']) == key => &t[..p],
            _ => key,
        };
        let sep = if tail.is_empty() { "" } else { " " };
        self.replace.insert(
            ln.idx,
            format!(
                "{}{keytext}: {value}{sep}{}{eol}",
                " ".repeat(ln.indent),
                tail.trim_start()
            ),
        );
    }
    fn finish(self) -> String {
        let eol = self.eol();
        let mut out = String::new();
        for (i, line) in self.lines.iter().enumerate() {
            if !self.drop.contains(&i) {
                out.push_str(self.replace.get(&i).map(String::as_str).unwrap_or(line));
            }
            if let Some(ins) = self.insert_after.get(&i) {
                if !out.ends_with('\n') && !out.is_empty() {
                    out.push_str(eol);
                }
                for s in ins {
                    out.push_str(s);
                    out.push_str(eol);
                }
            }
        }
        out
    }
}

/// Find the entry `ids` (any of them) under `network.<kind>`.
fn find_entry(lns: &[Ln], ids: &[String]) -> Option<usize> {
    let net = lns
        .iter()
        .position(|l| l.indent == 0 && l.key.as_deref() == Some("network"))?;
    for kind in ["ethernets", "bonds", "bridges", "vlans"] {
        if let Some(k) = child(lns, net, kind) {
            for e in children(lns, k) {
                if lns[e]
                    .key
                    .as_ref()
                    .is_some_and(|k| ids.iter().any(|i| i == k))
                {
                    // A flow-style entry (`eth0: {...}`) is not edited line by line.
                    return (!lns[e].value.starts_with('{')).then_some(e);
                }
            }
        }
    }
    None
}

/// Switch the entry `ids` to DHCPv4: `dhcp4: true`, dropping `addresses`, `gateway4`, `gateway6`,
/// `routes` and `nameservers`. Idempotent; other lines stay byte-identical.
pub fn to_dhcp(content: &str, ids: &[String]) -> String {
    let (lns, _) = lex(content);
    let Some(e) = find_entry(&lns, ids) else {
        return content.to_string();
    };
    let mut ed = Editor::new(content);
    for key in ["addresses", "gateway4", "gateway6", "routes", "nameservers"] {
        if let Some(c) = child(&lns, e, key) {
            ed.drop_block(&lns, c);
        }
    }
    match child(&lns, e, "dhcp4") {
        Some(d) if truthy(&lns[d].value) => {}
        Some(d) => ed.set_value(&lns[d].clone(), "true"),
        None => {
            let ind = children(&lns, e)
                .first()
                .map(|&c| lns[c].indent)
                .unwrap_or(lns[e].indent + 2);
            ed.insert_after
                .entry(lns[e].idx)
                .or_default()
                .push(format!("{}dhcp4: true", " ".repeat(ind)));
        }
    }
    ed.finish()
}

/// Remove the MAC match of the entry `ids`: drop `macaddress` under `match` (and `match` when it becomes
/// empty, then `set-name`, which netplan only allows with a match), renaming the entry id to `name`.
pub fn unpin_mac(content: &str, ids: &[String], name: &str) -> String {
    let (lns, _) = lex(content);
    let Some(e) = find_entry(&lns, ids) else {
        return content.to_string();
    };
    let Some(m) = child(&lns, e, "match") else {
        return content.to_string();
    };
    let Some(mac) = child(&lns, m, "macaddress") else {
        return content.to_string();
    };
    let mut ed = Editor::new(content);
    if children(&lns, m).len() == 1 {
        ed.drop_block(&lns, m);
        if let Some(s) = child(&lns, e, "set-name") {
            ed.drop_block(&lns, s);
        }
        let old = lns[e].key.clone().unwrap_or_default();
        if old != name {
            let orig = ed.lines[lns[e].idx];
            ed.replace
                .insert(lns[e].idx, orig.replacen(old.as_str(), name, 1));
        }
    } else {
        ed.drop_block(&lns, mac);
    }
    ed.finish()
}

/// Drop the key `key` directly under the entry `ids` (e.g. `macaddress`, which sets the MAC).
pub fn drop_entry_key(content: &str, ids: &[String], key: &str) -> String {
    let (lns, _) = lex(content);
    let Some(e) = find_entry(&lns, ids) else {
        return content.to_string();
    };
    let Some(k) = child(&lns, e, key) else {
        return content.to_string();
    };
    let mut ed = Editor::new(content);
    ed.drop_block(&lns, k);
    ed.finish()
}

/// Rename interfaces (ids, `set-name`, `match: name`, references in `interfaces:`/`link:`) in every
/// non-comment line, whole words only.
pub fn rename(content: &str, map: &[(String, String)]) -> String {
    let mut out = String::with_capacity(content.len());
    for line in content.split_inclusive('\n') {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let body = strip_eol(line);
        let code_len = strip_comment(body).len();
        let mut code = body[..code_len].to_string();
        for (o, n) in map {
            if o != n {
                code = super::ifupdown::replace_word(&code, o, n);
            }
        }
        out.push_str(&code);
        out.push_str(&line[code_len..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const UBU: &str = "# This file is generated from information provided by the datasource.\nnetwork:\n  version: 2\n  renderer: networkd\n  ethernets:\n    ens160:\n      match:\n        macaddress: \"00:0c:29:12:34:56\"\n      set-name: ens160\n      addresses:\n        - 192.0.2.10/24   # office LAN\n      gateway4: 192.0.2.1\n      nameservers:\n        search: [example.com]\n        addresses: [192.0.2.53, '198.51.100.53']\n      dhcp4: no\n      mtu: 1500\n";

    #[test]
    fn parses_ubuntu_style() {
        let np = parse(UBU);
        assert!(np.bad.is_empty(), "{:?}", np.bad);
        let f = &np.ifaces[0];
        assert_eq!(f.id, "ens160");
        assert_eq!(f.line, 6);
        assert_eq!(f.match_mac, Some((8, "00:0c:29:12:34:56".into())));
        assert_eq!(f.set_name, Some((9, "ens160".into())));
        assert_eq!(f.addresses, vec![(11, "192.0.2.10/24".into())]);
        assert_eq!(f.gateway4.as_deref(), Some("192.0.2.1"));
        assert_eq!(f.nameservers, vec!["192.0.2.53", "198.51.100.53"]);
        assert!(f.is_static());
        assert_eq!(f.name(), Some("ens160"));
    }

    #[test]
    fn converts_unpins_and_renames() {
        let ids = vec!["ens160".to_string(), "eth0".to_string()];
        let a = unpin_mac(UBU, &ids, "eth0");
        let b = to_dhcp(&a, &ids);
        let c = rename(&b, &[("ens160".into(), "eth0".into())]);
        assert_eq!(c, "# This file is generated from information provided by the datasource.\nnetwork:\n  version: 2\n  renderer: networkd\n  ethernets:\n    eth0:\n      dhcp4: true\n      mtu: 1500\n");
        assert_eq!(to_dhcp(&c, &ids), c);
        assert_eq!(unpin_mac(&c, &ids, "eth0"), c);
        let np = parse(&c);
        assert!(!np.ifaces[0].is_static());
    }

    #[test]
    fn inserts_dhcp4_and_handles_routes_and_crlf() {
        let t = "network:\r\n    ethernets:\r\n        eth0:\r\n            addresses: [192.0.2.10/24]\r\n            routes:\r\n            - to: default\r\n              via: 192.0.2.1\r\n    version: 2";
        let np = parse(t);
        assert_eq!(np.ifaces[0].routes_via, vec!["192.0.2.1"]);
        let out = to_dhcp(t, &["eth0".into()]);
        assert_eq!(out, "network:\r\n    ethernets:\r\n        eth0:\r\n            dhcp4: true\r\n    version: 2");
    }

    #[test]
    fn multiple_match_keys_keep_match() {
        let t = "network:\n  ethernets:\n    lan:\n      match:\n        driver: vmxnet3\n        macaddress: 00:0c:29:12:34:56\n      dhcp4: true\n";
        let out = unpin_mac(t, &["lan".into()], "eth0");
        assert_eq!(out, "network:\n  ethernets:\n    lan:\n      match:\n        driver: vmxnet3\n      dhcp4: true\n");
    }

    #[test]
    fn flow_style_entries_are_read() {
        // All flow style: the line reader saw no interface (a DHCP guest looked like it had none).
        let np = parse("network: {version: 2, ethernets: {eth0: {dhcp4: true}}}\n");
        assert_eq!(np.ifaces.len(), 1, "{:?}", np.ifaces);
        let f = &np.ifaces[0];
        assert_eq!((f.id.as_str(), f.line, f.dhcp4), ("eth0", 1, true));
        assert_eq!(f.name(), Some("eth0"));
        // Block style down to the entry, flow style below it.
        let t = "# static\nnetwork:\n  version: 2\n  ethernets:\n    ens160: {addresses: [10.1.2.5/24], gateway4: 10.1.2.1, nameservers: {addresses: [10.1.2.53]}, dhcp4: no}\n    ens192: {match: {macaddress: '00:50:56:aa:bb:cc'}, set-name: eth1, dhcp4: yes}\n";
        let np = parse(t);
        assert_eq!(np.ifaces.len(), 2, "{:?}", np.ifaces);
        let a = np.ifaces.iter().find(|f| f.id == "ens160").unwrap();
        assert_eq!(a.line, 5);
        assert!(a.is_static());
        assert_eq!(a.addresses, vec![(5, "10.1.2.5/24".to_string())]);
        assert_eq!(a.gateway4.as_deref(), Some("10.1.2.1"));
        assert_eq!(a.nameservers, vec!["10.1.2.53"]);
        let b = np.ifaces.iter().find(|f| f.id == "ens192").unwrap();
        assert_eq!(b.match_mac, Some((6, "00:50:56:aa:bb:cc".to_string())));
        assert_eq!(b.set_name, Some((6, "eth1".to_string())));
        assert!(b.dhcp4);
        // Block-style entries are not read twice; a flow-style match under one is read.
        assert_eq!(parse(UBU).ifaces.len(), 1);
        let np = parse("network:\n  ethernets:\n    eth0:\n      match: {macaddress: \"00:50:56:aa:bb:cc\"}\n      dhcp4: true\n");
        assert_eq!(np.ifaces.len(), 1);
        assert_eq!(
            np.ifaces[0].match_mac,
            Some((3, "00:50:56:aa:bb:cc".to_string()))
        );
        // The editors leave flow-style entries alone (a block key under a flow mapping is invalid YAML).
        assert_eq!(to_dhcp(t, &["ens160".into()]), t);
        assert_eq!(unpin_mac(t, &["ens192".into()], "eth0"), t);
        assert_eq!(drop_entry_key(t, &["ens192".into()], "match"), t);
        // Invalid YAML: only what the line reader found.
        assert!(parse("network: {ethernets: {eth0: {dhcp4: true}\n")
            .ifaces
            .is_empty());
    }

    #[test]
    fn bridge_and_bond_members() {
        let np = parse("network:\n  version: 2\n  ethernets:\n    eth0: {}\n  bridges:\n    br0:\n      interfaces: [eth0]\n      dhcp4: true\n  bonds:\n    bond0:\n      interfaces:\n        - eth1\n        - eth2\n");
        let m = |id: &str| {
            np.ifaces
                .iter()
                .find(|f| f.id == id)
                .unwrap()
                .members
                .clone()
        };
        assert_eq!(m("br0"), vec!["eth0"]);
        assert_eq!(m("bond0"), vec!["eth1", "eth2"]);
        let np =
            parse("network: {version: 2, bridges: {br0: {interfaces: [eth0], dhcp4: true}}}\n");
        assert_eq!(np.ifaces[0].members, vec!["eth0"]);
    }

    #[test]
    fn tabs_and_garbage_reported() {
        let np = parse("network:\n\tethernets:\n  what is this\n");
        assert_eq!(np.bad.len(), 2);
    }
}
