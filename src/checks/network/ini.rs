//! Line-preserving INI (systemd unit-style `.network`/`.link` files and NetworkManager keyfiles).
//! Comments are lines starting with `#` or `;`; keys are case-sensitive; a key may repeat.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub section: String,
    pub key: String,
    pub value: String,
    /// 1-based physical line.
    pub line: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Ini {
    pub entries: Vec<Entry>,
    /// `(section, line)` of each section header.
    pub sections: Vec<(String, usize)>,
    /// Lines that are neither blank, comment, header nor `key=value`.
    pub garbage: Vec<(usize, String)>,
}

impl Ini {
    pub fn get(&self, section: &str, key: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.section == section && e.key == key)
    }
    pub fn all<'a>(&'a self, section: &'a str, key: &'a str) -> impl Iterator<Item = &'a Entry> {
        self.entries
            .iter()
            .filter(move |e| e.section == section && e.key == key)
    }
    pub fn in_section<'a>(&'a self, section: &'a str) -> impl Iterator<Item = &'a Entry> {
        self.entries.iter().filter(move |e| e.section == section)
    }
}

fn strip_eol(s: &str) -> &str {
    s.trim_end_matches('\n').trim_end_matches('\r')
}

pub fn parse(content: &str) -> Ini {
    let mut ini = Ini::default();
    let mut section = String::new();
    for (i, line) in content.split_inclusive('\n').enumerate() {
        let t = strip_eol(line).trim();
        let no = i + 1;
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if t.starts_with('[') && t.ends_with(']') {
            section = t[1..t.len() - 1].trim().to_string();
            ini.sections.push((section.clone(), no));
            continue;
        }
        match t.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() && !section.is_empty() => {
                ini.entries.push(Entry {
                    section: section.clone(),
                    key: k.trim().to_string(),
                    value: v.trim().to_string(),
                    line: no,
                });
            }
            _ => ini.garbage.push((no, strip_eol(line).to_string())),
        }
    }
    ini
}

/// An edit of an INI file, applied by [`edit`].
#[derive(Debug, Clone)]
pub enum Op {
    /// Drop every `key=` line of `section`.
    Remove { section: String, key: String },
    /// Set `key=value` in `section`: the last existing line is replaced (earlier ones dropped), otherwise a
    /// line is inserted after the section header (the section is appended when missing).
    Set {
        section: String,
        key: String,
        value: String,
    },
    /// Add `key=value` after the section header unless some `key=` exists in it.
    AddIfMissing {
        section: String,
        key: String,
        value: String,
    },
    /// Drop whole sections named `section` (header and body) whose entries satisfy `pred` keys: when
    /// `with_key` is set, only sections containing that key.
    DropSection {
        section: String,
        with_key: Option<String>,
    },
}

/// Apply `ops` in order, each on the result of the previous; untouched lines stay byte-identical.
pub fn edit(content: &str, ops: &[Op]) -> String {
    let mut cur = content.to_string();
    for op in ops {
        cur = edit_one(&cur, op);
    }
    cur
}

fn eol_of(content: &str) -> &'static str {
    if content.contains("\r\n") {
        "\r\n"
    } else {
        "\n"
    }
}

