//! ifupdown's `/etc/network/interfaces` (interfaces(5)): a parser keeping physical line numbers, and
//! line-preserving rewriters (static → DHCP, interface renames).
//!
//! Syntax handled: `#` comment lines (ifupdown has no end-of-line comments), `\` continuation lines, CRLF,
//! tabs, `auto a b`, `allow-hotplug`/`allow-*`, `iface NAME FAMILY METHOD`, `mapping`, `source` and
//! `source-directory`, `no-auto-down`/`no-scripts`/`rename`. Option lines belong to the preceding `iface` or
//! `mapping` stanza; an option outside any stanza, or an incomplete `iface` line, is reported as garbage and
//! skipped (ifup itself rejects such files, which the rewriters never touch).
//!
//! IPv6 decision: a static `inet6` stanza of an interface converted to DHCP becomes `inet6 auto` (SLAAC, plus
//! stateless DHCPv6 when the router says so): the old static IPv6 address and gateway cannot be valid in the
//! cloud, and a failing `inet6 static` (unreachable gateway) makes ifup fail the whole interface.

/// One logical line (continuations joined) with its physical line range (1-based, inclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logical {
    pub first: usize,
    pub last: usize,
    /// Joined text without the line terminators and the continuation backslashes.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// `auto`, `allow-hotplug`, `allow-auto`, ...: the keyword and the names.
    Auto {
        kind: String,
        names: Vec<String>,
    },
    Iface {
        name: String,
        family: String,
        method: String,
    },
    Mapping {
        patterns: Vec<String>,
    },
    /// `source PATTERN` (`dir == false`) or `source-directory DIR`.
    Source {
        dir: bool,
        arg: String,
    },
    /// An option of the current stanza: key and value (value may be empty only in garbage).
    Opt {
        key: String,
        value: String,
    },
    /// Other stanza-level keywords (`no-auto-down`, `no-scripts`, `rename`).
    Other {
        keyword: String,
    },
    Garbage {
        why: String,
    },
}

#[derive(Debug, Clone)]
pub struct Stanza {
    pub name: String,
    pub family: String,
    pub method: String,
    /// Physical line of the `iface` line.
    pub line: usize,
    pub header_last: usize,
    /// Options: key, value, first and last physical line.
    pub opts: Vec<(String, String, usize, usize)>,
}

impl Stanza {
    pub fn opt(&self, key: &str) -> Option<&str> {
        self.opts.iter().find(|o| o.0 == key).map(|o| o.1.as_str())
    }
    pub fn opts_with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.opts
            .iter()
            .filter(move |o| o.0.starts_with(prefix))
            .map(|o| o.1.as_str())
    }
}

#[derive(Debug, Clone, Default)]
pub struct Parsed {
    pub items: Vec<(Logical, Item)>,
    pub stanzas: Vec<Stanza>,
}

impl Parsed {
    pub fn garbage(&self) -> impl Iterator<Item = (&Logical, &str)> {
        self.items.iter().filter_map(|(l, i)| match i {
            Item::Garbage { why } => Some((l, why.as_str())),
            _ => None,
        })
    }
    /// `(kind, name, line)` of every auto/allow-* mention.
    pub fn autos(&self) -> Vec<(String, String, usize)> {
        let mut v = Vec::new();
        for (l, i) in &self.items {
            if let Item::Auto { kind, names } = i {
                for n in names {
                    v.push((kind.clone(), n.clone(), l.first));
                }
            }
        }
        v
    }
    pub fn sources(&self) -> Vec<(bool, String, usize)> {
        self.items
            .iter()
            .filter_map(|(l, i)| match i {
                Item::Source { dir, arg } => Some((*dir, arg.clone(), l.first)),
                _ => None,
            })
            .collect()
    }
}

/// Physical lines with their terminators (the last one may have none).
pub fn physical(content: &str) -> Vec<&str> {
    content.split_inclusive('\n').collect()
}

fn strip_eol(s: &str) -> &str {
    s.trim_end_matches('\n').trim_end_matches('\r')
}

/// Join continuation lines. Comment and blank lines are logical lines of their own.
pub fn logical_lines(content: &str) -> Vec<Logical> {
    let lines = physical(content);
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let first = i + 1;
        let mut text = String::new();
        let mut cur = strip_eol(lines[i]);
        let is_comment = cur.trim_start().starts_with('#');
        loop {
            if !is_comment && cur.ends_with('\\') && i + 1 < lines.len() {
                text.push_str(&cur[..cur.len() - 1]);
                i += 1;
                cur = strip_eol(lines[i]);
            } else {
                text.push_str(cur);
                break;
            }
        }
        out.push(Logical {
            first,
            last: i + 1,
            text,
        });
        i += 1;
    }
    out
}

fn is_stanza_keyword(w: &str) -> bool {
    matches!(
        w,
        "iface"
            | "mapping"
            | "auto"
            | "source"
            | "source-directory"
            | "no-auto-down"
            | "no-scripts"
            | "rename"
            | "template"
    ) || w.starts_with("allow-")
}

pub fn parse(content: &str) -> Parsed {
    let mut p = Parsed::default();
    // 0: none, 1: in iface, 2: in mapping
    let mut state = 0;
    for l in logical_lines(content) {
        let t = l.text.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = t.split_whitespace().collect();
        let kw = words[0];
        let item = if is_stanza_keyword(kw) {
            match kw {
                "iface" | "template" => {
                    if words.len() < 4 {
                        state = 0;
                        Item::Garbage {
                            why: "incomplete iface line (expected `iface NAME FAMILY METHOD`)"
                                .into(),
                        }
                    } else {
                        state = 1;
                        p.stanzas.push(Stanza {
                            name: words[1].to_string(),
                            family: words[2].to_string(),
                            method: words[3].to_string(),
                            line: l.first,
                            header_last: l.last,
                            opts: Vec::new(),
                        });
                        Item::Iface {
                            name: words[1].to_string(),
                            family: words[2].to_string(),
                            method: words[3].to_string(),
                        }
                    }
                }
                "mapping" => {
                    state = 2;
                    Item::Mapping {
                        patterns: words[1..].iter().map(|s| s.to_string()).collect(),
                    }
                }
                "source" | "source-directory" => {
                    state = 0;
                    if words.len() < 2 {
                        Item::Garbage {
                            why: format!("`{kw}` without a path"),
                        }
                    } else {
                        Item::Source {
                            dir: kw == "source-directory",
                            arg: t[kw.len()..].trim().to_string(),
                        }
                    }
                }
                "no-auto-down" | "no-scripts" | "rename" => {
                    state = 0;
                    Item::Other {
                        keyword: kw.to_string(),
                    }
                }
                _ => {
                    state = 0;
                    Item::Auto {
                        kind: kw.to_string(),
                        names: words[1..].iter().map(|s| s.to_string()).collect(),
                    }
                }
            }
        } else if state == 0 {
            Item::Garbage {
                why: "option line outside any iface/mapping stanza".into(),
            }
        } else if words.len() < 2 && state == 1 {
            Item::Garbage {
                why: format!("option `{kw}` without a value"),
            }
        } else {
            let value = t[kw.len()..].trim().to_string();
            if state == 1 {
                if let Some(s) = p.stanzas.last_mut() {
                    s.opts
                        .push((kw.to_string(), value.clone(), l.first, l.last));
                }
            }
            Item::Opt {
                key: kw.to_string(),
                value,
            }
        };
        p.items.push((l, item));
    }
    p
}

/// Options that describe static addressing (dropped when a stanza becomes DHCP).
pub fn is_static_option(key: &str) -> bool {
    matches!(
        key,
        "address"
            | "netmask"
            | "gateway"
            | "network"
            | "broadcast"
            | "pointopoint"
            | "scope"
            | "dad-attempts"
            | "dad-interval"
    ) || key.starts_with("dns-")
}