fn edit_one(content: &str, op: &Op) -> String {
    let ini = parse(content);
    let lines: Vec<&str> = content.split_inclusive('\n').collect();
    let eol = eol_of(content);
    let mut drop = std::collections::BTreeSet::new();
    let mut replace: std::collections::BTreeMap<usize, String> = Default::default();
    let mut insert_after: Option<(usize, String)> = None;
    let mut append: Option<String> = None;
    match op {
        Op::Remove { section, key } => {
            for e in ini.all(section, key) {
                drop.insert(e.line);
            }
        }
        Op::Set {
            section,
            key,
            value,
        } => {
            let hits: Vec<&Entry> = ini.all(section, key).collect();
            if let Some(last) = hits.last() {
                if last.value == *value && hits.len() == 1 {
                    return content.to_string();
                }
                for e in &hits[..hits.len() - 1] {
                    drop.insert(e.line);
                }
                let orig = lines[last.line - 1];
                let body = strip_eol(orig);
                let indent: String = body.chars().take_while(|c| c.is_whitespace()).collect();
                replace.insert(
                    last.line,
                    format!("{indent}{key}={value}{}", &orig[body.len()..]),
                );
            } else if let Some((_, hl)) = ini.sections.iter().find(|(s, _)| s == section) {
                insert_after = Some((*hl, format!("{key}={value}")));
            } else {
                append = Some(format!("[{section}]{eol}{key}={value}"));
            }
        }
        Op::AddIfMissing {
            section,
            key,
            value,
        } => {
            if ini.all(section, key).next().is_some() {
                return content.to_string();
            }
            if let Some((_, hl)) = ini.sections.iter().find(|(s, _)| s == section) {
                insert_after = Some((*hl, format!("{key}={value}")));
            } else {
                append = Some(format!("[{section}]{eol}{key}={value}"));
            }
        }
        Op::DropSection { section, with_key } => {
            let n = lines.len();
            for (idx, (s, hl)) in ini.sections.iter().enumerate() {
                if s != section {
                    continue;
                }
                let end = ini.sections.get(idx + 1).map(|(_, l)| l - 1).unwrap_or(n);
                if let Some(k) = with_key {
                    if !ini
                        .entries
                        .iter()
                        .any(|e| e.line > *hl && e.line <= end && e.key == *k)
                    {
                        continue;
                    }
                }
                for l in *hl..=end {
                    drop.insert(l);
                }
            }
        }
    }
    let mut out = String::with_capacity(content.len() + 32);
    for (i, line) in lines.iter().enumerate() {
        let no = i + 1;
        if drop.contains(&no) {
            continue;
        }
        if let Some(r) = replace.get(&no) {
            out.push_str(r);
        } else {
            out.push_str(line);
        }
        if let Some((hl, text)) = &insert_after {
            if *hl == no {
                if !line.ends_with('\n') {
                    out.push_str(eol);
                }
                out.push_str(text);
                if line.ends_with('\n') {
                    out.push_str(eol);
                }
            }
        }
    }
    if let Some(a) = append {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push_str(eol);
        }
        if !out.is_empty() {
            out.push_str(eol);
        }
        out.push_str(&a);
        out.push_str(eol);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_edit_preserve_bytes() {
        let t = "# c\r\n[Match]\r\nMACAddress=00:0c:29:aa:bb:cc\r\n\r\n[Network]\r\n Address=192.0.2.10/24\r\nGateway=192.0.2.1\r\nDNS=192.0.2.53\r\n[Address]\r\nAddress=198.51.100.2/24\r\n[Route]\r\nDestination=198.51.100.0/24\r\nGateway=192.0.2.254";
        let ini = parse(t);
        assert_eq!(ini.get("Match", "MACAddress").unwrap().line, 3);
        assert!(ini.garbage.is_empty());
        let out = edit(
            t,
            &[
                Op::Remove {
                    section: "Match".into(),
                    key: "MACAddress".into(),
                },
                Op::AddIfMissing {
                    section: "Match".into(),
                    key: "Name".into(),
                    value: "eth0".into(),
                },
                Op::Remove {
                    section: "Network".into(),
                    key: "Address".into(),
                },
                Op::Set {
                    section: "Network".into(),
                    key: "DHCP".into(),
                    value: "ipv4".into(),
                },
                Op::DropSection {
                    section: "Address".into(),
                    with_key: None,
                },
                Op::DropSection {
                    section: "Route".into(),
                    with_key: Some("Gateway".into()),
                },
            ],
        );
        assert_eq!(out, "# c\r\n[Match]\r\nName=eth0\r\n\r\n[Network]\r\nDHCP=ipv4\r\nGateway=192.0.2.1\r\nDNS=192.0.2.53\r\n");
    }

    #[test]
    fn set_replaces_last_and_appends_missing_section() {
        let t = "[ipv4]\nmethod=manual\naddress1=192.0.2.10/24,192.0.2.1";
        let out = edit(
            t,
            &[Op::Set {
                section: "ipv4".into(),
                key: "method".into(),
                value: "auto".into(),
            }],
        );
        assert_eq!(out, "[ipv4]\nmethod=auto\naddress1=192.0.2.10/24,192.0.2.1");
        let out = edit(
            "[connection]\nid=x\n",
            &[Op::Set {
                section: "ipv4".into(),
                key: "method".into(),
                value: "auto".into(),
            }],
        );
        assert_eq!(out, "[connection]\nid=x\n\n[ipv4]\nmethod=auto\n");
    }

    #[test]
    fn garbage_lines() {
        let ini = parse("Name=eth0\n[Match]\nthis is not ini\n");
        assert_eq!(ini.garbage.len(), 2);
    }
}