/// Is `c` part of an interface-name word?
fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Replace whole-word occurrences of `old` by `new` (`ens192` matches in `ens192`, `ens192.10`,
/// `ens192:1`, `dev ens192`; not in `ens1920` or `xens192`).
pub fn replace_word(text: &str, old: &str, new: &str) -> String {
    if old.is_empty() || !text.contains(old) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut prev: Option<char> = None;
    while let Some(pos) = rest.find(old) {
        let before = rest[..pos].chars().last().or(prev);
        let after = rest[pos + old.len()..].chars().next();
        let ok = before.is_none_or(|c| !name_char(c)) && after.is_none_or(|c| !name_char(c));
        out.push_str(&rest[..pos]);
        out.push_str(if ok { new } else { old });
        prev = old.chars().last();
        rest = &rest[pos + old.len()..];
    }
    out.push_str(rest);
    out
}

/// Rename interfaces (`map`: old → new) in every non-comment line: iface headers, auto/allow lines and
/// option values (`bridge_ports`, `post-up ... dev X`, vlan names). Comment lines stay byte-identical.
pub fn rename(content: &str, map: &[(String, String)]) -> String {
    let map: Vec<&(String, String)> = map.iter().filter(|(o, n)| o != n && o != "lo").collect();
    if map.is_empty() {
        return content.to_string();
    }
    let lines = physical(content);
    let mut out = String::with_capacity(content.len());
    let mut in_comment = false;
    for (i, line) in lines.iter().enumerate() {
        let body = strip_eol(line);
        let eol = &line[body.len()..];
        // A comment line starts a logical line; continuations of a non-comment line are not comments.
        let starts_logical = i == 0 || !strip_eol(lines[i - 1]).ends_with('\\') || in_comment;
        if starts_logical {
            in_comment = body.trim_start().starts_with('#');
        }
        if in_comment {
            out.push_str(line);
            continue;
        }
        let mut b = body.to_string();
        for (o, n) in &map {
            b = replace_word(&b, o, n);
        }
        out.push_str(&b);
        out.push_str(eol);
    }
    out
}

/// The file cloud-init's ENI renderer writes (older releases add `.cfg`); `source /etc/network/interfaces.d/*`
/// reads either name.
pub const CLOUD_INIT_ENI: [&str; 2] = [
    "/etc/network/interfaces.d/50-cloud-init",
    "/etc/network/interfaces.d/50-cloud-init.cfg",
];

/// Leave the interfaces named in `names` to cloud-init: their stanzas (every family and method, with their
/// options) are commented out under a note, their names are dropped from `auto`/`allow-hotplug` lines, and a
/// `source /etc/network/interfaces.d/*` line is appended when no `source`/`source-directory` reads that
/// directory (cloud-init writes its rendering there). The loopback, other interfaces, comments and `source`
/// lines stay byte-identical. Idempotent.
pub fn hand_to_cloud_init(content: &str, names: &[String]) -> String {
    let parsed = parse(content);
    let lines = physical(content);
    let eol = if content.contains("\r\n") {
        "\r\n"
    } else {
        "\n"
    };
    // Physical line -> replacement text (with its terminator).
    let mut repl: std::collections::BTreeMap<usize, String> = Default::default();
    let mut first_stanza: Option<usize> = None;
    let comment = |l: &str| format!("# {}", l);
    for st in &parsed.stanzas {
        if st.name == "lo" || !names.contains(&st.name) {
            continue;
        }
        let last = st.opts.iter().map(|o| o.3).fold(st.header_last, usize::max);
        for n in st.line..=last {
            repl.insert(n, comment(lines[n - 1]));
        }
        first_stanza = Some(first_stanza.map_or(st.line, |f: usize| f.min(st.line)));
    }
    for (l, item) in &parsed.items {
        let Item::Auto { kind, names: on } = item else {
            continue;
        };
        if !on.iter().any(|n| names.contains(n)) {
            continue;
        }
        let keep: Vec<&str> = on
            .iter()
            .filter(|n| !names.contains(n))
            .map(String::as_str)
            .collect();
        let line_eol = &lines[l.last - 1][strip_eol(lines[l.last - 1]).len()..];
        if keep.is_empty() {
            for n in l.first..=l.last {
                repl.insert(n, comment(lines[n - 1]));
            }
        } else {
            let indent: String = lines[l.first - 1]
                .chars()
                .take_while(|c| c.is_whitespace())
                .collect();
            repl.insert(
                l.first,
                format!("{indent}{kind} {}{line_eol}", keep.join(" ")),
            );
            for n in l.first + 1..=l.last {
                repl.insert(n, String::new());
            }
        }
    }
    let sourced = parsed
        .sources()
        .iter()
        .any(|(_, a, _)| a.contains("interfaces.d"));
    if repl.is_empty() {
        return if sourced || content.trim().is_empty() {
            content.to_string()
        } else {
            append_lines(content, &["source /etc/network/interfaces.d/*".to_string()])
        };
    }
    let mut out = String::with_capacity(content.len() + 200);
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        if Some(n) == first_stanza {
            out.push_str(&format!(
                "# cloudprep: {} configured by cloud-init in the cloud ({}); the old configuration:{eol}",
                names.join("/"),
                CLOUD_INIT_ENI[0]
            ));
        }
        match repl.get(&n) {
            None => out.push_str(line),
            Some(r) => {
                // A commented last line without a terminator keeps none.
                if !line.ends_with('\n') && r.ends_with('\n') {
                    out.push_str(strip_eol(r));
                } else {
                    out.push_str(r);
                }
            }
        }
    }
    if !sourced {
        out = append_lines(&out, &["source /etc/network/interfaces.d/*".to_string()]);
    }
    out
}

/// Convert the static stanzas of the interfaces named in `names` to DHCP, renaming them to `new_name`:
/// `iface X inet static` → `iface NEW inet dhcp` and `iface X inet6 static` → `iface NEW inet6 auto`, dropping
/// the addressing options (address/netmask/gateway/network/broadcast/dns-*). Everything else (other stanzas,
/// comments, `post-up` and other options, the loopback) stays byte-identical. Idempotent.
pub fn to_dhcp(content: &str, names: &[String], new_name: &str) -> String {
    let parsed = parse(content);
    let lines = physical(content);
    // Physical line -> replacement (None: drop).
    let mut repl: std::collections::BTreeMap<usize, Option<String>> = Default::default();
    for s in &parsed.stanzas {
        if s.name == "lo" || !names.contains(&s.name) || s.method != "static" {
            continue;
        }
        let new_method = match s.family.as_str() {
            "inet" => "dhcp",
            "inet6" => "auto",
            _ => continue,
        };
        let first = lines[s.line - 1];
        let body = strip_eol(first);
        let indent: String = body.chars().take_while(|c| c.is_whitespace()).collect();
        let eol = &lines[s.header_last - 1][strip_eol(lines[s.header_last - 1]).len()..];
        // Keep anything after the method (e.g. `inherits`), as ifupdown would read it.
        let words: Vec<&str> = parsed
            .items
            .iter()
            .find(|(l, _)| l.first == s.line)
            .map(|(l, _)| l.text.split_whitespace().collect())
            .unwrap_or_default();
        let tail = if words.len() > 4 {
            format!(" {}", words[4..].join(" "))
        } else {
            String::new()
        };
        let kw = words.first().copied().unwrap_or("iface");
        repl.insert(
            s.line,
            Some(format!(
                "{indent}{kw} {new_name} {} {new_method}{tail}{eol}",
                s.family
            )),
        );
        for l in s.line + 1..=s.header_last {
            repl.insert(l, None);
        }
        for (k, _, a, b) in &s.opts {
            if is_static_option(k) {
                for l in *a..=*b {
                    repl.insert(l, None);
                }
            }
        }
    }
    if repl.is_empty() {
        return content.to_string();
    }
    let mut out = String::with_capacity(content.len());
    for (i, line) in lines.iter().enumerate() {
        match repl.get(&(i + 1)) {
            None => out.push_str(line),
            Some(None) => {}
            Some(Some(r)) => {
                // Keep a missing final newline missing.
                if !line.ends_with('\n') {
                    out.push_str(strip_eol(r));
                } else {
                    out.push_str(r);
                }
            }
        }
    }
    // Keep a missing final newline missing when the dropped lines were the last ones.
    if !content.ends_with('\n') && out.ends_with('\n') {
        let eol = if out.ends_with("\r\n") { 2 } else { 1 };
        out.truncate(out.len() - eol);
    }
    out
}

/// Drop the option lines `key` (any stanza but the loopback), e.g. `hwaddress`. Idempotent.
pub fn drop_option(content: &str, key: &str) -> String {
    let parsed = parse(content);
    let mut drop = std::collections::BTreeSet::new();
    for s in parsed.stanzas.iter().filter(|s| s.name != "lo") {
        for (k, _, a, b) in &s.opts {
            if k == key {
                drop.extend(*a..=*b);
            }
        }
    }
    if drop.is_empty() {
        return content.to_string();
    }
    let mut out: String = physical(content)
        .iter()
        .enumerate()
        .filter(|(i, _)| !drop.contains(&(i + 1)))
        .map(|(_, l)| *l)
        .collect();
    if !content.ends_with('\n') && out.ends_with('\n') {
        let eol = if out.ends_with("\r\n") { 2 } else { 1 };
        out.truncate(out.len() - eol);
    }
    out
}

/// Append lines (e.g. `auto eth0`) to a file, keeping its line-ending style; adds a newline first when the
/// file lacks a final one.
pub fn append_lines(content: &str, add: &[String]) -> String {
    let eol = if content.contains("\r\n") {
        "\r\n"
    } else {
        "\n"
    };
    let mut out = content.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push_str(eol);
    }
    // A last line ending in `\` continues onto the next one: an empty line ends it, so that the appended
    // lines are lines of their own.
    if strip_eol(physical(content).last().copied().unwrap_or("")).ends_with('\\') {
        out.push_str(eol);
    }
    for a in add {
        out.push_str(a);
        out.push_str(eol);
    }
    out
}

/// A glob on one path component: `*`, `?`, `[...]` (with `!`/`^` negation and ranges).
pub fn glob_match(pat: &str, name: &str) -> bool {
    fn rec(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| rec(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && rec(&p[1..], &n[1..]),
            Some('[') => {
                let Some(end) = p.iter().skip(1).position(|&c| c == ']').map(|e| e + 1) else {
                    return n.first() == Some(&'[') && rec(&p[1..], &n[1..]);
                };
                let Some(&c) = n.first() else { return false };
                let mut set = &p[1..end];
                let neg = matches!(set.first(), Some('!') | Some('^'));
                if neg {
                    set = &set[1..];
                }
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == '-' {
                        if set[i] <= c && c <= set[i + 2] {
                            hit = true;
                        }
                        i += 3;
                    } else {
                        if set[i] == c {
                            hit = true;
                        }
                        i += 1;
                    }
                }
                hit != neg && rec(&p[end + 1..], &n[1..])
            }
            Some(&c) => n.first() == Some(&c) && rec(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pat.chars().collect();
    let n: Vec<char> = name.chars().collect();
    rec(&p, &n)
}

/// run-parts naming, used by `source-directory`.
pub fn run_parts_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_to_cloud_init_comments_the_primary_and_keeps_the_rest() {
        let names = vec!["eth0".to_string(), "ens192".to_string()];
        let t = "auto lo ens192 eth1\niface lo inet loopback\n\n# the old NIC\niface ens192 inet static\n    address 10.1.2.5/24\n    gateway 10.1.2.1\n    up ip route add 10.9.0.0/16 via 10.1.2.254\niface ens192 inet6 auto\n\niface eth1 inet dhcp\n";
        let out = hand_to_cloud_init(t, &names);
        assert_eq!(
            out,
            "auto lo eth1\niface lo inet loopback\n\n# the old NIC\n# cloudprep: eth0/ens192 configured by cloud-init in the cloud (/etc/network/interfaces.d/50-cloud-init); the old configuration:\n# iface ens192 inet static\n#     address 10.1.2.5/24\n#     gateway 10.1.2.1\n#     up ip route add 10.9.0.0/16 via 10.1.2.254\n# iface ens192 inet6 auto\n\niface eth1 inet dhcp\nsource /etc/network/interfaces.d/*\n"
        );
        assert_eq!(hand_to_cloud_init(&out, &names), out, "idempotent");
        let p = parse(&out);
        assert!(p
            .stanzas
            .iter()
            .all(|s| s.name != "ens192" && s.name != "eth0"));
        assert_eq!(p.garbage().count(), 0);
        // A lone auto line goes; an existing source line is kept and not doubled; CRLF and no final newline.
        let t = "source /etc/network/interfaces.d/*\r\nauto eth0\r\niface eth0 inet dhcp";
        let out = hand_to_cloud_init(t, &names);
        assert_eq!(
            out,
            "source /etc/network/interfaces.d/*\r\n# auto eth0\r\n# cloudprep: eth0/ens192 configured by cloud-init in the cloud (/etc/network/interfaces.d/50-cloud-init); the old configuration:\r\n# iface eth0 inet dhcp"
        );
        assert_eq!(hand_to_cloud_init(&out, &names), out);
        // Nothing to hand over: only the source line, and never into an empty file.
        assert_eq!(
            hand_to_cloud_init("auto lo\niface lo inet loopback\n", &names),
            "auto lo\niface lo inet loopback\nsource /etc/network/interfaces.d/*\n"
        );
        assert_eq!(hand_to_cloud_init("", &names), "");
    }

    #[test]
    fn append_after_a_dangling_continuation() {
        // The appended `auto eth0` was joined to a last line ending in `\`, so it never took effect (and a
        // second run appended it again).
        let t = "auto lo\niface lo inet loopback\n  post-up /bin/true \\\n";
        let out = append_lines(t, &["auto eth0".to_string()]);
        assert_eq!(out, format!("{t}\nauto eth0\n"));
        assert!(parse(&out).autos().iter().any(|(_, n, _)| n == "eth0"));
        assert_eq!(append_lines("a \\", &["b".into()]), "a \\\n\nb\n");
    }

    const OLD: &str = "# The loopback network interface\nauto lo\niface lo inet loopback\n\n# The primary network interface\nallow-hotplug eth0\niface eth0 inet static\n\taddress 192.0.2.10\n\tnetmask 255.255.255.0\n\tnetwork 192.0.2.0\n\tbroadcast 192.0.2.255\n\tgateway 192.0.2.1\n\t# dns-* options are implemented by the resolvconf package\n\tdns-nameservers 192.0.2.53 198.51.100.53\n\tdns-search example.com\n\tpost-up ip route add 198.51.100.0/24 via 192.0.2.254\n";

    #[test]
    fn parses_stanzas_autos_and_options() {
        let p = parse(OLD);
        assert_eq!(p.stanzas.len(), 2);
        let s = &p.stanzas[1];
        assert_eq!(
            (s.name.as_str(), s.method.as_str(), s.line),
            ("eth0", "static", 7)
        );
        assert_eq!(s.opt("address"), Some("192.0.2.10"));
        assert_eq!(s.opt("gateway"), Some("192.0.2.1"));
        assert_eq!(
            s.opts_with_prefix("dns-nameservers").collect::<Vec<_>>(),
            vec!["192.0.2.53 198.51.100.53"]
        );
        assert_eq!(
            p.autos(),
            vec![
                ("auto".into(), "lo".into(), 2),
                ("allow-hotplug".into(), "eth0".into(), 6)
            ]
        );
        assert_eq!(p.garbage().count(), 0);
    }

    #[test]
    fn converts_static_to_dhcp_keeping_the_rest() {
        let out = to_dhcp(OLD, &["eth0".into()], "eth0");
        assert_eq!(
            out,
            "# The loopback network interface\nauto lo\niface lo inet loopback\n\n# The primary network interface\nallow-hotplug eth0\niface eth0 inet dhcp\n\t# dns-* options are implemented by the resolvconf package\n\tpost-up ip route add 198.51.100.0/24 via 192.0.2.254\n"
        );
        assert_eq!(to_dhcp(&out, &["eth0".into()], "eth0"), out);
    }

    #[test]
    fn crlf_continuation_multi_auto_and_no_final_newline() {
        let t = "auto lo ens192 ens224\r\niface lo inet loopback\r\niface ens192 inet static\r\n  address 192.0.2.10/24 \\\r\n\r\n  gateway 192.0.2.1\r\n  mtu 1400\r\niface ens192 inet6 static\r\n  address 2001:db8::10/64\r\niface ens224 inet static\r\n  address 198.51.100.7\r\n  netmask 255.255.255.0";
        let p = parse(t);
        assert_eq!(p.stanzas.len(), 4);
        assert_eq!(p.stanzas[1].opt("address"), Some("192.0.2.10/24"));
        assert_eq!(p.stanzas[1].opts[0].2, 4);
        assert_eq!(p.stanzas[1].opts[0].3, 5);
        assert_eq!(p.stanzas[1].opt("gateway"), Some("192.0.2.1"));
        let map = vec![("ens192".to_string(), "eth0".to_string())];
        let out = rename(&to_dhcp(t, &["ens192".into(), "eth0".into()], "eth0"), &map);
        assert_eq!(out, "auto lo eth0 ens224\r\niface lo inet loopback\r\niface eth0 inet dhcp\r\n  mtu 1400\r\niface eth0 inet6 auto\r\niface ens224 inet static\r\n  address 198.51.100.7\r\n  netmask 255.255.255.0");
        let out2 = to_dhcp(&out, &["ens224".into(), "eth1".into()], "eth1");
        assert!(out2.ends_with("iface eth1 inet dhcp"), "{out2:?}");
        assert_eq!(
            to_dhcp(&out2, &["ens224".into(), "eth1".into()], "eth1"),
            out2
        );
    }

    #[test]
    fn garbage_is_reported_and_skipped() {
        let t = "address 192.0.2.1\niface eth0\nauto eth0\niface eth0 inet dhcp\n  hostname\n  \n#iface eth1 inet static\n";
        let p = parse(t);
        let g: Vec<usize> = p.garbage().map(|(l, _)| l.first).collect();
        assert_eq!(g, vec![1, 2, 5]);
        assert_eq!(p.stanzas.len(), 1);
    }

    #[test]
    fn mapping_and_sources() {
        let t = "mapping eth0\n  script /usr/local/sbin/map-scheme\n  map HOME eth0-home\nsource /etc/network/interfaces.d/*\nsource-directory interfaces.d\n";
        let p = parse(t);
        assert_eq!(p.garbage().count(), 0);
        assert_eq!(
            p.sources(),
            vec![
                (false, "/etc/network/interfaces.d/*".into(), 4),
                (true, "interfaces.d".into(), 5)
            ]
        );
    }

    #[test]
    fn comments_are_never_renamed_and_words_are_whole() {
        let t = "# ens192 was the VMware NIC\nauto ens192\niface ens192 inet dhcp\n  post-up ip link set dev ens192 mtu 1400\n  up ip addr add 198.51.100.9/24 dev ens192:1\niface ens1920 inet manual\n";
        let out = rename(t, &[("ens192".into(), "eth0".into())]);
        assert_eq!(out, "# ens192 was the VMware NIC\nauto eth0\niface eth0 inet dhcp\n  post-up ip link set dev eth0 mtu 1400\n  up ip addr add 198.51.100.9/24 dev eth0:1\niface ens1920 inet manual\n");
    }

    #[test]
    fn loopback_never_touched() {
        let t = "iface lo inet static\n address 127.0.0.1\n";
        assert_eq!(to_dhcp(t, &["lo".into()], "eth0"), t);
        assert_eq!(rename(t, &[("lo".into(), "eth0".into())]), t);
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", "eth0.cfg"));
        assert!(glob_match("*.cfg", "eth0.cfg"));
        assert!(!glob_match("*.cfg", "eth0.cfg~"));
        assert!(glob_match("eth[0-9]", "eth1"));
        assert!(!glob_match("eth[!0-9]", "eth1"));
        assert!(glob_match("e?h0", "eth0"));
        assert!(run_parts_name("50-cloud-init"));
        assert!(!run_parts_name("50-cloud-init.cfg"));
    }

    #[test]
    fn drops_hwaddress_only() {
        let t = "iface eth0 inet dhcp\n  hwaddress ether 00:0c:29:4a:5b:6c\n  mtu 1400\niface eth1 inet manual\n\thwaddress 00:0c:29:4a:5b:6d";
        let out = drop_option(t, "hwaddress");
        assert_eq!(
            out,
            "iface eth0 inet dhcp\n  mtu 1400\niface eth1 inet manual"
        );
        assert_eq!(drop_option(&out, "hwaddress"), out);
    }

    #[test]
    fn append_keeps_style() {
        assert_eq!(append_lines("a", &["auto eth0".into()]), "a\nauto eth0\n");
        assert_eq!(
            append_lines("a\r\n", &["auto eth0".into()]),
            "a\r\nauto eth0\r\n"
        );
    }
}
